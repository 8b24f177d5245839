"""CogVideoX 1.5 through diffusers (cogvideox1_5_5b_tiny: the same classes as 5B with a temporal patch of 2):
parity with CogVideoXPipeline (padded latents, the padding dropped before decoding, the "slice" RoPE grid), methods
counting temporal positions, noise drawn per position, the folder's version checked before any weight is read."""

import json

import helpers
import numpy as np
import pytest
import torch
from helpers import PROMPT, dit_latents, method_and_direct, pipeline_latents, rel

from freelong import LongVideoPipeline, get_method

cog15 = helpers.backbone_fixture("cogvideox1_5_5b_tiny")


def _reference(bb):
    from diffusers import CogVideoXPipeline

    ref = CogVideoXPipeline(**bb.components)
    ref.set_progress_bar_config(disable=True)
    return ref


def test_frames_latents_and_positions(cog15):
    """4n+1 frames -> n+1 latent frames, padded to even as CogVideoXPipeline pads them; methods count the pairs."""
    assert [(cog15.latent_frames(n), cog15.method_frames(n)) for n in (1, 5, 41, 45, 81)] == [
        (2, 1), (2, 1), (12, 6), (12, 6), (22, 11)]
    assert cog15.unet.config.patch_size_t == 2
    assert LongVideoPipeline(cog15, "freelong_pp", progress=False).method.native_frames == 6


def test_direct_equals_diffusers_cogvideox_pipeline(cog15):
    """81 frames: CogVideoXPipeline pads 21 latent frames to 22 and denoises all of them; so do we."""
    latents = dit_latents(cog15, frames=81)
    assert latents.shape[2] == 22
    ours = pipeline_latents(cog15, "direct", latents, frames=81)
    theirs = _reference(cog15)(
        prompt_embeds=cog15.encode_text([PROMPT]), negative_prompt_embeds=cog15.encode_text([""]), num_frames=81,
        height=32, width=48, num_inference_steps=3, guidance_scale=6.0, latents=latents.transpose(1, 2).clone(),
        output_type="latent").frames
    assert rel(ours, theirs.transpose(1, 2)) < 1e-5
    assert rel(ours, latents) > 0.05


def test_the_video_drops_the_padded_latent_frame_as_the_pipeline_does(cog15):
    """The decoded video has the asked 81 frames and equals CogVideoXPipeline's (which drops the first, padded,
    latent frame before its VAE decode) to one uint8 level; decoding the padded latents would give 85 frames."""
    latents = dit_latents(cog15, frames=81)
    ours = LongVideoPipeline(cog15, "direct", progress=False)(PROMPT, num_frames=81, height=32, width=48,
                                                                num_inference_steps=1, latents=latents.clone())
    theirs = _reference(cog15)(
        prompt_embeds=cog15.encode_text([PROMPT]), negative_prompt_embeds=cog15.encode_text([""]), num_frames=81,
        height=32, width=48, num_inference_steps=1, guidance_scale=6.0, latents=latents.transpose(1, 2).clone(),
        output_type="np").frames[0]
    assert ours.shape == (81, 32, 48, 3) and theirs.shape == (81, 32, 48, 3)
    assert np.abs(ours.astype(np.int16) - np.round(theirs * 255).astype(np.int16)).max() <= 1


def test_rotary_embedding_equals_the_pipelines_slice_grid(cog15):
    ref = _reference(cog15)
    for frames, h, w in ((12, 4, 6), (22, 8, 4)):
        theirs = ref._prepare_rotary_positional_embeddings(h * 8, w * 8, frames, torch.device("cpu"))
        ours = cog15.rotary_embedding(frames, h, w)
        assert ours[0].shape[0] == frames // 2 * (h // 2) * (w // 2)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("name,params", helpers.NATIVE_LENGTH_METHODS)
def test_methods_at_native_length_equal_direct(cog15, name, params):
    """41 frames = 6 positions: windows of 6 positions cover the video, RIFLEx's period too."""
    other, direct = method_and_direct(cog15, name, params, dit_latents(cog15, frames=41), frames=41)
    assert torch.equal(other, direct)


@pytest.mark.parametrize("name,params", helpers.BEYOND_NATIVE_METHODS)
def test_methods_beyond_native_length_change_the_result(cog15, name, params):
    other, direct = method_and_direct(cog15, name, params, dit_latents(cog15, frames=81), frames=81)
    assert torch.isfinite(other).all() and rel(other, direct) > 1e-6


def test_noise_is_drawn_per_position(cog15):
    """A method's noise over 81 frames is its noise over 11 positions of 2C channels, unfolded: latent frame 2i+j,
    channel c is channel 2c+j of position i (written out here from FreeNoise's own draw)."""
    method = get_method("freenoise", window=6, stride=2).with_native_frames(6)
    got = LongVideoPipeline(cog15, method, progress=False).prepare_latents(81, 32, 48, torch.Generator().manual_seed(3))
    c = cog15.latent_channels
    by_position = method.init_noise((1, 2 * c, 11, 4, 6), generator=torch.Generator().manual_seed(3),
                                    dtype=torch.float32)
    assert got.shape == (1, c, 22, 4, 6)
    for i in range(11):
        for j in range(2):
            assert torch.equal(got[0, :, 2 * i + j], by_position[0, j::2, i])


def _folder(bb, tmp_path):
    return helpers.save_diffusers_folder(bb, tmp_path / bb.name, "CogVideoXPipeline", "ddim")


def test_loader_reads_a_1_5_folder_and_refuses_the_other_version(cog15, tmp_path):
    """``cogvideox1_5_5b`` loads a 1.5 folder (the folder's scheduler as it is); ``cogvideox_5b`` refuses it, and
    ``cogvideox1_5_5b`` a 1.0 folder, each in one line naming the key and the model to use."""
    from freelong.models.base import build_backbone
    from freelong.models.spec import load_model_config

    folder = _folder(cog15, tmp_path)
    cfg = load_model_config("cogvideox1_5_5b")
    cfg.weights.cogvideox.path = str(folder)
    cfg.extra.max_sequence_length = 16
    loaded = build_backbone(cfg, weights_dir=str(tmp_path / "empty"))
    assert {k: loaded.scheduler_config[k] for k in cog15.scheduler_config} == cog15.scheduler_config  # the folder's
    latents = dit_latents(cog15, frames=41)
    assert rel(pipeline_latents(loaded, "direct", latents, steps=1, frames=41),
               pipeline_latents(cog15, "direct", latents, steps=1, frames=41)) < 1e-6
    old = load_model_config("cogvideox_5b")
    old.weights.cogvideox.path = str(folder)
    with pytest.raises(ValueError, match=r"^cogvideox_5b: .*patch_size_t=2, the model config unet.patch_size_t=None; "
                                         r"this folder is model=cogvideox1_5_5b"):
        build_backbone(old, weights_dir=str(tmp_path / "empty"))
    config = folder / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "patch_size_t": None}))
    with pytest.raises(ValueError, match=r"^cogvideox1_5_5b: .*this folder is model=cogvideox_5b"):
        build_backbone(cfg, weights_dir=str(tmp_path / "empty"))


def test_app_validates_positions_before_any_weight(compose_cfg):
    from freelong.app.config import validate_config

    validate_config(compose_cfg("model=cogvideox1_5_5b", "method=freelong", "num_frames=321"))
    with pytest.raises(ValueError, match=r"the methods see temporal positions of 2 latent frames; num_frames=81 is 11 "
                                         r"of them"):
        validate_config(compose_cfg("model=cogvideox1_5_5b", "method=freelong", "method.window=13"))
