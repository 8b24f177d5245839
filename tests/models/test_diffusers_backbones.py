"""diffusers' own video UNets (AnimateDiff, ModelScope) as backbones: parity with diffusers' pipelines,
methods on the temporal self-attentions only, positions, detach, and FreeNoise's block fusion."""

import copy
import math

import pytest
import torch

from freelong import LongVideoPipeline, get_method, load_backbone
from freelong.attention.context import CallContext
from freelong.attention.processor import temporal_attention_layers
from freelong.models.diffusers_unet.attention import (
    DiffusersNativeProcessor,
    SinusoidalTable,
    TemporalProcessorAdapter,
)

METHODS = ["direct", "sliding_window", "freenoise", "freelong"]




@pytest.fixture(params=["animatediff", "modelscope"])
def backbone(request):
    return request.getfixturevalue(request.param)


def _inputs(frames, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, frames, 8, 8, generator=g), torch.randn(batch, 77, 32, generator=g)


def _plain(bb, x, ctx):
    """diffusers' model called as diffusers' pipelines call it (no method attached, nothing of ours)."""
    t = x.shape[2]
    text = ctx.repeat_interleave(t, dim=0) if bb.pipeline_class == "AnimateDiffPipeline" else ctx
    return bb.unet.model(x, 500, encoder_hidden_states=text).sample


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@torch.no_grad()
def test_direct_equals_diffusers_pipeline(backbone, one_thread):
    """Same initial latents, prompt embeddings and scheduler: final latents equal diffusers' own pipeline."""
    latents = torch.randn(1, 4, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    ours = LongVideoPipeline(backbone, "direct", progress=False)(
        "a cat", num_frames=16, height=64, width=64, num_inference_steps=3, latents=latents, output_type="latent")
    pipe = backbone.diffusers_pipeline()
    theirs = pipe(prompt_embeds=backbone.encode_text(["a cat"]), negative_prompt_embeds=backbone.encode_text([""]),
                  latents=latents.clone(), num_frames=16, height=64, width=64, num_inference_steps=3,
                  guidance_scale=backbone.sampling["guidance_scale"], output_type="latent").frames
    assert theirs.shape == ours.shape
    assert _rel(ours, theirs) < 1e-5
    assert _rel(ours, latents) > 1e-2  # the trajectory moved


def test_components_are_the_modules_the_backbone_runs(animatediff, modelscope):
    for bb in (animatediff, modelscope):
        parts = bb.components
        assert parts["unet"] is bb.unet.model and parts["vae"] is bb.vae and parts["text_encoder"] is bb.text_encoder
        assert parts["tokenizer"] is bb.tokenizer
        assert dict(parts["scheduler"].config)["beta_end"] == 0.012
    assert type(animatediff.components["unet"]).__name__ == "UNetMotionModel"
    assert type(modelscope.components["unet"]).__name__ == "UNet3DConditionModel"
    assert animatediff.components["motion_adapter"].config.motion_max_seq_length == 32


def test_animatediff_scheduler_is_the_documented_one():
    from freelong.models.spec import load_model_config

    for name in ("animatediff", "animatediff_tiny"):
        s = load_model_config(name).scheduler
        assert (s.beta_schedule, s.beta_start, s.beta_end, s.steps_offset, s.clip_sample, s.timestep_spacing) == (
            "linear", 0.00085, 0.012, 1, False, "linspace")
    real, tiny = load_model_config("animatediff"), load_model_config("animatediff_tiny")
    assert dict(real.scheduler) == dict(tiny.scheduler)
    assert (real.sampling.height, real.sampling.width, real.native_frames, real.sampling.guidance_scale) == (
        512, 512, 16, 7.5)
    zs = load_model_config("zeroscope").sampling
    assert (zs.width, zs.height) == (576, 320)


def test_methods_attach_to_the_temporal_self_attentions_only(backbone):
    model = backbone.unet.model
    before = dict(model.attn_processors)
    temporal = {n for n in before
                if ".motion_modules." in n or ".temp_attentions." in n or n.startswith("transformer_in")}
    assert temporal and len(temporal) < len(before)
    with backbone.attach(get_method("freelong", window=8)):
        during = model.attn_processors
        for name, proc in during.items():
            if name in temporal:
                assert isinstance(proc, TemporalProcessorAdapter), name
            else:
                assert proc is before[name], name  # spatial and cross attention untouched
    after = model.attn_processors
    assert all(after[n] is before[n] for n in before)
    assert {f"{n}.processor" for n in temporal_attention_layers(backbone.unet)} == temporal


@torch.no_grad()
@pytest.mark.parametrize("name", METHODS)
def test_every_method_equals_the_plain_model_at_16_frames(backbone, name, one_thread):
    x, ctx = _inputs(16)
    plain = _plain(backbone, x, ctx)
    method = get_method(name, **({} if name == "direct" else {"window": 16}))
    with backbone.attach(method):
        out = backbone.unet(x, 500, ctx, call=CallContext(step_index=2, num_steps=8))
    assert _rel(out, plain) < 1e-5


@torch.no_grad()
def test_absolute_positions_match_diffusers_within_the_table(animatediff, one_thread):
    """24 frames (inside the 32-entry table): our processors add positions 0..23 like diffusers' pos_embed."""
    x, ctx = _inputs(24, batch=1)
    with animatediff.attach(get_method("direct")):
        ours = animatediff.unet(x, 500, ctx)
    assert _rel(ours, _plain(animatediff, x, ctx)) < 1e-5


@torch.no_grad()
def test_beyond_the_table_positions_extend_the_sinusoid(animatediff, one_thread):
    """40 frames: diffusers' own table cannot; ours equals diffusers with a 64-row table built from the formula."""
    blocks = [m for m in animatediff.unet.model.modules() if getattr(m, "pos_embed", None) is not None]

    def formula(dim, n=64):  # diffusers' SinusoidalPositionalEmbedding definition, written out
        return torch.tensor([[math.sin(p / 10000 ** (c / dim)) if c % 2 == 0 else math.cos(p / 10000 ** ((c - 1) / dim))
                              for c in range(dim)] for p in range(n)])

    for b in {b.pos_embed.pe.shape[-1]: b for b in blocks}.values():
        table = SinusoidalTable(b.pos_embed)
        torch.testing.assert_close(table(torch.arange(64)), formula(b.pos_embed.pe.shape[-1]), atol=1e-5, rtol=0)
        assert torch.equal(table(torch.arange(32)), b.pos_embed.pe[0])  # the stored rows as they are
    x, ctx = _inputs(40, batch=1)
    with pytest.raises(RuntimeError):
        _plain(animatediff, x, ctx)
    with animatediff.attach(get_method("direct")):
        ours = animatediff.unet(x, 500, ctx)
    saved = {b: b.pos_embed.pe for b in blocks}
    try:
        for b in blocks:
            b.pos_embed.pe = formula(b.pos_embed.pe.shape[-1])[None].to(saved[b].dtype)
        reference = _plain(animatediff, x, ctx)
    finally:
        for b in blocks:
            b.pos_embed.pe = saved[b]
    assert _rel(ours, reference) < 1e-5


@torch.no_grad()
@pytest.mark.parametrize("name", ["sliding_window", "freenoise", "freelong"])
def test_methods_change_long_videos_and_detach_restores_diffusers_exactly(backbone, name, one_thread):
    x, ctx = _inputs(24, batch=1, seed=1)
    model = backbone.unet.model
    procs = dict(model.attn_processors)
    pos = {id(m): getattr(m, "pos_embed", None) for m in model.modules() if hasattr(m, "pos_embed")}
    before = _plain(backbone, x, ctx)
    handle = backbone.attach(get_method(name, window=8))
    during = backbone.unet(x, 500, ctx)
    handle.detach()
    after = _plain(backbone, x, ctx)
    assert _rel(during, before) > 1e-4
    assert torch.equal(after, before)
    assert all(model.attn_processors[n] is p for n, p in procs.items())
    assert all(getattr(m, "pos_embed", None) is pos[id(m)] for m in model.modules() if hasattr(m, "pos_embed"))
    assert all(not m._forward_pre_hooks for m in model.modules())
    slots = temporal_attention_layers(backbone.unet).values()
    assert all(isinstance(s.processor, DiffusersNativeProcessor) for s in slots)


@torch.no_grad()
def test_freenoise_block_fusion_equals_diffusers_free_noise(animatediff, one_thread):
    """32 frames, window 16, stride 4 (exact tiling): fusion=block == AnimateDiffPipeline.enable_free_noise."""
    pipe = animatediff.diffusers_pipeline(unet=copy.deepcopy(animatediff.unet.model))
    pipe.enable_free_noise(context_length=16, context_stride=4, weighting_scheme="pyramid")
    latents = torch.randn(1, 4, 32, 8, 8, generator=torch.Generator().manual_seed(3))
    theirs = pipe(prompt="a cat", negative_prompt="", latents=latents.clone(), num_frames=32, height=64, width=64,
                  num_inference_steps=3, guidance_scale=7.5, output_type="latent").frames
    run = LongVideoPipeline(animatediff, get_method("freenoise", fusion="block"), progress=False)
    ours = run("a cat", num_frames=32, height=64, width=64, num_inference_steps=3, latents=latents,
               output_type="latent")
    assert _rel(ours, theirs) < 1e-5
    per_attention = LongVideoPipeline(animatediff, get_method("freenoise"), progress=False)(
        "a cat", num_frames=32, height=64, width=64, num_inference_steps=3, latents=latents, output_type="latent")
    assert _rel(per_attention, theirs) > 1e-3  # the paper's per-attention fusion is a different method
    assert all("forward" not in b.__dict__ for b in animatediff.unet.temporal_blocks().values())


def test_block_fusion_needs_diffusers_blocks(lavie_tiny):
    with pytest.raises(ValueError, match="replaces motion transformer blocks, and lavie_tiny has none"):
        lavie_tiny.attach(get_method("freenoise", fusion="block"))
    with pytest.raises(ValueError, match="method.fusion"):
        get_method("freenoise", fusion="blocks")


@torch.no_grad()
def test_long_video_runs_with_feed_forward_chunks(animatediff, one_thread):
    """48 frames with a tiny chunk budget: diffusers' chunked feed-forward gives the same prediction."""
    x, ctx = _inputs(48, batch=1, seed=2)
    unet = animatediff.unet
    try:
        with animatediff.attach(get_method("freelong", window=16)):
            unet.frame_chunk_size = 0
            whole = unet(x, 500, ctx)
            unet.frame_chunk_size, unet.chunk_budget_mb = None, 0.05
            assert unet._set_ff_chunks(torch.cat([x, x]))  # a CFG-sized batch gets chunks that divide its rows
            chunks = [b._chunk_size for _, b in unet._ff_blocks()]
            chunked = unet(x, 500, ctx)
    finally:
        unet.frame_chunk_size, unet.chunk_budget_mb = None, None
    assert sum(c is not None for c in chunks) > len(chunks) // 2
    assert all(b._chunk_size is None for _, b in unet._ff_blocks())  # diffusers' modules left as found
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_multi_prompt_context_reaches_animatediff_but_not_modelscope(animatediff, modelscope):
    x, _ = _inputs(16, batch=1)
    per_frame = torch.randn(1, 16, 77, 32)
    with torch.no_grad():
        assert animatediff.unet(x, 500, per_frame).shape == x.shape
    with pytest.raises(ValueError, match="per-frame"):
        modelscope.unet(x, 500, per_frame)
    with pytest.raises(ValueError, match="motion_injection"):
        animatediff.unet(x, 500, {"down": per_frame, "mid": per_frame, "up": per_frame})


@torch.no_grad()
def test_a_method_reaches_motion_blocks_swapped_after_the_backbone_was_built(one_thread):
    """diffusers' enable_free_noise()/disable_free_noise() replace every motion block with a new module. A method
    attached afterwards acts on the live blocks (slots found at build time installed it where nothing runs)."""
    bb = load_backbone("animatediff_tiny")
    x, ctx = _inputs(24, batch=1, seed=3)
    unet = bb.unet
    method = get_method("freelong", window=8)
    plain = unet(x, 500, ctx)
    with bb.attach(method):
        with_method = unet(x, 500, ctx)
    assert _rel(with_method, plain) > 1e-3
    old_blocks = dict(unet.temporal_blocks())
    pipe = bb.diffusers_pipeline()
    pipe.enable_free_noise(context_length=16, context_stride=4)
    pipe.disable_free_noise()
    live = unet.temporal_blocks()
    assert live.keys() == old_blocks.keys() and all(live[k] is not old_blocks[k] for k in live)
    torch.testing.assert_close(unet(x, 500, ctx), plain, atol=1e-6, rtol=0)  # same weights, new modules
    with bb.attach(method) as handle:
        assert all(isinstance(slot.attn.processor, TemporalProcessorAdapter) and any(
            slot.attn is getattr(b, "attn1", None) or slot.attn is getattr(b, "attn2", None) for b in live.values())
            for slot in unet.temporal_layers().values())
        torch.testing.assert_close(unet(x, 500, ctx), with_method, atol=1e-6, rtol=0)
    assert not handle.attached
    torch.testing.assert_close(unet(x, 500, ctx), plain, atol=1e-6, rtol=0)
