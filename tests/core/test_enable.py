"""freelong.enable(pipe, method): methods inside unmodified diffusers pipelines (WanPipeline, CogVideoXPipeline,
HunyuanVideoPipeline, AnimateDiffPipeline, TextToVideoSDPipeline) equal LongVideoPipeline over the same modules;
disable() restores diffusers bit for bit."""

from dataclasses import dataclass

import pytest
import torch

import freelong
from freelong import LongVideoPipeline, get_method, load_backbone
from freelong.enable import HOOK_NAME, find_denoisers
from freelong.methods import Method

PROMPT = "a red fox runs through snow"

# (method, params) per family, at lengths where every window is shorter than the video (so each method acts)
DIT_METHODS = [
    ("freelong", {"window": 3, "noise_stride": 1, "local_only_levels": [], "blend_steps": 1}),
    ("freenoise", {"window": 3, "stride": 1}),
    ("sliding_window", {"window": 3, "stride": 1}),
    ("freelong_pp", {"local_only_levels": []}),
    ("riflex", {"k": 1}),  # period 6 < 11 latent frames on the three tiny DiTs: the edit is on
]
UNET_METHODS = [
    ("freelong", {"window": 8, "blend_steps": 1}),
    ("freenoise", {"window": 8, "stride": 4}),
    ("freenoise", {"window": 8, "stride": 4, "fusion": "block"}),
    ("sliding_window", {"window": 8, "stride": 4}),
    ("freelong_pp", {"native_frames": 6}),  # the 12-frame test video is 2x this "native" length
]
DITS = ["wan", "cogvideox", "cogvideox1_5", "hunyuanvideo"]
FAMILIES = [*DITS, "animatediff", "modelscope"]


@pytest.fixture(scope="module")
def wan():
    return load_backbone("wan_tiny")


class Case:
    """One backbone, diffusers' own pipeline over its very modules, and how both are called (here: the UNet
    pipelines; the DiT cases below change the pipeline, the sizes and the prompt arguments)."""

    size = dict(num_frames=12, height=32, width=32)
    trained: int | None = None  # the tiny model's native length (None: the family's released default, 16)
    methods = UNET_METHODS
    guidance: float | None = None  # None: the backbone's own sampling default

    def __init__(self, bb):
        self.bb = bb
        self.pipe = self.make_pipe()
        self.pipe.set_progress_bar_config(disable=True)
        self.guidance = self.guidance or bb.sampling["guidance_scale"]
        self.cond, self.uncond = bb.encode_text([PROMPT]), bb.encode_text([""])

    def make_pipe(self):
        return self.bb.diffusers_pipeline()

    @property
    def model(self) -> torch.nn.Module:
        return next(iter(find_denoisers(self.pipe).values()))

    def prompt_kwargs(self) -> dict:
        return dict(prompt_embeds=self.cond, negative_prompt_embeds=self.uncond)

    def latents(self, method, seed=1):
        """The method's initial latents in the pipeline's own layout (``latents=``)."""
        return freelong.prepare_latents(self.pipe, method, generator=torch.Generator().manual_seed(seed),
                                        trained_frames=self.trained, **self.size)

    def theirs(self, latents, steps=2, **kwargs):
        """The pipeline's final latents, as ``(B, C, T, H, W)`` (CogVideoXPipeline's are frames first)."""
        out = self.pipe(**self.prompt_kwargs(), latents=latents.clone(), num_inference_steps=steps,
                        guidance_scale=self.guidance, output_type="latent", **self.size, **kwargs).frames
        return out.movedim(self.bb.frames_dim, 2)

    def ours(self, method, latents, steps=2):
        return LongVideoPipeline(self.bb, method, progress=False)(
            PROMPT, num_inference_steps=steps, guidance_scale=self.guidance,
            latents=latents.movedim(self.bb.frames_dim, 2).clone(), output_type="latent", **self.size)


class DiTCase(Case):
    """The tiny DiTs (native 21 frames): 41 frames are 11 latent frames, a 4 x 6 latent (a 2 x 3 token grid)."""

    size = dict(num_frames=41, height=32, width=48)
    trained = 21
    methods = DIT_METHODS


class WanCase(DiTCase):
    """Two calls per step (``"cond"``, ``"uncond"``) with the step index in the cache context."""

    guidance = 5.0

    def make_pipe(self):
        from diffusers import WanPipeline

        return WanPipeline(**self.bb.components)


