"""FreeNoise's window fusion around whole motion-module blocks (``method.fusion=block``).

diffusers' ``enable_free_noise`` (``FreeNoiseTransformerBlock``) fuses once per motion-module
``BasicTransformerBlock``: for each window ``[s, s + L)`` it runs norm1 → window-local positions →
attn1 → residual → norm2 → positions → attn2 → residual on the window's frames, accumulates the
results with the window weights, divides by the accumulated weights, and then runs the block's
feed-forward once over all frames. The paper (Eq. 8-9) and :class:`~.window_fusion.WindowFusionProcessor`
fuse after *each* attention instead. This module offers diffusers' variant on backbones that list
their motion blocks (``unet.temporal_blocks()``: the diffusers UNets of :mod:`freelong.models.diffusers_unet`),
using the blocks' own modules and attention processors.

Windows are :func:`freelong.attention.sliding_windows` (a final window ends at ``T``; every frame
is averaged over the windows that hold it). Where ``(T - L) % stride == 0`` these are diffusers'
windows exactly; elsewhere diffusers adds the same last window but accumulates its trailing frames
with one weight for the values' whole span (see docs/models.md), so the two differ on those frames.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from freelong.attention.windows import sliding_windows

from .window_fusion import window_weights

BLOCK_FAMILIES = ("animatediff", "modelscope")  # model families whose UNets list their motion blocks


def fused_block_forward(block: nn.Module, window: int, stride: int, weighting: str):
    """A ``forward`` for one diffusers ``BasicTransformerBlock`` that fuses windows around attn1 + attn2."""
    from diffusers.models.attention import _chunked_feed_forward

    if getattr(block, "norm_type", "layer_norm") != "layer_norm" or getattr(block, "only_cross_attention", False):
        raise ValueError(f"method.fusion=block supports layer-norm self-attention blocks only; "
                         f"{type(block).__name__} is not one")
    weights = window_weights(window, weighting)
    plain = type(block).forward.__get__(block)

    def forward(hidden_states: torch.Tensor, attention_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, timestep=None, cross_attention_kwargs: dict[str, Any] | None = None,
                class_labels=None, added_cond_kwargs=None) -> torch.Tensor:
        num_frames = hidden_states.shape[1]
        if window >= num_frames:
            return plain(hidden_states, attention_mask=attention_mask, encoder_hidden_states=encoder_hidden_states,
                         encoder_attention_mask=encoder_attention_mask, timestep=timestep,
                         cross_attention_kwargs=cross_attention_kwargs, class_labels=class_labels,
                         added_cond_kwargs=added_cond_kwargs)
        kwargs = dict(cross_attention_kwargs or {})
        w = weights.to(device=hidden_states.device, dtype=hidden_states.dtype)[None, :, None]
        acc = torch.zeros_like(hidden_states)
        count = torch.zeros((1, num_frames, 1), device=hidden_states.device, dtype=hidden_states.dtype)
        for s, e in sliding_windows(num_frames, window, stride):
            h = hidden_states[:, s:e]
            n = block.norm1(h)
            if block.pos_embed is not None:
                n = block.pos_embed(n)  # window-local positions 0..L-1
            h = block.attn1(n, encoder_hidden_states=None, attention_mask=attention_mask, **kwargs) + h
            if block.attn2 is not None:
                n = block.norm2(h)
                if block.pos_embed is not None:
                    n = block.pos_embed(n)
                h = block.attn2(n, encoder_hidden_states=encoder_hidden_states,
                                attention_mask=encoder_attention_mask, **kwargs) + h
            acc[:, s:e] += h * w
            count[:, s:e] += w
        hidden_states = acc / count
        n = block.norm3(hidden_states)
        if block._chunk_size is not None:
            ff = _chunked_feed_forward(block.ff, n, block._chunk_dim, block._chunk_size)
        else:
            ff = block.ff(n)
        return ff + hidden_states

    return forward


__all__ = ["BLOCK_FAMILIES", "fused_block_forward"]
