"""Wan2.2 through diffusers: TI2V-5B (per-token timesteps, 16x VAE) and T2V-A14B (two experts switched at
``boundary_ratio``), tiny random-weight configs of diffusers' own classes; parity with diffusers' WanPipeline."""

import helpers
import pytest
import torch
from helpers import PROMPT, dit_latents, pipeline_latents, rel

from freelong import LongVideoPipeline, get_method, load_backbone
from freelong.models.wan.attention import WanSelfAttnAdapter


def _latents(bb, frames=21, h=64, w=96, seed=1):
    return dit_latents(bb, frames, h, w, seed)


ti2v = helpers.backbone_fixture("wan2_2_ti2v_5b_tiny")
a14b = helpers.backbone_fixture("wan2_2_t2v_a14b_tiny")


def test_ti2v_shape_rules(ti2v):
    assert ti2v.vae_scale_factor == 16 and ti2v.latent_channels == 8 and ti2v.expand_timesteps
    assert ti2v.transformer_2 is None
    helpers.assert_rejected_before_sampling(ti2v, 23, "21 or 25", size=(48, 96, 32))


def test_ti2v_per_token_timestep(ti2v):
    x = _latents(ti2v)
    ts = ti2v.model_timestep(torch.tensor(700), x, ti2v.transformer)
    t, h, w = x.shape[2], x.shape[3] // 2, x.shape[4] // 2
    assert ts.shape == (1, t * h * w) and ts.dtype == torch.float32 and bool((ts == 700).all())


def test_ti2v_direct_equals_diffusers_wan_pipeline(ti2v):
    latents = _latents(ti2v)
    ours = pipeline_latents(ti2v, "direct", latents)
    theirs = helpers.wan_pipeline_latents(ti2v, latents)
    assert rel(ours, theirs) < 1e-5
    assert rel(ours, latents) > 0.05


def test_a14b_switches_experts_as_diffusers(a14b):
    """3 UniPC steps with flow shift 12: timesteps ~999, ~967, ~857; 0.875*1000 puts the last on transformer_2."""
    assert a14b.boundary_ratio == 0.875 and a14b.guidance_scale_2 == 3.0
    sched = a14b.make_scheduler("unipc")
    sched.set_timesteps(3)
    used = [a14b.expert_for(t, 4.0)[0] for t in sched.timesteps]
    assert used[0] is a14b.transformer and used[-1] is a14b.transformer_2
    assert a14b.expert_for(sched.timesteps[-1], 4.0)[2] == 3.0 and a14b.expert_for(sched.timesteps[0], 4.0)[2] == 4.0
    latents = _latents(a14b, h=32, w=48)
    ours = pipeline_latents(a14b, "direct", latents, guidance=4.0)
    theirs = helpers.wan_pipeline_latents(a14b, latents, guidance=4.0, guidance_scale_2=3.0)
    assert rel(ours, theirs) < 1e-5
    # the second expert matters: with transformer_2 = transformer the result differs
    one = load_backbone("wan_tiny", overrides={"scheduler": {"flow_shift": 12.0}})
    assert rel(ours, pipeline_latents(one, "direct", latents, guidance=4.0)) > 1e-3


def test_a14b_attach_reaches_both_experts_and_detach_restores(a14b):
    models = (a14b.transformer, a14b.transformer_2)
    before = [dict(m.attn_processors) for m in models]
    ropes = [m.rope for m in models]
    hooks = [len(m._forward_pre_hooks) for m in models]
    with a14b.attach(get_method("riflex")) as handle:
        assert all(m.rope is not r for m, r in zip(models, ropes))
    with a14b.attach(get_method("sliding_window", window=3, stride=1)) as handle:
        n = len(a14b.transformer.blocks)
        assert len(handle.layer_names) == 2 * n and f"transformer_2.blocks.{n - 1}.attn1" in handle.layer_names
        for m in models:
            assert all(isinstance(b.attn1.processor, WanSelfAttnAdapter) for b in m.blocks)
            assert len(m._forward_pre_hooks) == hooks[0] + 1
    for m, b, r, k in zip(models, before, ropes, hooks):
        after = m.attn_processors
        assert after.keys() == b.keys() and all(after[key] is b[key] for key in b)
        assert m.rope is r and len(m._forward_pre_hooks) == k


