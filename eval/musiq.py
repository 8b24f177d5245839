"""MUSIQ (Ke et al., ICCV 2021), the multi-scale image quality transformer VBench's imaging_quality uses.

A torch implementation written from the paper's architecture description (as pyiqa builds it) whose
parameter names and shapes equal pyiqa's ``MUSIQ`` arch, so pyiqa's released checkpoints (VBench uses
``musiq_spaq_ckpt-358bb6af.pth``) load with ``strict=True`` and no pyiqa/torchvision import is needed.

Pipeline for an image ``x`` in [0, 1]: ``(x - 0.5) * 2`` → tokens from three scales (long side resized
to 224 and 384 with bicubic interpolation, plus the native image), 32×32 non-overlapping patches with
TF "SAME" zero padding; 224/384 token lists padded with masked zeros (or cut) to ``ceil(L/32)²`` → each
patch through a weight-standardised ResNet stem + one bottleneck → Linear to the hidden size → hashed
10×10 spatial embedding + scale embedding + CLS → 14 pre-LN transformer blocks whose attention
ignores padded tokens → LayerNorm → linear head on CLS (MOS; SPAQ is on a ~0-100 scale).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero padding of TensorFlow's ``SAME`` mode (the smaller half on the top/left)."""
    h, w = x.shape[-2:]
    pad_h = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
    pad_w = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


