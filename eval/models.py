"""The evaluation networks, built so their outputs equal VBench's (docs/evaluation.md: how each is checked).

* DINO ViT-B/16 and CLIP ViT-B/32 / ViT-L/14: transformers ``ViTModel`` / ``CLIPVisionModelWithProjection``.
  DINO gets LayerNorm eps 1e-6, eager attention and DINO's own position-embedding interpolation
  (``scale_factor`` with the "+0.1" trick, not an explicit size), which makes its CLS token bit-identical
  to the torch-hub model on non-square inputs.
* MUSIQ: :mod:`eval.musiq` (own implementation, pyiqa checkpoint names).
* AMT-S and RAFT: VBench's vendored ``third_party`` code, imported lazily from an installed ``vbench``
  package without running ``vbench/__init__`` (which needs torchvision), see :func:`vbench_third_party`.

Every loader has a ``random_init`` twin: the same architecture class at tiny widths, seeded, for smoke
runs and tests (never for numbers).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class MissingExtraError(ImportError):
    """An optional package a dimension needs is not installed."""


# ----------------------------------------------------------------------------------------------
# Tiny random-init configurations (smoke runs and tests)
# ----------------------------------------------------------------------------------------------
TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TINY_CLIP = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TINY_MUSIQ = {"hidden_size": 32, "mlp_dim": 64, "num_heads": 2, "num_layers": 2, "stem_channels": 32}


def _build_seeded(fn, seed: int):
    """Build under a fixed global seed without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


# ----------------------------------------------------------------------------------------------
# DINO ViT-B/16
# ----------------------------------------------------------------------------------------------
def dino_interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """DINO's position-embedding resize: bicubic with ``scale_factor = (H//16 + 0.1) / 14`` per axis."""
    num_patches = embeddings.shape[1] - 1
    pos = self.position_embeddings
    n = pos.shape[1] - 1
    if num_patches == n and height == width:
        return pos
    side = int(math.sqrt(n))
    dim = pos.shape[-1]
    gh, gw = height // self.patch_size, width // self.patch_size
    grid = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((gh + 0.1) / side, (gw + 0.1) / side), mode="bicubic")
    if grid.shape[-2:] != (gh, gw):
        raise RuntimeError(f"DINO position interpolation produced {tuple(grid.shape[-2:])}, expected {(gh, gw)}")
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


class DinoEncoder(nn.Module):
    """``forward(pixels (B, 3, H, W) normalised)`` → CLS features ``(B, hidden)`` after the final LayerNorm."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit
        self.vit.embeddings.interpolate_pos_encoding = types.MethodType(dino_interpolate_pos_encoding,
                                                                       self.vit.embeddings)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 0]


def load_dino(path: Path | None, random_init: bool = False, seed: int = 0) -> DinoEncoder:
    from transformers import ViTConfig, ViTModel

    if random_init:
        cfg = ViTConfig(**TINY_VIT, patch_size=16, image_size=224, layer_norm_eps=1e-6)
        cfg._attn_implementation = "eager"
        vit = _build_seeded(lambda: ViTModel(cfg, add_pooling_layer=False), seed)
    elif Path(path).is_file():  # VBench's torch-hub checkpoint
        from .convert import load_dino_file

        vit = load_dino_file(path, attn_implementation="eager")
    else:
        vit = ViTModel.from_pretrained(str(path), add_pooling_layer=False, layer_norm_eps=1e-6,
                                       attn_implementation="eager")
    return DinoEncoder(vit).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# CLIP image towers
# ----------------------------------------------------------------------------------------------
class ClipImageEncoder(nn.Module):
    """``forward(pixels)`` → projected image embeddings (``encode_image`` of OpenAI CLIP)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels.to(self.dtype)).image_embeds


