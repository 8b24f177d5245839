"""Multi-prompt videos: the per-frame embedding schedule, its path to every cross-attention, motion injection."""

from __future__ import annotations

import pytest
import torch

from freelong import LongVideoPipeline, get_method
from freelong.noise import gaussian_noise, rescheduled_noise
from freelong.prompts import (
    MotionInjection,
    MultiPrompt,
    PromptSchedule,
    PromptSegment,
    normalize_prompt,
    parse_prompt,
    per_frame_context,
)


def _mp(frames, transition, prompts=None):
    prompts = prompts or [f"prompt {i}" for i in range(len(frames))]
    return MultiPrompt(tuple(PromptSegment(p, f) for p, f in zip(prompts, frames)), transition)


def test_switches_exactly_at_segment_boundaries_without_transition():
    w = _mp([5, 7, 4], 0).frame_weights(16)
    owner = w.argmax(dim=1)
    assert torch.equal(owner, torch.tensor([0] * 5 + [1] * 7 + [2] * 4))
    assert torch.equal(w, torch.nn.functional.one_hot(owner, 3).double())


@pytest.mark.parametrize("n", [1, 4, 5])
def test_transition_is_linear_across_the_boundary(n):
    w = _mp([10, 10], n).frame_weights(20)
    s = 10 - n // 2  # first transition frame
    # from the last pure frame (s-1) to the first pure frame after (s+n) the weight of prompt 1 rises linearly
    seg = w[s - 1 : s + n + 1, 1]
    expected = torch.arange(n + 2, dtype=torch.float64) / (n + 1)
    assert torch.allclose(seg, expected, atol=1e-12)
    assert torch.allclose(w.sum(dim=1), torch.ones(20, dtype=torch.float64))
    assert torch.all(w[: s - 1, 0] == 1) and torch.all(w[s + n + 1 :, 1] == 1)
    assert n // 2 + (n - n // 2) == n


def test_unspecified_frames_share_the_rest_and_errors_name_the_problem():
    assert _mp([None, None, None], 0).segment_lengths(32) == [11, 11, 10]
    assert _mp([20, None], 0).segment_lengths(32) == [20, 12]
    with pytest.raises(ValueError, match="sum to 30 but num_frames=32"):
        _mp([10, 20], 0).segment_lengths(32)
    with pytest.raises(ValueError, match="transitions need 8"):
        _mp([None, None, None], 8).frame_weights(16)
    with pytest.raises(ValueError, match="'prompt'"):
        parse_prompt([{"text": "a"}])


def test_parse_forms_and_canonical_form_round_trip():
    a = parse_prompt([{"prompt": "a", "frames": 4}, "b", ["c", 2]], transition_frames=2)
    assert a == _mp([4, None, 2], 2, ["a", "b", "c"])
    canon = normalize_prompt(a)
    assert canon == {"segments": [{"prompt": "a", "frames": 4}, {"prompt": "b", "frames": None},
                                  {"prompt": "c", "frames": 2}], "transition_frames": 2}
    assert parse_prompt(canon) == a
    assert parse_prompt({"segments": ["x", "y"], "transition_frames": 0}).transition_frames == 0
    assert parse_prompt("just text") == "just text"


def test_per_frame_context_is_the_weighted_embedding():
    emb = torch.randn(2, 3, 4)
    w = _mp([3, 3], 2).frame_weights(6)
    ctx = per_frame_context(w, emb)[0]
    for f in range(6):
        assert torch.allclose(ctx[f], w[f, 0].float() * emb[0] + w[f, 1].float() * emb[1], atol=1e-6)


def test_motion_injection_schedule_matches_the_official_steps():
    inj = MotionInjection()
    injected = [i for i in range(50) if inj.injects(i, 50)]
    assert injected == [*range(5), *range(16, 50)]  # per-frame everywhere only for DDIM steps 5..15
    per_frame, fixed = torch.zeros(1, 4, 2, 3), torch.ones(1, 2, 3)
    sched = PromptSchedule(per_frame, fixed, inj)
    ctx = sched.at(0, 50)
    assert ctx["down"] is fixed and ctx["mid"] is fixed and ctx["up"] is per_frame
    assert sched.at(10, 50) is per_frame
    with pytest.raises(ValueError, match="groups"):
        MotionInjection(groups=("decoder",))


def _capture_cross_attention(unet):
    """Record the text context every cross-attention (attn2) receives, keyed by module path."""
    seen, hooks = {}, []
    for name, mod in unet.named_modules():
        if name.endswith(".attn2"):
            def hook(module, args, kwargs, name=name):
                seen.setdefault(name, []).append(kwargs["encoder_hidden_states"].detach().clone())
            hooks.append(mod.register_forward_pre_hook(hook, with_kwargs=True))
    return seen, hooks


