"""Building blocks of VideoCrafter2's 3D UNet (lvdm ``openaimodel3d`` + ``attention``), re-implemented.

Layout: like lvdm, activations live as frames ``(B*T, C, H, W)`` (frame-major within each sample)
and only the temporal parts (temporal convolutions and temporal transformers) see the video as a
whole. Every spatial op goes through :func:`per_frame`, the one place that could split the frames
into chunks to bound memory.

Normalisation, exactly as lvdm does it (reference_code.md §2.2):

* ``ResBlock.in_layers.0`` / ``out_layers.0`` and the UNet's ``out.0`` are lvdm's ``GroupNorm32``:
  32 groups, eps 1e-5, computed **in fp32** and cast back, applied **per frame**.
* ``SpatialTransformer.norm``: 32 groups, eps 1e-6, per frame, in the activation dtype.
* ``TemporalTransformer.norm``: 32 groups, eps 1e-6, on the 5-D video, so the statistics pool
  over **all frames** of a sample (also in long-video runs: 128 frames share one mean/variance).
* ``TemporalConvBlock`` norms: 32 groups, eps 1e-5, on the 5-D video (all frames pooled).

Parameter names follow the official checkpoint (including lvdm's ``temopral_conv`` typo).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from ...attention.context import CallContext
from ...attention.processor import TemporalAttention
from ...chunking import from_frames, to_frames

GROUPS = 32  # lvdm hard-codes 32 groups in every GroupNorm


def per_frame(fn: Callable[..., torch.Tensor], x: torch.Tensor, *args: torch.Tensor,
              chunk_size: int | None = None) -> torch.Tensor:
    """Apply a frame-wise op to ``(B*T, ...)`` tensors, optionally ``chunk_size`` frames at a time.

    ``args`` are split along their first axis like ``x`` (per-frame embeddings and text contexts).
    """
    n = x.shape[0]
    if chunk_size is None or chunk_size >= n:
        return fn(x, *args)
    outs = [fn(x[s : s + chunk_size], *(a[s : s + chunk_size] for a in args)) for s in range(0, n, chunk_size)]
    return torch.cat(outs)


class GroupNorm32(nn.GroupNorm):
    """lvdm's ``GroupNorm32``: group norm computed in float32 and cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# Convolutional blocks