class CogVideoXCase(DiTCase):
    """One batched-CFG call per step (``"cond_uncond"``: [uncond, cond]); latents (B, F, C, H, W); RoPE built by
    the pipeline."""

    def make_pipe(self):
        from diffusers import CogVideoXPipeline

        return CogVideoXPipeline(**self.bb.components)


class CogVideoX15Case(CogVideoXCase):
    """CogVideoX 1.5 (temporal patch 2; native 41 frames = 11 latent frames padded to 12 = 6 positions): 81 frames
    are 21 latent frames, padded to 22 by the pipeline and by ours, 11 temporal positions the methods count."""

    size = dict(num_frames=81, height=32, width=48)
    trained = 41


class HunyuanVideoCase(DiTCase):
    """Embedded guidance: one call per step (``"cond"``) unless true CFG is asked for."""

    def prompt_kwargs(self) -> dict:
        return dict(prompt_embeds=self.cond["prompt_embeds"], pooled_prompt_embeds=self.cond["pooled"],
                    prompt_attention_mask=self.cond["mask"])


@pytest.fixture(scope="module")
def cases(wan, animatediff, modelscope):
    return {"wan": WanCase(wan), "cogvideox": CogVideoXCase(load_backbone("cogvideox_5b_tiny")),
            "cogvideox1_5": CogVideoX15Case(load_backbone("cogvideox1_5_5b_tiny")),
            "hunyuanvideo": HunyuanVideoCase(load_backbone("hunyuanvideo_tiny")),
            "animatediff": Case(animatediff), "modelscope": Case(modelscope)}


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_enable_equals_long_video_pipeline_and_disable_restores(cases, family, one_thread):
    """Every attention/position/noise method, in the unmodified pipeline: the final latents of
    ``pipe(...)`` after ``enable`` equal LongVideoPipeline's over the same modules, latents and embeddings;
    after ``disable()`` the pipeline equals the never-enabled one bit for bit. CogVideoX: joint [text, video]
    attention, batched CFG, RIFLEx on the RoPE table the pipeline builds; HunyuanVideo: joint [video, text]
    attention over dual- and single-stream blocks, RIFLEx on ``transformer.rope``."""
    case = cases[family]
    methods = [get_method(name, **params) for name, params in case.methods]
    # the method's own noise (FreeNoise shuffle, FreeLong++'s SpecMix, ...), and the never-enabled pipeline on it
    latents = [case.latents(m) for m in methods]
    never = [case.theirs(lat) for lat in latents]
    for method, lat, ref in zip(methods, latents, never):
        handle = freelong.enable(case.pipe, method, trained_frames=case.trained)
        enabled = case.theirs(lat)
        handle.disable()
        assert torch.equal(case.theirs(lat), ref), method.describe()  # disable(): diffusers' own, bit for bit
        assert _rel(enabled, case.ours(method, lat)) < 1e-6, method.describe()
        # the method acted: it differs from diffusers' attention on the same latents
        assert _rel(enabled, ref) > (1e-6 if method.name == "riflex" else 1e-4), method.describe()


def test_prepare_latents_equals_the_pipeline_noise(cases):
    """The noise equals LongVideoPipeline's, in the pipeline's layout (CogVideoXPipeline's latents are frames first,
    as its own prepare_latents makes them)."""
    for family, case in cases.items():
        for name, params in [("direct", {}), *case.methods]:
            method = get_method(name, **params)
            pipe = LongVideoPipeline(case.bb, method, progress=False)
            lat = pipe.backbone.latent_frames(case.size["num_frames"])
            ref = pipe.prepare_latents(case.size["num_frames"], case.size["height"], case.size["width"],
                                       torch.Generator().manual_seed(4))
            # the DiT cases' native length is 21 frames, not the released models' default (trained_frames)
            got = freelong.prepare_latents(case.pipe, method if params else name, trained_frames=case.trained,
                                           generator=torch.Generator().manual_seed(4), **case.size)
            assert got.shape[case.bb.frames_dim] == lat, (family, name)
            assert torch.equal(got.movedim(case.bb.frames_dim, 2), ref), (family, name)
    cog = cases["cogvideox"]
    lat = cog.latents(get_method("direct"))
    assert tuple(lat.shape) == (1, 11, cog.bb.latent_channels, 4, 6)
    assert tuple(cog.pipe.prepare_latents(1, cog.bb.latent_channels, 41, 32, 48, torch.float32, "cpu", None,
                                          None).shape) == tuple(lat.shape)


