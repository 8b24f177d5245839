"""Score videos on several VBench dimensions: decode once, batch through each network, isolate failures.

:class:`Evaluator` resolves every weight and optional extra up front (one error listing everything
missing, before any video is touched), builds each dimension's networks once, then scores videos one
by one. A video that cannot be decoded, or that a dimension cannot take (``BadVideoError``), is recorded
with its error and the others carry on; any other error (out of memory, a bug) stops the run.
:func:`vbench_json` lays the results out exactly like VBench's
``*_eval_results.json``: ``{dim: [overall, [{"video_path": ..., "video_results": ...}, ...]]}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import Dimension, DimResult, EvalContext, get_dimension, parse_dims
from .models import MissingExtraError
from .video import BadVideoError, Video, load_video
from .weights import resolve_eval_weights

log = logging.getLogger("freelong.eval")
RANDOM_INIT_LABEL = "random-init"


@dataclass
class VideoScores:
    """All requested dimensions for one video; ``error`` is set when the video could not be decoded."""

    path: Path
    results: dict[str, DimResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    num_frames: int | None = None
    size: tuple[int, int] | None = None
    fps: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def values(self) -> dict[str, float | bool]:
        return {dim: r.value for dim, r in self.results.items()}


def missing_extras(dims: Sequence[str]) -> dict[str, str]:
    """``{dim: reason}`` for requested dimensions whose optional packages are not importable."""
    out = {}
    for dim in dims:
        try:
            get_dimension(dim).check_available()
        except MissingExtraError as err:
            out[dim] = str(err)
    return out


class Evaluator:
    """``Evaluator(["subject_consistency", ...], device="cuda")`` → ``.score(path)`` / ``.score_many(paths)``.

    Args:
        dims: dimension names, aliases or groups (``"fast"``, ``"table1"``, ``"vbench"``).
        device: where the networks run (``None``: CUDA if available).
        random_init: use tiny seeded random-weight networks of the same architectures (smoke runs, tests);
            their scores are labelled ``random-init`` and mean nothing.
        weights: explicit paths per weight name (see :mod:`eval.weights`), overriding the caches.
        cache_dir: VBench cache root (default ``$VBENCH_CACHE_DIR`` or ``~/.cache/vbench``).
        batch_size: frames per network call; pair_batch: frame pairs per AMT/RAFT call.
        precision: ``"vbench"`` (fp16 CLIP on CUDA, as VBench) or ``"fp32"``.
        imaging_mode: VBench's ``imaging_quality_preprocessing_mode``.
    """

    def __init__(
        self,
        dims: str | Sequence[str] = "fast",
        device: str | torch.device | None = None,
        random_init: bool = False,
        weights: dict[str, str] | None = None,
        cache_dir: str | None = None,
        batch_size: int = 32,
        pair_batch: int | None = None,
        precision: str = "vbench",
        imaging_mode: str = "longer",
        seed: int = 0,
    ):
        if precision not in ("vbench", "fp32"):
            raise ValueError(f"precision must be 'vbench' or 'fp32', got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dims = parse_dims(dims)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        self.random_init = random_init
        classes = {d: get_dimension(d) for d in self.dims}
        extras = missing_extras(self.dims)
        if extras:
            lines = "\n".join(f"- {d}: {msg}" for d, msg in extras.items())
            raise MissingExtraError(f"optional packages missing for the requested dimensions:\n{lines}\n"
                                    f"Install them, or drop these dimensions.")
        needed = [w for cls in classes.values() for w in cls.weights]
        paths = {} if random_init else resolve_eval_weights(needed, weights, cache_dir)
        self.weight_paths = paths
        self.ctx = EvalContext(device=dev, random_init=random_init, weights=paths, batch_size=batch_size,
                               pair_batch=pair_batch or (8 if dev.type == "cuda" else 1), precision=precision,
                               imaging_mode=imaging_mode, seed=seed)
        self.scorers: dict[str, Dimension] = {}
        for dim, cls in classes.items():
            t0 = time.perf_counter()
            self.scorers[dim] = cls(self.ctx)
            log.info("eval: %s ready (%.1fs)%s", dim, time.perf_counter() - t0,
                     " [random-init]" if random_init else "")

    @property
    def label(self) -> str:
        return RANDOM_INIT_LABEL if self.random_init else "vbench"

    def score_video(self, video: Video) -> VideoScores:
        """Every dimension on already decoded frames; a dimension that cannot take this video is recorded.

        Only :class:`~eval.video.BadVideoError` (too few frames, a shape the dimension cannot take) is
        recorded; out-of-memory and programming errors propagate, so they are never mistaken for a bad video.
        """
        out = VideoScores(video.path, num_frames=video.num_frames, size=video.size, fps=video.fps)
        for dim, scorer in self.scorers.items():
            t0 = time.perf_counter()
            try:
                out.results[dim] = scorer.score(video)
            except BadVideoError as err:  # this video does not suit this dimension: the others go on
                log.warning("eval: %s failed on %s: %s", dim, video.path, err)
                out.errors[dim] = f"{type(err).__name__}: {err}"
            out.seconds[dim] = time.perf_counter() - t0
        return out

    def score(self, path: str | Path, frames: np.ndarray | None = None, fps: float | None = None,
              prompt: str | None = None) -> VideoScores:
        """Decode ``path`` once (or use ``frames``) and score it; an unreadable video is recorded, not raised.

        ``prompt`` is for text-video dimensions (overall_consistency); None: VBench's prompt from the file name.
        """
        try:
            video = Video(Path(path), frames, fps) if frames is not None else load_video(path)
        except BadVideoError as err:
            log.warning("eval: cannot read %s: %s", path, err)
            return VideoScores(Path(path), error=f"{type(err).__name__}: {err}")
        video.prompt = prompt
        return self.score_video(video)

    def score_many(self, paths: Iterable[str | Path], progress: bool = True,
                   prompts: dict[Path, str] | None = None) -> list[VideoScores]:
        paths = list(paths)
        prompts = prompts or {}
        from tqdm.auto import tqdm

        iterator = tqdm(paths, desc="eval", unit="video", disable=not progress)
        return [self.score(p, prompt=prompts.get(Path(p))) for p in iterator]

    def overall(self, scores: Sequence[VideoScores]) -> dict[str, float | None]:
        return overall_scores(self.dims, scores)

    def describe(self) -> dict[str, Any]:
        """What produced the numbers: device, precision, weights (path + SHA-256), label."""
        from freelong.weights import identity

        return {
            "label": self.label,
            "random_init": self.random_init,
            "dims": list(self.dims),
            "device": str(self.ctx.device),
            "precision": self.ctx.precision,
            "imaging_mode": self.ctx.imaging_mode,
            "weights": {name: identity(path) for name, path in self.weight_paths.items()},
        }


def overall_scores(dims: Sequence[str], scores: Sequence[VideoScores]) -> dict[str, float | None]:
    """Each dimension's overall value over the videos that produced one (None if none did)."""
    out: dict[str, float | None] = {}
    for dim in dims:
        results = [s.results[dim] for s in scores if dim in s.results]
        out[dim] = get_dimension(dim).overall(results) if results else None
    return out


