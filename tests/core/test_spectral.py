"""Spectral filters and SpectralBlend against definitions written independently here (numpy, float64)."""

import math

import numpy as np
import pytest
import torch

from freelong.spectral import (
    axis_filter_matrices,
    blend_with_axis_filters,
    box_lowpass,
    butterworth_lowpass,
    gaussian_lowpass,
    ideal_lowpass,
    make_lowpass,
    rfft_half_filter,
    spectral_blend,
)


def coords(n):
    return np.arange(n) * 2.0 / n - 1.0


def np_gaussian(shape, d_s, d_t):
    t, h, w = np.meshgrid(coords(shape[0]), coords(shape[1]), coords(shape[2]), indexing="ij")
    return np.exp(-0.5 * ((t / d_t) ** 2 + (h / d_s) ** 2 + (w / d_s) ** 2))


def np_blend(g, loc, p):
    """Re IFFT3D(ishift(shift(FFT3D g) P + shift(FFT3D l) (1 - P))) in float64 — the paper's Eq. 3-5."""
    ax = (-3, -2, -1)
    G = np.fft.fftshift(np.fft.fftn(g, axes=ax), axes=ax)
    L = np.fft.fftshift(np.fft.fftn(loc, axes=ax), axes=ax)
    return np.fft.ifftn(np.fft.ifftshift(G * p + L * (1 - p), axes=ax), axes=ax).real


@pytest.mark.parametrize("shape", [(8, 6, 10), (16, 5, 8), (7, 3, 4), (1, 4, 4)])
def test_gaussian_matches_definition(shape):
    np.testing.assert_allclose(gaussian_lowpass(shape, 0.25, 0.4).numpy(), np_gaussian(shape, 0.25, 0.4), atol=1e-7)


def test_gaussian_golden_values():
    p = gaussian_lowpass((8, 8, 8), 0.25, 0.25)
    assert p[4, 4, 4] == pytest.approx(1.0)  # DC after fftshift for even sizes
    assert p[5, 4, 4] == pytest.approx(math.exp(-0.5))  # |t'| = 0.25 = d_t
    # odd size (LaVie's 5x8 level): the profile along h is not symmetric about the DC bin (index 2)
    prof = gaussian_lowpass((2, 5, 2), 0.25, 0.25)[1, :, 1].numpy()
    np.testing.assert_allclose(prof, [math.exp(-8), math.exp(-2.88), math.exp(-0.32), math.exp(-0.32),
                                      math.exp(-2.88)], rtol=1e-6)


def test_other_filters_match_their_definitions():
    shape = (8, 8, 6)
    t, h, w = np.meshgrid(coords(8), coords(8), coords(6), indexing="ij")
    r2 = (t / 0.5) ** 2 + (h / 0.25) ** 2 + (w / 0.25) ** 2
    np.testing.assert_allclose(butterworth_lowpass(shape, 0.25, 0.5, order=4).numpy(), 1 / (1 + r2**4), rtol=1e-6)
    np.testing.assert_array_equal(ideal_lowpass(shape, 0.25, 0.5).numpy(), (r2 <= 1).astype(np.float32))
    box = (np.abs(t) <= 0.5) & (np.abs(h) <= 0.25) & (np.abs(w) <= 0.25)
    np.testing.assert_array_equal(box_lowpass(shape, 0.25, 0.5).numpy(), box.astype(np.float32))


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_cutoffs_outside_unit_interval_are_rejected(bad):
    with pytest.raises(ValueError, match="d_s"):
        gaussian_lowpass((4, 4, 4), d_s=bad, d_t=0.25)
    with pytest.raises(ValueError, match="unknown filter"):
        make_lowpass("triangle", (4, 4, 4), 0.25, 0.25)


@pytest.mark.parametrize("shape", [(8, 6, 10), (16, 5, 8), (7, 5, 7), (3, 3, 3)])
@pytest.mark.parametrize("kind", ["gaussian", "butterworth", "ideal", "box"])
def test_blend_equals_float64_fft_reference(shape, kind):
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(2, 3, *shape, generator=gen)
    loc = torch.randn(2, 3, *shape, generator=gen)
    p = make_lowpass(kind, shape, 0.3, 0.25)
    out = spectral_blend(g, loc, p)
    ref = np_blend(g.double().numpy(), loc.double().numpy(), p.double().numpy())
    np.testing.assert_allclose(out.numpy(), ref, atol=2e-6)
    assert out.dtype == g.dtype