@torch.no_grad()
def test_the_step_index_reaches_the_processors(cases, one_thread):
    """FreeLong's blend_steps switches the global branch off from step 1: with the step published correctly the
    result equals LongVideoPipeline's, which differs from never switching (blend_steps=None)."""
    for family in (*DITS, "animatediff"):
        case = cases[family]
        base = dict(case.methods[0][1])
        latents = case.latents(get_method("direct"))
        results = {}
        for blend in (1, None):
            with freelong.enable(case.pipe, "freelong", trained_frames=case.trained, **{**base, "blend_steps": blend}):
                results[blend] = case.theirs(latents, steps=3)
        assert _rel(results[1], results[None]) > 1e-4
        ours = case.ours(get_method("freelong", **{**base, "blend_steps": 1}), latents, steps=3)
        assert _rel(results[1], ours) < 1e-6


def test_disable_puts_back_the_very_objects(cases):
    for family, case in cases.items():
        model = case.model
        procs = dict(model.attn_processors)
        own = {k: model.__dict__.get(k) for k in ("forward", "rope", "_diffusers_hook")}
        hooks = (len(model._forward_pre_hooks), len(model._forward_hooks))
        name, params = case.methods[0]
        methods = [get_method(name, **params)] + ([get_method("riflex")] if family in DITS else [])
        for method in methods:
            with freelong.enable(case.pipe, method, trained_frames=case.trained) as handle:
                assert handle.attached and "enabled" in repr(handle)
                assert any(model.attn_processors[k] is not procs[k] for k in procs) or family == "wan"
            after = model.attn_processors
            assert after.keys() == procs.keys() and all(after[k] is procs[k] for k in procs), (family, method.name)
            assert {k: model.__dict__.get(k) for k in ("forward", "rope", "_diffusers_hook")} == own
            assert (len(model._forward_pre_hooks), len(model._forward_hooks)) == hooks, (family, method.name)
            registry = getattr(model, "_diffusers_hook", None)
            assert registry is None or registry.get_hook(HOOK_NAME) is None


def test_riflex_swaps_wan_rope_and_disable_puts_it_back(cases):
    model = cases["wan"].pipe.transformer
    rope = model.rope
    with freelong.enable(cases["wan"].pipe, "riflex"):
        assert model.rope is not rope and model.rope.inner is rope
    assert model.rope is rope


@torch.no_grad()
def test_two_pipelines_with_different_methods_do_not_interfere(cases, one_thread):
    wan, ad = cases["wan"], cases["animatediff"]
    m_wan = get_method("sliding_window", window=3, stride=1)
    m_ad = get_method("freelong", window=8, blend_steps=1)
    lw, la = wan.latents(get_method("direct")), ad.latents(get_method("direct"))
    with freelong.enable(wan.pipe, m_wan, trained_frames=21):
        alone_w = wan.theirs(lw)
    with freelong.enable(ad.pipe, m_ad):
        alone_a = ad.theirs(la)
    with freelong.enable(wan.pipe, m_wan, trained_frames=21), freelong.enable(ad.pipe, m_ad):
        both_a = ad.theirs(la)
        both_w = wan.theirs(lw)
        both_a2 = ad.theirs(la)
    assert torch.equal(both_w, alone_w) and torch.equal(both_a, alone_a) and torch.equal(both_a2, alone_a)


def test_enabling_twice_is_refused(cases):
    case = cases["animatediff"]
    with freelong.enable(case.pipe, "freelong", window=8):
        with pytest.raises(ValueError, match="already installed on unet"):
            freelong.enable(case.pipe, "sliding_window", window=8)
    with freelong.enable(case.pipe, "sliding_window", window=8):  # after disable it can be enabled again
        pass
    with case.bb.attach(get_method("freelong", window=8)):  # installed by LongVideoPipeline's installer
        with pytest.raises(ValueError, match="already installed"):
            freelong.enable(case.pipe, "freelong", window=8)


@dataclass
class _LoopMethod(Method):
    levels = ("sampling loop",)
    rounds: int = 2