# ----------------------------------------------------------------------------------------------
class TemporalConvBlock(nn.Module):
    """Four (GroupNorm, SiLU, [Dropout], Conv3d k=(3,1,1)) stages plus an identity residual, on ``(B, C, T, H, W)``.

    The only source of frame-order information in VideoCrafter2 (its attention has no positions).
    """

    def __init__(self, channels: int, dropout: float = 0.1):
        super().__init__()

        def stage(with_dropout: bool) -> nn.Sequential:
            layers: list[nn.Module] = [nn.GroupNorm(GROUPS, channels), nn.SiLU()]
            if with_dropout:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))
            return nn.Sequential(*layers)

        self.conv1 = stage(False)
        self.conv2 = stage(True)
        self.conv3 = stage(True)
        self.conv4 = stage(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


class ResBlock(nn.Module):
    """lvdm ``ResBlock`` (no scale-shift norm, no up/down) followed by its temporal convolution."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None, dropout: float = 0.0,
                 temporal_conv: bool = True):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(
            GroupNorm32(GROUPS, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(GROUPS, out_channels), nn.SiLU(), nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        if temporal_conv:
            self.temopral_conv = TemporalConvBlock(out_channels)  # sic: the checkpoint's key name
        else:
            self.temopral_conv = None

    def spatial(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, batch: int, chunk_size: int | None = None) -> torch.Tensor:
        h = per_frame(self.spatial, x, emb, chunk_size=chunk_size)
        if self.temopral_conv is not None:
            h = to_frames(self.temopral_conv(from_frames(h, batch).contiguous()))
        return h


class Downsample(nn.Module):
    """3x3 convolution with stride 2 (key ``op``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        return per_frame(self.op, x, chunk_size=chunk_size)


class Upsample(nn.Module):
    """Nearest x2 (or to the skip connection's size, for odd latent sizes), then a 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def _up(self, x: torch.Tensor, size: Sequence[int] | None) -> torch.Tensor:
        target = tuple(size) if size is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        dtype = x.dtype
        if dtype == torch.bfloat16:  # nearest upsampling lacks a bf16 kernel on some builds
            x = x.float()
        return self.conv(F.interpolate(x, size=target, mode="nearest").to(dtype))

    def forward(self, x: torch.Tensor, size: Sequence[int] | None = None,
                chunk_size: int | None = None) -> torch.Tensor:
        return per_frame(lambda f: self._up(f, size), x, chunk_size=chunk_size)


# ----------------------------------------------------------------------------------------------
# Transformers
# ----------------------------------------------------------------------------------------------
class SpatialBlock(nn.Module):
    """Self-attention over the pixels of a frame, cross-attention to the text, GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=dim_head, bias=False)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.attn2 = Attention(query_dim=dim, cross_attention_dim=context_dim, heads=heads, dim_head=dim_head,
                               bias=False)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), encoder_hidden_states=context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """GroupNorm (per frame) → proj_in → one :class:`SpatialBlock` → proj_out → residual."""

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int, depth: int = 1,
                 use_linear: bool = True):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(GROUPS, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner) if use_linear else nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [SpatialBlock(inner, heads, dim_head, context_dim) for _ in range(depth)]
        )
        self.proj_out = nn.Linear(inner, channels) if use_linear else nn.Conv2d(inner, channels, 1)

    def frames(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.norm(x)
        if not self.use_linear:
            y = self.proj_in(y)
        y = y.permute(0, 2, 3, 1).reshape(n, h * w, -1)
        if self.use_linear:
            y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y, context)
        if self.use_linear:
            y = self.proj_out(y)
        y = y.reshape(n, h, w, -1).permute(0, 3, 1, 2)
        if not self.use_linear:
            y = self.proj_out(y)
        return y + x

    def forward(self, x: torch.Tensor, context: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        return per_frame(self.frames, x, context, chunk_size=chunk_size)


class TemporalBlock(nn.Module):
    """Two temporal self-attentions (``attn1``, ``attn2``; no positional encoding) and a GEGLU feed-forward.

    Both attentions are :class:`~freelong.attention.TemporalAttention` layers, so every method
    reaches them through their processor.
    """

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.attn1 = TemporalAttention(dim, heads=heads, dim_head=dim_head)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.attn2 = TemporalAttention(dim, heads=heads, dim_head=dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, frame_shape: tuple[int, int, int], call: CallContext | None) -> torch.Tensor:
        # x: (B*H*W, T, C)
        x = self.attn1(self.norm1(x), frame_shape, call) + x
        x = self.attn2(self.norm2(x), frame_shape, call) + x
        return self.ff(self.norm3(x)) + x


class TemporalTransformer(nn.Module):
    """GroupNorm over the whole video → proj_in → :class:`TemporalBlock` over frames → proj_out → residual.

    ``use_linear=False`` (``init_attn``) uses kernel-1 ``Conv1d`` projections as lvdm does; they are
    applied as the equivalent linear maps.
    """

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int = 1, use_linear: bool = True):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(GROUPS, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner) if use_linear else nn.Conv1d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList([TemporalBlock(inner, heads, dim_head) for _ in range(depth)])
        self.proj_out = nn.Linear(inner, channels) if use_linear else nn.Conv1d(inner, channels, 1)

    @staticmethod
    def _project(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, nn.Conv1d):
            return F.linear(x, layer.weight[:, :, 0], layer.bias)
        return layer(x)

    def forward(self, x: torch.Tensor, batch: int, call: CallContext | None = None) -> torch.Tensor:
        bt, c, h, w = x.shape
        t = bt // batch
        video = self.norm(from_frames(x, batch).contiguous())  # (B, C, T, H, W): statistics over all frames
        y = video.permute(0, 3, 4, 2, 1).reshape(batch * h * w, t, c)  # rows ordered (b, h, w)
        y = self._project(self.proj_in, y)
        for block in self.transformer_blocks:
            y = block(y, (t, h, w), call)
        y = self._project(self.proj_out, y)
        y = y.reshape(batch, h, w, t, c).permute(0, 3, 4, 1, 2).reshape(bt, c, h, w)
        return y + x


class TimestepSequential(nn.Sequential):
    """lvdm's ``TimestepEmbedSequential``: hands each layer the inputs it needs."""

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor,
        batch: int,
        call: CallContext | None = None,
        size: Sequence[int] | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, batch, chunk_size)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, chunk_size)
            elif isinstance(layer, TemporalTransformer):
                x = layer(x, batch, call)
            elif isinstance(layer, Upsample):
                x = layer(x, size, chunk_size)
            elif isinstance(layer, Downsample):
                x = layer(x, chunk_size)
            else:  # conv_in
                x = per_frame(layer, x, chunk_size=chunk_size)
        return x


__all__ = [
    "Downsample",
    "GroupNorm32",
    "ResBlock",
    "SpatialBlock",
    "SpatialTransformer",
    "TemporalBlock",
    "TemporalConvBlock",
    "TemporalTransformer",
    "TimestepSequential",
    "Upsample",
    "per_frame",
]
