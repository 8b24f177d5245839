"""temporal_flickering: ``(255 - mean_i MAE(F_i, F_{i+1})) / 255`` over all frames (VBench ``temporal_flickering``).

No network. VBench reads BGR frames with OpenCV and reduces each pair's float32 absolute difference
with ``np.mean`` (float32, pairwise summation over the BGR-interleaved values); the same reduction runs
here on the same layout, so the result is bit-identical for identical frames. VBench's protocol scores
only static videos (its ``static_filter``); like VBench's ``custom_input`` mode, no filter runs here.
"""

from __future__ import annotations

import numpy as np

from .base import Dimension, DimResult, register_dimension
from .video import BadVideoError, Video


def flicker_score(frames: np.ndarray) -> float:
    """Temporal flickering of uint8 RGB frames ``(T, H, W, 3)``; 1.0 means no change between frames."""
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise BadVideoError(f"temporal_flickering needs at least 2 frames (T, H, W, 3), got shape {frames.shape}")
    bgr = frames[..., ::-1]
    maes = np.empty(frames.shape[0] - 1, dtype=np.float32)
    prev = np.ascontiguousarray(bgr[0], dtype=np.float32)
    for i in range(1, frames.shape[0]):
        cur = np.ascontiguousarray(bgr[i], dtype=np.float32)
        maes[i - 1] = np.mean(np.abs(prev - cur))
        prev = cur
    return (255.0 - np.mean(maes).item()) / 255.0


@register_dimension
class TemporalFlickering(Dimension):
    name = "temporal_flickering"
    label = "Flicker"

    def score(self, video: Video) -> DimResult:
        return DimResult(flicker_score(video.frames))
