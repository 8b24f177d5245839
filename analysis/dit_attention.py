"""Frame-to-frame attention maps of a DiT's 3D self-attention (``ctx.tokens_per_frame = S > 1``).

A DiT layer attends over all ``T*S`` tokens. Its frame map is ``M[i, j]`` = the attention mass that
the tokens of query frame ``i`` put on the tokens of key frame ``j``, averaged over the ``S`` query
tokens (rows sum to 1, like the UNets' temporal maps). For a method the map is the row-stochastic
matrix it applies: global softmax; FreeLong's / sliding window's local branch = the softmax restricted
to the key frames of frame ``i``'s window; window fusion = the fusion-weighted mean of the windows'
softmaxes. Computed one query frame at a time (``heads x S x T*S`` logits), so memory is ``O(T*S*S)``,
never ``(T*S)^2``; meant for tiny models or a chosen layer/step subset of a real one.
"""

from __future__ import annotations

from typing import Any

import torch

from baselines.window_fusion import WindowFusionProcessor
from freelong.attention.context import TemporalAttentionContext
from freelong.attention.windows import local_window_bounds, sliding_windows
from freelong.methods.freelong import SpectralBlendProcessor


def _frame_rows(q: torch.Tensor, k: torch.Tensor, s: int, spans) -> torch.Tensor:
    """``(rows, heads, T, T)``: for each query frame ``i``, ``spans(i) = [(a, b, weight), ...]`` key-frame
    ranges, each a separate softmax over its keys; the row is their weighted mean, aggregated per key frame."""
    rows, heads, n, d = q.shape
    t = n // s
    out = q.new_zeros((rows, heads, t, t), dtype=torch.float32)
    scale = d**-0.5
    for i in range(t):
        qi = q[:, :, i * s : (i + 1) * s].float()
        total = 0.0
        for a, b, weight in spans(i):
            logits = torch.matmul(qi, k[:, :, a * s : b * s].float().transpose(-1, -2)) * scale
            p = torch.softmax(logits, dim=-1).view(rows, heads, s, b - a, s).sum(-1).mean(2)  # (rows, heads, b-a)
            out[:, :, i, a:b] += weight * p
            total += weight
        out[:, :, i] /= total
    return out


def dit_frame_probs(proc: Any, q: torch.Tensor, k: torch.Tensor, ctx: TemporalAttentionContext) -> dict[str, Any]:
    """The frame maps of one DiT call, per branch (``attn``; FreeLong: ``global``/``local``)."""
    s = ctx.tokens_per_frame
    t = q.shape[-2] // s

    def glob(i):
        return [(0, t, 1.0)]

    def local_of(window: int, layout: str = "adjusted"):
        start, end = local_window_bounds(t, window, layout)
        return lambda i: [(int(start[i]), int(end[i]), 1.0)]

    window = getattr(proc, "window", None)
    if window is None or window >= t:
        g = _frame_rows(q, k, s, glob)
        return {"global": g, "local": g} if isinstance(proc, SpectralBlendProcessor) else {"attn": g}
    if isinstance(proc, SpectralBlendProcessor):
        local = _frame_rows(q, k, s, local_of(window, proc.schedule.layout))
        return {"global": _frame_rows(q, k, s, glob), "local": local} if proc.schedule.blends(ctx) else {"local": local}
    if isinstance(proc, WindowFusionProcessor):
        weights = proc._weights.tolist()
        windows = sliding_windows(t, window, proc.stride)
        return {"attn": _frame_rows(q, k, s, lambda i: [(a, b, weights[i - a]) for a, b in windows if a <= i < b])}
    if hasattr(proc, "layout"):  # the sliding window's per-frame local attention
        return {"attn": _frame_rows(q, k, s, local_of(window, proc.layout))}
    return {"attn": _frame_rows(q, k, s, glob)}


def dit_layer_names(model: torch.nn.Module) -> list[str]:
    """``blocks.i.attn1`` of a Wan-style transformer (empty for other models)."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or not all(hasattr(b, "attn1") for b in blocks):
        return []
    return [f"blocks.{i}.attn1" for i in range(len(blocks))]


__all__ = ["dit_frame_probs", "dit_layer_names"]
