"""subject_consistency: DINO ViT-B/16 CLS features, frame-pair cosines (VBench ``subject_consistency``).

Preprocessing: bilinear short side → 224 without cropping (the network sees e.g. 224×358), /255,
ImageNet mean/std; fp32. VBench feeds one frame at a time; frames are batched here (same network, same
numbers up to float reduction order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Dimension, DimResult, register_dimension
from .consistency import consistency_result, pair_terms, pair_weighted_overall
from .models import load_dino
from .transforms import dino_transform
from .video import Video


@register_dimension
class SubjectConsistency(Dimension):
    name = "subject_consistency"
    label = "Sub"
    weights = ("dino_vitb16",)

    def setup(self) -> None:
        self.model = load_dino(self.weight_path("dino_vitb16"), self.ctx.random_init, self.ctx.seed).to(self.ctx.device)

    @torch.no_grad()
    def features(self, video: Video) -> torch.Tensor:
        return torch.cat([self.model(dino_transform(chunk)) for chunk in self.chunks(video.frames)])

    def score(self, video: Video) -> DimResult:
        return consistency_result(pair_terms(self.features(video)))

    @classmethod
    def overall(cls, results: Sequence[DimResult]) -> float:
        return pair_weighted_overall(results)
