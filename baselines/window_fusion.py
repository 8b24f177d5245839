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
    global_attention,
    sliding_windows,
)

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
    def __init__(self, window: int = 16, stride: int = 4, weighting: str = "pyramid"):
        self.window = window
        self.stride = stride
        self.weighting = weighting
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
            return global_attention(q, k, v, bias)
        windows = sliding_windows(num_frames, self.window, self.stride)
        starts = torch.tensor([s for s, _ in windows], device=q.device)
        offsets = torch.arange(self.window, device=q.device)
        weights = self._weights.to(device=q.device, dtype=torch.float32)
        out = torch.zeros(q.shape[:-1] + (v.shape[-1],), device=q.device, dtype=torch.float32)
        total = torch.zeros(num_frames, device=q.device, dtype=torch.float32)
        # Windows are batched in groups so the gathered q/k/v stay about the size of the input.
        group = max(1, math.ceil(num_frames / self.window))
        for g0 in range(0, len(windows), group):
            idx = starts[g0 : g0 + group, None] + offsets  # (n, W) absolute frame indices
            qw, kw, vw = (x[:, :, idx] for x in (q, k, v))  # (B', heads, n, W, d)
            wbias = None
            if bias is not None:
                wbias = torch.stack([bias(i, i) for i in idx], dim=1)  # (heads, n, W, W)
            o = attention(qw, kw, vw, bias=wbias)
            flat_idx = idx.reshape(-1)
            out.index_add_(2, flat_idx, (o.float() * weights[:, None]).flatten(2, 3))
            total.index_add_(0, flat_idx, weights.repeat(idx.shape[0]))
        return (out / total[:, None]).to(v.dtype)

    def __repr__(self) -> str:
        return f"WindowFusionProcessor(window={self.window}, stride={self.stride}, weighting={self.weighting})"
