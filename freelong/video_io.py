"""Writing videos and metadata atomically (temp file + rename), and reading videos back."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file normal permissions (mkstemp makes it 0600) and move it into place."""
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


BROWSER_MP4_PARAMS = ["-movflags", "+faststart"]  # moov atom first: browsers start playing before the end


def even_frames(frames: np.ndarray) -> np.ndarray:
    """Pad an odd height or width by repeating the last row/column: yuv420p H.264 needs even sizes."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 8, quality: int = 9) -> None:
    """Write uint8 ``(T, H, W, 3)`` frames as an mp4 every browser plays (imageio-ffmpeg), atomically.

    H.264, yuv420p, even width and height (an odd size is padded by one repeated row/column) and
    ``+faststart``. ``quality`` follows imageio's 0-10 scale; 9 is LaVie's setting. A ``.gif`` path
    writes a GIF (any size).
    """
    import imageio.v2 as imageio

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        if path.suffix.lower() == ".gif":
            imageio.mimwrite(tmp, list(frames), duration=1000 / fps, loop=0)
        else:
            imageio.mimwrite(tmp, list(even_frames(frames)), fps=fps, quality=quality, codec="libx264",
                             pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="error",
                             output_params=BROWSER_MP4_PARAMS)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video file as uint8 ``(T, H, W, 3)`` (imageio: ffmpeg for mp4, Pillow for gif)."""
    import imageio.v3 as iio

    frames = iio.imread(path, index=None)
    if frames.ndim == 3:
        frames = frames[None]
    return np.ascontiguousarray(frames[..., :3])
