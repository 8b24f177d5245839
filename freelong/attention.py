"""Temporal attention: the one interface through which every method reaches every backbone.

A backbone's temporal attention layer (:class:`TemporalAttention`) projects its input to
``q, k, v`` shaped ``(B*H*W, heads, T, d)``, applies its own positional encoding (LaVie rotates
q/k with rotary embeddings and adds a relative position bias; VideoCrafter2 has none), and hands
them to a *processor*: ``processor(q, k, v, bias=..., ctx=...) -> (B*H*W, heads, T, d)``.
The default processor is plain global attention. Methods (FreeLong, sliding window, FreeNoise)
swap processors, so backbones never import methods and methods never import backbones.

``bias`` is a callable ``bias(q_idx, k_idx) -> (heads, len(q_idx), len(k_idx))`` so that windowed
and block-wise processors can ask for just the part of the relative bias they need instead of a
``T x T`` matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn


class PositionBias(Protocol):
    """Additive attention-logit bias as a function of query and key frame indices."""

    def __call__(self, q_idx: torch.Tensor, k_idx: torch.Tensor) -> torch.Tensor: ...


@dataclass
class CallContext:
    """Per-call information the pipeline threads through the UNet (like diffusers' attention kwargs)."""

    step_index: int | None = None
    num_steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TemporalAttentionContext:
    """What a processor knows about the call it serves.

    ``frame_shape=(T, H, W)`` lets processors view the ``B*H*W`` rows as a video (FreeLong's 3D FFT);
    ``level`` is the UNet resolution level (0 = highest resolution); ``name`` is the layer's module path.
    """

    frame_shape: tuple[int, int, int]
    batch: int
    level: int
    name: str
    step_index: int | None = None
    num_steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Softmax attention ``softmax(q k^T * scale + bias + log(mask)) v`` through SDPA.

    ``bias`` broadcasts to ``(..., Lq, Lk)``; ``mask`` is boolean, True where attending is allowed.
    """
    if bias is None and mask is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    if bias is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    attn_bias = bias.to(q.dtype)
    if mask is not None:
        attn_bias = attn_bias.masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=scale)


def _frame_index(n: int, device: torch.device | None = None, start: int = 0) -> torch.Tensor:
    return torch.arange(start, start + n, device=device)


def full_bias(bias: PositionBias | None, num_frames: int, device: torch.device) -> torch.Tensor | None:
    """The ``(heads, T, T)`` bias for global attention, or None."""
    if bias is None:
        return None
    idx = _frame_index(num_frames, device)
    return bias(idx, idx)


def local_window_bounds(num_frames: int, window: int, layout: str = "adjusted") -> tuple[torch.Tensor, torch.Tensor]:
    """Per query frame ``i`` the half-open key range ``[start_i, end_i)`` of its local window.

    ``adjusted`` (the official LaVie FreeLong code): ``[i - w//2, i + w//2 + 1)`` clipped, and windows
    at the edges shifted so they still hold exactly ``window`` frames.
    ``centered`` (the official VideoCrafter2 FreeLong code): ``|i - j| <= w//2``, truncated at the edges.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if layout not in ("adjusted", "centered"):
        raise ValueError(f"layout must be 'adjusted' or 'centered', got {layout!r}")
    half = window // 2
    i = torch.arange(num_frames)
    start = (i - half).clamp(min=0)
    end = (i + half + 1).clamp(max=num_frames)
    if layout == "adjusted":
        short = (end - start) < window
        at_start = short & (start == 0)
        at_end = short & (start > 0)
        end = torch.where(at_start, torch.full_like(end, min(num_frames, window)), end)
        start = torch.where(at_end, (end - window).clamp(min=0), start)
    return start, end


def local_window_mask(num_frames: int, window: int, layout: str = "adjusted") -> torch.Tensor:
    """Boolean ``(T, T)`` mask, True where query frame ``i`` may attend key frame ``j``."""
    start, end = local_window_bounds(num_frames, window, layout)
    j = torch.arange(num_frames)
    return (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])


def sliding_windows(num_frames: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Windows ``[s, s + window)`` every ``stride`` frames, plus a last one ending at ``T`` if needed.

    Unlike the FreeNoise reference code, the trailing frames are always covered: when
    ``(T - window) % stride != 0`` a final window ``[T - window, T)`` is added.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    if window >= num_frames:
        return [(0, num_frames)]
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return [(s, s + window) for s in starts]


class TemporalAttnProcessor:
    """Base class: plain global attention over all frames (the backbone's own behaviour)."""

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        bias: PositionBias | None,
        ctx: TemporalAttentionContext,
    ) -> torch.Tensor:
        return global_attention(q, k, v, bias)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


GlobalAttnProcessor = TemporalAttnProcessor


def global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: PositionBias | None) -> torch.Tensor:
    return attention(q, k, v, bias=full_bias(bias, q.shape[-2], q.device))


