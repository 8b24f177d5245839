"""CogVideoX-5B through diffusers (cogvideox_5b_tiny): parity with CogVideoXPipeline, methods on the joint
[text, video] attention (text rows and columns untouched by windowing, the blend on video tokens only), 4n+1."""

import helpers
import pytest
import torch
from helpers import PROMPT, dit_latents, pipeline_latents, rel

from freelong import LongVideoPipeline, get_method
from freelong.models.cogvideox.attention import JointTextFirstAdapter

cog = helpers.backbone_fixture("cogvideox_5b_tiny")


def test_encode_text_equals_cogvideox_pipeline(cog):
    from diffusers import CogVideoXPipeline

    ref = CogVideoXPipeline(**cog.components)
    emb, _ = ref.encode_prompt([PROMPT, "x"], do_classifier_free_guidance=False, max_sequence_length=16,
                               device=torch.device("cpu"))
    assert torch.equal(cog.encode_text([PROMPT, "x"]), emb)


def test_direct_equals_diffusers_cogvideox_pipeline(cog):
    from diffusers import CogVideoXPipeline

    latents = dit_latents(cog)
    ours = pipeline_latents(cog, "direct", latents)
    ref = CogVideoXPipeline(**cog.components)
    theirs = ref(prompt_embeds=cog.encode_text([PROMPT]), negative_prompt_embeds=cog.encode_text([""]),
                 num_frames=21, height=32, width=48, num_inference_steps=3, guidance_scale=6.0,
                 latents=latents.transpose(1, 2).clone(), output_type="latent").frames  # (B, F, C, H, W)
    assert rel(ours, theirs.transpose(1, 2)) < 1e-5
    assert rel(ours, latents) > 0.05


def test_rotary_embedding_equals_the_pipelines(cog):
    from diffusers import CogVideoXPipeline

    ref = CogVideoXPipeline(**cog.components)
    for frames, h, w in ((6, 4, 6), (11, 8, 4)):
        theirs = ref._prepare_rotary_positional_embeddings(h * 8, w * 8, frames, torch.device("cpu"))
        ours = cog.rotary_embedding(frames, h, w)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_adapter_equals_diffusers_processor_and_detach_restores(cog):
    model = cog.transformer
    before = dict(model.attn_processors)
    hooks = len(model._forward_pre_hooks)
    x = dit_latents(cog).transpose(1, 2)
    cond = cog.encode_text([PROMPT])
    rope = cog.rotary_embedding(6, 4, 6)
    kw = dict(hidden_states=x, encoder_hidden_states=cond, timestep=torch.tensor([700]), image_rotary_emb=rope,
              return_dict=False)
    with torch.no_grad():
        ref = model(**kw)[0]
        with cog.attach(get_method("direct")) as handle:
            assert len(handle.layer_names) == len(model.transformer_blocks)
            assert all(isinstance(b.attn1.processor, JointTextFirstAdapter) for b in model.transformer_blocks)
            ours = model(**kw)[0]
    assert torch.allclose(ours, ref, rtol=0, atol=1e-5)
    after = model.attn_processors
    assert before.keys() == after.keys() and all(after[k] is before[k] for k in before)
    assert len(model._forward_pre_hooks) == hooks


