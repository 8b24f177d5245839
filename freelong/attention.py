"""Temporal attention: the one interface through which every method reaches every backbone.

A backbone's temporal attention layer (:class:`TemporalAttention`) projects its input to
``q, k, v`` shaped ``(B*H*W, heads, T, d)``, applies its own positional encoding (LaVie rotates
q/k with rotary embeddings and adds a relative position bias; VideoCrafter2 has none), and hands
them to a *processor*: ``processor(q, k, v, bias=..., ctx=...) -> (B*H*W, heads, T, d)``.
The default processor is plain global attention. Methods (FreeLong, sliding window, FreeNoise)
swap processors, so backbones never import methods and methods never import backbones.

``bias`` is a callable ``bias(q_idx, k_idx) -> (heads, len(q_idx), len(k_idx))`` so that windowed
and block-wise processors can ask for just the part of the relative bias they need instead of a
``T x T`` matrix. A bias that depends on ``k - q`` only may say so with a class attribute
``translation_invariant = True``; :func:`block_bias` then builds all blocks from one row of offsets.

Local attention (:func:`local_attention`) runs in query blocks for long videos: each block of
queries attends to the short span of keys its windows can reach, so the cost is ``O(T * window)``
instead of ``O(T^2)`` and no ``T x T`` mask is built. :func:`local_window_mask` stays the definition
that the block-wise path is tested against.
"""

from __future__ import annotations

