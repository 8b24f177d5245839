"""Decoding videos into the exact frames VBench scores.

VBench reads ``.mp4`` with decord (subject, background, aesthetic, imaging) or OpenCV's FFmpeg
backend (flicker, motion, dynamic) and ``.gif`` with Pillow; all of these hand over every frame as
RGB uint8 at native resolution. Here one decode serves every dimension:

* ``.mp4``: the ffmpeg binary of imageio-ffmpeg, ``rgb24`` output, every stored frame once in presentation
  order (``-fps_mode passthrough``: no constant-frame-rate re-timing, which would duplicate frames of a
  variable-frame-rate file), no filter (byte-identical to decord and cv2 on the files we checked;
  VFR and B-frame files are pinned in ``tests/eval/test_eval_video.py``).
* ``.gif``: Pillow, every frame ``.convert("RGB")`` under Pillow's *default* GIF loading strategy
  (``RGB_AFTER_FIRST``). imageio's Pillow plugin silently switches the process-wide strategy to
  ``RGB_AFTER_DIFFERENT_PALETTE_ONLY`` on its first GIF read, which changes the decoded pixels of GIFs
  whose later frames use transparency with another palette; the reader pins the default for the
  duration of the read and restores whatever was set before.
"""

from __future__ import annotations

import os
import re
import struct
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".gif")
_GIF_LOCK = threading.Lock()


class BadVideoError(ValueError):
    """A video that cannot be scored: unreadable, or frames a dimension cannot take (too few, wrong shape).

    Scorers record exactly this error per video (and carry on); anything else (out of memory, a bug)
    propagates.
    """


class VideoDecodeError(BadVideoError):
    """A video file could not be decoded (missing, corrupt, empty, unsupported)."""


# What the decoders raise for a broken file (Pillow: OSError/EOFError/struct.error; the ffmpeg pipe:
# OSError/RuntimeError; a short frame buffer: ValueError). MemoryError and programming errors are not here.
DECODER_ERRORS = (OSError, RuntimeError, ValueError, EOFError, struct.error)


@dataclass
class Video:
    """Decoded frames ``(T, H, W, 3)`` uint8 RGB, the file they came from, its frame rate (and prompt, if known)."""

    path: Path
    frames: np.ndarray
    fps: float | None = None
    prompt: str | None = None  # text-video dimensions (overall_consistency); None: from the file name

    def __post_init__(self) -> None:
        check_frames(self.frames, self.path)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def check_frames(frames: np.ndarray, path: str | os.PathLike | None = None) -> None:
    """Raise :class:`BadVideoError` unless ``frames`` is a uint8 ``(T >= 1, H, W, 3)`` array."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 \
            or 0 in frames.shape:
        desc = f"{getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', '')}"
        raise BadVideoError(f"{path or 'frames'}: expected uint8 frames (T, H, W, 3), got {desc}")


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


def passthrough_params() -> list[str]:
    """ffmpeg output options that emit every stored frame exactly once (no CFR duplication or dropping).

    ffmpeg's default for a raw pipe output re-times frames to a constant rate, which duplicates frames of
    a variable-frame-rate file; decord and cv2 hand over each stored frame once. ``-fps_mode`` exists from
    ffmpeg 5.1 on and ``-vsync`` was removed in 8, so the option follows the binary's version.
    """
    import imageio_ffmpeg

    try:
        major, minor = (int(x) for x in re.findall(r"\d+", imageio_ffmpeg.get_ffmpeg_version())[:2])
    except ValueError:  # a build without a numeric version ("N-12345-g...") is recent
        major, minor = 99, 0
    return ["-fps_mode", "passthrough"] if (major, minor) >= (5, 1) else ["-vsync", "passthrough"]


def read_mp4(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """Every stored frame of an mp4 once, in presentation order, RGB uint8, through the ffmpeg binary.

    No scaling and no frame-rate conversion (variable-frame-rate files keep their frame count, files with
    B-frames come out in display order); ``fps`` is ffmpeg's reported rate (the average for VFR files).
    """
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=passthrough_params())
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
    except DECODER_ERRORS as err:
        raise VideoDecodeError(f"{p}: cannot decode ({type(err).__name__}: {_last_lines(str(err))})") from err
    return Video(p, np.ascontiguousarray(frames), fps)


def find_videos(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (searched recursively) into the sorted list of ``.mp4``/``.gif`` files.

    A file given explicitly is kept whatever its suffix (so a wrong one is reported, not skipped);
    hidden files and temp files inside folders are ignored, and so are the copies of an HTML report folder
    inside them (``analysis/report.py --copy``; the wandb logger leaves one in each run dir), which would
    count a video twice.
    """
    out: list[Path] = []
    for item in paths:
        p = Path(item).expanduser()
        if p.is_dir():
            reports = {i.parent for i in p.rglob("index.html") if (i.parent / "assets" / "report.js").is_file()}
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts)
                           and not reports.intersection(f.parents))
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
