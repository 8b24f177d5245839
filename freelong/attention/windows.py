"""Window geometry over frames: which key frames each query frame's window holds, and sliding windows.

Windows and masks are always over *frames*, whatever the token layout (a DiT's ``S`` tokens per frame repeat
a frame mask over their token pairs, :func:`token_mask`). :func:`local_window_mask` is the definition the
block-wise and tiled kernels are tested against.
"""

from __future__ import annotations

import math

import torch

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


def check_window_stride(window: int, stride: int, stride_key: str = "stride") -> None:
    """The one check of a sliding-window pair: ``method.window >= 1`` and ``method.<stride_key>`` in ``[1, window]``."""
    if window < 1:
        raise ValueError(f"method.window must be >= 1, got {window}")
    if not 1 <= stride <= window:
        raise ValueError(f"method.{stride_key} must be in [1, window={window}], got {stride}")


def frame_index(n: int, device: torch.device | None = None, start: int = 0) -> torch.Tensor:
    """Frame indices ``start .. start + n - 1``."""
    return torch.arange(start, start + n, device=device)


def token_mask(frame_mask: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """A ``(..., T, T)`` frame mask as the ``(..., T*S, T*S)`` mask of frame-major tokens."""
    s = tokens_per_frame
    if s == 1:
        return frame_mask
    return frame_mask.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


def local_block_size(window: int) -> int:
    """Default query-block length of block-wise local attention: twice the window (at least 16)."""
    return max(16, 2 * window)


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


def frames_of_tokens(num_tokens: int, tokens_per_frame: int) -> int:
    """How many frames ``num_tokens`` frame-major tokens hold; an error if they are not whole frames."""
    num_frames = num_tokens // tokens_per_frame
    if num_frames * tokens_per_frame != num_tokens:
        raise ValueError(f"{num_tokens} tokens are not {tokens_per_frame} tokens per frame")
    return num_frames
