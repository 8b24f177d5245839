"""LongVideoPipeline on the tiny LaVie: determinism, decoding, CFG, step reporting, input checks."""

import numpy as np
import pytest
import torch

from freelong import LongVideoPipeline, get_method
from freelong.attention.processor import TemporalAttnProcessor, temporal_attention_layers

KW = dict(num_frames=20, height=64, width=96, num_inference_steps=3)


def all_default_processors(unet):
    return all(type(layer.processor) is TemporalAttnProcessor for layer in temporal_attention_layers(unet).values())


@pytest.mark.parametrize("name", ["direct", "sliding_window", "freenoise", "freelong"])
def test_fixed_seed_is_deterministic_and_output_is_uint8(lavie_tiny, name):
    pipe = LongVideoPipeline(lavie_tiny, get_method(name, **({} if name == "direct" else {"window": 8})),
                             progress=False)
    a = pipe("a cat", seed=3, **KW)
    b = pipe("a cat", seed=3, **KW)
    c = pipe("a cat", seed=4, **KW)
    assert a.dtype == np.uint8 and a.shape == (20, 64, 96, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_decode_chunk_size_does_not_change_the_video(lavie_tiny):
    lat = LongVideoPipeline(lavie_tiny, "direct", progress=False)("a cat", seed=0, output_type="latent", **KW)
    one = lavie_tiny.decode(lat, chunk_size=1)
    many = lavie_tiny.decode(lat, chunk_size=64)
    assert one.shape == (1, 20, 64, 96, 3)
    assert abs(one.astype(int) - many.astype(int)).max() <= 1


@torch.no_grad()
def test_batched_and_separate_cfg_agree(lavie_tiny):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 6, 8, 12, generator=g)
    cond, uncond = lavie_tiny.encode_text(["a dog"]), lavie_tiny.encode_text([""])
    batched = lavie_tiny.predict_noise(x, torch.tensor(500), cond, uncond, 7.5)
    eps_c = lavie_tiny.unet(x, 500, cond)
    eps_u = lavie_tiny.unet(x, 500, uncond)
    torch.testing.assert_close(batched, eps_u + 7.5 * (eps_c - eps_u), atol=2e-4, rtol=1e-4)
    lavie_tiny.cfg_mode = "separate"
    try:
        torch.testing.assert_close(lavie_tiny.predict_noise(x, torch.tensor(500), cond, uncond, 7.5), batched,
                                   atol=2e-4, rtol=1e-4)
    finally:
        lavie_tiny.cfg_mode = "batched"


def test_steps_are_reported_to_callback_and_processors(lavie_tiny):
    seen_steps, seen_ctx = [], []

    class Spy(TemporalAttnProcessor):
        def __call__(self, q, k, v, *, bias, ctx):
            seen_ctx.append((ctx.step_index, ctx.num_steps, ctx.frame_shape))
            return super().__call__(q, k, v, bias=bias, ctx=ctx)

    method = get_method("direct")
    method.processor = lambda: Spy()
    pipe = LongVideoPipeline(lavie_tiny, method, progress=False)
    pipe("a cat", seed=0, callback=lambda info: seen_steps.append(info["step_index"]), **KW)
    assert seen_steps == [0, 1, 2]
    assert {s for s, _, _ in seen_ctx} == {0, 1, 2} and {n for _, n, _ in seen_ctx} == {3}
    assert (20, 8, 12) in {f for _, _, f in seen_ctx}
    # the method was detached after the call
    assert all_default_processors(lavie_tiny.unet)


def test_method_is_detached_even_when_generation_fails(lavie_tiny):
    pipe = LongVideoPipeline(lavie_tiny, get_method("freelong", window=8), progress=False)

    def boom(info):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        pipe("a cat", seed=0, callback=boom, **KW)
    assert all_default_processors(lavie_tiny.unet)


def test_input_checks(lavie_tiny):
    pipe = LongVideoPipeline(lavie_tiny, get_method("freelong", window=16), progress=False)
    with pytest.raises(ValueError, match="multiples of 8"):
        pipe("a cat", num_frames=16, height=60, width=96)
    with pytest.raises(ValueError, match="window"):
        pipe("a cat", num_frames=8, height=64, width=96)


def test_ddpm_sampler_and_guidance_off(lavie_tiny):
    pipe = LongVideoPipeline(lavie_tiny, "direct", progress=False)
    a = pipe("a cat", seed=0, sampler="ddpm", guidance_scale=1.0, **KW)
    b = pipe("a cat", seed=0, sampler="ddpm", guidance_scale=1.0, **KW)
    assert np.array_equal(a, b) and a.shape == (20, 64, 96, 3)


def test_a_method_named_by_a_string_means_what_the_model_config_says():
    """``LongVideoPipeline(bb, "freelong")`` takes the model config's ``methods`` values (CogVideoX's tiny twin:
    windows of its 6 native latent frames, as ``python run.py model=cogvideox_5b_tiny method=freelong`` runs); a
    Method object is used as given, and a model without a block leaves the method's own defaults."""
    from freelong import load_backbone
    from freelong.models.spec import load_model_config

    cog = load_backbone("cogvideox_5b_tiny")
    block = load_model_config("cogvideox_5b_tiny").methods
    assert cog.method_values["freelong"] == dict(block["freelong"])
    named = LongVideoPipeline(cog, "freelong", progress=False).method
    assert (named.window, named.noise_stride, list(named.local_only_levels)) == (6, 2, [])
    assert get_method("freelong").window == 16  # the method's own default, which the 13-latent-frame model refuses
    assert LongVideoPipeline(cog, get_method("freelong", window=4), progress=False).method.window == 4
    assert LongVideoPipeline(cog, "riflex", progress=False).method == get_method("riflex").with_native_frames(6)