def load_clip(path: Path | None, random_init: bool = False, seed: int = 0, patch_size: int = 32,
              projection_dim: int = 512) -> ClipImageEncoder:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if random_init:
        cfg = CLIPVisionConfig(**TINY_CLIP, patch_size=patch_size, image_size=224, projection_dim=projection_dim,
                               hidden_act="quick_gelu", layer_norm_eps=1e-5)
        model = _build_seeded(lambda: CLIPVisionModelWithProjection(cfg), seed)
    elif Path(path).is_file():  # OpenAI's ViT-*.pt as cached by the clip package / VBench
        from .convert import load_clip_file

        model = load_clip_file(path)
    else:
        model = CLIPVisionModelWithProjection.from_pretrained(str(path))
    return ClipImageEncoder(model).eval().requires_grad_(False)


def load_aesthetic_head(path: Path | None, in_features: int = 768, random_init: bool = False,
                        seed: int = 0) -> nn.Linear:
    """LAION's ``sa_0_4_vit_l_14_linear.pth``: ``Linear(768, 1)`` on L2-normalised CLIP ViT-L/14 embeddings."""
    head = _build_seeded(lambda: nn.Linear(in_features, 1), seed)
    if not random_init:
        head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return head.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# MUSIQ
# ----------------------------------------------------------------------------------------------
def load_musiq_model(path: Path | None, random_init: bool = False, seed: int = 0) -> nn.Module:
    from .musiq import MUSIQ, load_musiq_state

    if random_init:
        return _build_seeded(lambda: MUSIQ(**TINY_MUSIQ), seed).eval().requires_grad_(False)
    return load_musiq_state(str(path), MUSIQ()).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# AMT-S and RAFT from VBench's vendored code (optional extra)
# ----------------------------------------------------------------------------------------------
VBENCH_EXTRA_HINT = (
    "install VBench's vendored networks without its dependencies (they would replace torch and "
    "transformers): pip install vbench==0.1.5 --no-deps && pip install omegaconf scipy"
)


def vbench_third_party(subpackage: str) -> types.ModuleType:
    """Import ``vbench.third_party.<subpackage>`` from an installed vbench without running ``vbench/__init__``.

    ``vbench/__init__`` imports torchvision and decord; the vendored AMT and RAFT code needs neither, so
    a path-only package object stands in for ``vbench`` (only if vbench is not imported already).
    """
    if "vbench" not in sys.modules:
        spec = importlib.util.find_spec("vbench")
        if spec is None or not spec.submodule_search_locations:
            raise MissingExtraError(f"the 'vbench' package is not installed; {VBENCH_EXTRA_HINT}")
        pkg = types.ModuleType("vbench")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__file__ = None
        sys.modules["vbench"] = pkg
    try:
        return importlib.import_module(f"vbench.third_party.{subpackage}")
    except ImportError as err:
        raise MissingExtraError(f"cannot import vbench.third_party.{subpackage} ({err}); {VBENCH_EXTRA_HINT}") from err


def load_amt(path: Path | None, random_init: bool = False, seed: int = 0) -> nn.Module:
    """AMT-S (``corr_radius=3, corr_lvls=4, num_flows=3``), weights from ``ckpt['state_dict']``."""
    module = vbench_third_party("amt.networks.AMT-S")
    model = _build_seeded(lambda: module.Model(corr_radius=3, corr_lvls=4, num_flows=3), seed)
    if not random_init:
        # The AMT release pickles more than tensors (VBench loads it with weights_only=False, as here).
        from .weights import torch_load

        ckpt = torch_load(path, allow_pickle=True)
        model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval().requires_grad_(False)


def load_raft(path: Path | None, random_init: bool = False, seed: int = 0) -> nn.Module:
    """RAFT large (``small=False``, no mixed precision, no alternate correlation), ``module.`` prefix stripped."""
    module = vbench_third_party("RAFT.core.raft")
    args = argparse.Namespace(model=str(path) if path else None, small=False, mixed_precision=False,
                              alternate_corr=False)
    model = _build_seeded(lambda: module.RAFT(args), seed)
    if not random_init:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict({k.replace("module.", ""): v for k, v in state.items()}, strict=True)
    return model.eval().requires_grad_(False)


