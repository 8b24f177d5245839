"""Window-based temporal attention fusion, shared by the sliding-window and FreeNoise baselines.

Temporal attention runs inside windows of ``window`` frames placed every ``stride`` frames (plus a
final window ending at the last frame, so every frame is covered), and each frame's output is the
weighted mean of the outputs of the windows that contain it. Spatial layers, temporal
convolutions and normalisation keep seeing the whole sequence.
"""

from __future__ import annotations

import math

import torch

from freelong.attention.context import PositionBias, TemporalAttentionContext, require_frame_bias, require_frame_rows
from freelong.attention.kernels import attention, block_bias, global_attention
from freelong.attention.maps import attention_probs_of, global_attention_probs
from freelong.attention.processor import TemporalAttnProcessor
from freelong.attention.windows import sliding_windows
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
    With ``tokens_per_frame > 1`` (a DiT) every window is one call on slices (nothing is gathered).
    """

    def __init__(self, window: int = 16, stride: int = 4, weighting: str = "pyramid",
                 windows_per_call: int | None = None):
        self.window = window
        self.stride = stride
        self.weighting = weighting
        self.windows_per_call = windows_per_call
        self._weights = window_weights(window, weighting)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, bias: PositionBias | None,
                 ctx: TemporalAttentionContext) -> torch.Tensor:
        tokens = ctx.tokens_per_frame
        num_frames = q.shape[-2] // tokens
        if self.window >= num_frames:
            return global_attention(q, k, v, bias, ctx.positions)
        windows = sliding_windows(num_frames, self.window, self.stride)
        if tokens > 1:
            if ctx.positions is not None:
                require_frame_rows(tokens)
            return self._fuse_frame_tokens(q, k, v, bias, windows, tokens)
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

    def _fuse_frame_tokens(self, q, k, v, bias, windows, tokens: int) -> torch.Tensor:
        """The same fusion when each frame has ``tokens`` tokens (a DiT, frame-major).

        A window of frames is one contiguous token range, so each window is one SDPA call on slices of
        q, k and v (nothing gathered) and its weighted output is added to that range in place.
        """
        require_frame_bias(bias, tokens)
        num_frames = q.shape[-2] // tokens
        weights = self._weights.to(device=q.device, dtype=torch.float32)
        token_weights = weights.repeat_interleave(tokens)[:, None]  # (W*S, 1)
        out = torch.zeros(q.shape[:-1] + (v.shape[-1],), device=q.device, dtype=torch.float32)
        total = torch.zeros(num_frames, device=q.device, dtype=torch.float32)
        for a, b in windows:
            sl = slice(a * tokens, b * tokens)
            out[:, :, sl] += attention(q[:, :, sl], k[:, :, sl], v[:, :, sl]).float() * token_weights
            total[a:b] += weights
        return (out / total.repeat_interleave(tokens)[:, None]).to(v.dtype)

    def attention_probs(
        self, q: torch.Tensor, k: torch.Tensor, bias: PositionBias | None, ctx: TemporalAttentionContext
    ) -> dict[str, torch.Tensor]:
        """``{"attn": A}``, the effective ``(rows, heads, T, T)`` matrix: ``A @ v`` is this processor's output.

        Row ``i`` of ``A`` is the fusion-weighted mean of the softmaxes of the windows holding frame
        ``i`` (each zero outside its window): ``Σ_w u_w(i) softmax_w(i, ·) / Σ_w u_w(i)``. With
        ``tokens_per_frame = S > 1`` (a DiT) the matrix is over the ``T*S`` frame-major tokens and a
        window holds whole frames; a token's weight is its frame's. With ``ctx.positions`` each window's
        softmax sees window-local positions (the output then also adds each window's value offsets).
        """
        tokens = ctx.tokens_per_frame
        num_frames = q.shape[-2] // tokens
        pos = ctx.positions
        if self.window >= num_frames:
            return {"attn": global_attention_probs(q, k, bias, tokens, pos)}
        if pos is not None:
            require_frame_rows(tokens)
        require_frame_bias(bias, tokens)
        out = q.new_zeros(q.shape[:-1] + (q.shape[-2],), dtype=torch.float32)
        total = torch.zeros(num_frames, device=q.device, dtype=torch.float32)
        weights = self._weights.to(device=q.device, dtype=torch.float32)
        token_weights = weights.repeat_interleave(tokens)
        for s, e in sliding_windows(num_frames, self.window, self.stride):
            idx = torch.arange(s, e, device=q.device)
            wbias = bias(idx, idx) if bias is not None else None
            t0, t1 = s * tokens, e * tokens
            qs, ks = q[:, :, t0:t1], k[:, :, t0:t1]
            if pos is not None:  # window-local positions 0..e-s-1, as in __call__
                dq, dk, _ = pos(torch.arange(e - s, device=q.device))
                qs, ks = qs + dq.to(qs.dtype), ks + dk.to(ks.dtype)
            probs = attention_probs_of(qs, ks, wbias)
            out[:, :, t0:t1, t0:t1] += probs * token_weights[:, None]
            total[s:e] += weights
        return {"attn": out / total.repeat_interleave(tokens)[:, None]}

    def _auto_group(self, q: torch.Tensor, num_frames: int) -> int:
        rows, heads, _, d = q.shape
        per_window = rows * heads * self.window * d * 4  # one window's queries (and outputs) in fp32
        by_budget = int(DEFAULT_BUDGET_MB * 2**20 // max(per_window, 1))
        return max(1, min(math.ceil(num_frames / self.window), by_budget))

    def __repr__(self) -> str:
        return (f"WindowFusionProcessor(window={self.window}, stride={self.stride}, weighting={self.weighting}, "
                f"windows_per_call={self.windows_per_call})")
