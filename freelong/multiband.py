"""Multi-band spectral fusion of several attention branches (FreeLong++'s SpectralFusion, reconstructed).

Branches ``Z_0 .. Z_c`` are ordered from the narrowest window (highest band) to the widest (lowest band);
``edges[i]`` is the normalised frequency (1 = Nyquist, the coordinates of :mod:`freelong.spectral`)
between branch ``i`` and branch ``i + 1``, so ``edges`` *decreases* with ``i``. With ``L_e`` a low-pass
of cut-off ``e`` (nested: ``L_a <= L_b`` for ``a <= b``), the branch weights are

    W_c = L_{e[c-1]},   W_i = L_{e[i-1]} - L_{e[i]} (0 < i < c),   W_0 = 1 - L_{e[0]},

which telescope to exactly one in every bin (a partition of unity). The fused output
``Re IFFT3D(sum_i W_i FFT3D(Z_i))`` is, by linearity, ``Z_0 + IFFT3D(sum_i L_{e[i]} FFT3D(Z_{i+1} - Z_i))``:
``c`` forward real FFTs and one inverse, and for two branches exactly FreeLong's
:func:`~freelong.spectral.blend_with_rfft_filter` (local + low-pass of global - local).

Branch outputs are ``(rows, heads, T*S, d)`` attention outputs; :func:`video_view` shows them as a
``(B, heads, T, H, W, d)`` video whichever token layout the backbone uses (UNet temporal attention:
rows = B*H*W and S = 1; a DiT: rows = B and S = H*W tokens per frame, frame-major).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .spectral import cached_axis_filters, cached_rfft_filter

BAND_FILTERS = ("ideal", "gaussian", "butterworth")
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


def _band_filter_args(kind: str, shape, edge_t: float, edge_s: float, device) -> tuple:
    """The cache key both band-filter forms take: ``(kind, shape, d_s, d_t, device)`` (space cut-off first)."""
    if kind not in BAND_FILTERS:
        raise ValueError(f"filter must be one of {', '.join(BAND_FILTERS)}, got {kind!r}")
    return kind, tuple(int(s) for s in shape), float(edge_s), float(edge_t), str(device)


def lowpass_half(kind: str, shape: tuple[int, int, int], edge_t: float, edge_s: float, device) -> torch.Tensor:
    """The rfft-domain low-pass ``(T, H, W//2+1)`` of cut-off ``edge_t`` (time) / ``edge_s`` (space), cached."""
    return cached_rfft_filter(*_band_filter_args(kind, shape, edge_t, edge_s, device))


def lowpass_axis_matrices(kind: str, shape: tuple[int, int, int], edge_t: float, edge_s: float, device):
    """The same low-pass as per-axis matrices when it factorises, else ``None`` (:func:`~freelong.spectral.
    axis_filter_matrices`), cached."""
    return cached_axis_filters(*_band_filter_args(kind, shape, edge_t, edge_s, device))


def band_weights(
    kind: str, shape: tuple[int, int, int], edges_t: Sequence[float], edges_s: Sequence[float] | None = None
) -> torch.Tensor:
    """Branch weights ``(c + 1, T, H, W//2+1)`` in the rfft layout, narrowest branch first (float64).

    ``edges_t``/``edges_s`` are the boundaries between consecutive branches, narrowest pair first
    (decreasing). The weights sum to one in every bin up to float rounding (see the module docstring).
    """
    edges_s = list(edges_t) if edges_s is None else list(edges_s)
    lows = [lowpass_half(kind, shape, et, es, "cpu").double() for et, es in zip(edges_t, edges_s)]
    if not lows:
        t, h, w = shape
        return torch.ones((1, t, h, w // 2 + 1), dtype=torch.float64)
    weights = [1 - lows[0]] + [lows[i - 1] - lows[i] for i in range(1, len(lows))] + [lows[-1]]
    return torch.stack(weights)


def fuse_branches(branches: Sequence[torch.Tensor], lowpasses: Sequence[torch.Tensor]) -> torch.Tensor:
    """``Z_0 + irfftn(sum_i L_i * rfftn(Z_{i+1} - Z_i))`` over the (T, H, W) axes of video views, in fp32.

    ``branches``: ``(B, heads, T, H, W, d)`` views, narrowest window first; ``lowpasses``: one
    ``(T, H, W//2+1)`` half filter per consecutive pair (``len(branches) - 1``). Returns the
    first branch's dtype. Identical branches give the first branch exactly.
    """
    if len(lowpasses) != len(branches) - 1:
        raise ValueError(f"need {len(branches) - 1} low-pass filters for {len(branches)} branches, "
                         f"got {len(lowpasses)}")
    first = branches[0]
    if len(branches) == 1:
        return first
    sizes = [first.shape[d] for d in VIDEO_DIMS]
    spec = None
    for i, low in enumerate(lowpasses):
        diff = branches[i + 1].float() - branches[i].float()
        term = torch.fft.rfftn(diff, dim=VIDEO_DIMS) * low[None, None, :, :, :, None]
        spec = term if spec is None else spec + term
    return (first.float() + torch.fft.irfftn(spec, s=sizes, dim=VIDEO_DIMS)).to(first.dtype)


__all__ = ["BAND_FILTERS", "band_weights", "from_video_view", "fuse_branches", "lowpass_axis_matrices",
           "lowpass_half", "token_grids", "video_view"]
