"""The row-stochastic matrices each kernel applies to ``v``, explicitly and in fp32 (for the attention-map analyses).

Quadratic in memory: for analysis, never for sampling. Each equals what the matching kernel of
:mod:`freelong.attention.kernels` computes (tested).
"""

from __future__ import annotations

import torch

from .context import FramePositions, PositionBias, require_frame_bias, require_frame_rows
from .kernels import add_positions, full_bias, sparse_key_index
from .windows import frame_index, local_window_bounds, local_window_mask, token_mask


def attention_probs_of(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None = None,
                       mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
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


def global_attention_probs(q: torch.Tensor, k: torch.Tensor, bias: PositionBias | None, tokens_per_frame: int = 1,
                           positions: FramePositions | None = None) -> torch.Tensor:
    """What :func:`global_attention` applies to ``v``: ``(rows, heads, T*S, T*S)`` in fp32.

    With ``positions`` (``S = 1``) q and k carry the offsets of absolute frames ``0..T-1``; the output is
    then this matrix applied to ``v`` plus its offsets at the same frames.
    """
    require_frame_bias(bias, tokens_per_frame)
    if positions is not None:
        require_frame_rows(tokens_per_frame)
        dq, dk, _ = positions(frame_index(q.shape[-2], q.device))
        q, k = q + dq.to(q.dtype), k + dk.to(k.dtype)
    return attention_probs_of(q, k, full_bias(bias, q.shape[-2], q.device))


def local_attention_probs(q: torch.Tensor, k: torch.Tensor, bias: PositionBias | None, window: int,
                          layout: str = "adjusted", tokens_per_frame: int = 1,
                          positions: FramePositions | None = None) -> torch.Tensor:
    """What :func:`local_attention` applies to ``v``: the softmax restricted to each frame's window.

    With ``tokens_per_frame = S > 1`` the ``(T*S, T*S)`` mask is the frame mask with every entry
    repeated over the ``S x S`` token pairs of its two frames (frame-major tokens, as
    :func:`local_attention_frames`). With ``positions`` query ``i`` and key ``j`` carry the offsets of
    window-local positions ``i - s_i`` and ``j - s_i`` (:func:`local_attention_positions`); row ``i`` of
    the output is then row ``i`` of this matrix applied to ``v_j + dv[j - s_i]``.
    """
    if positions is not None:
        require_frame_rows(tokens_per_frame)
        return _local_position_probs(q, k, bias, window, layout, positions)
    s = tokens_per_frame
    num_frames = q.shape[-2] // s
    require_frame_bias(bias, s)
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


def sparse_global_attention_probs(q: torch.Tensor, k: torch.Tensor, bias: PositionBias | None, fraction: float,
                                  tokens_per_frame: int = 1, positions: FramePositions | None = None) -> torch.Tensor:
    """What :func:`~freelong.attention.kernels.sparse_global_attention` applies to ``v`` (zero off its key frames)."""
    require_frame_bias(bias, tokens_per_frame)
    num_frames = q.shape[-2] // tokens_per_frame
    mask = torch.zeros(num_frames, num_frames, dtype=torch.bool)
    mask[:, sparse_key_index(num_frames, fraction)] = True
    if positions is not None:  # absolute frame positions, as sparse_global_attention
        q, k, _ = add_positions(q, k, k, positions, torch.arange(num_frames))
    return attention_probs_of(q, k, full_bias(bias, num_frames, q.device), mask=token_mask(mask, tokens_per_frame))