def test_methods_that_own_the_sampling_loop_need_our_pipeline(cases):
    case = cases["wan"]
    with pytest.raises(ValueError, match=r"own sampling loop; it needs freelong.LongVideoPipeline"):
        freelong.enable(case.pipe, _LoopMethod())
    with pytest.raises(ValueError, match="needs freelong.LongVideoPipeline"):
        freelong.prepare_latents(case.pipe, _LoopMethod(), num_frames=21, height=32, width=48)
    assert "_diffusers_hook" not in case.pipe.transformer.__dict__ or \
        case.pipe.transformer._diffusers_hook.get_hook("freelong_bench::enable") is None


def test_refusals_name_the_problem(cases):
    with pytest.raises(ValueError, match="method=riflex edits temporal RoPE"):
        freelong.enable(cases["animatediff"].pipe, "riflex")
    with pytest.raises(ValueError, match="unknown parameter"):
        freelong.enable(cases["wan"].pipe, "freelong", windw=3)
    with pytest.raises(ValueError, match="Linear is not a denoiser freelong can install methods on"):
        freelong.enable(torch.nn.Linear(2, 2), "freelong")
    with pytest.raises(ValueError, match="has no denoiser"):
        freelong.enable(object(), "freelong")
    with pytest.raises(ValueError, match="method=freeloc runs on Wan's 3D self-attention .* family cogvideox"):
        freelong.enable(cases["cogvideox"].pipe, "freeloc")


def test_riflex_on_a_cogvideox_without_rope_is_refused_and_leaves_nothing():
    """CogVideoX-2B's positions are sin-cos (no RoPE): one line, and the transformer is as it was."""
    from diffusers import CogVideoXTransformer3DModel

    model = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                                        time_embed_dim=8, text_embed_dim=16, num_layers=1, sample_width=8,
                                        sample_height=8, sample_frames=9, patch_size=2, max_text_seq_length=5,
                                        use_rotary_positional_embeddings=False)
    procs = dict(model.attn_processors)
    with pytest.raises(ValueError, match="^method riflex edits RoPE frequencies; CogVideoXTransformer3DModel has no "
                                         "RoPE$"):
        freelong.enable(model, "riflex")
    assert all(model.attn_processors[k] is procs[k] for k in procs)
    assert not model._forward_pre_hooks and not model._forward_hooks and "forward" not in model.__dict__


@torch.no_grad()
def test_window_larger_than_the_video_fails_at_the_first_forward(cases, one_thread):
    case = cases["wan"]
    with freelong.enable(case.pipe, "freelong", window=21):  # 11 latent frames
        with pytest.raises(ValueError, match=r"method.window=21 is larger than num_frames=11"):
            case.theirs(case.latents(get_method("direct")), steps=1)


@torch.no_grad()
def test_a_bare_model_counts_steps_from_its_timesteps(cases, one_thread):
    """Without a pipeline (or a cache context) the step index comes from timestep changes; a rise starts a call."""
    model = cases["animatediff"].pipe.unet
    seen = []
    handle = freelong.enable(model, "freelong", window=8)
    view = handle.views["model"]
    original = view.publish_call

    def spy(call):
        seen.append(None if call.step_index is None else int(call.step_index))
        return original(call)

    view.publish_call = spy
    x = torch.randn(1, 4, 12, 4, 4)
    text = cases["animatediff"].cond.repeat_interleave(12, dim=0)
    try:
        for t in (900, 600, 300, 900, 600):
            model(x, t, encoder_hidden_states=text)
    finally:
        handle.disable()
    assert seen == [0, 1, 2, 0, 1]


def _with_and_without_freelong(case):
    """FreeLong (window 8) on a UNet case: the method, direct latents, and the pipeline's result with and without it
    (what the coexistence tests compare against)."""
    method = get_method("freelong", window=8, blend_steps=1)
    latents = case.latents(get_method("direct"))
    with freelong.enable(case.pipe, method):
        ref = case.theirs(latents)
    return method, latents, ref, case.theirs(latents)


@torch.no_grad()
def test_coexists_with_an_accelerate_offload_hook_in_either_order(cases, one_thread):
    """accelerate's hooks (enable_model_cpu_offload uses them) replace forward: the method keeps working whichever
    was installed first, and disable() leaves accelerate's wrapper in place."""
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

    case = cases["animatediff"]
    model = case.pipe.unet
    method, latents, ref, plain = _with_and_without_freelong(case)
    for enable_first in (True, False):
        if enable_first:
            handle = freelong.enable(case.pipe, method)
            add_hook_to_module(model, ModelHook())
            accelerate_forward = model.__dict__["forward"]
        else:
            add_hook_to_module(model, ModelHook())
            accelerate_forward = model.__dict__["forward"]
            handle = freelong.enable(case.pipe, method)
        assert torch.equal(case.theirs(latents), ref)
        assert torch.equal(case.theirs(latents), ref)  # still on after a whole call
        handle.disable()
        assert model.__dict__["forward"] is accelerate_forward and hasattr(model, "_hf_hook")
        assert torch.equal(case.theirs(latents), plain)
        remove_hook_from_module(model)
    assert torch.equal(case.theirs(latents), plain)


