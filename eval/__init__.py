"""VBench-compatible video scoring: one module per dimension, exact formulas, offline weights.

    from eval import Evaluator
    ev = Evaluator("fast", device="cuda")            # or ["subject_consistency", "imaging_quality"]
    scores = ev.score("video.mp4")                   # decode once, every dimension
    print(scores.values())

``python -m eval VIDEOS... --dims fast --out results.json`` does the same from the shell and writes
VBench's results JSON plus a per-video CSV.
"""

from __future__ import annotations

from typing import Any

from .base import ALL_DIMS, FAST_DIMS, TABLE1_DIMS, parse_dims

__all__ = ["ALL_DIMS", "FAST_DIMS", "TABLE1_DIMS", "Evaluator", "load_video", "parse_dims", "vbench_json"]


def __getattr__(name: str) -> Any:  # keep ``import eval`` cheap: torch-heavy parts load on first use
    if name in ("Evaluator", "vbench_json"):
        from . import scorer

        return getattr(scorer, name)
    if name == "load_video":
        from .video import load_video

        return load_video
    raise AttributeError(f"module 'eval' has no attribute {name!r}")