def _layer_inputs(cog, frames=6, h=4, w=6, text=5, seed=3):
    attn = cog.transformer.transformer_blocks[0].attn1
    dim = attn.to_q.in_features
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(1, frames * (h // 2) * (w // 2), dim, generator=g)
    enc = torch.randn(1, text, dim, generator=g)
    cog.call_state.grid = (frames, h // 2, w // 2)
    return attn, hidden, enc, cog.rotary_embedding(frames, h, w)


def _explicit(attn, q, k, v, allowed):
    """Masked softmax attention over all [text, video] keys in fp64, then the output projection."""
    logits = (q.double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5
    probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
    out = (probs @ v.double()).float().transpose(1, 2).flatten(2, 3)
    return attn.to_out[0](out)


def test_windowing_keeps_text_rows_and_columns(cog):
    """Sliding window (3 of 6 latent frames) on one layer == the explicit mask: text queries see every key, video
    queries their window's video keys plus every text key."""
    from freelong.attention.windows import local_window_bounds
    from freelong.models.wan.attention import DiTCallState

    attn, hidden, enc, rope = _layer_inputs(cog)
    diffusers_proc = attn.processor
    proc = get_method("sliding_window", window=3, stride=1, attention="local").processor()
    adapter = JointTextFirstAdapter(proc, cog.call_state, "x", 0)
    with torch.no_grad():
        ref_video, ref_text = diffusers_proc(attn, hidden, enc, image_rotary_emb=rope)
        out_video, out_text = adapter(attn, hidden, enc, image_rotary_emb=rope)
        q, k, v = adapter.qkv(attn, torch.cat([enc, hidden], dim=1), enc.shape[1], rope)
    assert torch.allclose(out_text, ref_text, atol=1e-5)  # text rows untouched
    n_text, s = enc.shape[1], 6
    frame = torch.arange(hidden.shape[1]) // s
    start, end = local_window_bounds(6, 3, "adjusted")
    video_ok = (frame[None, :] >= start[frame][:, None]) & (frame[None, :] < end[frame][:, None])
    allowed = torch.ones(n_text + len(frame), n_text + len(frame), dtype=torch.bool)
    allowed[n_text:, n_text:] = video_ok
    expected = _explicit(attn, q, k, v, allowed)
    assert torch.allclose(out_video, expected[:, n_text:], atol=1e-5)
    assert (out_video - ref_video).abs().max() > 1e-4  # the window did change the video rows
    assert isinstance(cog.call_state, DiTCallState)


def test_freelong_blends_video_tokens_only(cog):
    """FreeLong on the joint attention: text rows untouched; video rows = the processor's own spectral blend of the
    explicit joint global and joint windowed attentions over the (T', H', W') video grid."""
    from freelong.attention.context import TemporalAttentionContext
    from freelong.attention.windows import local_window_bounds

    attn, hidden, enc, rope = _layer_inputs(cog)
    proc = get_method("freelong", window=3, noise_stride=1, local_only_levels=[]).processor()
    adapter = JointTextFirstAdapter(proc, cog.call_state, "x", 0)
    with torch.no_grad():
        _, ref_text = attn.processor(attn, hidden, enc, image_rotary_emb=rope)
        out_video, out_text = adapter(attn, hidden, enc, image_rotary_emb=rope)
        q, k, v = adapter.qkv(attn, torch.cat([enc, hidden], dim=1), enc.shape[1], rope)
    assert torch.allclose(out_text, ref_text, atol=1e-5)
    n_text, s = enc.shape[1], 6
    frame = torch.arange(hidden.shape[1]) // s
    start, end = local_window_bounds(6, 3, "adjusted")
    local_ok = torch.ones(len(frame), n_text + len(frame), dtype=torch.bool)
    local_ok[:, n_text:] = (frame[None, :] >= start[frame][:, None]) & (frame[None, :] < end[frame][:, None])

    def branch(allowed):
        logits = (q[:, :, n_text:].double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5
        return (torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1) @ v.double()).float()

    glob = branch(torch.ones_like(local_ok))
    local = branch(local_ok)
    ctx = TemporalAttentionContext(frame_shape=(6, 2, 3), batch=1, level=0, name="x", tokens_per_frame=s)
    blended = proc.blend(glob, local, ctx).transpose(1, 2).flatten(2, 3)
    with torch.no_grad():
        expected = attn.to_out[0](blended)
    assert torch.allclose(out_video, expected, atol=1e-5)


class TestMethodsVsDirect(helpers.DiTMethodTests):
    backbone = "cog"


def test_frame_rule_and_size_fail_before_sampling(cog):
    helpers.assert_rejected_before_sampling(cog, 48, "45 or 49", size=(40, 48, 16))


def test_block_fusion_freenoise_refuses_cogvideox_in_one_line(compose_cfg):
    from freelong.app.config import validate_config

    with pytest.raises(ValueError, match=r"method\.fusion|cogvideox"):
        validate_config(compose_cfg("model=cogvideox_5b_tiny", "method=freenoise", "method.fusion=block",
                                    "method.window=3", "method.stride=1", "num_frames=41"))


def test_missing_folder_names_the_files(tmp_path):
    from freelong.models.base import build_backbone
    from freelong.models.spec import load_model_config
    from freelong.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match=r"(?s)transformer/config.json.*download_weights.py cogvideox_5b"):
        build_backbone(load_model_config("cogvideox_5b"), weights_dir=str(tmp_path))


def test_loader_reads_a_diffusers_folder(cog, tmp_path):
    from freelong.models.base import build_backbone
    from freelong.models.spec import load_model_config

    folder = helpers.save_diffusers_folder(cog, tmp_path / "cog", "CogVideoXPipeline", "ddim")
    cfg = load_model_config("cogvideox_5b")
    cfg.weights.cogvideox.path = str(folder)
    cfg.extra.max_sequence_length = 16
    loaded = build_backbone(cfg, weights_dir=str(tmp_path / "empty"))
    assert not loaded.random_init and torch.equal(loaded.encode_text([PROMPT]), cog.encode_text([PROMPT]))
    latents = dit_latents(cog)
    ours = pipeline_latents(loaded, "direct", latents, steps=1)
    assert rel(ours, pipeline_latents(cog, "direct", latents, steps=1)) < 1e-6


def test_a_cogvideox_1_5_folder_is_refused_before_any_weight_is_read(tmp_path):
    """CogVideoX 1.5 (``patch_size_t=2``) samples differently (padded latents, frame-pair tokens): ``cogvideox_5b``
    refuses its folder in one line naming ``cogvideox1_5_5b``, and no weight file is opened (the folder has none:
    reading one would fail with another error)."""
    import json

    from freelong.models.base import build_backbone
    from freelong.models.spec import load_model_config

    folder = tmp_path / "cog15"
    cfg = load_model_config("cogvideox_5b")
    for rel_path in cfg.weights.cogvideox.required:
        path = folder / rel_path.split("|")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    (folder / "transformer" / "config.json").write_text(json.dumps({"patch_size_t": 2, "patch_size": 2}))
    cfg.weights.cogvideox.path = str(folder)
    with pytest.raises(ValueError, match=r"^cogvideox_5b: .*config.json has patch_size_t=2, .* model=cogvideox1_5_5b"):
        build_backbone(cfg, weights_dir=str(tmp_path / "empty"))


def test_tiny_and_real_configs_share_the_scheduler():
    from freelong.models.spec import load_model_config

    tiny, real = load_model_config("cogvideox_5b_tiny"), load_model_config("cogvideox_5b")
    assert tiny.scheduler == real.scheduler
    assert (real.sampling.num_frames, real.sampling.height, real.sampling.width) == (49, 480, 720)
    assert real.sampling.guidance_scale == 6.0 and real.sampling.fps == 8


def test_smoke_video(cog):
    video = LongVideoPipeline(cog, "direct", progress=False)(PROMPT, num_frames=9, num_inference_steps=1)
    assert video.shape == (9, 32, 48, 3) and video.dtype.name == "uint8"