def local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: PositionBias | None,
    window: int,
    layout: str = "adjusted",
) -> torch.Tensor:
    """Attention restricted to each frame's local window (see :func:`local_window_bounds`)."""
    num_frames = q.shape[-2]
    mask = local_window_mask(num_frames, window, layout).to(q.device)
    return attention(q, k, v, bias=full_bias(bias, num_frames, q.device), mask=mask)


class TemporalAttention(nn.Module):
    """A temporal self-attention layer whose attention maths is delegated to a processor.

    Parameters are named like diffusers' ``Attention`` (``to_q``, ``to_k``, ``to_v``, ``to_out.0``),
    which is also how LaVie and VideoCrafter2 checkpoints name them. Subclasses add positional
    encodings by overriding :meth:`rotate` and :meth:`position_bias`.
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int, out_bias: bool = True, qkv_bias: bool = False):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.to_q = nn.Linear(query_dim, inner, bias=qkv_bias)
        self.to_k = nn.Linear(query_dim, inner, bias=qkv_bias)
        self.to_v = nn.Linear(query_dim, inner, bias=qkv_bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(0.0)])
        self.processor: TemporalAttnProcessor = TemporalAttnProcessor()
        # Set by the backbone when the UNet is built.
        self.level = 0
        self.layer_name = ""

    def set_processor(self, processor: TemporalAttnProcessor) -> None:
        self.processor = processor

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary-style positional encoding of q and k along the frame axis (identity by default)."""
        return q, k

    @property
    def position_bias(self) -> PositionBias | None:
        return None

    def forward(
        self,
        x: torch.Tensor,
        frame_shape: tuple[int, int, int],
        call: CallContext | None = None,
    ) -> torch.Tensor:
        """``x``: ``(B*H*W, T, C)`` → ``(B*H*W, T, C)`` (before the block's residual)."""
        rows, num_frames, _ = x.shape
        q = self.to_q(x).view(rows, num_frames, self.heads, self.dim_head).transpose(1, 2)
        k = self.to_k(x).view(rows, num_frames, self.heads, self.dim_head).transpose(1, 2)
        v = self.to_v(x).view(rows, num_frames, self.heads, self.dim_head).transpose(1, 2)
        q, k = self.rotate(q, k)
        t, h, w = frame_shape
        call = call or CallContext()
        ctx = TemporalAttentionContext(
            frame_shape=(t, h, w),
            batch=rows // (h * w),
            level=self.level,
            name=self.layer_name,
            step_index=call.step_index,
            num_steps=call.num_steps,
            extra=call.extra,
        )
        out = self.processor(q, k, v, bias=self.position_bias, ctx=ctx)
        out = out.transpose(1, 2).reshape(rows, num_frames, self.heads * self.dim_head)
        return self.to_out[1](self.to_out[0](out))


def temporal_attention_layers(model: nn.Module) -> dict[str, TemporalAttention]:
    """All temporal attention layers of a model, keyed by module path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, TemporalAttention)}


def name_temporal_layers(model: nn.Module, level_of: dict[str, int] | None = None) -> None:
    """Record each layer's module path (and optionally its resolution level) on the layer."""
    for name, layer in temporal_attention_layers(model).items():
        layer.layer_name = name
        if level_of is not None:
            layer.level = level_of[name]


__all__ = [
    "CallContext",
    "GlobalAttnProcessor",
    "PositionBias",
    "TemporalAttention",
    "TemporalAttentionContext",
    "TemporalAttnProcessor",
    "attention",
    "full_bias",
    "global_attention",
    "local_attention",
    "local_window_bounds",
    "local_window_mask",
    "name_temporal_layers",
    "sliding_windows",
    "temporal_attention_layers",
]
