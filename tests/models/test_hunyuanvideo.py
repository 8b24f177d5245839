"""HunyuanVideo through diffusers (hunyuanvideo_tiny): parity with HunyuanVideoPipeline, methods on the joint
[video, text] attention of dual- and single-stream blocks (text rows/columns untouched by windowing, the prompt's
padding masked), 4n+1."""

import helpers
import pytest
import torch
from helpers import PROMPT, dit_latents, pipeline_latents, rel

from freelong import LongVideoPipeline, get_method
from freelong.models.hunyuanvideo.attention import JointVideoFirstAdapter

hy = helpers.backbone_fixture("hunyuanvideo_tiny")


def test_direct_equals_diffusers_hunyuanvideo_pipeline(hy):
    latents = dit_latents(hy)
    ours = pipeline_latents(hy, "direct", latents)
    c = hy.encode_text([PROMPT])
    assert 0 < int(c["mask"].sum()) < c["mask"].shape[1]  # the prompt is padded: the mask is exercised
    theirs = hy.diffusers_pipeline()(prompt_embeds=c["prompt_embeds"], pooled_prompt_embeds=c["pooled"],
                                     prompt_attention_mask=c["mask"], num_frames=21, height=32, width=48,
                                     num_inference_steps=3, guidance_scale=6.0, latents=latents.clone(),
                                     output_type="latent").frames
    assert rel(ours, theirs) < 1e-5
    assert rel(ours, latents) > 0.05


def _call_kwargs(hy):
    c = hy.encode_text([PROMPT])
    return dict(hidden_states=dit_latents(hy), timestep=torch.tensor([700.0]), encoder_hidden_states=c["prompt_embeds"],
                encoder_attention_mask=c["mask"], pooled_projections=c["pooled"], guidance=torch.tensor([6000.0]),
                return_dict=False)


def test_adapters_equal_diffusers_processors_and_detach_restores(hy):
    model = hy.transformer
    before = dict(model.attn_processors)
    hooks = len(model._forward_pre_hooks)
    kw = _call_kwargs(hy)
    with torch.no_grad():
        ref = model(**kw)[0]
        with hy.attach(get_method("direct")) as handle:
            assert handle.layer_names == ["transformer_blocks.0.attn", "single_transformer_blocks.0.attn"]
            assert isinstance(model.transformer_blocks[0].attn.processor, JointVideoFirstAdapter)
            assert isinstance(model.single_transformer_blocks[0].attn.processor, JointVideoFirstAdapter)
            assert not isinstance(model.context_embedder.token_refiner.refiner_blocks[0].attn.processor,
                                  JointVideoFirstAdapter)
            ours = model(**kw)[0]
    assert torch.allclose(ours, ref, rtol=0, atol=1e-5)
    after = model.attn_processors
    assert before.keys() == after.keys() and all(after[k] is before[k] for k in before)
    assert len(model._forward_pre_hooks) == hooks


@pytest.mark.parametrize("block", ["transformer_blocks.0.attn", "single_transformer_blocks.0.attn"])
def test_windowing_keeps_text_rows_and_columns_and_the_padding_mask(hy, block):
    """Local windows (3 of 6 latent frames) == the explicit mask over [video, text] keys: video queries see their
    window's video keys and every *unpadded* text key; text queries are diffusers' rows."""
    from freelong.attention.windows import local_window_bounds

    attn = hy.transformer.get_submodule(block)
    dim = attn.to_q.in_features
    g = torch.Generator().manual_seed(5)
    t, s, n_text, valid = 6, 6, 7, 4
    hidden = torch.randn(1, t * s, dim, generator=g)
    enc = torch.randn(1, n_text, dim, generator=g)
    rope = hy.transformer.rope(torch.zeros(1, 4, t, 4, 6))
    mask = torch.ones(1, 1, 1, t * s + n_text, dtype=torch.bool)
    mask[..., t * s + valid:] = False
    hy.call_state.grid = (t, 2, 3)
    adapter = JointVideoFirstAdapter(get_method("sliding_window", window=3, stride=1, attention="local").processor(),
                                     hy.call_state, block, 0)
    with torch.no_grad():
        ref_video, ref_text = attn.processor(attn, hidden, enc, mask, rope)
        out_video, out_text = adapter(attn, hidden, enc, mask, rope)
        q, k, v = (z.transpose(1, 2) for z in adapter.qkv(attn, hidden, enc, rope))
    assert torch.allclose(out_text, ref_text, atol=1e-5)
    frame = torch.arange(t * s) // s
    start, end = local_window_bounds(t, 3, "adjusted")
    allowed = mask.reshape(1, -1).expand(t * s, -1).clone()
    allowed[:, : t * s] = (frame[None, :] >= start[frame][:, None]) & (frame[None, :] < end[frame][:, None])
    logits = (q[:, :, : t * s].double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5
    expected = (torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1) @ v.double()).float()
    expected = expected.transpose(1, 2).flatten(2, 3)
    if getattr(attn, "to_out", None) is not None:
        with torch.no_grad():
            expected = attn.to_out[0](expected)
    assert torch.allclose(out_video, expected, atol=1e-5)
    assert (out_video - ref_video).abs().max() > 1e-4