def test_all_pass_gives_global_and_all_stop_gives_local():
    g, loc = torch.randn(2, 8, 6, 5), torch.randn(2, 8, 6, 5)
    torch.testing.assert_close(spectral_blend(g, loc, torch.ones(8, 6, 5)), g, atol=1e-5, rtol=0)
    torch.testing.assert_close(spectral_blend(g, loc, torch.zeros(8, 6, 5)), loc, atol=1e-5, rtol=0)


def test_half_precision_inputs_are_blended_in_fp32():
    g, loc = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
    p = gaussian_lowpass((16, 8, 8))
    out16 = spectral_blend(g.half(), loc.half(), p)
    assert out16.dtype == torch.float16
    ref = spectral_blend(g.half().float(), loc.half().float(), p)
    torch.testing.assert_close(out16.float(), ref, atol=2e-3, rtol=0)


def test_rfft_filter_is_plain_unshift_for_even_sizes():
    p = gaussian_lowpass((8, 6, 10), 0.25, 0.25)
    expected = torch.fft.ifftshift(p, dim=(-3, -2, -1))[..., :6]
    torch.testing.assert_close(rfft_half_filter(p), expected)


def test_shape_mismatch_errors():
    with pytest.raises(ValueError, match="filter shape"):
        spectral_blend(torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 4), torch.ones(4, 4, 5))


@pytest.mark.parametrize("kind,shape", [
    *[(kind, shape) for kind in ("gaussian", "box") for shape in ((9, 4, 6), (8, 6, 10), (21, 8, 14))],
    ("gaussian", (1, 4, 4)),  # (a one-frame box passes nothing: its DC lies outside |t| <= d_t)
])
def test_factorising_filters_blend_by_axis_matrices_like_the_fft_definition(shape, kind):
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(2, *shape, 5, generator=gen)  # (batch, T, H, W, C)
    loc = torch.randn(2, *shape, 5, generator=gen)
    p = make_lowpass(kind, shape, 0.3, 0.25)
    mats = axis_filter_matrices(p)
    assert mats is not None
    out = blend_with_axis_filters(g, loc, mats)
    as_video = lambda x: np.moveaxis(x.double().numpy(), -1, 1)  # (batch, C, T, H, W)
    ref = np_blend(as_video(g), as_video(loc), p.double().numpy())
    np.testing.assert_allclose(np.moveaxis(out.numpy(), -1, 1), ref, atol=2e-6)
    assert out.dtype == g.dtype


@pytest.mark.parametrize("kind,shape", [
    ("ideal", (8, 6, 10)),  # a sphere is no product of per-axis profiles
    ("butterworth", (8, 6, 10)),
    ("gaussian", (7, 5, 8)),  # two odd axes: the symmetrised filter is a sum of two products
])
def test_filters_that_do_not_factorise_have_no_axis_matrices(kind, shape):
    assert axis_filter_matrices(make_lowpass(kind, shape, 0.3, 0.25)) is None


def test_axis_matrix_blend_of_bfloat16_inputs_is_the_definition_rounded_once():
    g, loc = torch.randn(1, 9, 4, 6, 5).bfloat16(), torch.randn(1, 9, 4, 6, 5).bfloat16()
    p = gaussian_lowpass((9, 4, 6))
    out = blend_with_axis_filters(g, loc, axis_filter_matrices(p))
    assert out.dtype == torch.bfloat16
    as_video = lambda x: np.moveaxis(x.double().numpy(), -1, 1)
    ref = np.moveaxis(np_blend(as_video(g), as_video(loc), p.double().numpy()), 1, -1)
    rounded = torch.from_numpy(ref).bfloat16().double().numpy()  # the exact result in bf16
    np.testing.assert_allclose(out.double().numpy(), rounded, atol=1e-6 + 2 ** -7 * np.abs(ref).max())
