"""FreeLong++ (reconstructed): band partition, multi-band fusion, sparse keys, SpecMix, reductions, validation.

References are written from the definitions (softmax with masks, full complex FFTs of every branch
weighted by the band weights built from the shifted-layout low-pass filters), not from the code.
"""

import math

import numpy as np
import pytest
import torch
from helpers import random_qkv

from freelong import get_method
from freelong.attention.context import CallContext, TemporalAttentionContext
from freelong.attention.kernels import sparse_key_index
from freelong.attention.windows import local_window_mask
from freelong.layout import video_view
from freelong.methods.freelong import SpectralBlendProcessor
from freelong.noise import rescheduled_noise
from freelong.spectral import (
    band_weights,
    butterworth_lowpass,
    fuse_branches,
    gaussian_lowpass,
    ideal_lowpass,
    lowpass_half,
)

LOWPASS = {"gaussian": gaussian_lowpass, "butterworth": butterworth_lowpass, "ideal": ideal_lowpass}


def qkv(rows, heads=2, t=24, d=8, seed=0):
    return random_qkv(rows, heads, t, d, seed)


def ctx(t, h, w, b=2, level=1, step=None):
    return TemporalAttentionContext(frame_shape=(t, h, w), batch=b, level=level, name="x", step_index=step)


def softmax_attn(q, k, v, mask=None, bias=None):
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, -1) @ v


def pp(**kw):
    kw.setdefault("native_frames", 16)
    return get_method("freelong_pp", **kw)