@torch.no_grad()
def test_coexists_with_a_diffusers_cache_hook(cases, one_thread):
    from diffusers import FirstBlockCacheConfig

    case = cases["wan"]
    model = case.pipe.transformer
    latents = case.latents(get_method("direct"))
    plain = case.theirs(latents)
    model.enable_cache(FirstBlockCacheConfig(threshold=0.0))  # threshold 0: never reuses, so nothing changes
    method = get_method("sliding_window", window=3, stride=1)
    try:
        assert torch.equal(case.theirs(latents), plain)
        with freelong.enable(case.pipe, method, trained_frames=21):  # freelong disabled first
            cached = case.theirs(latents)
        handle = freelong.enable(case.pipe, method, trained_frames=21)
        model.disable_cache()  # the cache disabled first
        uncached = case.theirs(latents)
        handle.disable()
    finally:
        if getattr(model, "_cache_config", None) is not None:
            model.disable_cache()
    assert torch.equal(cached, uncached)
    assert torch.equal(case.theirs(latents), plain)


@pytest.mark.slow
@torch.no_grad()
def test_compiled_transformer_does_not_recompile_per_step(wan, one_thread):
    """torch.compile over Wan's repeated blocks with FreeLong enabled: every graph is compiled during the first
    step; the later steps (new step index, timestep, sigma, both guidance branches) compile nothing."""
    from diffusers import WanPipeline
    from torch._dynamo.testing import CompileCounter

    case = WanCase(wan)
    pipe = WanPipeline(**{**wan.components, "transformer": _copy_transformer(wan)})
    pipe.set_progress_bar_config(disable=True)
    case.pipe = pipe
    latents = case.latents(get_method("direct"))
    method = get_method("freelong", window=3, noise_stride=1, local_only_levels=[])
    with freelong.enable(pipe, method, trained_frames=21):
        eager = case.theirs(latents, steps=4)
        torch._dynamo.reset()
        counter = CompileCounter()
        pipe.transformer.compile_repeated_blocks(backend=counter)
        counts = []
        pipe_kwargs = dict(callback_on_step_end=lambda p, i, t, kw: counts.append(counter.frame_count) or kw)
        out = pipe(prompt_embeds=case.cond, negative_prompt_embeds=case.uncond, latents=latents.clone(),
                   num_inference_steps=4, guidance_scale=case.guidance, output_type="latent", **case.size,
                   **pipe_kwargs).frames
        again = counter.frame_count
        case.theirs(latents, steps=4)
    assert counts[0] > 0
    assert counts == [counts[0]] * 4 and counter.frame_count == again == counts[0]
    assert torch.allclose(out, eager, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()


def _copy_transformer(wan):
    import copy

    return copy.deepcopy(wan.transformer)


@torch.no_grad()
def test_every_denoiser_of_a_two_expert_pipeline_gets_the_method(wan, one_thread):
    """Wan2.2-style ``transformer_2`` (the low-noise expert below ``boundary_ratio``; here steps 3-4 of 4): both
    experts get the method with their own state and the pipeline's global step index (blend_steps=2 switches at the
    hand-over). With identical expert weights the two-expert pipeline equals the one-expert one."""
    import copy

    from diffusers import WanPipeline

    case = WanCase(wan)
    single = case.pipe
    two = WanPipeline(**wan.components, transformer_2=copy.deepcopy(wan.transformer), boundary_ratio=0.8)
    two.set_progress_bar_config(disable=True)
    method = get_method("freelong", window=3, noise_stride=1, local_only_levels=[], blend_steps=2)
    latents = case.latents(method)
    with freelong.enable(single, method, trained_frames=21):
        ref = case.theirs(latents, steps=4)
    case.pipe = two
    calls = []
    counter = two.transformer_2.register_forward_pre_hook(lambda *a: calls.append(1))
    with freelong.enable(two, method, trained_frames=21) as handle:
        assert set(handle.denoisers) == {"transformer", "transformer_2"}
        got = case.theirs(latents, steps=4)
    counter.remove()
    assert 0 < len(calls) < 8  # the low-noise expert ran some of the 4 steps (x2 guidance branches)
    assert _rel(got, ref) < 1e-6
    assert _rel(case.theirs(latents, steps=4), ref) > 1e-4


@torch.no_grad()
def test_coexists_with_diffusers_model_cpu_offload(cases, one_thread):
    """``pipe.enable_model_cpu_offload`` (device "cpu" here) re-installs accelerate's hooks at the end of every
    call: the method stays on over several calls whichever came first, and disable() leaves offloading working."""
    case = cases["animatediff"]
    model = case.pipe.unet
    method, latents, ref, plain = _with_and_without_freelong(case)
    try:
        for enable_first in (True, False):
            if enable_first:
                handle = freelong.enable(case.pipe, method)
                case.pipe.enable_model_cpu_offload(device="cpu")
            else:
                case.pipe.enable_model_cpu_offload(device="cpu")
                handle = freelong.enable(case.pipe, method)
            for _ in range(2):
                assert torch.equal(case.theirs(latents), ref), enable_first
            handle.disable()
            assert hasattr(model, "_hf_hook")
            assert torch.equal(case.theirs(latents), plain)
            case.pipe.remove_all_hooks()
    finally:
        case.pipe.remove_all_hooks()
    assert torch.equal(case.theirs(latents), plain)


# the guidance branches of one step, as each pipeline names them in its cache_context
BRANCHES = {"wan": ["cond", "uncond"], "cogvideox": ["cond_uncond"], "cogvideox1_5": ["cond_uncond"],
            "hunyuanvideo": ["cond"]}


def _published(case, **call_kwargs) -> list[tuple]:
    """``(frames checked, step, steps, branch, batch of the timestep)`` of every forward of a 2-step call with
    ``direct`` enabled; asserts that the hook's state is reset when the pipeline ends the call."""
    seen = []
    with freelong.enable(case.pipe, "direct", trained_frames=case.trained):
        hook = case.model._diffusers_hook.get_hook(HOOK_NAME)
        original = hook.view.publish_call

        def spy(call):
            seen.append((hook.checked_frames, int(call.step_index), call.num_steps, call.extra["branch"],
                         len(call.extra["timestep"])))
            return original(call)

        hook.view.publish_call = spy
        case.theirs(case.latents(get_method("direct")), **call_kwargs)
        assert hook.checked_frames is None and hook.context._context is None  # maybe_free_model_hooks reset it
    return seen


@pytest.mark.parametrize("family", DITS)
@torch.no_grad()
def test_every_forward_gets_the_step_and_guidance_branch_and_the_state_resets(cases, family, one_thread):
    """WanPipeline: two calls a step with the step in the cache context; CogVideoXPipeline: one batched [uncond,
    cond] call ("cond_uncond", batch 2) with the step found in the scheduler's timesteps; HunyuanVideoPipeline:
    one "cond" call (embedded guidance). Every pipeline ends with maybe_free_model_hooks -> reset_state."""
    batch = 2 if family.startswith("cogvideox") else 1
    expected = [(11, step, 2, branch, batch) for step in range(2) for branch in BRANCHES[family]]
    assert _published(cases[family]) == expected


@torch.no_grad()
def test_hunyuanvideo_true_cfg_gives_cond_and_uncond_calls(cases, one_thread):
    case = cases["hunyuanvideo"]
    c = case.cond
    seen = _published(case, true_cfg_scale=2.0, negative_prompt_embeds=c["prompt_embeds"],
                      negative_pooled_prompt_embeds=c["pooled"], negative_prompt_attention_mask=c["mask"])
    assert seen == [(11, step, 2, branch, 1) for step in range(2) for branch in ("cond", "uncond")]


@torch.no_grad()
def test_cogvideox_1_5_token_grid_and_riflex_on_the_sliced_rope(cog15, one_thread):
    """CogVideoX 1.5 (``patch_size_t=2``, RoPE over the "slice" grid): the view's token grid halves the latent frames,
    RIFLEx through enable rewrites the temporal channels of the table the pipeline builds to the official RIFLEx
    values at positions 0..T'/2-1 (written out here), the rest of the table unchanged, and the joint attention
    adapter runs on the halved grid."""
    import math

    from freelong.models.base import denoiser_view

    pipe, cond = cog15
    view = denoiser_view(pipe.transformer, pipe=pipe)
    assert view.token_grid(torch.zeros(1, 14, 4, 4, 6)) == (7, 2, 3)
    seen = []  # the table the first block gets (after every pre-hook of the transformer)
    spy = pipe.transformer.transformer_blocks[0].register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["image_rotary_emb"]), with_kwargs=True)
    run = dict(prompt_embeds=cond, negative_prompt_embeds=cond, num_frames=53, height=32, width=48,
               num_inference_steps=1, output_type="latent",
               latents=torch.randn(1, 14, 4, 4, 6, generator=torch.Generator().manual_seed(0)))
    try:
        plain = pipe(**run).frames
        with freelong.enable(pipe, "riflex", k=1, trained_frames=21):
            edited = pipe(**run).frames
        assert torch.equal(pipe(**run).frames, plain)
    finally:
        spy.remove()
    (cos0, sin0), (cos1, sin1), (cos2, sin2) = seen
    assert torch.equal(cos2, cos0) and torch.equal(sin2, sin0)  # disabled: the pipeline's own table again
    frames = 7  # 53 frames -> 14 latent frames -> 7 temporal token positions (> 6, the period of k=1)
    freqs = 1.0 / (10000 ** (torch.arange(0, 4, 2).float() / 4))
    freqs[0] = 0.9 * 2 * math.pi / frames
    angles = torch.outer(torch.arange(frames, dtype=torch.float32), freqs).repeat_interleave(2, dim=1)
    assert torch.equal(cos1.view(frames, 6, -1)[..., :4], angles.cos()[:, None].expand(-1, 6, -1))
    assert torch.equal(sin1.view(frames, 6, -1)[..., :4], angles.sin()[:, None].expand(-1, 6, -1))
    assert torch.equal(cos1[:, 4:], cos0[:, 4:]) and torch.equal(sin1[:, 4:], sin0[:, 4:])
    assert not torch.equal(cos1[:, :4], cos0[:, :4])
    assert _rel(edited, plain) > 1e-6
    # the joint adapter on the halved grid: direct is diffusers' processor, windows of 3 of the 7 positions act
    with freelong.enable(pipe, "direct", trained_frames=21):
        assert _rel(pipe(**run).frames, plain) < 1e-5
    with freelong.enable(pipe, "sliding_window", window=3, stride=1, trained_frames=21):
        assert _rel(pipe(**run).frames, plain) > 1e-4