class TestMethodsVsDirect(helpers.DiTMethodTests):
    backbone = "hy"


def test_riflex_table_equals_official_hunyuanvideo_at_261_frames():
    """Official hunyuanvideo.py: k=4, N_k=50, 261 frames -> L_test = 66 latent frames; diffusers' rope module at the
    real axes (16, 56, 56), base 256, on a small spatial grid; axis 0 = the official RIFLEx 1D table."""
    import math

    from diffusers.models.embeddings import get_1d_rotary_pos_embed
    from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoRotaryPosEmbed

    from freelong.models.hunyuanvideo.attention import HunyuanRopeEdit

    rope = HunyuanVideoRotaryPosEmbed(2, 1, [16, 56, 56], 256.0)
    x = torch.zeros(1, 16, 66, 4, 6)
    edited = HunyuanRopeEdit(rope, get_method("riflex", k=4, n_k=50).rope_frequencies, native_positions=33)
    cos, sin = edited(x)
    grid = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (66, 2, 3)), indexing="ij"))
    freqs = 1.0 / (256.0 ** (torch.arange(0, 16, 2)[:8].float() / 16))
    freqs[3] = 0.9 * 2 * math.pi / 66  # the official get_1d_rotary_pos_embed_riflex with k=4, L_test=66
    angles = torch.outer(grid[0].reshape(-1), freqs)
    parts = [(angles.cos().repeat_interleave(2, 1), angles.sin().repeat_interleave(2, 1))]
    parts += [get_1d_rotary_pos_embed(d, grid[i].reshape(-1), 256.0, use_real=True) for i, d in ((1, 56), (2, 56))]
    assert torch.equal(cos, torch.cat([p[0] for p in parts], 1))
    assert torch.equal(sin, torch.cat([p[1] for p in parts], 1))
    for frames in (33, 50):  # no edit up to N_k
        y = torch.zeros(1, 16, frames, 4, 6)
        assert all(torch.equal(a, b) for a, b in zip(edited(y), rope(y)))


def test_frame_rule_fails_before_sampling(hy):
    helpers.assert_rejected_before_sampling(hy, 127, "125 or 129")


def test_missing_folder_names_the_files(tmp_path):
    from freelong.models.base import build_backbone
    from freelong.models.spec import load_model_config
    from freelong.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match=r"(?s)transformer/config.json.*download_weights.py hunyuanvideo"):
        build_backbone(load_model_config("hunyuanvideo"), weights_dir=str(tmp_path))


def test_tiny_and_real_configs_share_the_scheduler():
    from freelong.models.spec import load_model_config

    tiny, real = load_model_config("hunyuanvideo_tiny"), load_model_config("hunyuanvideo")
    assert tiny.scheduler == real.scheduler
    assert (real.sampling.num_frames, real.sampling.height, real.sampling.width) == (129, 720, 1280)
    assert real.sampling.guidance_scale == 6.0 and list(real.unet.rope_axes_dim) == [16, 56, 56]


def test_smoke_video(hy):
    video = LongVideoPipeline(hy, "direct", progress=False)(PROMPT, num_frames=9, num_inference_steps=1)
    assert video.shape == (9, 32, 48, 3) and video.dtype.name == "uint8"
