"""imaging_quality: MUSIQ (SPAQ) MOS per frame, mean per video on the 0-100 scale; overall = mean / 100.

Preprocessing ``longer`` (VBench's default ``imaging_quality_preprocessing_mode``): if the long side
exceeds 512, bilinear resize to ``int(s*h) × int(s*w)`` with ``s = 512 / long``, then /255. fp32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Dimension, DimResult, register_dimension
from .models import load_musiq_model
from .transforms import imaging_transform
from .video import Video


@register_dimension
class ImagingQuality(Dimension):
    name = "imaging_quality"
    label = "Imaging"
    weights = ("musiq_spaq",)

    def setup(self) -> None:
        self.model = load_musiq_model(self.weight_path("musiq_spaq"), self.ctx.random_init, self.ctx.seed)
        self.model = self.model.to(self.ctx.device)

    @torch.no_grad()
    def frame_scores(self, video: Video) -> list[float]:
        scores: list[float] = []
        for chunk in self.chunks(video.frames, max(1, self.ctx.batch_size // 4)):
            scores.extend(self.model(imaging_transform(chunk, self.ctx.imaging_mode)).tolist())
        return scores

    def score(self, video: Video) -> DimResult:
        acc = 0.0
        scores = self.frame_scores(video)
        for s in scores:
            acc += s
        return DimResult(acc / len(scores))

    @classmethod
    def overall(cls, results: Sequence[DimResult]) -> float:
        return sum(r.value for r in results) / len(results) / 100.0