class StdConv(nn.Conv2d):
    """Convolution with weight standardisation (per output channel: minus mean, over unbiased std + 1e-5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(tf_same_pad(x, self.kernel_size[0], self.stride[0]), w, self.bias, self.stride)


class Bottleneck(nn.Module):
    """ResNet-v1.5 bottleneck with GroupNorm(32, eps 1e-4) and a projection shortcut."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.conv1 = StdConv(channels, channels, 1, 1, bias=False)
        self.gn1 = nn.GroupNorm(32, channels, eps=1e-4)
        self.conv2 = StdConv(channels, channels, 3, 1, bias=False)
        self.gn2 = nn.GroupNorm(32, channels, eps=1e-4)
        self.conv3 = StdConv(channels, out_channels, 1, 1, bias=False)
        self.gn3 = nn.GroupNorm(32, out_channels, eps=1e-4)
        self.conv_proj = StdConv(channels, out_channels, 1, 1, bias=False)
        self.gn_proj = nn.GroupNorm(32, out_channels, eps=1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.gn_proj(self.conv_proj(x))
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        return F.relu(self.gn3(self.conv3(y)) + shortcut)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

        # Padded tokens are excluded as keys (the reference fills their logits with -1000, whose softmax
        # weight underflows to exactly 0); valid tokens' outputs are therefore identical.
        y = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                           attn_mask=key_mask[:, None, None, :])
        return self.out(y.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attention = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


class _HashPositionEmbedding(nn.Module):
    def __init__(self, grid: int, dim: int):
        super().__init__()
        self.position_emb = nn.Parameter(torch.zeros(1, grid * grid, dim))


class _ScaleEmbedding(nn.Module):
    def __init__(self, num_scales: int, dim: int):
        super().__init__()
        self.scale_emb = nn.Parameter(torch.zeros(num_scales, dim))


class TransformerEncoder(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, heads: int, layers: int, num_scales: int, grid: int):
        super().__init__()
        self.posembed_input = _HashPositionEmbedding(grid, dim)
        self.scaleembed_input = _ScaleEmbedding(num_scales, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.transformer = nn.ModuleDict(
            {f"encoderblock_{i}": EncoderBlock(dim, mlp_dim, heads) for i in range(layers)}
        )

    def forward(self, x: torch.Tensor, spatial: torch.Tensor, scale: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.posembed_input.position_emb[0][spatial] + self.scaleembed_input.scale_emb[scale]
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        key_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        for block in self.transformer.values():
            x = block(x, key_mask)
        return self.encoder_norm(x)


def hashed_positions(grid: int, count_h: int, count_w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Hashed spatial ids ``row_hash * grid + col_hash`` of a ``count_h × count_w`` patch grid, row-major.

    Each axis maps ``grid`` ids onto ``count`` patches with nearest-neighbour interpolation.
    """
    ids = torch.arange(grid, dtype=torch.float32, device=device).view(1, 1, grid)
    rows = F.interpolate(ids, size=count_h, mode="nearest").view(count_h, 1)
    cols = F.interpolate(ids, size=count_w, mode="nearest").view(1, count_w)
    return (rows * grid + cols).reshape(-1).long()


def patch_tokens(
    x: torch.Tensor, patch: int, grid: int, scale_id: int, max_len: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-overlapping ``patch``² patches of ``x`` (SAME-padded) with spatial ids, scale ids and a mask.

    Returns ``(patches (B, L, 3·p·p) channel-major, spatial (B, L), scale (B, L), mask (B, L) bool)``; with
    ``max_len`` the list is zero-padded (mask False, ids 0) or cut to exactly ``max_len`` tokens.
    """
    b, _, h, w = x.shape
    patches = F.unfold(tf_same_pad(x, patch, patch), kernel_size=patch, stride=patch).transpose(1, 2)
    n = patches.shape[1]
    spatial = hashed_positions(grid, math.ceil(h / patch), math.ceil(w / patch), x.device).expand(b, n)
    scale = torch.full((b, n), scale_id, dtype=torch.long, device=x.device)
    mask = torch.ones((b, n), dtype=torch.bool, device=x.device)
    if max_len is not None and max_len != n:
        keep = min(n, max_len)
        pad = max_len - keep

        def fit(t: torch.Tensor) -> torch.Tensor:
            t = t[:, :keep]
            return torch.cat([t, t.new_zeros((b, pad, *t.shape[2:]))], dim=1) if pad else t

        patches, spatial, scale, mask = fit(patches), fit(spatial), fit(scale), fit(mask)
    return patches, spatial, scale, mask


def multiscale_tokens(
    x: torch.Tensor, patch: int = 32, grid: int = 10, longer_sides: Sequence[int] = (224, 384)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MUSIQ's multi-scale input: aspect-preserving resizes of the long side, then the native image."""
    h, w = x.shape[-2:]
    parts = []
    for scale_id, side in enumerate(sorted(longer_sides)):
        ratio = side / max(h, w)
        resized = F.interpolate(x, size=(round(h * ratio), round(w * ratio)), mode="bicubic", align_corners=False)
        parts.append(patch_tokens(resized, patch, grid, scale_id, math.ceil(side / patch) ** 2))
    parts.append(patch_tokens(x, patch, grid, len(longer_sides), None))
    return tuple(torch.cat(items, dim=1) for items in zip(*parts))  # type: ignore[return-value]


class MUSIQ(nn.Module):
    """MUSIQ with pyiqa-compatible parameter names. Defaults = the released checkpoints (27.1 M parameters).

    ``forward(x)`` takes images ``(B, 3, H, W)`` in [0, 1] and returns the MOS ``(B,)`` (``num_classes=1``;
    with more classes, the expected score of the softmax distribution over 1..C, as pyiqa does).
    """

    def __init__(
        self,
        hidden_size: int = 384,
        mlp_dim: int = 1152,
        num_heads: int = 6,
        num_layers: int = 14,
        num_classes: int = 1,
        patch_size: int = 32,
        grid: int = 10,
        longer_sides: Sequence[int] = (224, 384),
        stem_channels: int = 64,
    ):
        super().__init__()
        if patch_size % 4:
            raise ValueError(f"patch_size must be a multiple of 4, got {patch_size}")
        self.patch_size = patch_size
        self.grid = grid
        self.longer_sides = tuple(longer_sides)
        self.num_classes = num_classes
        self.conv_root = StdConv(3, stem_channels, 7, 2, bias=False)
        self.gn_root = nn.GroupNorm(32, stem_channels, eps=1e-6)
        self.block1 = Bottleneck(stem_channels, stem_channels * 4)
        self.embedding = nn.Linear(stem_channels * 4 * (patch_size // 4) ** 2, hidden_size)
        self.transformer_encoder = TransformerEncoder(hidden_size, mlp_dim, num_heads, num_layers,
                                                      len(self.longer_sides) + 1, grid)
        self.head = nn.Sequential(nn.Linear(hidden_size, num_classes), nn.Softmax(dim=-1)) if num_classes > 1 \
            else nn.Linear(hidden_size, num_classes)

    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, L, 3·p·p)`` → ``(B, L, hidden)``: ResNet stem per patch, flattened channels-last."""
        b, n, _ = patches.shape
        y = patches.reshape(b * n, 3, self.patch_size, self.patch_size)
        y = F.relu(self.gn_root(self.conv_root(y)))
        y = F.max_pool2d(tf_same_pad(y, 3, 2), kernel_size=3, stride=2)
        y = self.block1(y)
        return self.embedding(y.permute(0, 2, 3, 1).reshape(b, n, -1))

    def forward_tokens(self, patches: torch.Tensor, spatial: torch.Tensor, scale: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
        x = self.transformer_encoder(self.embed_patches(patches), spatial, scale, mask)
        q = self.head(x[:, 0])
        if self.num_classes == 1:
            return q[:, 0]
        return (q * torch.arange(1, self.num_classes + 1, dtype=q.dtype, device=q.device)).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = multiscale_tokens((x - 0.5) * 2, self.patch_size, self.grid, self.longer_sides)
        return self.forward_tokens(*tokens)


def load_musiq_state(path: str, model: MUSIQ) -> MUSIQ:
    """Load a pyiqa MUSIQ checkpoint (plain state dict, optional ``params`` / ``module.`` wrapping) strictly."""
    from .weights import EVAL_WEIGHTS, check_sha256, is_vouched, torch_load

    published = is_vouched(EVAL_WEIGHTS["musiq_spaq"], Path(path))
    if published:  # a file vouched for by its published digest may be unpickled in full
        check_sha256(EVAL_WEIGHTS["musiq_spaq"], Path(path))
    state = torch_load(path, allow_pickle=published)
    if isinstance(state, dict) and "params" in state and isinstance(state["params"], dict):
        state = state["params"]
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model
