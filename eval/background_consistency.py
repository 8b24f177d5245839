"""background_consistency: CLIP ViT-B/32 image embeddings, frame-pair cosines (VBench ``background_consistency``).

Preprocessing: bicubic short side → 224 (no clamp), centre crop 224, /255, CLIP mean/std. On CUDA the
network and the cosines run in fp16 like VBench's OpenAI CLIP (``eval.precision=fp32`` turns that off).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Dimension, DimResult, register_dimension
from .consistency import consistency_result, pair_terms, pair_weighted_overall
from .models import load_clip
from .transforms import clip_transform
from .video import Video


@register_dimension
class BackgroundConsistency(Dimension):
    name = "background_consistency"
    label = "Back"
    weights = ("clip_vit_b32",)

    def setup(self) -> None:
        model = load_clip(self.weight_path("clip_vit_b32"), self.ctx.random_init, self.ctx.seed, patch_size=32,
                          projection_dim=512)
        self.model = model.to(self.ctx.device, self.ctx.half_on_gpu())

    @torch.no_grad()
    def features(self, video: Video) -> torch.Tensor:
        return torch.cat([self.model(clip_transform(chunk)) for chunk in self.chunks(video.frames)])

    def score(self, video: Video) -> DimResult:
        return consistency_result(pair_terms(self.features(video)))

    @classmethod
    def overall(cls, results: Sequence[DimResult]) -> float:
        return pair_weighted_overall(results)
