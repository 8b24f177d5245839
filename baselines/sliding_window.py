"""Sliding-window temporal attention (Gen-L-Video style) with independent noise."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from freelong.attention.context import PositionBias, TemporalAttentionContext
from freelong.attention.kernels import global_attention, local_attention
from freelong.attention.maps import global_attention_probs, local_attention_probs
from freelong.attention.processor import TemporalAttnProcessor
from freelong.attention.windows import check_window_stride
from freelong.methods import Method, register_method

from .window_fusion import WindowFusionProcessor

ATTENTION_MODES = ("fusion", "local")


class LocalWindowProcessor(TemporalAttnProcessor):
    """Each frame's tokens attend to the tokens of the ``window`` frames around it (FreeLong's local branch)."""

    def __init__(self, window: int = 16, layout: str = "adjusted"):
        self.window = window
        self.layout = layout

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, bias: PositionBias | None,
                 ctx: TemporalAttentionContext) -> torch.Tensor:
        if self.window >= ctx.num_frames(q):
            return global_attention(q, k, v, bias, ctx.positions)
        return local_attention(q, k, v, bias, self.window, self.layout, tokens_per_frame=ctx.tokens_per_frame,
                               positions=ctx.positions)

    def attention_probs(self, q: torch.Tensor, k: torch.Tensor, bias: PositionBias | None,
                        ctx: TemporalAttentionContext) -> dict[str, torch.Tensor]:
        """``{"attn": A}``: the softmax restricted to each frame's window (over tokens when ``S > 1``)."""
        s, pos = ctx.tokens_per_frame, ctx.positions
        if self.window >= ctx.num_frames(q):
            return {"attn": global_attention_probs(q, k, bias, s, pos)}
        return {"attn": local_attention_probs(q, k, bias, self.window, self.layout, s, pos)}

    def __repr__(self) -> str:
        return f"LocalWindowProcessor(window={self.window}, layout={self.layout})"


@register_method("sliding_window")
@dataclass
class SlidingWindow(Method):
    """Temporal attention in windows of frames; overlapping window outputs averaged, or one window per frame."""

    levels = ("attention",)

    window: int = 16
    """Attention window in frames (latent frames on a DiT)."""
    stride: int = 4
    """Frames between window starts, in [1, window] (`attention=fusion` only)."""
    attention: str = "fusion"
    """`fusion`: windows every `stride` frames, each frame averages the windows that contain it; `local`: every
    frame attends to its own edge-adjusted window of `window` frames (`stride` unused), O(T · window), the
    sliding-window baseline of the DiT long-video papers."""

    def validate(self) -> None:
        check_window_stride(self.window, self.stride)
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"method.attention must be one of {', '.join(ATTENTION_MODES)}, got {self.attention!r}")

    def processor(self) -> TemporalAttnProcessor:
        if self.attention == "local":
            return LocalWindowProcessor(self.window)
        return WindowFusionProcessor(self.window, self.stride, "flat")