def test_cogvideox_1_5_methods_count_temporal_positions(cog15):
    """On CogVideoX 1.5 a method counts temporal token positions (two latent frames each): FreeLong++'s native length
    is 21 frames -> 6 latent -> 3 positions, and FreeNoise reschedules its noise by positions: beyond the first window
    every position's pair of latent frames is the pair of a position inside it (53 frames: 7 positions)."""
    pipe, _ = cog15
    size = dict(num_frames=53, height=32, width=48, generator=torch.Generator().manual_seed(0))
    with freelong.enable(pipe, "freelong_pp", noise_stride=1, trained_frames=21) as fl:
        assert fl.method.native_frames == 3
    assert freelong.prepare_latents(pipe, "direct", **size).shape == (1, 14, 4, 4, 6)
    noise = freelong.prepare_latents(pipe, get_method("freenoise", window=3, stride=1), trained_frames=21, **size)
    pairs = noise[0].unflatten(0, (7, 2))  # (position, frame in the pair, C, H, W)
    for later in range(3, 7):
        assert any(torch.equal(pairs[later], pairs[first]) for first in range(3)), later
    assert len({pairs[i].sum().item() for i in range(3)}) == 3  # the first window: three distinct draws


@pytest.fixture(scope="module")
def cog15(cases):
    """A CogVideoXPipeline over a tiny CogVideoX 1.5 transformer (patch 2x2x2, sliced RoPE) and the tiny VAE."""
    from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel

    from freelong.models.tiny import randomize_

    bb = cases["cogvideox"].bb
    model = randomize_(CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
        text_embed_dim=16, num_layers=1, sample_width=8, sample_height=8, sample_frames=21, patch_size=2,
        patch_size_t=2, patch_bias=False, max_text_seq_length=16, use_rotary_positional_embeddings=True), 3)
    pipe = CogVideoXPipeline(**{**bb.components, "transformer": model})
    pipe.set_progress_bar_config(disable=True)
    return pipe, cases["cogvideox"].cond
