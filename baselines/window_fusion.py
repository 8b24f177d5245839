"""Window-based temporal attention fusion, shared by the sliding-window and FreeNoise baselines.

Temporal attention runs inside windows of ``window`` frames placed every ``stride`` frames (plus a
final window ending at the last frame, so every frame is covered), and each frame's output is the
weighted mean of the outputs of the windows that contain it. Spatial layers, temporal
convolutions and normalisation keep seeing the whole sequence.
"""

from __future__ import annotations

import math

import torch

from freelong.attention import (
    PositionBias,
    TemporalAttentionContext,
    TemporalAttnProcessor,
    attention,
    block_bias,
    global_attention,
    sliding_windows,
)
from freelong.chunking import DEFAULT_BUDGET_MB

WEIGHTINGS = ("flat", "pyramid")


def window_weights(window: int, weighting: str = "pyramid") -> torch.Tensor:
    """Per-position fusion weights inside one window.

    ``pyramid`` is FreeNoise's Eq. 9, ``U/2 - floor(|i - c|)`` with ``c = (U - 1)/2`` the window
    centre (``[1, 2, ..., U/2, U/2, ..., 2, 1]`` for even ``U``); ``flat`` is a plain average.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if weighting == "flat":
        return torch.ones(window, dtype=torch.float64)
    centre = (window - 1) / 2
    pos = torch.arange(window, dtype=torch.float64)
    return window / 2 - torch.floor((pos - centre).abs())


class WindowFusionProcessor(TemporalAttnProcessor):
    """Window attention + weighted fusion.

    ``windows_per_call`` bounds how many windows one SDPA call gathers. The default takes as many as
    cover the video once (``ceil(T / window)``, so the gathered q/k/v stay the size of the input),
    but fewer when one call's gathered queries would exceed the chunking budget
    (:data:`freelong.chunking.DEFAULT_BUDGET_MB`), which bounds the transient memory at long lengths.
    """

    def __init__(self, window: int = 16, stride: int = 4, weighting: str = "pyramid",
                 windows_per_call: int | None = None):
        self.window = window
        self.stride = stride
        self.weighting = weighting
        self.windows_per_call = windows_per_call
        self._weights = window_weights(window, weighting)

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        bias: PositionBias | None,
        ctx: TemporalAttentionContext,
    ) -> torch.Tensor:
        num_frames = q.shape[-2]
        if self.window >= num_frames:
            return global_attention(q, k, v, bias, ctx.positions)
        windows = sliding_windows(num_frames, self.window, self.stride)
        starts = torch.tensor([s for s, _ in windows])
        offsets = torch.arange(self.window)
        weights = self._weights.to(device=q.device, dtype=torch.float32)
        local = None if ctx.positions is None else [d[:, None] for d in ctx.positions(offsets.to(q.device))]
        out = torch.zeros(q.shape[:-1] + (v.shape[-1],), device=q.device, dtype=torch.float32)
        total = torch.zeros(num_frames, device=q.device, dtype=torch.float32)
        # Windows are batched in groups so the gathered q/k/v stay about the size of the input.
        group = self.windows_per_call or self._auto_group(q, num_frames)
        for g0 in range(0, len(windows), group):
            cpu_idx = starts[g0 : g0 + group, None] + offsets  # (n, W) absolute frame indices
            idx = cpu_idx.to(q.device)
            n = idx.shape[0]
            # (B', heads, n, W, d) with heads and windows merged: 4D inputs keep SDPA on its fused kernels
            if local is None:
                qw, kw, vw = (x[:, :, idx].flatten(1, 2) for x in (q, k, v))
            else:  # every window sees window-local positions 0..window-1 (heads, 1, W, d offsets)
                qw, kw, vw = ((x[:, :, idx] + dx.to(x.dtype)).flatten(1, 2) for x, dx in zip((q, k, v), local))
            wbias = None
            if bias is not None:
                wbias = block_bias(bias, cpu_idx, cpu_idx, q.device).flatten(0, 1)  # (heads * n, W, W)
            o = attention(qw, kw, vw, bias=wbias).unflatten(1, (-1, n))
            flat_idx = idx.reshape(-1)
            out.index_add_(2, flat_idx, (o.float() * weights[:, None]).flatten(2, 3))
            total.index_add_(0, flat_idx, weights.repeat(idx.shape[0]))
        return (out / total[:, None]).to(v.dtype)

    def _auto_group(self, q: torch.Tensor, num_frames: int) -> int:
        rows, heads, _, d = q.shape
        per_window = rows * heads * self.window * d * 4  # one window's queries (and outputs) in fp32
        by_budget = int(DEFAULT_BUDGET_MB * 2**20 // max(per_window, 1))
        return max(1, min(math.ceil(num_frames / self.window), by_budget))

    def __repr__(self) -> str:
        return (f"WindowFusionProcessor(window={self.window}, stride={self.stride}, weighting={self.weighting}, "
                f"windows_per_call={self.windows_per_call})")
