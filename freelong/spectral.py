"""Spatio-temporal low-pass filters and FreeLong's SpectralBlend.

Filters live on a ``(T, H, W)`` grid in the *fftshifted* layout used by FreeInit and FreeLong:
index ``k`` of an axis of length ``N`` has normalised coordinate ``2k/N - 1``, so the DC bin
(index ``N//2`` after ``fftshift``) sits at coordinate 0 for even ``N``. Cut-offs ``d_s`` (space)
and ``d_t`` (time) are in those coordinates, i.e. fractions of the Nyquist frequency.

:func:`spectral_blend` computes ``Re IFFT3D(FFT3D(g) * P + FFT3D(l) * (1 - P))`` — low frequencies
from ``g``, high from ``l``. By linearity this is ``l + Re IFFT3D(P * FFT3D(g - l))``, and for a real
input the real part equals the inverse real FFT with the Hermitian-symmetrised filter
``(P(k) + P(-k)) / 2``; so one forward and one inverse *real* FFT of the difference suffice. The
symmetrisation only matters for odd sizes, where the shifted filter is not symmetric about DC
(e.g. LaVie's 5x8 level), and it reproduces the reference's ``.real`` exactly.

N-branch fusion (FreeLong++'s SpectralFusion, reconstructed) is the same blend with more bands;
Branches ``Z_0 .. Z_c`` are ordered from the narrowest window (highest band) to the widest (lowest band);
``edges[i]`` is the normalised frequency (1 = Nyquist, the coordinates of :mod:`freelong.spectral`)
between branch ``i`` and branch ``i + 1``, so ``edges`` *decreases* with ``i``. With ``L_e`` a low-pass
of cut-off ``e`` (nested: ``L_a <= L_b`` for ``a <= b``), the branch weights are

    W_c = L_{e[c-1]},   W_i = L_{e[i-1]} - L_{e[i]} (0 < i < c),   W_0 = 1 - L_{e[0]},

which telescope to exactly one in every bin (a partition of unity). The fused output
``Re IFFT3D(sum_i W_i FFT3D(Z_i))`` is, by linearity, ``Z_0 + IFFT3D(sum_i L_{e[i]} FFT3D(Z_{i+1} - Z_i))``:
``c`` forward real FFTs and one inverse, and for two branches exactly FreeLong's
:func:`blend_with_rfft_filter` (local + low-pass of global - local).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import torch

from .layout import VIDEO_DIMS

FILTERS = ("gaussian", "butterworth", "ideal", "box")
# FreeLong++'s band transitions (nested low-passes of decreasing cut-off)
BAND_FILTERS = ("ideal", "gaussian", "butterworth")


def _grid(shape: tuple[int, int, int], device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t, h, w = shape
    ct = torch.arange(t, dtype=torch.float64, device=device) * 2 / t - 1
    ch = torch.arange(h, dtype=torch.float64, device=device) * 2 / h - 1
    cw = torch.arange(w, dtype=torch.float64, device=device) * 2 / w - 1
    return ct[:, None, None], ch[None, :, None], cw[None, None, :]


def _check(shape: tuple[int, int, int], d_s: float, d_t: float) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"filter shape must be (T, H, W) with positive sizes, got {shape}")
    for name, d in (("d_s", d_s), ("d_t", d_t)):
        if not (0 < d <= 1):
            raise ValueError(f"{name} must be in (0, 1], got {d}")
    return shape  # type: ignore[return-value]


def _radius2(shape, d_s, d_t, device=None) -> torch.Tensor:
    t, h, w = _grid(shape, device)
    return (t / d_t) ** 2 + (h / d_s) ** 2 + (w / d_s) ** 2


def gaussian_lowpass(shape: tuple[int, int, int], d_s: float = 0.25, d_t: float = 0.25) -> torch.Tensor:
    """``exp(-1/2 [(t/d_t)^2 + (h/d_s)^2 + (w/d_s)^2])`` — FreeLong's and FreeInit's filter."""
    shape = _check(shape, d_s, d_t)
    return torch.exp(-0.5 * _radius2(shape, d_s, d_t)).float()


def butterworth_lowpass(
    shape: tuple[int, int, int], d_s: float = 0.25, d_t: float = 0.25, order: int = 4
) -> torch.Tensor:
    """``1 / (1 + r^(2n))`` with ``r^2 = (t/d_t)^2 + (h/d_s)^2 + (w/d_s)^2`` (n = ``order``)."""
    shape = _check(shape, d_s, d_t)
    return (1.0 / (1.0 + _radius2(shape, d_s, d_t) ** order)).float()


def ideal_lowpass(shape: tuple[int, int, int], d_s: float = 0.25, d_t: float = 0.25) -> torch.Tensor:
    """1 inside the ellipsoid ``(t/d_t)^2 + (h/d_s)^2 + (w/d_s)^2 <= 1``, else 0."""
    shape = _check(shape, d_s, d_t)
    return (_radius2(shape, d_s, d_t) <= 1.0).float()


def box_lowpass(shape: tuple[int, int, int], d_s: float = 0.25, d_t: float = 0.25) -> torch.Tensor:
    """1 inside the box ``|t| <= d_t, |h| <= d_s, |w| <= d_s``, else 0."""
    shape = _check(shape, d_s, d_t)
    t, h, w = _grid(shape)
    return ((t.abs() <= d_t) & (h.abs() <= d_s) & (w.abs() <= d_s)).float()


_BUILDERS: dict[str, Callable[..., torch.Tensor]] = {
    "gaussian": gaussian_lowpass,
    "butterworth": butterworth_lowpass,
    "ideal": ideal_lowpass,
    "box": box_lowpass,
}


def make_lowpass(kind: str, shape: tuple[int, int, int], d_s: float, d_t: float) -> torch.Tensor:
    """Build a named low-pass filter on a ``(T, H, W)`` grid (fftshifted layout)."""
    if kind not in _BUILDERS:
        raise ValueError(f"unknown filter {kind!r}; choose one of {', '.join(FILTERS)}")
    return _BUILDERS[kind](shape, d_s=d_s, d_t=d_t)


def _symmetric_unshifted(lowpass: torch.Tensor) -> torch.Tensor:
    """A shifted-layout filter un-shifted and Hermitian-symmetrised, ``(P(k) + P(-k)) / 2``, in float64."""
    p = torch.fft.ifftshift(lowpass.double(), dim=(-3, -2, -1))
    p_neg = torch.roll(torch.flip(p, dims=(-3, -2, -1)), shifts=(1, 1, 1), dims=(-3, -2, -1))
    return 0.5 * (p + p_neg)


def rfft_half_filter(lowpass: torch.Tensor) -> torch.Tensor:
    """Turn a shifted-layout ``(T, H, W)`` filter into the multiplier for ``rfftn`` over (T, H, W).

    Un-shifts it, symmetrises it (``(P(k) + P(-k)) / 2``, which is what taking ``.real`` after a
    full complex IFFT does implicitly) and keeps the ``W // 2 + 1`` non-negative W frequencies.
    """
    return _symmetric_unshifted(lowpass)[..., : lowpass.shape[-1] // 2 + 1].float()


def axis_filter_matrices(lowpass: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The blend's filtering as three real ``(n, n)`` matrices, one per axis, when the filter factorises.

    If the symmetrised filter is a product ``f_T(k_t) f_H(k_h) f_W(k_w)`` (the Gaussian and the box when at
    most one axis has odd length; odd axes are not symmetric about DC), filtering a real signal is applying
    the circulant ``M_a = Re F^-1 diag(f_a) F`` along each axis in turn: three small matrix products instead
    of a 3D FFT pair, several times cheaper on a DiT's token grid. ``None`` when it does not factorise
    (ideal, Butterworth, two odd axes).
    """
    sym = _symmetric_unshifted(lowpass)
    dc = sym[0, 0, 0]
    if dc.abs() < 1e-12:
        return None
    f_t, f_h, f_w = sym[:, 0, 0], sym[0, :, 0] / dc, sym[0, 0, :] / dc
    # filters are built in fp32: a product up to fp32 rounding is a product
    if not torch.allclose(sym, f_t[:, None, None] * f_h[None, :, None] * f_w[None, None, :], rtol=1e-6, atol=1e-7):
        return None

    def circulant(f: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(f.shape[0], dtype=torch.complex128)
        return torch.fft.ifft(f[:, None] * torch.fft.fft(eye, dim=0), dim=0).real.float()

    return circulant(f_t), circulant(f_h), circulant(f_w)


@lru_cache(maxsize=64)
def cached_axis_filters(
    kind: str, shape: tuple[int, int, int], d_s: float, d_t: float, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """:func:`axis_filter_matrices` of :func:`make_lowpass`, built once per shape and device."""
    mats = axis_filter_matrices(make_lowpass(kind, shape, d_s, d_t))
    return None if mats is None else tuple(m.to(device) for m in mats)


def fuse_by_axis_filters(
    grids: list[torch.Tensor], mats: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """``grids[0] + sum_i A_i (grids[i+1] - grids[i])`` for ``(batch, T, H, W, C)`` inputs, in fp32.

    ``A_i = M_T x M_H x M_W`` from ``mats[i]`` (:func:`axis_filter_matrices`). With two grids this is
    :func:`blend_with_axis_filters`; with more, FreeLong++'s multi-band fusion (one low-pass per pair).
    Each product runs on a contiguous ``(n, n) @ (n, rest)`` view. Returns the first grid's dtype.
    """
    first = grids[0]
    batch, t, h, w, c = first.shape
    out = first.to(torch.float32, copy=True)
    for lower, upper, (m_t, m_h, m_w) in zip(grids[:-1], grids[1:], mats, strict=True):
        x = upper.to(torch.float32, copy=True).sub_(lower).reshape(batch, t, h * w * c)  # one fp32 copy
        x = torch.matmul(m_t, x).view(batch * t, h, w * c)
        x = torch.matmul(m_h, x).view(batch * t * h, w, c)
        out.add_(torch.matmul(m_w, x).view(batch, t, h, w, c))
    return out.to(first.dtype)


def blend_with_axis_filters(
    global_feat: torch.Tensor, local_feat: torch.Tensor, mats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """``local + (M_T x M_H x M_W)(global - local)`` for ``(batch, T, H, W, C)`` inputs, in fp32.

    Equals :func:`blend_with_rfft_filter` with the filter ``mats`` came from (:func:`axis_filter_matrices`).
    """
    return fuse_by_axis_filters([local_feat, global_feat], [mats])


@lru_cache(maxsize=64)
def cached_rfft_filter(
    kind: str, shape: tuple[int, int, int], d_s: float, d_t: float, device: str
) -> torch.Tensor:
    """:func:`rfft_half_filter` of :func:`make_lowpass`, built once per shape and device."""
    return rfft_half_filter(make_lowpass(kind, shape, d_s, d_t)).to(device)


def blend_with_rfft_filter(
    global_feat: torch.Tensor,
    local_feat: torch.Tensor,
    half_filter: torch.Tensor,
    dims: tuple[int, int, int],
) -> torch.Tensor:
    """``local + irfftn(F * rfftn(global - local))`` over ``dims`` = (T, H, W) axes, in fp32.

    ``half_filter`` must already broadcast against the rfft of the input (W axis halved).
    """
    out_dtype = local_feat.dtype
    diff = global_feat.float() - local_feat.float()
    sizes = [diff.shape[d] for d in dims]
    spec = torch.fft.rfftn(diff, dim=dims)
    low = torch.fft.irfftn(spec * half_filter, s=sizes, dim=dims)
    return (local_feat.float() + low).to(out_dtype)


def spectral_blend(global_feat: torch.Tensor, local_feat: torch.Tensor, lowpass: torch.Tensor) -> torch.Tensor:
    """Low frequencies of ``global_feat`` plus high frequencies of ``local_feat``.

    Inputs are ``(..., T, H, W)``; ``lowpass`` is ``(T, H, W)`` in the fftshifted layout. Returns
    ``Re IFFT3D(FFT3D(global) * P + FFT3D(local) * (1 - P))`` in the inputs' dtype, computed in fp32.
    """
    if global_feat.shape != local_feat.shape:
        raise ValueError(f"shape mismatch: {tuple(global_feat.shape)} vs {tuple(local_feat.shape)}")
    if tuple(lowpass.shape) != tuple(global_feat.shape[-3:]):
        raise ValueError(f"filter shape {tuple(lowpass.shape)} != feature (T, H, W) {tuple(global_feat.shape[-3:])}")
    half = rfft_half_filter(lowpass).to(global_feat.device)
    return blend_with_rfft_filter(global_feat, local_feat, half, dims=(-3, -2, -1))


def _band_filter_args(kind: str, shape, edge_t: float, edge_s: float, device) -> tuple:
    """The cache key both band-filter forms take: ``(kind, shape, d_s, d_t, device)`` (space cut-off first)."""
    if kind not in BAND_FILTERS:
        raise ValueError(f"filter must be one of {', '.join(BAND_FILTERS)}, got {kind!r}")
    return kind, tuple(int(s) for s in shape), float(edge_s), float(edge_t), str(device)


def lowpass_half(kind: str, shape: tuple[int, int, int], edge_t: float, edge_s: float, device) -> torch.Tensor:
    """The rfft-domain low-pass ``(T, H, W//2+1)`` of cut-off ``edge_t`` (time) / ``edge_s`` (space), cached."""
    return cached_rfft_filter(*_band_filter_args(kind, shape, edge_t, edge_s, device))


def lowpass_axis_matrices(kind: str, shape: tuple[int, int, int], edge_t: float, edge_s: float, device):
    """The same low-pass as per-axis matrices when it factorises, else ``None`` (:func:`axis_filter_matrices`)."""
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



FREEINIT_FILTERS = ("butterworth", "gaussian", "ideal", "box")


def freeinit_lowpass(kind: str, shape: tuple[int, int, int], d_s: float = 0.25, d_t: float = 0.25,
                     order: int = 4) -> torch.Tensor:
    """FreeInit's low-pass filters (TianxingWu/FreeInit's freeinit_utils.py, diffusers' FreeInitMixin), vectorised.

    With ``d² = ((d_s/d_t)·(2t/T-1))² + (2h/H-1)² + (2w/W-1)²``: ``gaussian`` ``exp(-d²/(2 d_s²))``, ``butterworth``
    ``1/(1 + (d²/d_s²)^order)`` (both equal :func:`gaussian_lowpass`/:func:`butterworth_lowpass`); ``ideal`` is 1
    where ``d² <= 2·d_s`` (the official comparison, so its radius is √(2 d_s), not d_s); ``box`` is 1 on the centred
    box of half-sizes ``round(⌊H/2⌋·d_s)`` (H and W) and ``round(⌊T/2⌋·d_t)`` frames. ``d_s = 0`` or ``d_t = 0``:
    all zeros. Returns fp32 ``(T, H, W)`` in the fftshifted layout.
    """
    if kind not in FREEINIT_FILTERS:
        raise ValueError(f"method.filter must be one of {', '.join(FREEINIT_FILTERS)}, got {kind!r}")
    t_, h_, w_ = (int(s) for s in shape)
    if d_s == 0 or d_t == 0:
        return torch.zeros(t_, h_, w_)
    if kind == "box":
        mask = torch.zeros(t_, h_, w_)
        ts, ss = round(t_ // 2 * d_t), round(int(h_ // 2) * d_s)
        ct, ch, cw = t_ // 2, h_ // 2, w_ // 2
        mask[ct - ts : ct + ts, ch - ss : ch + ss, cw - ss : cw + ss] = 1.0  # thresholds <= centres: no wrap
        return mask
    t, h, w = _grid((t_, h_, w_))
    d2 = ((d_s / d_t) * t) ** 2 + h**2 + w**2
    if kind == "gaussian":
        out = torch.exp(-d2 / (2 * d_s**2))
    elif kind == "butterworth":
        out = 1.0 / (1.0 + (d2 / d_s**2) ** order)
    else:
        out = (d2 <= d_s * 2).double()
    return out.float()