# -- bands -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ideal", "gaussian", "butterworth"])
@pytest.mark.parametrize("shape", [(24, 6, 8), (17, 5, 7)])
def test_branch_weights_are_a_partition_of_unity(kind, shape):
    w = band_weights(kind, shape, [0.5, 0.25, 0.125])
    assert w.shape == (4, shape[0], shape[1], shape[2] // 2 + 1)
    assert float((w.sum(0) - 1).abs().max()) < 1e-12  # every bin
    assert float(w.min()) >= -1e-12  # nested low-passes: no negative weight
    if kind == "ideal" and all(s % 2 == 0 for s in shape):
        assert set(w.unique().tolist()) <= {0.0, 1.0}  # each bin in exactly one band


def test_ideal_bands_are_annuli_of_the_normalised_radius():
    t, h, w = 16, 8, 8
    wts = band_weights("ideal", (t, h, w), [0.5, 0.25])  # narrowest, middle, widest
    ft, fh, fw = (torch.fft.fftfreq(n, dtype=torch.float64) * 2 for n in (t, h, w))
    r = (ft[:, None, None] ** 2 + fh[None, :, None] ** 2 + fw[None, None, :] ** 2).sqrt()[..., : w // 2 + 1]
    torch.testing.assert_close(wts[2], (r <= 0.25).double())
    torch.testing.assert_close(wts[1], ((r > 0.25) & (r <= 0.5)).double())
    torch.testing.assert_close(wts[0], (r > 0.5).double())


def test_nyquist_rule_default_edges():
    m = pp(scales=[1, 2, 4])
    assert m.resolved_edges([16, 32, 64]) == ([0.25, 0.125], [0.25, 0.125])  # pairs narrowest first
    assert pp(scales=[1, 2, 4, 8]).resolved_edges([16, 32, 64, 128])[0] == [0.25, 0.125, 0.0625]
    # explicit bands are listed increasing (widest pair first)
    assert pp(scales=[1, 2, 4], bands=[0.1, 0.3]).resolved_edges([16, 32, 64])[0] == [0.3, 0.1]


# -- fusion ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gaussian", "ideal", "butterworth"])
@pytest.mark.parametrize("t,h,w", [(24, 6, 8), (21, 5, 7)])
def test_fusion_equals_weighted_sum_of_full_complex_spectra(kind, t, h, w):
    """Z' = Re IFFT3D(sum_l P_l FFT3D(Z_l)), P_l the band weights from the shifted-layout low-passes."""
    b, heads, d = 2, 2, 4
    zs = qkv(b * h * w, heads, t, d, seed=3)  # three "branch outputs", narrowest first
    edges_t, edges_s = [0.5, 0.2], [0.6, 0.3]
    lows = [lowpass_half(kind, (t, h, w), et, es, "cpu") for et, es in zip(edges_t, edges_s)]
    got = fuse_branches([video_view(z, (t, h, w)) for z in zs], lows)

    def vid(z):  # (b*h*w, heads, t, d) -> (b, heads, d, t, h, w)
        return z.double().reshape(b, h, w, heads, t, d).permute(0, 3, 5, 4, 1, 2).numpy()

    lp = [LOWPASS[kind]((t, h, w), d_s=es, d_t=et).double().numpy() for et, es in zip(edges_t, edges_s)]
    weights = [1 - lp[0], lp[0] - lp[1], lp[1]]
    ax = (-3, -2, -1)
    spec = sum(wt * np.fft.fftshift(np.fft.fftn(vid(z), axes=ax), axes=ax) for wt, z in zip(weights, zs))
    ref = np.fft.ifftn(np.fft.ifftshift(spec, axes=ax), axes=ax).real
    np.testing.assert_allclose(got.double().permute(0, 1, 5, 2, 3, 4).numpy(), ref, atol=2e-5)


@pytest.mark.parametrize("t,h,w", [(21, 6, 8), (24, 4, 6)])
def test_dit_fusion_by_axis_matrices_equals_the_weighted_sum_of_full_complex_spectra(t, h, w):
    """The DiT path (Gaussian bands, at most one odd axis): per-axis matrix products, same definition."""
    from freelong.layout import token_grids
    from freelong.spectral import axis_filter_matrices, fuse_by_axis_filters

    b, heads, d = 1, 2, 4
    # (B, heads, N, d) views of (B, N, heads, d) memory, as diffusers' Wan hands them over
    zs = [z.transpose(1, 2) for z in qkv(b, t * h * w, heads, d, seed=8)]
    edges_t, edges_s = [0.5, 0.2], [0.6, 0.3]
    lp = [gaussian_lowpass((t, h, w), d_s=es, d_t=et) for et, es in zip(edges_t, edges_s)]
    grids, back = token_grids(zs, (t, h, w))
    got = back(fuse_by_axis_filters(grids, [axis_filter_matrices(p) for p in lp]))
    assert got.shape == zs[0].shape

    def vid(z):  # (b, heads, T*H*W, d) -> (b, heads, d, T, H, W)
        return z.double().reshape(b, heads, t, h, w, d).permute(0, 1, 5, 2, 3, 4).numpy()

    lpd = [p.double().numpy() for p in lp]
    weights = [1 - lpd[0], lpd[0] - lpd[1], lpd[1]]
    ax = (-3, -2, -1)
    spec = sum(wt * np.fft.fftshift(np.fft.fftn(vid(z), axes=ax), axes=ax) for wt, z in zip(weights, zs))
    ref = np.fft.ifftn(np.fft.ifftshift(spec, axes=ax), axes=ax).real
    np.testing.assert_allclose(vid(got), ref, atol=2e-5)


def test_fused_identical_branches_are_that_branch_exactly():
    (z,) = qkv(2 * 4 * 6, t=20, seed=5)[:1]
    view = video_view(z, (20, 4, 6))
    lows = [lowpass_half("gaussian", (20, 4, 6), e, e, "cpu") for e in (0.5, 0.25, 0.1)]
    assert torch.equal(fuse_branches([view] * 4, lows), view)


def test_video_view_is_the_frames_by_height_by_width_video():
    b, h, w, heads, t, d = 2, 3, 4, 2, 5, 6
    x = torch.arange(b * h * w * heads * t * d, dtype=torch.float32).reshape(b * h * w, heads, t, d)
    v = video_view(x, (t, h, w))
    assert v.shape == (b, heads, t, h, w, d)
    # element (batch 1, head 0, frame 2, row 1, column 3) is row-major position (1, 1, 3) of the B*H*W rows
    assert torch.equal(v[1, 0, 2, 1, 3], x[1 * h * w + 1 * w + 3, 0, 2])


# -- branches ----------------------------------------------------------------------------------------
def test_sparse_key_index_is_uniform_and_keeps_the_ends():
    assert sparse_key_index(16, 0.5).tolist() == [0, 2, 4, 6, 9, 11, 13, 15]
    assert sparse_key_index(64, 0.25).tolist() == [round(i * 63 / 15) for i in range(16)]
    assert sparse_key_index(10, 1.0).tolist() == list(range(10))
    assert sparse_key_index(5, 0.5).tolist() == [0, 2, 4]  # 2.5 keys round up
    assert sparse_key_index(9, 0.01).tolist() == [4]  # at least one key: the centre frame


def test_plan_keeps_branches_up_to_the_first_that_covers_the_video():
    proc = pp(scales=[1, 2, 4]).processor()
    assert proc.plan(64).windows == (16, 32, None) and proc.plan(64).edges_t == (0.25, 0.125)
    assert proc.plan(40).windows == (16, 32, None)
    assert proc.plan(32).windows == (16, None) and proc.plan(32).edges_t == (0.25,)
    assert proc.plan(16).windows == (None,) and proc.plan(10).windows == (None,)
    auto = pp(scales=None).processor()
    assert auto.plan(128).windows == (16, 32, 64, None) and auto.plan(100).windows == (16, 32, 64, None)
    local_widest = pp(scales=[1, 2], global_widest=False).processor()
    assert local_widest.plan(64).windows == (16, 32)


@pytest.mark.parametrize("layout", ["adjusted", "centered"])
def test_three_branches_with_sparse_keys_equal_the_reference(layout):
    t, h, w, b = 64, 3, 4, 2
    q, k, v = qkv(b * h * w, t=t, seed=1)
    bias_table = torch.randn(2, t, t)

    def bias(qi, ki):
        return bias_table[:, qi][:, :, ki]

    m = pp(scales=[1, 2, 4], filter="gaussian", sparse_global_keys=0.5, layout=layout)
    out = m.processor()(q, k, v, bias=bias, ctx=ctx(t, h, w, b))
    keys = torch.tensor([round(i * 63 / 31) for i in range(32)])
    branches = [softmax_attn(q, k, v, local_window_mask(t, 16, layout), bias_table),
                softmax_attn(q, k, v, local_window_mask(t, 32, layout), bias_table),
                softmax_attn(q, k[:, :, keys], v[:, :, keys], bias=bias_table[:, :, keys])]
    lows = [lowpass_half("gaussian", (t, h, w), e, e, "cpu") for e in (0.25, 0.125)]
    ref = fuse_branches([video_view(z, (t, h, w)) for z in branches], lows)
    torch.testing.assert_close(video_view(out, (t, h, w)), ref, atol=2e-5, rtol=0)


@pytest.mark.parametrize("t,layout", [(64, "adjusted"), (48, "centered"), (32, "adjusted")])
def test_two_dense_branches_with_freelongs_filter_are_freelong(t, layout):
    h, w, b = 5, 6, 2
    q, k, v = qkv(b * h * w, t=t, seed=2)
    fl = SpectralBlendProcessor(window=16, d_s=0.25, d_t=0.25, filter="gaussian", layout=layout)
    m = pp(scales=[1, t / 16], bands=[0.25], sparse_global_keys=1.0, filter="gaussian", layout=layout)
    c = ctx(t, h, w, b)
    assert torch.equal(m.processor()(q, k, v, bias=None, ctx=c), fl(q, k, v, bias=None, ctx=c))


def test_one_branch_is_plain_or_local_attention():
    h, w, b = 3, 4, 2
    q, k, v = qkv(b * h * w, t=16)
    c = ctx(16, h, w, b)
    for m in (pp(scales=[1]), pp(scales=[1, 2, 4]), pp(scales=None), pp(windows=[16])):  # sparse keys stay off
        torch.testing.assert_close(m.processor()(q, k, v, bias=None, ctx=c), softmax_attn(q, k, v), atol=1e-5, rtol=0)
    q, k, v = qkv(b * h * w, t=24)
    local = pp(windows=[8], global_widest=False).processor()(q, k, v, bias=None, ctx=ctx(24, h, w, b))
    torch.testing.assert_close(local, softmax_attn(q, k, v, local_window_mask(24, 8)), atol=1e-5, rtol=0)


def test_local_only_levels_and_blend_steps_run_the_narrowest_branch():
    t, h, w, b = 64, 3, 4, 2
    q, k, v = qkv(b * h * w, t=t)
    narrow = softmax_attn(q, k, v, local_window_mask(t, 16))
    proc = pp(blend_steps=10, local_only_levels=[0]).processor()
    torch.testing.assert_close(proc(q, k, v, bias=None, ctx=ctx(t, h, w, b, level=0, step=0)), narrow, atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(proc(q, k, v, bias=None, ctx=ctx(t, h, w, b, level=1, step=10)), narrow, atol=1e-5,
                               rtol=0)
    assert not torch.allclose(proc(q, k, v, bias=None, ctx=ctx(t, h, w, b, level=1, step=9)), narrow, atol=1e-4)


# -- on the tiny UNets ---------------------------------------------------------------------------------
@torch.no_grad()
def test_on_lavie_two_branches_equal_freelong_and_native_length_is_the_plain_model(lavie_tiny, one_thread):
    unet = lavie_tiny.unet
    g = torch.Generator().manual_seed(0)
    x, txt = torch.randn(1, 4, 32, 4, 6, generator=g), torch.randn(1, 77, 32, generator=g)
    call = CallContext(step_index=0, num_steps=10)
    with lavie_tiny.attach(get_method("freelong")):
        ref = unet(x, 500, txt, call=call)
    m = get_method("freelong_pp", scales=[1, 2], bands=[0.25], sparse_global_keys=1.0).with_native_frames(16)
    with lavie_tiny.attach(m):
        assert torch.equal(unet(x, 500, txt, call=call), ref)
    x16 = x[:, :, :16]
    plain = unet(x16, 500, txt)
    with lavie_tiny.attach(get_method("freelong_pp").with_native_frames(16)):
        torch.testing.assert_close(unet(x16, 500, txt, call=call), plain, atol=2e-6, rtol=0)


@torch.no_grad()
def test_runs_on_videocrafter2_and_changes_long_videos(one_thread):
    from freelong import load_backbone

    bb = load_backbone("videocrafter2_tiny")
    g = torch.Generator().manual_seed(1)
    x, txt = torch.randn(1, 4, 64, 4, 4, generator=g), torch.randn(1, 77, 32, generator=g)
    kw = bb.unet_kwargs()
    plain = bb.unet(x, torch.tensor(501), txt, **kw)
    with bb.attach(get_method("freelong_pp", local_only_levels=[]).with_native_frames(bb.native_frames)):
        out = bb.unet(x, torch.tensor(501), txt, **kw)
    assert out.shape == plain.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, plain, atol=1e-4)


# -- SpecMix ---------------------------------------------------------------------------------------------
def test_specmix_is_the_angle_mix_of_freenoise_base_and_fresh_noise():
    shape = (1, 2, 9, 4, 5)
    m = pp(native_frames=4, noise_stride=2)
    got = m.init_noise(shape, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    base = rescheduled_noise(shape, window=4, stride=2, generator=g)
    res = torch.randn(shape, generator=g)
    for t in range(9):
        theta = abs(t - 4) / 4 * math.pi / 2
        torch.testing.assert_close(got[:, :, t], math.cos(theta) * base[:, :, t] + math.sin(theta) * res[:, :, t])
    assert torch.equal(got[:, :, 4], base[:, :, 4])  # centre: the base noise
    torch.testing.assert_close(got[:, :, 0], res[:, :, 0], atol=1e-6, rtol=0)  # ends: fresh noise


@pytest.mark.parametrize("cutoff", [None, 0.3])
def test_specmix_keeps_unit_variance_in_every_frame(cutoff):
    shape = (8, 4, 12, 32, 32)
    x = pp(specmix_cutoff=cutoff).init_noise(shape, torch.Generator().manual_seed(0))
    var = x.double().var(dim=(0, 1, 3, 4))
    assert float((var - 1).abs().max()) < 0.05  # 32768 samples per frame: std error ~0.008
    assert float(x.double().mean().abs()) < 0.02


def test_specmix_cutoff_keeps_the_base_below_it():
    shape = (1, 1, 7, 16, 16)
    g = torch.Generator().manual_seed(3)
    base = rescheduled_noise(shape, window=16, stride=4, generator=g)
    x = pp(specmix_cutoff=0.5).init_noise(shape, torch.Generator().manual_seed(3))
    fx, fb = torch.fft.rfft2(x.double(), norm="ortho"), torch.fft.rfft2(base.double(), norm="ortho")
    low = (torch.fft.fftfreq(16)[:, None] * 2) ** 2 + (torch.fft.rfftfreq(16)[None, :] * 2) ** 2 < 0.25
    torch.testing.assert_close(fx[..., low], fb[..., low])
    assert not torch.allclose(fx[:, :, 0][..., ~low], fb[:, :, 0][..., ~low])


def test_noise_choices():
    shape = (1, 1, 20, 2, 2)
    assert torch.equal(pp(noise="freenoise").init_noise(shape, torch.Generator().manual_seed(0)),
                       rescheduled_noise(shape, 16, 4, torch.Generator().manual_seed(0)))
    assert torch.equal(pp(noise="random").init_noise(shape, torch.Generator().manual_seed(0)),
                       torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    assert pp().for_multi_prompt().noise == "random"


# -- parameters ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,key", [
    ({"scales": [2, 1]}, "method.scales"),
    ({"scales": [1, 1]}, "method.scales"),
    ({"scales": []}, "method.scales"),
    ({"windows": [8, 8]}, "method.windows"),
    ({"windows": [0, 8]}, "method.windows"),
    ({"bands": [0.25, 0.125]}, "method.bands"),
    ({"bands": [0.0, 0.25]}, "method.bands"),
    ({"bands": [0.25, 1.5]}, "method.bands"),
    ({"bands": [0.25]}, "method.bands"),  # 3 branches need 2 edges
    ({"scales": None, "bands": [0.25]}, "method.bands"),
    ({"bands": [0.1, 0.2], "spatial_bands": [0.3, 0.2]}, "method.spatial_bands"),
    ({"filter": "box"}, "method.filter"),
    ({"sparse_global_keys": 0.0}, "method.sparse_global_keys"),
    ({"sparse_global_keys": 1.5}, "method.sparse_global_keys"),
    ({"noise": "pink"}, "method.noise"),
    ({"noise_stride": 17}, "method.noise_stride"),
    ({"specmix_cutoff": 0.0}, "method.specmix_cutoff"),
    ({"layout": "x"}, "method.layout"),
    ({"scales": [1, 1.01]}, "more branches than the frame count allows"),
    ({"scales": [0.01, 1]}, "more branches than the frame count allows"),
])
def test_bad_parameters_name_their_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        pp(**kwargs)


def test_widest_branch_must_cover_the_video_when_global():
    with pytest.raises(ValueError, match=r"method\.scales.*meant to be global.*128 frames"):
        pp(scales=[1, 2, 4]).check_frames(128)
    with pytest.raises(ValueError, match=r"method\.windows"):
        pp(windows=[8, 16]).check_frames(20)
    pp(scales=[1, 2, 4]).check_frames(64)
    pp(scales=None).check_frames(1000)
    pp(scales=[1, 2], global_widest=False).check_frames(128)


def test_native_length_comes_from_the_backbone_and_the_record_says_reconstruction():
    m = get_method("freelong_pp")
    assert m.native_frames is None
    with pytest.raises(ValueError, match="native length"):
        m.processor()
    bound = m.with_native_frames(21)
    assert bound.native_frames == 21 and bound.resolved_windows(84) == [21, 42, 84]
    assert get_method("freelong_pp", native_frames=16).with_native_frames(21).native_frames == 16
    params = bound.params()
    assert "reconstructed from public descriptions" in params["reconstruction"]
    assert {"scales", "bands", "sparse_global_keys", "specmix_cutoff"} <= set(params["open_choices"])


def test_compose_validate_and_run(compose_cfg, tmp_path):
    import json

    from hydra.errors import ConfigCompositionException

    from freelong.app.config import validate_config
    from freelong.app.runner import run
    from freelong.errors import ConfigError

    cfg = compose_cfg("method=freelong_pp", "num_frames=64")
    validate_config(cfg)
    assert list(cfg.method.scales) == [1, 2, 4] and cfg.method.sparse_global_keys == 0.5
    with pytest.raises(ConfigCompositionException):
        compose_cfg("method=freelong_pp", "method.scale=[1,2]")
    bad = compose_cfg("method=freelong_pp", "num_frames=128", f"paths.output_root={tmp_path}")
    with pytest.raises(ConfigError, match=r"method\.scales"):
        run(bad)
    ok = compose_cfg("method=freelong_pp", "num_frames=40", "height=32", "width=32", "num_inference_steps=1",
                     "progress=false", f"paths.output_root={tmp_path}")
    rec = json.loads((run(ok) / "results.jsonl").read_text().splitlines()[0])
    assert rec["method"] == "freelong_pp" and rec["method_params"]["native_frames"] == 16
    assert "reconstructed" in rec["method_params"]["reconstruction"]


def _token_mask(frame_mask, s):
    return frame_mask.repeat_interleave(s, 0).repeat_interleave(s, 1)


def test_sparse_keys_and_fusion_with_many_tokens_per_frame():
    """A DiT layout: rows = B, T*S frame-major tokens with S = H*W; sparse keys keep all tokens of a key frame."""
    t, h, w, b = 16, 2, 3, 2
    s = h * w
    q, k, v = qkv(b, t=t * s, seed=6)
    keys = sparse_key_index(t, 0.5)
    frame_mask = torch.zeros(t, t, dtype=torch.bool)
    frame_mask[:, keys] = True
    from freelong.attention.kernels import sparse_global_attention

    torch.testing.assert_close(sparse_global_attention(q, k, v, None, 0.5, tokens_per_frame=s),
                               softmax_attn(q, k, v, _token_mask(frame_mask, s)), atol=1e-5, rtol=0)
    # the (B, heads, T, H, W, d) view of frame-major tokens, and fusion over it
    view = video_view(q, (t, h, w), s)
    assert torch.equal(view[1, 0, 3, 1, 2], q[1, 0, 3 * s + 1 * w + 2])
    lows = [lowpass_half("gaussian", (t, h, w), 0.25, 0.25, "cpu")]
    ref = fuse_branches([video_view(z, (t, h, w), s) for z in (q, k)], lows)
    from freelong.layout import from_video_view

    assert torch.equal(from_video_view(video_view(q, (t, h, w), s), s), q)
    assert ref.shape == (b, 2, t, h, w, 8)


@pytest.mark.parametrize("sparse_keys", [0.5, 1.0])  # 1.0: all three branches from one pass over the keys
def test_three_branches_with_many_tokens_per_frame_equal_the_token_masked_reference(sparse_keys):
    t, h, w, b = 64, 2, 2, 1
    s = h * w
    q, k, v = qkv(b, t=t * s, seed=7)
    c = ctx(t, h, w, b)
    c.tokens_per_frame = s
    out = pp(scales=[1, 2, 4], sparse_global_keys=sparse_keys).processor()(q, k, v, bias=None, ctx=c)
    keys = sparse_key_index(t, sparse_keys)
    sparse = torch.zeros(t, t, dtype=torch.bool)
    sparse[:, keys] = True
    branches = [softmax_attn(q, k, v, _token_mask(local_window_mask(t, 16), s)),
                softmax_attn(q, k, v, _token_mask(local_window_mask(t, 32), s)),
                softmax_attn(q, k, v, _token_mask(sparse, s))]
    lows = [lowpass_half("gaussian", (t, h, w), e, e, "cpu") for e in (0.25, 0.125)]
    ref = fuse_branches([video_view(z, (t, h, w), s) for z in branches], lows)
    torch.testing.assert_close(video_view(out, (t, h, w), s), ref, atol=2e-5, rtol=0)


# -- experiments, analysis, benchmark --------------------------------------------------------------------
@pytest.mark.parametrize("experiment", ["sweep_freelong_pp_bands", "sweep_freelong_pp_scales"])
def test_every_value_of_the_sweeps_composes_and_validates(compose_cfg, experiment):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from freelong.app.config import validate_config
    from freelong.models.spec import CONF_DIR

    params = OmegaConf.load(CONF_DIR / "experiment" / f"{experiment}.yaml").hydra.sweeper.params
    parser = OverridesParser.create()
    for key, values in params.items():
        if key == "seed":
            continue
        (override,) = parser.parse_overrides([f"{key}={values}"])
        choices = list(override.sweep_string_iterator())
        assert len(choices) > 1
        for choice in choices:
            validate_config(compose_cfg(f"experiment={experiment}", f"{key}={choice}"))


def test_snr_vs_length_accepts_freelong_pp(compose_cfg, tmp_path, one_thread):
    import pandas as pd

    from analysis.frequency import run_experiment
    from freelong.errors import ConfigError

    base = ["experiment=snr_vs_length_freelong_pp", "num_inference_steps=1", "height=32", "width=32",
            "progress=false", f"paths.output_root={tmp_path}"]
    res = run_experiment(compose_cfg(*base, "analysis.lengths=[16,32]", "analysis.cutoff=[0.125,0.25]",
                                     "analysis.methods=[direct,{name:freelong_pp,scales:null}]"))
    rel = pd.read_csv(res["run_dir"] / "snr_relative.csv")
    pp_rows = rel[rel.method == "freelong_pp(scales=None)"]
    # lengths x domains x FreeLong++'s three Nyquist bands, except the 4x4 latent frame's empty middle band
    # (its spatial radii are 0, 0.5, 0.71, ...)
    assert len(pp_rows) == 2 * 3 * 3 - 2
    assert set(pp_rows.band) == {"r<0.125", "0.125≤r<0.25", "r≥0.25"}
    assert "0.125≤r<0.25" not in set(pp_rows[pp_rows.domain == "space"].band)
    assert np.allclose(pp_rows[pp_rows.length == 16]["relative_snr"], 1.0)
    # the widest default window (4 x 16) cannot be global at 128 frames: refused before any model is built
    with pytest.raises(ConfigError, match=r"freelong_pp.*128 frames.*method\.scales"):
        run_experiment(compose_cfg(*base, "analysis.lengths=[16,128]", "analysis.methods=[freelong_pp]",
                                   f"paths.output_root={tmp_path / 'bad'}"))
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").rglob("*.csv"))


def test_benchmark_method_specs():
    from scripts.benchmark import method_from_spec

    m = method_from_spec("freelong_pp:sparse_global_keys=1.0:scales=[1,4]")
    assert m.name == "freelong_pp:sparse_global_keys=1.0:scales=[1,4]"
    assert (m.sparse_global_keys, m.scales) == (1.0, [1, 4])
    bound = m.with_native_frames(16)
    assert bound.native_frames == 16 and type(bound).name == "freelong_pp"
    with pytest.raises(SystemExit, match="sparse_global_keys"):
        method_from_spec("freelong_pp:sparse_global_keys=0")


def _band_only(z, lp, t, h, w, b):
    """Re IFFT3D(P * FFT3D(z)) over (T, H, W) with a shifted-layout weight P (numpy, complex, float64)."""
    heads, d = z.shape[1], z.shape[-1]
    vid = z.double().reshape(b, h, w, heads, t, d).permute(0, 3, 5, 4, 1, 2).numpy()  # (b, heads, d, t, h, w)
    ax = (-3, -2, -1)
    spec = lp * np.fft.fftshift(np.fft.fftn(vid, axes=ax), axes=ax)
    out = np.fft.ifftn(np.fft.ifftshift(spec, axes=ax), axes=ax).real
    return torch.from_numpy(out).permute(0, 4, 5, 1, 3, 2).reshape(b * h * w, heads, t, d).float()


def test_branch_modes_for_the_component_study():
    t, h, w, b = 64, 3, 4, 2
    q, k, v = qkv(b * h * w, t=t, seed=4)
    c = ctx(t, h, w, b)
    keys = torch.tensor([round(i * 63 / 31) for i in range(32)])
    branches = [softmax_attn(q, k, v, local_window_mask(t, 16)), softmax_attn(q, k, v, local_window_mask(t, 32)),
                softmax_attn(q, k[:, :, keys], v[:, :, keys])]
    modes = ("global", "local", "sum", "low_global", "high_local")
    run = {mode: pp(branch=mode).processor()(q, k, v, bias=None, ctx=c) for mode in modes}
    torch.testing.assert_close(run["global"], branches[2], atol=1e-5, rtol=0)
    torch.testing.assert_close(run["local"], branches[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(run["sum"], sum(branches) / 3, atol=1e-5, rtol=0)
    # Nyquist edges of scales [1, 2, 4]: 0.25 between the two narrowest, 0.125 between the two widest
    lp = {e: gaussian_lowpass((t, h, w), d_s=e, d_t=e).double().numpy() for e in (0.25, 0.125)}
    torch.testing.assert_close(run["low_global"], _band_only(branches[2], lp[0.125], t, h, w, b), atol=2e-5, rtol=0)
    torch.testing.assert_close(run["high_local"], _band_only(branches[0], 1 - lp[0.25], t, h, w, b), atol=2e-5,
                               rtol=0)
    # the calls without fusion stay the narrowest branch in every mode
    for mode in modes:
        torch.testing.assert_close(pp(branch=mode).processor()(q, k, v, bias=None, ctx=ctx(t, h, w, b, level=0)),
                                   branches[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"method\.branch"):
        pp(branch="low_local")


@pytest.mark.parametrize("mode", ["blend", "global", "local", "sum", "low_global", "high_local"])
def test_two_branches_are_freelong_in_every_branch_mode(mode):
    t, h, w, b = 48, 3, 4, 2
    q, k, v = qkv(b * h * w, t=t, seed=6)
    c = ctx(t, h, w, b)
    fl = SpectralBlendProcessor(window=16, d_s=0.25, d_t=0.25, filter="gaussian", branch=mode)
    m = pp(scales=[1, 3], bands=[0.25], sparse_global_keys=1.0, filter="gaussian", branch=mode)
    torch.testing.assert_close(m.processor()(q, k, v, bias=None, ctx=c), fl(q, k, v, bias=None, ctx=c), atol=1e-6,
                               rtol=0)
    # the maps reported are those of the branches FreeLong reads in this mode (its local = window16)
    names = {"global": "global", "local": "window16"}
    assert set(m.processor().attention_probs(q, k, None, c)) == {names[n] for n in fl.attention_probs(q, k, None, c)}


def test_snr_bands_between_a_list_of_edges():
    from analysis.frequency import band_energies, band_masks, band_names, radial_frequency

    assert band_names(0.25) == ["low", "high"]
    names = band_names([0.125, 0.25])
    assert names == ["r<0.125", "0.125≤r<0.25", "r≥0.25"]
    sizes = (16, 8, 8)
    masks = band_masks(sizes, [0.125, 0.25])
    r = radial_frequency(sizes)
    assert torch.equal(sum(m.long() for m in masks.values()), torch.ones(sizes, dtype=torch.long))  # a partition
    assert torch.equal(masks["0.125≤r<0.25"], (r >= 0.125) & (r < 0.25))
    # the one-cut-off bands are the union of the finer ones
    assert torch.equal(band_masks(sizes, 0.25)["low"], masks["r<0.125"] | masks["0.125≤r<0.25"])
    x = torch.randn(1, 2, *sizes, generator=torch.Generator().manual_seed(0))
    fine, coarse = band_energies(x, "spacetime", [0.125, 0.25]), band_energies(x, "spacetime", 0.25)
    n = {k: int(m.sum()) for k, m in masks.items()}
    low = (fine["r<0.125"] * n["r<0.125"] + fine["0.125≤r<0.25"] * n["0.125≤r<0.25"]) / (
        n["r<0.125"] + n["0.125≤r<0.25"])
    assert low == pytest.approx(coarse["low"]) and fine["r≥0.25"] == pytest.approx(coarse["high"])


def test_fusion_takes_one_forward_real_fft_per_extra_branch_and_one_inverse(monkeypatch):
    calls = {"rfftn": 0, "irfftn": 0}
    for name in calls:
        real = getattr(torch.fft, name)

        def counted(*a, _real=real, _name=name, **kw):
            calls[_name] += 1
            return _real(*a, **kw)

        monkeypatch.setattr(torch.fft, name, counted)
    t, h, w, b = 64, 3, 4, 2
    q, k, v = qkv(b * h * w, t=t)
    pp(scales=[1, 2, 4]).processor()(q, k, v, bias=None, ctx=ctx(t, h, w, b))
    assert calls == {"rfftn": 2, "irfftn": 1}


def test_attention_probs_are_the_branch_matrices():
    t, h, w, b = 64, 2, 2, 1
    q, k, v = qkv(b * h * w, t=t, seed=8)
    proc = pp(scales=[1, 2, 4]).processor()
    maps = proc.attention_probs(q, k, None, ctx(t, h, w, b))
    assert set(maps) == {"window16", "window32", "global"}
    keys = sparse_key_index(t, 0.5)
    # each map applied to v gives its branch's output; sparse global rows are zero off the key frames
    torch.testing.assert_close(maps["window16"] @ v, softmax_attn(q, k, v, local_window_mask(t, 16)), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(maps["global"] @ v, softmax_attn(q, k[:, :, keys], v[:, :, keys]), atol=1e-5, rtol=0)
    off = torch.ones(t, dtype=torch.bool)
    off[keys] = False
    assert float(maps["global"][..., off].abs().max()) == 0.0
    assert set(proc.attention_probs(q, k, None, ctx(t, h, w, b, level=0))) == {"window16"}  # local-only level


def test_attention_maps_experiment_runs_freelong_pp(compose_cfg, tmp_path, one_thread):
    from analysis.attention_maps import run_experiment

    cfg = compose_cfg("experiment=attention_maps", "analysis.lengths=[32]", "analysis.methods=[freelong_pp]",
                      "num_inference_steps=1", "height=32", "width=32", "progress=false",
                      f"paths.output_root={tmp_path}")
    res = run_experiment(cfg)
    assert res["run_dir"].is_dir()
    saved = list((res["run_dir"] / "records").glob("*.npz"))
    assert len(saved) == 1
    names = set(np.load(saved[0]).files)
    assert {"map|window16", "map|global"} <= names  # 32 frames: windows 16 and the (sparse) global branch


def test_tables_label_freelong_pp_as_a_reconstruction():
    import json

    from eval.tables import _variant_labels

    p = json.dumps(pp().params(), sort_keys=True)
    q = json.dumps(pp(sparse_global_keys=1.0).params(), sort_keys=True)
    labels = _variant_labels([("freelong_pp", p), ("freelong_pp", q), ("freelong", json.dumps({"window": 16}))])
    assert labels[("freelong_pp", p)] == "freelong_pp [reconstruction] (sparse_global_keys=0.5)"
    assert labels[("freelong", json.dumps({"window": 16}))] == "freelong"