def vbench_json(dims: Sequence[str], scores: Sequence[VideoScores]) -> dict[str, list]:
    """VBench's results layout; failed videos appear with ``video_results: null`` and an ``error``."""
    overall = overall_scores(dims, scores)
    out: dict[str, list] = {}
    for dim in dims:
        entries = []
        for s in scores:
            entry: dict[str, Any] = {"video_path": str(s.path)}
            if dim in s.results:
                r = s.results[dim]
                entry["video_results"] = r.value
                entry.update(r.extra)
            else:
                entry["video_results"] = None
                entry["error"] = s.error or s.errors.get(dim, "not scored")
            entries.append(entry)
        out[dim] = [overall[dim], entries]
    return out


def per_video_rows(dims: Sequence[str], scores: Sequence[VideoScores], label: str) -> list[dict[str, Any]]:
    """One flat row per video (the CSV): path, frames, size, fps, each dimension, errors, label."""
    rows = []
    for s in scores:
        row: dict[str, Any] = {"video_path": str(s.path), "num_frames": s.num_frames,
                               "height": s.size[0] if s.size else None, "width": s.size[1] if s.size else None,
                               "fps": s.fps}
        for dim in dims:
            r = s.results.get(dim)
            row[dim] = r.value if r is not None else None
        errors = [s.error] if s.error else [f"{d}: {e}" for d, e in s.errors.items()]
        row["error"] = "; ".join(errors) if errors else ""
        row["label"] = label
        rows.append(row)
    return rows
