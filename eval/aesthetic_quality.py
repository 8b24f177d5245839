"""aesthetic_quality: LAION aesthetic head on CLIP ViT-L/14 embeddings, /10, mean over frames.

Preprocessing as background_consistency (``clip_transform(224)``), batches of 32 frames; embeddings are
cast to fp32 and L2-normalised before the ``Linear(768, 1)`` head. fp16 CLIP on CUDA, like VBench.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .base import Dimension, DimResult, register_dimension
from .models import load_aesthetic_head, load_clip
from .transforms import clip_transform
from .video import Video


@register_dimension
class AestheticQuality(Dimension):
    name = "aesthetic_quality"
    label = "Aesthetic"
    weights = ("clip_vit_l14", "aesthetic_head")

    def setup(self) -> None:
        clip = load_clip(self.weight_path("clip_vit_l14"), self.ctx.random_init, self.ctx.seed, patch_size=14,
                         projection_dim=768)
        self.clip = clip.to(self.ctx.device, self.ctx.half_on_gpu())
        self.head = load_aesthetic_head(self.weight_path("aesthetic_head"), 768, self.ctx.random_init,
                                        self.ctx.seed).to(self.ctx.device)

    @torch.no_grad()
    def frame_scores(self, video: Video) -> torch.Tensor:
        """Per-frame aesthetic scores (already divided by 10)."""
        out = []
        for chunk in self.chunks(video.frames):
            feats = F.normalize(self.clip(clip_transform(chunk)).float(), dim=-1, p=2)
            out.append(self.head(feats).squeeze(-1))
        return torch.cat(out) / 10

    def score(self, video: Video) -> DimResult:
        return DimResult(torch.mean(self.frame_scores(video), dim=0).item())

    @classmethod
    def overall(cls, results: Sequence[DimResult]) -> float:
        total = 0.0
        for r in results:
            total += r.value
        return total / len(results)
