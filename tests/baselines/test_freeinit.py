"""FreeInit: its filters equal the official ones (diffusers' FreeInitMixin for gaussian/butterworth/ideal, a
transcription of TianxingWu/FreeInit's box filter), and ``freeinit(inner=direct)`` equals diffusers'
``AnimateDiffPipeline.enable_free_init`` on the tiny AnimateDiff for the same latents and noise."""

from __future__ import annotations

import pytest
import torch

from freelong import LongVideoPipeline, get_method, load_backbone
from freelong.sampling import freeinit_rounds_steps
from freelong.spectral import freeinit_lowpass


def diffusers_filter(shape, kind, order, d_s, d_t):
    from diffusers.pipelines.free_init_utils import FreeInitMixin

    return FreeInitMixin()._get_free_init_freq_filter(shape, "cpu", kind, order, d_s, d_t)


def official_box(shape, d_s, d_t):
    """freeinit_utils.box_low_pass_filter, transcribed."""
    t, h, w = shape[-3:]
    mask = torch.zeros(shape)
    if d_s == 0 or d_t == 0:
        return mask
    ts, ss = round(t // 2 * d_t), round(int(h // 2) * d_s)
    ct, ch, cw = t // 2, h // 2, w // 2
    mask[..., ct - ts : ct + ts, ch - ss : ch + ss, cw - ss : cw + ss] = 1.0
    return mask


@pytest.mark.parametrize("kind", ["gaussian", "butterworth", "ideal"])
@pytest.mark.parametrize("shape,d_s,d_t,order", [((16, 8, 12), 0.25, 0.25, 4), ((5, 7, 9), 0.4, 0.1, 2),
                                                 ((16, 8, 12), 0.0, 0.25, 4)])
def test_filters_equal_diffusers(kind, shape, d_s, d_t, order):
    ours = freeinit_lowpass(kind, shape, d_s, d_t, order)
    theirs = diffusers_filter((1, 4, *shape), kind, order, d_s, d_t)
    assert ours.shape == shape
    assert torch.allclose(ours, theirs[0, 0], atol=1e-6, rtol=0) and torch.equal(theirs[0, 0], theirs[0, 3])


def test_box_equals_the_official_box_and_ideal_keeps_its_quirk():
    for shape, d_s, d_t in [((16, 8, 12), 0.25, 0.25), ((7, 10, 6), 0.5, 0.6), ((1, 8, 8), 0.25, 0.25)]:
        assert torch.equal(freeinit_lowpass("box", shape, d_s, d_t), official_box(shape, d_s, d_t))
    ideal = freeinit_lowpass("ideal", (16, 40, 64), 0.25, 0.25)
    # the official ideal filter compares d² with 2·d_s = 0.5, so its radius is √0.5 ≈ 0.71 (not 0.25)
    assert ideal[8, 20, 54] == 1 and ideal[8, 20, 55] == 0  # w coordinates 0.6875 (d² 0.47) and 0.71875 (0.52)
    assert abs(freeinit_lowpass("butterworth", (16, 8, 12)).mean().item() - 0.010) < 0.002


@pytest.fixture(scope="module")
def animatediff():
    return load_backbone("animatediff_tiny")


@torch.no_grad()
@pytest.mark.parametrize("kw", [
    dict(num_iters=2),
    pytest.param(dict(num_iters=3, filter="gaussian", fast_sampling=True), marks=pytest.mark.slow),
])
def test_freeinit_direct_equals_diffusers_enable_free_init(animatediff, kw, one_thread):
    bb = animatediff
    latents = torch.randn(1, 4, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    method = get_method("freeinit", **kw)
    ours = LongVideoPipeline(bb, method, progress=False)(
        "a cat", num_frames=16, height=64, width=64, num_inference_steps=3, latents=latents, seed=11,
        output_type="latent")
    pipe = bb.diffusers_pipeline()
    pipe.enable_free_init(num_iters=kw["num_iters"], use_fast_sampling=kw.get("fast_sampling", False),
                          method=kw.get("filter", "butterworth"), order=4, spatial_stop_frequency=0.25,
                          temporal_stop_frequency=0.25)
    theirs = pipe(prompt_embeds=bb.encode_text(["a cat"]), negative_prompt_embeds=bb.encode_text([""]),
                  latents=latents.clone(), num_frames=16, height=64, width=64, num_inference_steps=3,
                  guidance_scale=bb.sampling["guidance_scale"], generator=torch.Generator().manual_seed(11),
                  output_type="latent").frames
    direct = LongVideoPipeline(bb, "direct", progress=False)(
        "a cat", num_frames=16, height=64, width=64, num_inference_steps=3, latents=latents, output_type="latent")
    assert theirs.shape == ours.shape
    assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-5
    assert ((ours - direct).norm() / direct.norm()).item() > 1e-2  # the rounds changed the result


@torch.no_grad()
def test_one_round_is_the_inner_method(lavie_tiny, one_thread):
    kw = dict(num_frames=8, height=32, width=32, num_inference_steps=2, seed=0, output_type="latent")
    inner = get_method("freelong", window=4)
    a = LongVideoPipeline(lavie_tiny, get_method("freeinit", inner=inner, num_iters=1), progress=False)("a", **kw)
    b = LongVideoPipeline(lavie_tiny, inner, progress=False)("a", **kw)
    assert torch.equal(a, b)


def test_fast_sampling_steps():
    assert freeinit_rounds_steps(20, 3) == [6, 13, 20]
    assert freeinit_rounds_steps(1, 3) == [1, 1, 1]


def test_wrapping_any_method_and_its_record():
    m = get_method("freeinit", inner=get_method("freelong", window=8))
    assert m.model_method() is m.inner and m.inner.name == "freelong"
    p = m.params()
    assert p["inner"] == "freelong" and p["inner_params"]["window"] == 8 and p["num_iters"] == 3
    again = get_method("freeinit", **p)
    assert again.params() == p
    assert m.levels == ("sampling loop",)


def test_hydra_inner(compose_cfg):
    from freelong.app.config import method_from_config

    cfg = compose_cfg("method=freeinit", "method.inner=freelong", "model=lavie_tiny")
    m = method_from_config(cfg.method)
    assert m.inner.name == "freelong" and m.params()["inner_params"] == get_method("freelong").params()
    cfg = compose_cfg("method=freeinit", "method.inner=sliding_window", "+method.inner_params.window=8",
                      "model=lavie_tiny")
    assert method_from_config(cfg.method).inner.window == 8


def test_bad_input():
    with pytest.raises(ValueError, match="method.inner=fifo"):
        get_method("freeinit", inner="fifo")
    with pytest.raises(ValueError, match="method.filter"):
        get_method("freeinit", filter="cosine")
    with pytest.raises(ValueError, match="method.num_iters"):
        get_method("freeinit", num_iters=0)
    with pytest.raises(ValueError, match="method.inner: unknown parameter"):
        get_method("freeinit", inner="freelong", inner_params={"windw": 3})
    with pytest.raises(ValueError, match="method.spatial_stop_frequency"):
        get_method("freeinit", spatial_stop_frequency=1.5)
