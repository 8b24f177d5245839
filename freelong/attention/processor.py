"""The processor interface: the layer every backbone's temporal attention is, the base processor, layer discovery.

A backbone's temporal attention layer (:class:`TemporalAttention`) projects its input to ``q, k, v`` shaped
``(B*H*W, heads, T, d)``, applies its own positional encoding (LaVie rotates q/k with rotary embeddings and adds
a relative position bias; VideoCrafter2 has none), and hands them to a *processor*:
``processor(q, k, v, bias=..., ctx=...) -> (B*H*W, heads, T, d)``. The default processor is plain global
attention. Methods swap processors (diffusers' ``set_attn_processor`` idea), so backbones never import
methods and methods never import backbones. diffusers' own models reach the same processors through the
adapters in :mod:`freelong.models` (their ``temporal_layers()``).
"""

from __future__ import annotations

import torch
from torch import nn

from .context import CallContext, PositionBias, TemporalAttentionContext
from .kernels import global_attention
from .maps import global_attention_probs


class TemporalAttnProcessor:
    """Base class: plain global attention over all frames (the backbone's own behaviour)."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, bias: PositionBias | None,
                 ctx: TemporalAttentionContext) -> torch.Tensor:
        return global_attention(q, k, v, bias, ctx.positions)

    def attention_probs(
        self, q: torch.Tensor, k: torch.Tensor, bias: PositionBias | None, ctx: TemporalAttentionContext
    ) -> dict[str, torch.Tensor]:
        """The row-stochastic ``(rows, heads, T, T)`` matrices this processor applies to ``v``, by name.

        Global attention: ``{"attn": softmax(q kᵀ/√d + bias)}``, so ``attn @ v`` is the output. A
        subclass that changes ``__call__`` overrides this too (the attention-map analysis reads it);
        rows are independent, so callers may pass row chunks of ``q`` and ``k``.
        """
        return {"attn": global_attention_probs(q, k, bias, ctx.tokens_per_frame, ctx.positions)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


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
            frame_index=call.frame_index,
            timesteps=call.timesteps,
        )
        out = self.processor(q, k, v, bias=self.position_bias, ctx=ctx)
        out = out.transpose(1, 2).reshape(rows, num_frames, self.heads * self.dim_head)
        return self.to_out[1](self.to_out[0](out))


def temporal_attention_layers(model: nn.Module) -> dict[str, TemporalAttention]:
    """All temporal attention layers of a model, keyed by module path.

    A model that is not built from :class:`TemporalAttention` modules (diffusers' video UNets) lists
    its own through a ``temporal_layers()`` method: objects with ``processor``, ``set_processor``,
    ``level`` and ``layer_name`` like :class:`TemporalAttention`.
    """
    provider = getattr(model, "temporal_layers", None)
    if callable(provider):
        return dict(provider())
    return {name: m for name, m in model.named_modules() if isinstance(m, TemporalAttention)}


def name_temporal_layers(model: nn.Module, level_of: dict[str, int] | None = None) -> None:
    """Record each layer's module path (and optionally its resolution level) on the layer."""
    for name, layer in temporal_attention_layers(model).items():
        layer.layer_name = name
        if level_of is not None:
            layer.level = level_of[name]