@pytest.mark.parametrize("name,params", helpers.NATIVE_LENGTH_METHODS)
@pytest.mark.parametrize("model", ["ti2v", "a14b"])
def test_methods_at_native_length_equal_direct(request, model, name, params):
    """21 frames = 6 latent frames = the tiny models' native length: every method is direct there."""
    bb = request.getfixturevalue(model)
    latents = _latents(bb) if model == "ti2v" else _latents(bb, h=32, w=48)
    other, direct = helpers.method_and_direct(bb, name, params, latents, guidance=5.0)  # both at 5 (A14B's own: 4)
    assert torch.equal(other, direct)


@pytest.mark.parametrize(
    "name,params",
    [("sliding_window", {"window": 3, "stride": 1}), ("freelong", {"window": 3, "noise_stride": 1,
                                                                   "local_only_levels": []})],
)
def test_a14b_methods_act_on_both_experts(a14b, name, params):
    """Beyond the native length the method changes the output of each expert (it is on both)."""
    x = _latents(a14b, frames=41, h=32, w=48)
    cond = a14b.encode_text([PROMPT])
    method = get_method(name, **params)
    for t in (torch.tensor(990), torch.tensor(500)):  # one step per expert
        ref = a14b.predict_noise(x, t, cond, None, 1.0)
        with a14b.attach(method):
            ours = a14b.predict_noise(x, t, cond, None, 1.0)
        assert rel(ours, ref) > 1e-4


def test_expert_settings_fail_with_one_line():
    from freelong.models.base import build_backbone
    from freelong.models.spec import load_model_config

    cfg = load_model_config("wan2_2_t2v_a14b_tiny")
    cfg.extra.boundary_ratio = 1.5
    with pytest.raises(ValueError, match=r"model\.extra\.boundary_ratio must be in \(0, 1\)"):
        build_backbone(cfg)
    cfg = load_model_config("wan_tiny")
    cfg.extra.guidance_scale_2 = 3.0
    with pytest.raises(ValueError, match=r"model\.extra\.guidance_scale_2"):
        build_backbone(cfg)


def test_a14b_loader_reads_transformer_2_from_a_diffusers_folder(a14b, tmp_path):
    from freelong.models.base import build_backbone
    from freelong.models.spec import load_model_config

    folder = helpers.save_diffusers_folder(a14b, tmp_path / "wan22", "WanPipeline", "unipc", boundary_ratio=0.875)
    cfg = load_model_config("wan2_2_t2v_a14b")
    cfg.weights.wan.path = str(folder)
    cfg.extra.max_sequence_length = 16
    loaded = build_backbone(cfg, weights_dir=str(tmp_path / "empty"))
    assert loaded.transformer_2 is not None and loaded.boundary_ratio == 0.875
    for a, b in ((loaded.transformer_2, a14b.transformer_2), (loaded.transformer, a14b.transformer)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_missing_second_expert_is_named(tmp_path):
    from freelong.models.base import build_backbone
    from freelong.models.spec import load_model_config
    from freelong.weights import MissingWeightsError

    cfg = load_model_config("wan2_2_t2v_a14b")
    pattern = r"(?s)transformer_2/config.json.*download_weights.py wan2_2_t2v_a14b"
    with pytest.raises(MissingWeightsError, match=pattern):
        build_backbone(cfg, weights_dir=str(tmp_path))


def test_tiny_and_real_configs_share_the_scheduler_and_native_settings():
    from freelong.models.spec import load_model_config

    for tiny, real in (("wan2_2_ti2v_5b_tiny", "wan2_2_ti2v_5b"), ("wan2_2_t2v_a14b_tiny", "wan2_2_t2v_a14b")):
        assert load_model_config(tiny).scheduler == load_model_config(real).scheduler
    t5, a = load_model_config("wan2_2_ti2v_5b"), load_model_config("wan2_2_t2v_a14b")
    assert (t5.sampling.num_frames, t5.sampling.height, t5.sampling.width, t5.sampling.fps) == (121, 704, 1280, 24)
    assert t5.extra.expand_timesteps and t5.scheduler.flow_shift == 5.0
    assert (a.sampling.num_frames, a.sampling.num_inference_steps, a.sampling.guidance_scale) == (81, 40, 4.0)
    assert a.extra.boundary_ratio == 0.875 and a.extra.guidance_scale_2 == 3.0


def test_ti2v_smoke_video(ti2v):
    video = LongVideoPipeline(ti2v, "direct", progress=False)(PROMPT, num_frames=9, num_inference_steps=1)
    assert video.shape == (9, 64, 96, 3) and video.dtype.name == "uint8"
