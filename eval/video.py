"""Decoding videos into the exact frames VBench scores.

VBench reads ``.mp4`` with decord (subject, background, aesthetic, imaging) or OpenCV's FFmpeg
backend (flicker, motion, dynamic) and ``.gif`` with Pillow; all of these hand over every frame as
RGB uint8 at native resolution. Here one decode serves every dimension:

* ``.mp4``: the ffmpeg binary of imageio-ffmpeg, ``rgb24`` output, every frame, no filter (byte-identical
  to decord and cv2 on the files checked in ``research/vbench.md`` §0).
* ``.gif``: Pillow, every frame ``.convert("RGB")`` under Pillow's *default* GIF loading strategy
  (``RGB_AFTER_FIRST``). imageio's Pillow plugin silently switches the process-wide strategy to
  ``RGB_AFTER_DIFFERENT_PALETTE_ONLY`` on its first GIF read, which changes the decoded pixels of GIFs
  whose later frames use transparency with another palette; the reader pins the default for the
  duration of the read and restores whatever was set before.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".gif")
_GIF_LOCK = threading.Lock()


class VideoDecodeError(RuntimeError):
    """A video file could not be decoded (missing, corrupt, empty, unsupported)."""


@dataclass
class Video:
    """Decoded frames ``(T, H, W, 3)`` uint8 RGB, the file they came from, its frame rate (and prompt, if known)."""

    path: Path
    frames: np.ndarray
    fps: float | None = None
    prompt: str | None = None  # text-video dimensions (overall_consistency); None: from the file name

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


@contextmanager
def pillow_default_gif_strategy() -> Iterator[None]:
    """Run the body with Pillow's default GIF loading strategy, then restore the previous one."""
    from PIL import GifImagePlugin

    with _GIF_LOCK:
        previous = GifImagePlugin.LOADING_STRATEGY
        GifImagePlugin.LOADING_STRATEGY = GifImagePlugin.LoadingStrategy.RGB_AFTER_FIRST
        try:
            yield
        finally:
            GifImagePlugin.LOADING_STRATEGY = previous


def read_gif(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """All frames of a GIF as VBench's ``load_video`` sees them, and the frame rate from its durations."""
    from PIL import Image, ImageSequence

    frames = []
    durations = []
    with pillow_default_gif_strategy(), Image.open(path) as img:
        for frame in ImageSequence.Iterator(img):
            frames.append(np.asarray(frame.convert("RGB"), dtype=np.uint8))
            durations.append(frame.info.get("duration") or 0)
    if not frames:
        raise VideoDecodeError(f"{path}: the GIF has no frames")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise VideoDecodeError(f"{path}: frames of different sizes {sorted(shapes)}")
    mean_ms = float(np.mean(durations)) if durations else 0.0
    return np.stack(frames), (1000.0 / mean_ms if mean_ms > 0 else None)


def read_mp4(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """All frames of an mp4 as RGB uint8 through the ffmpeg binary (no scaling, no frame sampling)."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(gen)
        width, height = meta["size"]
        frames = [np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3) for buf in gen]
    finally:
        gen.close()
    if not frames:
        raise VideoDecodeError(f"{path}: no frames could be decoded")
    fps = float(meta.get("fps") or 0.0) or None
    return np.stack(frames), fps


def _last_lines(message: str, n: int = 3, limit: int = 400) -> str:
    """The informative tail of a long error (ffmpeg prints its whole banner first)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return " | ".join(lines[-n:])[-limit:]


def load_video(path: str | os.PathLike) -> Video:
    """Decode ``path`` (``.mp4`` or ``.gif``); any failure becomes a :class:`VideoDecodeError` naming the file."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise VideoDecodeError(f"{p}: unsupported file type {suffix!r} (VBench reads .mp4 and .gif)")
    if not p.is_file():
        raise VideoDecodeError(f"{p}: no such file")
    try:
        frames, fps = read_gif(p) if suffix == ".gif" else read_mp4(p)
    except VideoDecodeError:
        raise
    except Exception as err:  # ffmpeg / Pillow raise many types for broken files
        raise VideoDecodeError(f"{p}: cannot decode ({type(err).__name__}: {_last_lines(str(err))})") from err
    return Video(p, np.ascontiguousarray(frames), fps)


def find_videos(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (searched recursively) into the sorted list of ``.mp4``/``.gif`` files.

    A file given explicitly is kept whatever its suffix (so a wrong one is reported, not skipped);
    hidden files and temp files inside folders are ignored.
    """
    out: list[Path] = []
    for item in paths:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            out.extend(found)
        else:
            out.append(p)
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique
