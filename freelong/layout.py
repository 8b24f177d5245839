"""Token layouts: attention outputs ``(rows, heads, T*S, d)`` seen as videos, whichever layout the backbone uses.

UNet temporal attention: rows = B*H*W and S = 1; a DiT: rows = B and S = H*W tokens per frame, frame-major.
The spectral blend and fusion (:mod:`freelong.spectral`) act on these views.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

VIDEO_DIMS = (2, 3, 4)  # the (T, H, W) axes of a (B, heads, T, H, W, d) video view


def video_view(x: torch.Tensor, frame_shape: tuple[int, int, int], tokens_per_frame: int = 1) -> torch.Tensor:
    """``(rows, heads, T*S, d)`` → a ``(B, heads, T, H, W, d)`` view (no copy)."""
    t, h, w = frame_shape
    rows, heads, _, d = x.shape
    if tokens_per_frame == 1:  # rows are (B, H, W) positions, the sequence is frames
        return x.reshape(rows // (h * w), h, w, heads, t, d).permute(0, 3, 4, 1, 2, 5)
    if tokens_per_frame != h * w:
        raise ValueError(f"tokens_per_frame={tokens_per_frame} != H*W={h * w} of frame_shape {frame_shape}")
    return x.reshape(rows, heads, t, h, w, d)  # rows are the batch, the sequence is frame-major tokens


def from_video_view(video: torch.Tensor, tokens_per_frame: int = 1) -> torch.Tensor:
    """Inverse of :func:`video_view`: ``(B, heads, T, H, W, d)`` → ``(rows, heads, T*S, d)``."""
    b, heads, t, h, w, d = video.shape
    if tokens_per_frame == 1:
        return video.permute(0, 3, 4, 1, 2, 5).reshape(b * h * w, heads, t, d)
    return video.reshape(b, heads, t * h * w, d)


def token_grids(
    outs: Sequence[torch.Tensor], frame_shape: tuple[int, int, int]
) -> tuple[list[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """A DiT's ``(B, heads, T*S, d)`` frame-major outputs as contiguous ``(batch, T, H, W, C)`` grids, and the inverse.

    Channels are ``heads * d`` when the tokens lie outside the heads in memory (diffusers' Wan hands over
    ``(B, N, heads, d)`` transposed; the grids are then views), else the heads join the batch. The first
    output decides; the others are laid out the same way (copied if they are not).
    """
    t, h, w = frame_shape
    b, heads, n, d = outs[0].shape
    if outs[0].stride(1) < outs[0].stride(2):
        grids = [o.transpose(1, 2).reshape(b, t, h, w, heads * d) for o in outs]
        return grids, lambda g: g.view(b, n, heads, d).transpose(1, 2)
    grids = [o.reshape(b * heads, t, h, w, d) for o in outs]
    return grids, lambda g: g.view(b, heads, n, d)

