"""Attention kernels: global, local (dense, query blocks, frame slices, window-local positions) and sparse keys.

Local attention (:func:`local_attention`) runs in query blocks for long videos: each block of queries attends
to the short span of keys its windows can reach, so the cost is ``O(T * window)`` instead of ``O(T^2)`` and
no ``T x T`` mask is built. On a DiT (``S > 1`` tokens per frame, frame-major) a frame range is one contiguous
token range, so windows are unmasked SDPA calls on slices (:func:`local_attention_frames`). FreeLong's
one-pass global+local kernel is :mod:`freelong.attention.lse`; the explicit fp32 maps for analyses are
:mod:`freelong.attention.maps`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .context import FramePositions, PositionBias, require_frame_bias, require_frame_rows
from .windows import (
    frame_index,
    frames_of_tokens,
    local_block_plan,
    local_block_size,
    local_window_bounds,
    local_window_mask,
)


def add_positions(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: FramePositions, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``q, k, v`` (``(..., heads, len(idx), d)``) plus the offsets of frame positions ``idx``."""
    dq, dk, dv = positions(idx.to(q.device))
    return q + dq.to(q.dtype), k + dk.to(k.dtype), v + dv.to(v.dtype)


def local_attention_positions(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: PositionBias | None, window: int,
                              layout: str, positions: FramePositions, block_size: int | None = None,
                              budget_mb: float = 256.0) -> torch.Tensor:
    """Local attention where each query's window sees window-local positions ``0..len-1``.

    Query ``i`` with window ``[s_i, e_i)`` (:func:`local_window_bounds`) gets the offsets of position
    ``i - s_i`` and its key/value ``j`` those of ``j - s_i``, as if the window were a short video of its
    own (what a model trained on short clips has seen). The key offsets then depend on the query, so
    the scores are formed explicitly, in the query blocks of :func:`local_block_plan`:
    ``(q_i + dq) . k_j + (q_i + dq) . dk[j - s_i]`` (the offsets ``dk[j - s_i]`` are shared by all rows, so
    the second term is one batched product per (head, query) pair with the rows as its matrix dimension),
    and the value offsets enter as ``sum_j a_ij dv[j - s_i]`` the same way. ``budget_mb`` bounds one
    group of blocks' scores.
    """
    rows, heads, num_frames, d = q.shape
    start, end = local_window_bounds(num_frames, window, layout)
    span_l = int((end - start).max())
    q_idx, k_idx, allowed = local_block_plan(num_frames, window, layout, block_size or local_block_size(window))
    n, bq = q_idx.shape
    span = k_idx.shape[1]
    dev = q.device
    rel = (k_idx[:, None, :] - start[q_idx][:, :, None]).clamp(0, span_l - 1).to(dev)  # (n, Bq, S)
    q_pos = (q_idx - start[q_idx]).to(dev)
    dq, dk, dv = (x.to(q.dtype) for x in positions(torch.arange(span_l, device=dev)))  # (heads, L, d)
    scale = d**-0.5
    q_dev, k_dev, allowed = q_idx.to(dev), k_idx.to(dev), allowed.to(dev)
    out = q.new_empty((rows, heads, num_frames, v.shape[-1]))
    per_block = rows * heads * bq * (span + span_l) * 4 * 3
    group = max(1, int(budget_mb * 2**20 // max(per_block, 1)))
    for g0 in range(0, n, group):
        g = slice(g0, min(n, g0 + group))
        qg = q[:, :, q_dev[g]] + dq[:, q_pos[g]]  # (R, H, m, Bq, d): m blocks of Bq queries
        kg, vg = k[:, :, k_dev[g]], v[:, :, k_dev[g]]  # (R, H, m, S, d)
        # each (query, key) pair's key/value offsets: (H, m, Bq, S, d), no factor R (rows share them)
        dk_g, dv_g = dk[:, rel[g]], dv[:, rel[g]]
        pos_scores = (qg.permute(1, 2, 3, 0, 4) @ dk_g.transpose(-1, -2)).permute(3, 0, 1, 2, 4)
        scores = (qg @ kg.transpose(-1, -2) + pos_scores) * scale
        if bias is not None:
            scores = scores + block_bias(bias, q_idx[g], k_idx[g], dev).to(scores.dtype)
        probs = torch.softmax(scores.float().masked_fill(~allowed[g], float("-inf")), dim=-1).to(q.dtype)
        o = probs @ vg + (probs.permute(1, 2, 3, 0, 4) @ dv_g).permute(3, 0, 1, 2, 4)  # (R, H, m, Bq, d)
        out[:, :, q_dev[g].reshape(-1)] = o.flatten(2, 3)  # the last block's overlap rewrites equal values
    return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None,
              mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Softmax attention ``softmax(q k^T * scale + bias + log(mask)) v`` through SDPA.

    ``bias`` broadcasts to ``(..., Lq, Lk)``; ``mask`` is boolean, True where attending is allowed.
    Masks are given as many dimensions as ``q`` has: PyTorch's fused CPU kernel refuses a 3D
    ``(heads, Lq, Lk)`` mask and would fall back to the math kernel, which materialises the whole
    ``(rows, heads, Lq, Lk)`` attention matrix (10x slower and quadratic memory at 512 frames).
    """
    if bias is None and mask is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    if bias is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=_as_ndim(mask, q.ndim), scale=scale)
    attn_bias = bias.to(q.dtype)
    if mask is not None:
        attn_bias = attn_bias.masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_as_ndim(attn_bias, q.ndim), scale=scale)


def _as_ndim(m: torch.Tensor, ndim: int) -> torch.Tensor:
    return m.reshape((1,) * (ndim - m.ndim) + tuple(m.shape)) if m.ndim < ndim else m


def full_bias(bias: PositionBias | None, num_frames: int, device: torch.device) -> torch.Tensor | None:
    """The ``(heads, T, T)`` bias for global attention, or None."""
    if bias is None:
        return None
    idx = frame_index(num_frames, device)
    return bias(idx, idx)


def global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: PositionBias | None,
                     positions: FramePositions | None = None) -> torch.Tensor:
    """Attention over all frames; with ``positions``, at absolute frame positions ``0..T-1``."""
    if positions is not None:
        q, k, v = add_positions(q, k, v, positions, frame_index(q.shape[-2]))
    return attention(q, k, v, bias=full_bias(bias, q.shape[-2], q.device))


def block_bias(
    bias: PositionBias, q_idx: torch.Tensor, k_idx: torch.Tensor, device: torch.device | None = None
) -> torch.Tensor:
    """The bias of ``n`` blocks: ``q_idx (n, Lq)``, ``k_idx (n, Lk)`` → ``(heads, n, Lq, Lk)`` on ``device``.

    Pass the indices on the CPU (no device synchronisation to find their range).

    A translation-invariant bias is evaluated once on the range of offsets ``k - q`` that occur and
    gathered (``O(T)`` work); any other bias is called once per block.
    """
    device = device or q_idx.device
    if getattr(bias, "translation_invariant", False):
        rel = k_idx[:, None, :] - q_idx[:, :, None]  # (n, Lq, Lk)
        lo, hi = int(rel.min()), int(rel.max())
        zero = torch.zeros(1, dtype=torch.long, device=device)
        row = bias(zero, torch.arange(lo, hi + 1, device=device))[:, 0]  # (heads, hi - lo + 1)
        return row[:, (rel - lo).to(device)]
    return torch.stack([bias(qi.to(device), ki.to(device)) for qi, ki in zip(q_idx, k_idx)], dim=1)


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: PositionBias | None, window: int,
                    layout: str = "adjusted", block_size: int | None = None, tokens_per_frame: int = 1,
                    positions: FramePositions | None = None) -> torch.Tensor:
    """Attention restricted to each frame's local window (see :func:`local_window_bounds`).

    With ``positions``, each window sees window-local positions (:func:`local_attention_positions`).

    ``block_size=None`` picks the computation: one dense SDPA call with a ``T x T`` mask for short
    videos, query blocks of :func:`local_block_size` frames (:func:`local_attention_blocks`) once that
    at least halves the work. ``0`` forces the dense path, ``n > 0`` blocks of ``n`` frames.
    With ``tokens_per_frame > 1`` (a DiT) it is :func:`local_attention_frames` (no mask at all).
    """
    if positions is not None:
        require_frame_rows(tokens_per_frame)
        return local_attention_positions(q, k, v, bias, window, layout, positions)
    if tokens_per_frame > 1:
        return local_attention_frames(q, k, v, bias, window, layout, tokens_per_frame)
    num_frames = q.shape[-2]
    if block_size is None:
        block = min(local_block_size(window), num_frames)
        span = block + 2 * (window // 2) + 1
        block_size = block if num_frames >= 2 * span else 0
    if block_size > 0:
        return local_attention_blocks(q, k, v, bias, window, layout, block_size)
    mask = local_window_mask(num_frames, window, layout).to(q.device)
    return attention(q, k, v, bias=full_bias(bias, num_frames, q.device), mask=mask)


def local_attention_blocks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: PositionBias | None, window: int,
                           layout: str = "adjusted", block_size: int | None = None) -> torch.Tensor:
    """Local attention computed in query blocks; never builds a ``T x T`` mask or bias.

    Equal (up to float rounding) to ``attention(q, k, v, full_bias, local_window_mask)``: keys
    outside a query's window get weight ``exp(-inf) = 0`` in both. Blocks are batched into SDPA
    calls whose gathered keys and values stay about the size of ``k`` and ``v``.
    """
    rows, heads, num_frames, d = q.shape
    block = block_size or local_block_size(window)
    q_idx, k_idx, allowed = local_block_plan(num_frames, window, layout, block)
    n, bq = q_idx.shape
    span = k_idx.shape[1]
    dev = q.device
    q_dev, k_dev, allowed = q_idx.to(dev), k_idx.to(dev), allowed.to(dev)
    out = q.new_empty((rows, heads, num_frames, v.shape[-1]))
    per_call = max(1, math.ceil(n * bq / span))  # gathered keys per call ≈ T frames
    for g0 in range(0, n, per_call):
        g = slice(g0, min(n, g0 + per_call))
        m = g.stop - g.start
        qg = q[:, :, q_dev[g]].reshape(rows, heads * m, bq, d)
        kg = k[:, :, k_dev[g]].reshape(rows, heads * m, span, d)
        vg = v[:, :, k_dev[g]].reshape(rows, heads * m, span, v.shape[-1])
        if bias is None:
            mask = allowed[g].expand(heads, m, bq, span).reshape(1, heads * m, bq, span)
            o = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask)
        else:
            b = block_bias(bias, q_idx[g], k_idx[g], dev).to(q.dtype).masked_fill(~allowed[g], float("-inf"))
            o = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=b.reshape(1, heads * m, bq, span))
        o = o.view(rows, heads, m, bq, -1)
        # Blocks j < n-1 start at j*bq, so a group's regular blocks are one run of frames; the last
        # block is shifted to end at T and rewrites its overlap with the same values.
        regular = min(m, n - 1 - g.start)
        if regular > 0:
            s0 = g.start * bq
            out[:, :, s0 : s0 + regular * bq] = o[:, :, :regular].flatten(2, 3)
        if g.stop == n:
            out[:, :, num_frames - bq :] = o[:, :, m - 1]
    return out


def local_attention_frames(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: PositionBias | None, window: int,
                           layout: str = "adjusted", tokens_per_frame: int = 1) -> torch.Tensor:
    """Local attention over frames for ``(rows, heads, T*S, d)`` tokens, frame-major, without a mask.

    Every token of query frame ``i`` attends to all tokens of the key frames ``[start_i, end_i)``
    (:func:`local_window_bounds`). In the frame-major layout a frame range is one contiguous token
    range, so each run of consecutive query frames that share a key range is one unmasked SDPA call on
    *slices* of q, k and v: nothing is gathered or copied (every key frame would otherwise be copied
    about ``window`` times, which dominates on memory-bound devices), the cost is ``O(T*S * window*S)``
    and no ``T*S x T*S`` mask exists. The edge frames of the ``adjusted`` layout share one window each,
    so they run as one call.
    """
    require_frame_bias(bias, tokens_per_frame)
    rows, heads, n_tok, d = q.shape
    s = tokens_per_frame
    num_frames = frames_of_tokens(n_tok, s)
    start, end = (b.tolist() for b in local_window_bounds(num_frames, window, layout))
    out = q.new_empty((rows, heads, n_tok, v.shape[-1]))
    i0 = 0
    while i0 < num_frames:
        i1 = i0 + 1
        while i1 < num_frames and start[i1] == start[i0] and end[i1] == end[i0]:
            i1 += 1
        k0, k1 = start[i0] * s, end[i0] * s
        out[:, :, i0 * s : i1 * s] = F.scaled_dot_product_attention(
            q[:, :, i0 * s : i1 * s], k[:, :, k0:k1], v[:, :, k0:k1]
        )
        i0 = i1
    return out


def sparse_key_index(num_frames: int, fraction: float) -> torch.Tensor:
    """``fraction * T`` rounded half up (at least 1) key frames, uniformly spaced from the first to the last frame."""
    n = min(num_frames, max(1, math.floor(fraction * num_frames + 0.5)))
    if n == 1:
        return torch.tensor([(num_frames - 1) // 2])
    return torch.linspace(0, num_frames - 1, n, dtype=torch.float64).round().long()


def sparse_global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: PositionBias | None,
                            fraction: float, tokens_per_frame: int = 1,
                            positions: FramePositions | None = None) -> torch.Tensor:
    """Every query attends to a uniformly spaced subset of key frames (all their tokens, positions kept).

    q/k/v are ``(rows, heads, T*S, d)`` frame-major (``S = tokens_per_frame``); a position bias is over
    frames and needs ``S = 1``.
    """
    s = tokens_per_frame
    num_frames = q.shape[-2] // s
    idx = sparse_key_index(num_frames, fraction)
    if len(idx) >= num_frames:
        return global_attention(q, k, v, bias, positions)
    require_frame_bias(bias, s)
    if positions is not None:  # absolute frame positions, as global attention (S = 1)
        q, k, v = add_positions(q, k, v, positions, torch.arange(num_frames))
    frames = idx.to(q.device)
    tokens = (frames[:, None] * s + torch.arange(s, device=q.device)).flatten()
    b = None if bias is None else bias(torch.arange(num_frames, device=q.device), frames)
    return attention(q, k[:, :, tokens], v[:, :, tokens], bias=b)