def test_per_frame_embeddings_reach_every_cross_attention(lavie_tiny):
    segs = [{"prompt": "a red car", "frames": 8}, {"prompt": "a blue boat", "frames": 8}]
    prompt = {"segments": segs, "transition_frames": 4}
    pipe = LongVideoPipeline(lavie_tiny, get_method("direct"), progress=False)
    emb = lavie_tiny.encode_text(["a red car", "a blue boat"])
    uncond = lavie_tiny.encode_text([""])[0]
    weights = parse_prompt(prompt).frame_weights(16)
    seen, hooks = _capture_cross_attention(lavie_tiny.unet)
    try:
        pipe(prompt, num_frames=16, height=32, width=32, num_inference_steps=1, guidance_scale=7.5,
             output_type="latent")
    finally:
        for h in hooks:
            h.remove()
    assert seen and any(n.startswith("down") for n in seen) and any(n.startswith("up") for n in seen)
    assert any(n.startswith("mid") for n in seen)
    for name, calls in seen.items():
        ctx = calls[0].view(2, 16, *calls[0].shape[1:])  # (CFG halves, frames, L, D)
        assert torch.allclose(ctx[0], uncond.expand(16, -1, -1), atol=1e-6), name
        expected = weights[:, 0, None, None].float() * emb[0] + weights[:, 1, None, None].float() * emb[1]
        assert torch.allclose(ctx[1], expected, atol=1e-5), name
        assert torch.equal(ctx[1, 5], emb[0]) and torch.equal(ctx[1, 10], emb[1])  # pure frames, exact


def test_freenoise_motion_injection_reaches_the_chosen_groups(lavie_tiny):
    method = get_method("freenoise", window=8, stride=4, motion_injection=True, injection_prompt=0,
                        injection_steps=[0.5, 1.0])
    pipe = LongVideoPipeline(lavie_tiny, method, progress=False)
    prompt = [{"prompt": "a red car"}, {"prompt": "a blue boat"}]
    emb = lavie_tiny.encode_text(["a red car", "a blue boat"])
    seen, hooks = _capture_cross_attention(lavie_tiny.unet)
    try:
        pipe({"segments": prompt, "transition_frames": 0}, num_frames=16, height=32, width=32,
             num_inference_steps=2, guidance_scale=7.5, output_type="latent")
    finally:
        for h in hooks:
            h.remove()
    for name, calls in seen.items():
        assert len(calls) == 2
        step0 = calls[0].view(2, 16, *calls[0].shape[1:])[1]  # step 0 (outside [0.5, 1.0]): injection
        step1 = calls[1].view(2, 16, *calls[1].shape[1:])[1]  # step 1 (inside): the per-frame schedule
        assert torch.equal(step1[0], emb[0]) and torch.equal(step1[15], emb[1]), name
        if name.startswith(("down", "mid")):
            assert torch.equal(step0[15], emb[0]), name  # the first prompt on every frame
        else:
            assert torch.equal(step0[15], emb[1]), name


def test_freelong_uses_random_noise_for_multi_prompt_unless_overridden(lavie_tiny):
    method = get_method("freelong", window=8)
    pipe = LongVideoPipeline(lavie_tiny, method, progress=False)
    multi = [{"prompt": "a"}, {"prompt": "b"}]
    assert pipe.method_for("a").noise == "freenoise"
    chosen = pipe.method_for(multi)
    assert chosen.noise == "random" and method.noise == "freenoise"
    shape = (1, 4, 24, 4, 4)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(chosen.init_noise(shape, g()), gaussian_noise(shape, g()))
    assert torch.equal(method.init_noise(shape, g()), rescheduled_noise(shape, 8, 4, g()))
    keep = get_method("freelong", window=8, multi_prompt_noise="freenoise")
    assert LongVideoPipeline(lavie_tiny, keep, progress=False).method_for(multi).noise == "freenoise"
    pipe(multi, num_frames=16, height=32, width=32, num_inference_steps=1, output_type="latent")
    assert pipe.effective_method.noise == "random"


@pytest.mark.parametrize("name,params", [
    ("direct", {}),
    ("sliding_window", {"window": 8, "stride": 4}),
    ("freenoise", {"window": 8, "stride": 4, "motion_injection": True}),
    ("freelong", {"window": 8}),
])
def test_every_method_runs_a_multi_prompt_video(lavie_tiny, name, params):
    pipe = LongVideoPipeline(lavie_tiny, get_method(name, **params), progress=False)
    video = pipe({"segments": ["a cat", "a dog"], "transition_frames": 4}, num_frames=16, height=32, width=32,
                 num_inference_steps=2)
    assert video.shape == (16, 32, 32, 3) and video.dtype.name == "uint8"


def test_multi_demo_config_and_runner_validation(compose_cfg):
    from freelong.app.setup import check_prompts_fit, load_prompts
    from freelong.errors import ConfigError

    cfg = compose_cfg("prompts=multi_demo")
    prompts = load_prompts(cfg.prompts)
    assert len(prompts) == 1 and len(prompts[0]["segments"]) == 3
    assert prompts[0]["transition_frames"] == cfg.prompts.transition_frames == 8
    check_prompts_fit(prompts, cfg.num_frames)  # the tiny model's 32 frames
    check_prompts_fit(prompts, 128)
    with pytest.raises(ConfigError, match="prompts item 0"):
        check_prompts_fit(prompts, 16)
    bad = compose_cfg("prompts=multi_demo", "prompts.list=[[{text: a}]]")
    with pytest.raises(ConfigError, match="prompts item 0"):
        load_prompts(bad.prompts)
