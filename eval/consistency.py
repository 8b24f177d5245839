"""The frame-pair term shared by subject_consistency and background_consistency.

For L2-normalised features ``f_0..f_{N-1}`` VBench scores each frame ``i >= 1`` as
``s_i = (max(0, cos(f_{i-1}, f_i)) + max(0, cos(f_0, f_i))) / 2``; a video's value is the mean of its
``s_i`` and the overall value is ``sum of all s_i / number of pairs`` over all videos (so longer videos
weigh more). Cosines are taken in the features' dtype (fp16 for CLIP on GPU, as VBench) and the sums in
Python floats in VBench's order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .base import DimResult
from .video import BadVideoError


def pair_terms(features: torch.Tensor) -> list[float]:
    """``[s_1, ..., s_{N-1}]`` for raw features ``(N, D)`` (normalised here)."""
    if features.shape[0] < 2:
        raise BadVideoError(f"consistency needs at least 2 frames, got {features.shape[0]}")
    f = F.normalize(features, dim=-1, p=2)
    prev = F.cosine_similarity(f[:-1], f[1:], dim=-1).tolist()
    first = F.cosine_similarity(f[:1].expand(f.shape[0] - 1, -1), f[1:], dim=-1).tolist()
    return [(max(0.0, a) + max(0.0, b)) / 2 for a, b in zip(prev, first)]


def consistency_result(terms: Sequence[float]) -> DimResult:
    video_sim = 0.0
    for s in terms:
        video_sim += s
    return DimResult(video_sim / len(terms), {"video_sim": video_sim, "cnt_per_video": len(terms)})


def pair_weighted_overall(results: Sequence[DimResult]) -> float:
    """``sum of video_sim / sum of pair counts`` (VBench's single-process aggregation)."""
    sim, cnt = 0.0, 0
    for r in results:
        sim += r.extra["video_sim"]
        cnt += r.extra["cnt_per_video"]
    return sim / cnt
