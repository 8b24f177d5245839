"""VBench's image preprocessing, torch-only (numerically equal to torchvision's tensor backend).

VBench applies its torchvision transforms to *float* tensors with values 0..255, so nothing is
rounded or clamped (a bicubic overshoot beyond 0..255 is kept), and it never antialiases.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .video import BadVideoError

DINO_MEAN = (0.485, 0.456, 0.406)
DINO_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_tensor(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` → float32 ``(T, 3, H, W)`` with values 0..255 (VBench's ``load_video`` output)."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return t.permute(0, 3, 1, 2).float()


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision ``Resize(int)``: the short side becomes ``size``, the long one ``int(size * long / short)``."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def resize(x: torch.Tensor, out_hw: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` float like torchvision's tensor backend (no antialias, returned as is if same size)."""
    if tuple(x.shape[-2:]) == tuple(out_hw):
        return x
    return F.interpolate(x, size=out_hw, mode=mode, align_corners=False, antialias=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision ``CenterCrop(size)`` for images at least ``size`` on each side (offsets rounded half-to-even)."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise BadVideoError(f"center_crop: image {h}x{w} is smaller than {size}")
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def dino_transform(x: torch.Tensor, size: int = 224) -> torch.Tensor:
    """VBench ``dino_transform(224)``: bilinear short side → 224 (no crop), /255, ImageNet normalisation."""
    out = resize(x, short_side_size(*x.shape[-2:], size), "bilinear")
    return normalize(out / 255.0, DINO_MEAN, DINO_STD)


def clip_transform(x: torch.Tensor, size: int = 224) -> torch.Tensor:
    """VBench ``clip_transform(224)``: bicubic short side → 224, centre crop 224, /255, CLIP normalisation."""
    out = resize(x, short_side_size(*x.shape[-2:], size), "bicubic")
    out = center_crop(out, size)
    return normalize(out / 255.0, CLIP_MEAN, CLIP_STD)


IMAGING_MODES = ("longer", "shorter", "shorter_centercrop", "None")


def imaging_transform(x: torch.Tensor, mode: str = "longer", limit: int = 512) -> torch.Tensor:
    """VBench imaging_quality preprocessing (``imaging_quality_preprocessing_mode``, default ``longer``).

    ``longer``: if the long side exceeds 512, bilinear resize to ``(int(s*h), int(s*w))`` with
    ``s = 512 / long``; ``shorter``: the same on the short side (``shorter_centercrop`` then crops 512);
    ``None``: no resize. Always divided by 255 at the end.
    """
    if mode not in IMAGING_MODES:
        raise ValueError(f"imaging preprocessing mode must be one of {IMAGING_MODES}, got {mode!r}")
    h, w = x.shape[-2:]
    side = max(h, w) if mode == "longer" else min(h, w)
    if mode != "None" and side > limit:
        scale = limit / side
        x = resize(x, (int(scale * h), int(scale * w)), "bilinear")
        if mode == "shorter_centercrop":
            x = center_crop(x, limit)
    return x / 255.0
