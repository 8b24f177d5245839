"""CLIP-SIM: the mean CLIP cosine similarity of adjacent frames (FreeNoise's "content consistency").

``CLIP-SIM(video) = 1/(T−1) Σ_{i<T} cos(e_i, e_{i+1})`` with ``e_i`` the projected CLIP image embedding of frame
``i``; a set's value is the mean over its videos. FreeNoise gives no code for it; it evaluates on EvalCrafter's
prompts, and EvalCrafter's adjacent-frame CLIP metric (``MetricCLIP_sim`` / ``CLIPTempScore``) uses
``openai/clip-vit-base-patch32`` through transformers' ``CLIPProcessor``: so does this module (weight
``clip_vit_b32``, the one background_consistency uses; preprocessing: transformers' ``CLIPImageProcessor``
defaults = PIL bicubic resize of the short side to 224, centre crop 224, /255, CLIP mean/std). The whole
video is scored (all its adjacent pairs), not its 16-frame segments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def clip_processor():
    """transformers' (PIL) ``CLIPImageProcessor`` with its defaults, which are ``openai/clip-vit-base-patch32``'s."""
    try:  # newer transformers name the PIL backend apart (the default one needs torchvision)
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    return Processor()


class ClipSim:
    """``ClipSim(weight_path | None, random_init=...)``; ``score(frames uint8 (T, H, W, 3))`` → float."""

    weight = "clip_vit_b32"

    def __init__(self, path: Path | None, random_init: bool = False, seed: int = 0,
                 device: str | torch.device = "cpu", batch_size: int = 32):
        from .models import load_clip

        self.device = torch.device(device)
        self.model = load_clip(path, random_init, seed, patch_size=32, projection_dim=512).to(self.device)
        self.processor = clip_processor()
        self.batch_size = batch_size

    @torch.no_grad()
    def embeddings(self, frames: np.ndarray) -> torch.Tensor:
        out = []
        for i in range(0, len(frames), self.batch_size):
            pixels = self.processor(images=list(frames[i:i + self.batch_size]), return_tensors="pt")["pixel_values"]
            out.append(self.model(pixels.to(self.device)).float())
        return torch.cat(out)

    def score(self, frames: np.ndarray) -> float:
        if len(frames) < 2:
            raise ValueError(f"CLIP-SIM needs at least 2 frames, got {len(frames)}")
        return adjacent_similarity(self.embeddings(frames))


def adjacent_similarity(embeddings: torch.Tensor) -> float:
    """Mean cosine similarity of consecutive rows."""
    e = torch.nn.functional.normalize(embeddings.double(), dim=-1)
    return float((e[:-1] * e[1:]).sum(-1).mean())