import math
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
    ``level`` is the UNet resolution level (0 = highest resolution; a DiT's block index); ``name`` is
    the layer's module path.

    ``tokens_per_frame`` (``S``): q/k/v hold ``T*S`` tokens per row, frame-major (all ``S`` tokens of
    frame 0, then frame 1, ...). UNet temporal attention: rows ``B*H*W``, ``S = 1``. A DiT's 3D
    self-attention: rows ``B``, ``S = H*W``. Windows and local masks are always over *frames*.

    ``positions`` (None except for diffusers' AnimateDiff, where ``S = 1``): the backbone's additive frame
    positions (:class:`FramePositions`, a sinusoidal table) for the processor to add itself, at
    absolute frames for global attention and at window-local frames for windowed branches.
    """

    frame_shape: tuple[int, int, int]
    batch: int
    level: int
    name: str
    step_index: int | None = None
    num_steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tokens_per_frame: int = 1
    positions: FramePositions | None = None

    def num_frames(self, q: torch.Tensor) -> int:
        """Frames in a ``(rows, heads, T*S, d)`` tensor."""
        return q.shape[-2] // self.tokens_per_frame


# ----------------------------------------------------------------------------------------------
# Additive frame positions (contract extension 2; None everywhere except diffusers' AnimateDiff)
# ----------------------------------------------------------------------------------------------
class FramePositions(Protocol):
    """Per-frame additive offsets of q, k, v: ``positions(idx) -> (dq, dk, dv)``, each ``(heads, len(idx), d)``.

    AnimateDiff adds a sinusoidal table ``p`` to the hidden states before the (linear) q/k/v
    projections, so ``q(h + p_f) = q(h) + W_q p_f``: the backbone hands q/k/v *without* positions and
    the processor adds the offsets of whichever frame positions its branch uses.
    """

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def add_positions(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: FramePositions, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``q, k, v`` (``(..., heads, len(idx), d)``) plus the offsets of frame positions ``idx``."""
    dq, dk, dv = positions(idx.to(q.device))
    return q + dq.to(q.dtype), k + dk.to(k.dtype), v + dv.to(v.dtype)


def local_attention_positions(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: PositionBias | None,
    window: int,
    layout: str,
    positions: FramePositions,
    block_size: int | None = None,
    budget_mb: float = 256.0,
) -> torch.Tensor:
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


def attention_probs_of(
    q: torch.Tensor,
    k: torch.Tensor,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """The row-stochastic matrix :func:`attention` applies to ``v``, explicitly and in fp32.

    ``softmax(q kᵀ * scale + bias)`` over keys, zero where ``mask`` is False; ``(..., Lq, Lk)``.
    Quadratic in memory: for analysis (attention maps), never for sampling.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if bias is not None:
        logits = logits + bias.float()
    if mask is not None:
        logits = logits.masked_fill(~mask.to(logits.device), float("-inf"))
    return torch.softmax(logits, dim=-1)


def _as_ndim(m: torch.Tensor, ndim: int) -> torch.Tensor:
    return m.reshape((1,) * (ndim - m.ndim) + tuple(m.shape)) if m.ndim < ndim else m


def _frame_index(n: int, device: torch.device | None = None, start: int = 0) -> torch.Tensor:
    return torch.arange(start, start + n, device=device)


def full_bias(bias: PositionBias | None, num_frames: int, device: torch.device) -> torch.Tensor | None:
    """The ``(heads, T, T)`` bias for global attention, or None."""
    if bias is None:
        return None
    idx = _frame_index(num_frames, device)
    return bias(idx, idx)


WINDOW_LAYOUTS = ("adjusted", "centered")  # how edge windows are placed (:func:`local_window_bounds`)


def local_window_bounds(num_frames: int, window: int, layout: str = "adjusted") -> tuple[torch.Tensor, torch.Tensor]:
    """Per query frame ``i`` the half-open key range ``[start_i, end_i)`` of its local window.

    ``adjusted`` (the official LaVie FreeLong code): ``[i - w//2, i + w//2 + 1)`` clipped, and windows
    at the edges shifted so they still hold exactly ``window`` frames.
    ``centered`` (the official VideoCrafter2 FreeLong code): ``|i - j| <= w//2``, truncated at the edges.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if layout not in WINDOW_LAYOUTS:
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


GlobalAttnProcessor = TemporalAttnProcessor


def global_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: PositionBias | None,
    positions: FramePositions | None = None,
) -> torch.Tensor:
    """Attention over all frames; with ``positions``, at absolute frame positions ``0..T-1``."""
    if positions is not None:
        q, k, v = add_positions(q, k, v, positions, _frame_index(q.shape[-2]))
    return attention(q, k, v, bias=full_bias(bias, q.shape[-2], q.device))


def global_attention_probs(
    q: torch.Tensor, k: torch.Tensor, bias: PositionBias | None, tokens_per_frame: int = 1,
    positions: FramePositions | None = None,
) -> torch.Tensor:
    """What :func:`global_attention` applies to ``v``: ``(rows, heads, T*S, T*S)`` in fp32.

    With ``positions`` (``S = 1``) q and k carry the offsets of absolute frames ``0..T-1``; the output is
    then this matrix applied to ``v`` plus its offsets at the same frames.
    """
    if tokens_per_frame > 1 and bias is not None:
        raise NotImplementedError("a relative position bias with tokens_per_frame > 1 is not supported")
    if positions is not None:
        _no_tokens(tokens_per_frame)
        dq, dk, _ = positions(_frame_index(q.shape[-2], q.device))
        q, k = q + dq.to(q.dtype), k + dk.to(k.dtype)
    return attention_probs_of(q, k, full_bias(bias, q.shape[-2], q.device))


def _no_tokens(tokens_per_frame: int) -> None:
    if tokens_per_frame > 1:
        raise ValueError("additive frame positions need tokens_per_frame == 1 (a UNet's temporal attention)")


def local_attention_probs(
    q: torch.Tensor,
    k: torch.Tensor,
    bias: PositionBias | None,
    window: int,
    layout: str = "adjusted",
    tokens_per_frame: int = 1,
    positions: FramePositions | None = None,
) -> torch.Tensor:
    """What :func:`local_attention` applies to ``v``: the softmax restricted to each frame's window.

    With ``tokens_per_frame = S > 1`` the ``(T*S, T*S)`` mask is the frame mask with every entry
    repeated over the ``S x S`` token pairs of its two frames (frame-major tokens, as
    :func:`local_attention_frames`). With ``positions`` query ``i`` and key ``j`` carry the offsets of
    window-local positions ``i - s_i`` and ``j - s_i`` (:func:`local_attention_positions`); row ``i`` of
    the output is then row ``i`` of this matrix applied to ``v_j + dv[j - s_i]``.
    """
    if positions is not None:
        _no_tokens(tokens_per_frame)
        return _local_position_probs(q, k, bias, window, layout, positions)
    s = tokens_per_frame
    num_frames = q.shape[-2] // s
    if s > 1 and bias is not None:
        raise NotImplementedError("a relative position bias with tokens_per_frame > 1 is not supported")
    mask = token_mask(local_window_mask(num_frames, window, layout), s)
    return attention_probs_of(q, k, full_bias(bias, num_frames, q.device), mask=mask)


def _local_position_probs(
    q: torch.Tensor, k: torch.Tensor, bias: PositionBias | None, window: int, layout: str, positions: FramePositions
) -> torch.Tensor:
    num_frames = q.shape[-2]
    start, end = local_window_bounds(num_frames, window, layout)
    span = int((end - start).max())
    dq, dk, _ = (x.float() for x in positions(torch.arange(span, device=q.device)))
    qq = q.float() + dq[:, (torch.arange(num_frames) - start).to(q.device)]
    rel = (torch.arange(num_frames)[None, :] - start[:, None]).clamp(0, span - 1).to(q.device)  # key j in i's window
    rows_heads = qq.shape[:-2]
    pos_logits = torch.gather(qq @ dk.transpose(-1, -2), -1, rel.expand(*rows_heads, num_frames, num_frames))
    logits = torch.matmul(qq, k.float().transpose(-1, -2)) + pos_logits
    logits = logits * q.shape[-1] ** -0.5
    b = full_bias(bias, num_frames, q.device)
    if b is not None:
        logits = logits + b.float()
    mask = local_window_mask(num_frames, window, layout).to(q.device)
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


def token_mask(frame_mask: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """A ``(..., T, T)`` frame mask as the ``(..., T*S, T*S)`` mask of frame-major tokens."""
    s = tokens_per_frame
    if s == 1:
        return frame_mask
    return frame_mask.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


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


def local_block_size(window: int) -> int:
    """Default query-block length of block-wise local attention: twice the window (at least 16)."""
    return max(16, 2 * window)


def local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: PositionBias | None,
    window: int,
    layout: str = "adjusted",
    block_size: int | None = None,
    tokens_per_frame: int = 1,
    positions: FramePositions | None = None,
) -> torch.Tensor:
    """Attention restricted to each frame's local window (see :func:`local_window_bounds`).

    With ``positions``, each window sees window-local positions (:func:`local_attention_positions`).

    ``block_size=None`` picks the computation: one dense SDPA call with a ``T x T`` mask for short
    videos, query blocks of :func:`local_block_size` frames (:func:`local_attention_blocks`) once that
    at least halves the work. ``0`` forces the dense path, ``n > 0`` blocks of ``n`` frames.
    With ``tokens_per_frame > 1`` (a DiT) it is :func:`local_attention_frames` (no mask at all).
    """
    if positions is not None:
        _no_tokens(tokens_per_frame)
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


def local_block_plan(
    num_frames: int, window: int, layout: str, block_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query blocks, their key spans and masks for block-wise local attention.

    Blocks hold ``block_size`` consecutive query frames (the last block is shifted back to end at
    ``T``, overlapping its predecessor); each block's keys are the ``L`` consecutive frames that
    cover all of its queries' windows (``L`` is the same for every block). Returns ``q_idx (n, Bq)``,
    ``k_idx (n, L)`` and the boolean ``allowed (n, Bq, L)``.
    """
    block = max(1, min(block_size, num_frames))
    start, end = local_window_bounds(num_frames, window, layout)
    n = math.ceil(num_frames / block)
    q0 = torch.arange(n) * block
    q0[-1] = num_frames - block
    q_idx = q0[:, None] + torch.arange(block)
    lo, hi = start[q_idx].min(dim=1).values, end[q_idx].max(dim=1).values
    span = int((hi - lo).max())
    k0 = torch.minimum(lo, torch.full_like(lo, num_frames - span))
    k_idx = k0[:, None] + torch.arange(span)
    allowed = (k_idx[:, None, :] >= start[q_idx][:, :, None]) & (k_idx[:, None, :] < end[q_idx][:, :, None])
    return q_idx, k_idx, allowed


def local_attention_blocks(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: PositionBias | None,
    window: int,
    layout: str = "adjusted",
    block_size: int | None = None,
) -> torch.Tensor:
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


def frames_of_tokens(num_tokens: int, tokens_per_frame: int) -> int:
    """How many frames ``num_tokens`` frame-major tokens hold; an error if they are not whole frames."""
    num_frames = num_tokens // tokens_per_frame
    if num_frames * tokens_per_frame != num_tokens:
        raise ValueError(f"{num_tokens} tokens are not {tokens_per_frame} tokens per frame")
    return num_frames


def local_attention_frames(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: PositionBias | None,
    window: int,
    layout: str = "adjusted",
    tokens_per_frame: int = 1,
) -> torch.Tensor:
    """Local attention over frames for ``(rows, heads, T*S, d)`` tokens, frame-major, without a mask.

    Every token of query frame ``i`` attends to all tokens of the key frames ``[start_i, end_i)``
    (:func:`local_window_bounds`). In the frame-major layout a frame range is one contiguous token
    range, so each run of consecutive query frames that share a key range is one unmasked SDPA call on
    *slices* of q, k and v: nothing is gathered or copied (every key frame would otherwise be copied
    about ``window`` times, which dominates on memory-bound devices), the cost is ``O(T*S * window*S)``
    and no ``T*S x T*S`` mask exists. The edge frames of the ``adjusted`` layout share one window each,
    so they run as one call.
    """
    if bias is not None:
        raise NotImplementedError("a relative position bias with tokens_per_frame > 1 is not supported")
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


__all__ = [
    "CallContext",
    "FramePositions",
    "GlobalAttnProcessor",
    "PositionBias",
    "TemporalAttention",
    "WINDOW_LAYOUTS",
    "TemporalAttentionContext",
    "TemporalAttnProcessor",
    "add_positions",
    "attention",
    "attention_probs_of",
    "block_bias",
    "frames_of_tokens",
    "full_bias",
    "global_attention",
    "global_attention_probs",
    "local_attention",
    "local_attention_blocks",
    "local_attention_frames",
    "local_attention_positions",
    "local_attention_probs",
    "local_block_plan",
    "local_block_size",
    "local_window_bounds",
    "local_window_mask",
    "name_temporal_layers",
    "sliding_windows",
    "temporal_attention_layers",
    "token_mask",
]
