"""Synthetic videos for the eval tests: mp4 through freelong.video_io, GIFs assembled byte by byte."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np


def random_frames(t: int = 6, h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


def smooth_frames(t: int = 6, h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    """Slowly moving gradients (compress well, so mp4 decoding stays close to the input)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(t):
        r = 128 + 100 * np.sin((x + 2 * i) / 9.0)
        g = 128 + 100 * np.cos((y - i) / 7.0)
        b = 128 + 60 * np.sin((x + y + seed) / 11.0)
        out.append(np.stack([r, g, b], -1))
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def _lzw_image_data(indices: np.ndarray, palette: np.ndarray) -> bytes:
    """The LZW-coded image data (min code size + sub-blocks) of a P image, taken from Pillow's writer."""
    from PIL import Image

    im = Image.fromarray(indices, mode="P")
    im.putpalette(palette.astype(np.uint8).flatten().tolist())
    buf = io.BytesIO()
    im.save(buf, format="GIF", optimize=False, interlace=False)
    b = buf.getvalue()
    pos = 13 + (3 * 2 ** ((b[10] & 7) + 1) if b[10] & 0x80 else 0)
    while b[pos] == 0x21:  # extensions
        pos += 2
        while b[pos]:
            pos += b[pos] + 1
        pos += 1
    assert b[pos] == 0x2C and not b[pos + 9] & 0xC0, "expected a plain, non-interlaced image descriptor"
    pos += 10
    end = pos + 1
    while b[end]:
        end += b[end] + 1
    return b[pos : end + 1]


def _gce(disposal: int, transparency: int | None, delay_cs: int) -> bytes:
    packed = (disposal << 2) | (1 if transparency is not None else 0)
    return b"\x21\xf9\x04" + bytes([packed]) + struct.pack("<H", delay_cs) + bytes([transparency or 0]) + b"\x00"


def _descriptor(w: int, h: int, local_palette: np.ndarray | None) -> bytes:
    out = b"\x2c" + struct.pack("<HHHH", 0, 0, w, h) + bytes([0x87 if local_palette is not None else 0])
    return out + (local_palette.astype(np.uint8).tobytes() if local_palette is not None else b"")


def transparent_gif(path: Path, seed: int = 0, h: int = 16, w: int = 24) -> np.ndarray:
    """Write a 2-frame GIF whose 2nd frame leaves unchanged pixels transparent and uses another palette.

    Frame 0 carries a local palette A, frame 1 the global palette G and transparency index 255 for the
    pixels it keeps. Returns the correctly composited RGB frames ``(2, h, w, 3)``: under Pillow's default
    loading strategy they decode exactly so; under ``RGB_AFTER_DIFFERENT_PALETTE_ONLY`` (what imageio sets
    process-wide) the changed pixels of frame 1 come out in the wrong palette.
    """
    rng = np.random.default_rng(seed)
    pal_g = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    pal_a = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    idx0 = rng.integers(0, 200, (h, w), dtype=np.uint8)
    idx1 = rng.integers(0, 200, (h, w), dtype=np.uint8)
    keep = rng.random((h, w)) < 0.5
    enc1 = np.where(keep, 255, idx1).astype(np.uint8)
    data = (b"GIF89a" + struct.pack("<HH", w, h) + bytes([0xF7, 0, 0]) + pal_g.tobytes()
            + _gce(1, None, 12) + _descriptor(w, h, pal_a) + _lzw_image_data(idx0, pal_a)
            + _gce(1, 255, 12) + _descriptor(w, h, None) + _lzw_image_data(enc1, pal_g) + b"\x3b")
    Path(path).write_bytes(data)
    frame0 = pal_a[idx0]
    frame1 = np.where(keep[..., None], frame0, pal_g[idx1])
    return np.stack([frame0, frame1])
