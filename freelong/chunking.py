"""Frame chunking: activation memory that grows linearly with the frame count, with a small constant.

A video UNet's spatial layers (2D convs, spatial self/cross-attention, feed-forward) and the VAE
decoder work on each frame independently, so they can run over *chunks of frames* and write into a
preallocated output: the transient tensors inside a layer (a GEGLU hidden state is 8x the
activation, an up-block concat 3x) then scale with the chunk instead of the video. Two things are
not per frame and get exact treatment here:

- GroupNorms that pool statistics over all frames (LaVie's resnets and output norm): a first pass
  over the chunks computes each group's mean and variance of the *whole* sequence (per-chunk
  ``var_mean`` combined with Chan et al.'s parallel formula), a second pass normalises chunk by chunk.
- Temporal layers need every frame; they are left to the temporal-attention processors.

Who decides the chunk size: a backbone wraps its forward in :func:`frame_chunking` with its own
``frame_chunk_size`` attribute (``None`` = automatic, ``0`` = off, ``n`` = ``n`` frames per chunk)
and its layers ask :func:`chunk_frames` how many frames to process at once. Automatic sizing keeps
one chunk's widest activation under ``budget_mb`` (default :data:`DEFAULT_BUDGET_MB`) and splits the
frames into equal chunks; short videos are not chunked at all. Outside a :func:`frame_chunking`
block nothing is chunked, so layers called on their own behave exactly as before.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

DEFAULT_BUDGET_MB = 512.0


@dataclass(frozen=True)
class ChunkPolicy:
    """``size``: frames per chunk (``None`` = automatic from ``budget_mb``, ``0`` = no chunking)."""

    size: int | None = None
    budget_mb: float | None = None

    def __post_init__(self) -> None:
        if self.size is not None and (not isinstance(self.size, int) or self.size < 0):
            raise ValueError(f"frame_chunk_size must be null (auto), 0 (off) or a positive integer, got {self.size!r}")
        if self.budget_mb is not None and not self.budget_mb > 0:
            raise ValueError(f"chunk budget_mb must be > 0, got {self.budget_mb!r}")

    def frames(self, num_frames: int, bytes_per_frame: float) -> int:
        """Frames per chunk for a layer whose widest activation takes ``bytes_per_frame`` per frame."""
        if num_frames < 1:
            return max(num_frames, 1)
        if self.size == 0:
            return num_frames
        if self.size is not None:
            return min(self.size, num_frames)
        budget = (self.budget_mb or DEFAULT_BUDGET_MB) * 2**20
        total = num_frames * max(float(bytes_per_frame), 1.0)
        if total <= budget:
            return num_frames
        chunks = math.ceil(total / budget)
        return math.ceil(num_frames / chunks)


OFF = ChunkPolicy(size=0)
_POLICY: contextvars.ContextVar[ChunkPolicy] = contextvars.ContextVar("freelong_frame_chunking", default=OFF)


@contextmanager
def frame_chunking(size: int | None = None, budget_mb: float | None = None) -> Iterator[ChunkPolicy]:
    """Make layers called inside the block chunk their frames (``size=None`` automatic, ``0`` off)."""
    policy = ChunkPolicy(size, budget_mb)
    token = _POLICY.set(policy)
    try:
        yield policy
    finally:
        _POLICY.reset(token)


def chunk_frames(num_frames: int, bytes_per_frame: float) -> int:
    """Frames per chunk under the active policy (``num_frames`` means: do not chunk)."""
    return _POLICY.get().frames(num_frames, bytes_per_frame)


def activation_bytes_per_frame(x: torch.Tensor, channels: int | None = None) -> int:
    """Bytes one frame of a ``(B, C, T, H, W)`` activation takes (optionally with ``channels`` channels)."""
    b, c, _, h, w = x.shape
    return b * (channels if channels is not None else c) * h * w * x.element_size()


def frame_spans(num_frames: int, chunk: int) -> list[tuple[int, int]]:
    """``[(0, chunk), (chunk, 2 chunk), ..., (.., num_frames)]``."""
    chunk = max(1, int(chunk))
    return [(s, min(s + chunk, num_frames)) for s in range(0, num_frames, chunk)]


def cat_frames(parts: Sequence[torch.Tensor], start: int, end: int) -> torch.Tensor:
    """Frames ``[start, end)`` of ``(B, C_i, T, H, W)`` tensors, concatenated along channels."""
    if len(parts) == 1:
        return parts[0][:, :, start:end]
    return torch.cat([p[:, :, start:end] for p in parts], dim=1)


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, t, H, W)`` → ``(B*t, C, H, W)`` (frame-major batch, as per-frame 2D layers expect)."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def from_frames(y: torch.Tensor, batch: int) -> torch.Tensor:
    """``(B*t, C, H, W)`` → ``(B, C, t, H, W)`` view."""
    return y.reshape(batch, -1, *y.shape[1:]).transpose(1, 2)


def map_frames(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int) -> torch.Tensor:
    """Apply a per-frame 2D op (``(N, C, H, W)`` → ``(N, C', H', W')``) to ``(B, C, T, H, W)`` in frame chunks.

    With ``chunk >= T`` this is one batched call; otherwise each chunk's result is written into a
    preallocated ``(B, C', T, H', W')`` output, so only one chunk's intermediates exist at a time.
    """
    b, _, t, _, _ = x.shape
    if chunk >= t:
        return from_frames(fn(to_frames(x)), b)
    out = None
    for s, e in frame_spans(t, chunk):
        y = from_frames(fn(to_frames(x[:, :, s:e])), b)
        if out is None:
            out = y.new_empty((b, y.shape[1], t, *y.shape[3:]))
        out[:, :, s:e] = y
    return out


# ----------------------------------------------------------------------------------------------
# GroupNorm with whole-sequence statistics, computed chunk by chunk
# ----------------------------------------------------------------------------------------------
def group_norm_stats(
    parts: Sequence[torch.Tensor], num_groups: int, eps: float, spans: Sequence[tuple[int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-group mean and ``1/sqrt(var + eps)`` of ``cat(parts, dim=1)`` over (C/G, T, H, W).

    Exactly the statistics ``nn.GroupNorm`` computes on the whole ``(B, C, T, H, W)`` tensor, but only
    one chunk of frames is ever copied (to fp32). Chunks are merged with Chan et al.'s pairwise
    update, which stays accurate when chunks have very different means. Returns ``(B, G)`` fp32.
    """
    mean = m2 = None
    count = 0
    for s, e in spans:
        xc = cat_frames(parts, s, e)
        b = xc.shape[0]
        flat = xc.reshape(b, num_groups, -1).float()
        var_c, mean_c = torch.var_mean(flat, dim=-1, correction=0)
        n_c = flat.shape[-1]
        var_c, mean_c = var_c.double(), mean_c.double()
        if mean is None:
            mean, m2, count = mean_c, var_c * n_c, n_c
            continue
        total = count + n_c
        delta = mean_c - mean
        mean = mean + delta * (n_c / total)
        m2 = m2 + var_c * n_c + delta**2 * (count * n_c / total)
        count = total
    var = m2 / count
    return mean.float(), torch.rsqrt(var + eps).float()


def group_norm_apply(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """Normalise a ``(B, C, t, H, W)`` chunk with given ``(B, G)`` statistics and ``norm``'s affine, in fp32."""
    b, c = x.shape[:2]
    g = norm.num_groups
    shape = (b, g, c // g) + tuple(x.shape[2:])
    y = (x.float().reshape(shape) - mean.view(b, g, *([1] * (len(shape) - 2)))) * rstd.view(
        b, g, *([1] * (len(shape) - 2))
    )
    y = y.reshape(x.shape)
    if norm.affine:
        view = (1, c) + (1,) * (x.ndim - 2)
        y = y * norm.weight.float().view(view) + norm.bias.float().view(view)
    return y.to(x.dtype)


def norm_act_frames(
    parts: Sequence[torch.Tensor],
    norm: nn.GroupNorm,
    act: Callable[[torch.Tensor], torch.Tensor],
    fn: Callable[[torch.Tensor], torch.Tensor],
    spans: Sequence[tuple[int, int]],
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """For each chunk: ``fn(act(GroupNorm_whole_sequence(cat(parts))))`` on that chunk's frames.

    The pattern of every resnet half ("norm over all frames → SiLU → per-frame conv"). Yields
    ``(start, end, result)`` with ``result`` ``(B, C', t, H', W')``; ``fn`` maps ``(B*t, C, H, W)`` frames.
    """
    mean, rstd = group_norm_stats(parts, norm.num_groups, norm.eps, spans)
    for s, e in spans:
        xc = cat_frames(parts, s, e)
        b = xc.shape[0]
        yield s, e, from_frames(fn(to_frames(act(group_norm_apply(xc, mean, rstd, norm)))), b)


# ----------------------------------------------------------------------------------------------
# VAE decoding
# ----------------------------------------------------------------------------------------------
def auto_decode_chunk(num_frames: int, bytes_per_frame: float, budget_mb: float | None = None) -> int:
    """Frames per VAE decode call so that one chunk's widest decoder activation fits ``budget_mb``."""
    return ChunkPolicy(None, budget_mb).frames(num_frames, bytes_per_frame)


__all__ = [
    "DEFAULT_BUDGET_MB",
    "OFF",
    "ChunkPolicy",
    "activation_bytes_per_frame",
    "auto_decode_chunk",
    "cat_frames",
    "chunk_frames",
    "frame_chunking",
    "frame_spans",
    "from_frames",
    "group_norm_apply",
    "group_norm_stats",
    "map_frames",
    "norm_act_frames",
    "to_frames",
]
