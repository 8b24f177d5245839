"""Wan2.1 through diffusers (wan_tiny): parity with diffusers' WanPipeline, methods on the DiT, 4n+1 rule."""

import helpers
import pytest
import torch
from helpers import PROMPT, dit_latents, pipeline_latents, rel

from freelong import LongVideoPipeline, get_method, load_backbone
from freelong.models.wan.attention import WanSelfAttnAdapter
from freelong.models.wan.backbone import check_wan_frames, latent_frame_count


@pytest.fixture(scope="module")
def wan():
    torch.manual_seed(0)
    return load_backbone("wan_tiny")


def test_frame_rule_names_nearest_valid_counts():
    check_wan_frames(81)
    check_wan_frames(321)
    assert latent_frame_count(81) == 21 and latent_frame_count(321) == 81 and latent_frame_count(1) == 1
    with pytest.raises(ValueError, match=r"num_frames=80 .*nearest valid: 77 or 81"):
        check_wan_frames(80)
    with pytest.raises(ValueError, match=r"nearest valid: 321 or 325"):
        check_wan_frames(322)


def test_pipeline_rejects_non_4n_plus_1_before_sampling(wan):
    helpers.assert_rejected_before_sampling(wan, 24, "21 or 25", size=(40, 48, 16))


def test_encode_text_equals_wan_pipeline(wan):
    from diffusers import WanPipeline

    ref = WanPipeline(**wan.components)
    emb, _ = ref.encode_prompt([PROMPT, "x"], do_classifier_free_guidance=False, max_sequence_length=16,
                               device=torch.device("cpu"))
    ours = wan.encode_text([PROMPT, "x"])
    assert torch.equal(ours, emb)
    assert ours[1, 3:].abs().sum() == 0  # "x" + </s>: padding positions are zero


def test_direct_equals_diffusers_wan_pipeline(wan):
    latents = dit_latents(wan)
    ours = pipeline_latents(wan, "direct", latents)
    theirs = helpers.wan_pipeline_latents(wan, latents)
    assert rel(ours, theirs) < 1e-5
    assert rel(ours, latents) > 0.05  # it did denoise


def test_frame_aware_adapter_equals_diffusers_processor(wan):
    """Global attention through our adapter == diffusers' WanAttnProcessor, on every block."""
    x = dit_latents(wan)
    t = torch.tensor([700])
    cond = wan.encode_text([PROMPT])
    model = wan.transformer
    with torch.no_grad():
        ref = model(hidden_states=x, timestep=t, encoder_hidden_states=cond, return_dict=False)[0]
        with wan.attach(get_method("direct")) as handle:
            assert len(handle.layer_names) == len(model.blocks)
            assert all(isinstance(b.attn1.processor, WanSelfAttnAdapter) for b in model.blocks)
            assert not any(isinstance(b.attn2.processor, WanSelfAttnAdapter) for b in model.blocks)
            ours = model(hidden_states=x, timestep=t, encoder_hidden_states=cond, return_dict=False)[0]
    assert torch.allclose(ours, ref, rtol=0, atol=1e-6)


def test_detach_restores_diffusers_processors_and_rope(wan):
    model = wan.transformer
    before = dict(model.attn_processors)
    rope = model.rope
    hooks = len(model._forward_pre_hooks)
    handle = wan.attach(get_method("riflex"))
    assert model.rope is not rope
    handle.detach()
    after = model.attn_processors
    assert before.keys() == after.keys() and all(after[k] is before[k] for k in before)
    assert model.rope is rope and len(model._forward_pre_hooks) == hooks


@pytest.mark.parametrize("name,params", helpers.NATIVE_LENGTH_METHODS)
def test_methods_at_native_length_equal_direct(wan, name, params):
    """21 frames = 6 latent frames: a window of 6 covers the video, RIFLEx's period 6..22 covers it too."""
    other, direct = helpers.method_and_direct(wan, name, params, dit_latents(wan))
    assert torch.equal(other, direct)


# RIFLEx k=1: period 6 latent frames < 11, the first frequency is lowered
@pytest.mark.parametrize("name,params", [*helpers.BEYOND_NATIVE_METHODS, ("freenoise", {"window": 3, "stride": 1})])
def test_methods_beyond_native_length_change_the_result(wan, name, params):
    other, direct = helpers.method_and_direct(wan, name, params, dit_latents(wan, frames=41), frames=41)
    assert torch.isfinite(other).all()
    # the tiny random model's RoPE is weak (RIFLEx's exact effect is tested in test_riflex.py)
    assert rel(other, direct) > (1e-6 if name == "riflex" else 1e-4)


def test_freenoise_reschedules_noise_over_latent_frames(wan):
    pipe = LongVideoPipeline(wan, get_method("freenoise", window=3, stride=1), progress=False)
    noise = pipe.prepare_latents(41, 32, 48, torch.Generator().manual_seed(0))
    assert noise.shape == (1, 4, 11, 4, 6)
    # every frame after the first window is one of the frames `window` earlier (shuffled copies)
    for f in range(3, 11):
        assert any(torch.equal(noise[:, :, f], noise[:, :, j]) for j in range(f - 3, f))


def test_smoke_video_has_4n_plus_1_frames(wan):
    method = get_method("freelong", window=3, noise_stride=1, local_only_levels=[])
    video = LongVideoPipeline(wan, method, progress=False)(PROMPT, num_frames=25, num_inference_steps=1)
    assert video.shape == (25, 32, 48, 3) and video.dtype.name == "uint8"


def test_real_loader_reads_a_diffusers_folder(wan, tmp_path):
    """The wan2_1 loading path (local folder, from_pretrained local_files_only) on a saved wan_tiny."""
    from omegaconf import OmegaConf

    from freelong.models.base import build_backbone
    from freelong.models.spec import load_model_config

    folder = helpers.save_diffusers_folder(wan, tmp_path / "wan", "WanPipeline", "unipc")
    cfg = load_model_config("wan2_1_t2v_1_3b")
    cfg.weights.wan.path = str(folder)
    cfg.extra.max_sequence_length = 16
    cfg.scheduler.flow_shift = 8.0  # the model config's scheduler keys win over the folder's
    loaded = build_backbone(cfg, weights_dir=str(tmp_path / "empty"))
    assert not loaded.random_init and loaded.weights["wan"]["path"] == str(folder)
    assert loaded.make_scheduler("unipc").config.flow_shift == 8.0
    assert torch.equal(loaded.encode_text([PROMPT]), wan.encode_text([PROMPT]))
    latents = dit_latents(wan)
    loaded.scheduler_config["flow_shift"] = wan.scheduler_config["flow_shift"]
    ours = pipeline_latents(loaded, "direct", latents, steps=1)
    assert rel(ours, pipeline_latents(wan, "direct", latents, steps=1)) < 1e-6
    assert OmegaConf.select(cfg, "sampling.num_frames") == 81


def test_missing_wan_folder_names_the_files_and_the_command(tmp_path):
    from freelong.models.base import build_backbone
    from freelong.models.spec import load_model_config
    from freelong.weights import MissingWeightsError

    cfg = load_model_config("wan2_1_t2v_14b")
    with pytest.raises(MissingWeightsError, match=r"(?s)transformer/config.json.*download_weights.py wan2_1_t2v_14b"):
        build_backbone(cfg, weights_dir=str(tmp_path))


def test_tiny_and_real_configs_share_the_scheduler():
    from freelong.models.spec import load_model_config

    tiny, small, big = (load_model_config(n) for n in ("wan_tiny", "wan2_1_t2v_1_3b", "wan2_1_t2v_14b"))
    assert tiny.scheduler == small.scheduler == big.scheduler
    assert small.sampling.num_frames == 81 and (small.sampling.height, small.sampling.width) == (480, 832)
    assert small.sampling.guidance_scale == 5.0 and small.scheduler.flow_shift == 3.0


@pytest.mark.parametrize("method", ["direct", "sliding_window_wan", "freenoise_wan", "freelong_wan", "riflex"])
def test_wan_4x_experiment_composes_each_swept_method(compose_cfg, method):
    from freelong.app.config import method_from_config, validate_config

    cfg = compose_cfg("experiment=wan_4x", f"method={method}")
    validate_config(cfg)
    assert (cfg.num_frames, cfg.height, cfg.width, cfg.guidance_scale) == (321, 480, 832, 6.0)
    assert cfg.model.scheduler.flow_shift == 8.0 and cfg.model.name == "wan2_1_t2v_1_3b"
    m = method_from_config(cfg.method)
    if method != "direct" and method != "riflex":
        assert m.window == 21  # latent frames: the native 81 video frames
    assert "dynamic_degree" in cfg.eval.dims and "aesthetic_quality" in cfg.eval.dims


def test_run_py_rejects_a_non_4n_plus_1_count_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "run.py", "model=wan_tiny", "num_frames=322", f"hydra.run.dir={tmp_path}"],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "nearest valid: 321 or 325" in out.stderr + out.stdout and "Traceback" not in out.stderr


def test_bf16_keeps_the_vae_in_fp32_and_runs():
    bb = load_backbone("wan_tiny", dtype=torch.bfloat16)
    assert bb.dtype == torch.bfloat16 and next(bb.text_encoder.parameters()).dtype == torch.bfloat16
    assert next(bb.vae.parameters()).dtype == torch.float32
    video = LongVideoPipeline(bb, "direct", progress=False)(PROMPT, num_frames=9, num_inference_steps=1)
    assert video.shape == (9, 32, 48, 3)


def test_per_frame_text_context(wan):
    """Multi-prompt on the DiT: frame f's tokens cross-attend to context f through diffusers' own processor."""
    from freelong.models.wan.attention import PerFrameCrossAttn, per_frame_text

    x = dit_latents(wan)  # 6 latent frames = 21 video frames
    t = torch.tensor(500)
    a = wan.encode_text(["a fox"])
    shared = wan.predict_noise(x, t, a, None, 1.0)
    assert torch.equal(wan.predict_noise(x, t, a[:, None].expand(-1, 21, -1, -1), None, 1.0), shared)
    assert torch.equal(wan.predict_noise(x, t, a[:, None].expand(-1, 6, -1, -1), None, 1.0), shared)
    # one attn2 layer: per-frame output == diffusers' processor on that frame's tokens with that frame's context
    attn = wan.transformer.blocks[0].attn2
    inner = attn.processor
    g = torch.Generator().manual_seed(3)
    tokens, dim = 6, attn.to_q.in_features
    hidden = torch.randn(1, 2 * tokens, dim, generator=g)
    ctx = torch.randn(1, 2, 16, dim, generator=g)
    with per_frame_text(wan.transformer, wan.call_state):
        assert isinstance(attn.processor, PerFrameCrossAttn)
        out = attn(hidden, ctx)
    assert attn.processor is inner
    for f in range(2):
        ref = inner(attn, hidden[:, f * tokens:(f + 1) * tokens], ctx[:, f])
        assert torch.allclose(out[:, f * tokens:(f + 1) * tokens], ref, atol=1e-6)
    with pytest.raises(ValueError, match="does not fit"):
        wan.predict_noise(x, t, a[:, None].expand(-1, 9, -1, -1), None, 1.0)


def test_multi_prompt_video_on_wan(wan):
    pipe = LongVideoPipeline(wan, "direct", progress=False)
    video = pipe([{"prompt": "a fox", "frames": 12}, {"prompt": "a dog", "frames": 13}], num_frames=25,
                 num_inference_steps=1)
    assert video.shape == (25, 32, 48, 3)
    inject = LongVideoPipeline(wan, get_method("freenoise", window=3, stride=1, motion_injection=True,
                                               injection_steps=[0.0, 0.0]), progress=False)
    with pytest.raises(ValueError, match="motion injection"):
        inject([{"prompt": "a fox", "frames": 12}, {"prompt": "a dog", "frames": 13}], num_frames=25,
               num_inference_steps=2)


def test_freelong_pp_is_bound_to_the_native_latent_length(wan, compose_cfg):
    """wan_tiny's native 21 video frames are 6 latent frames: FreeLong++'s windows are 6/12/24 latent frames."""
    from freelong.app.config import validate_config

    pipe = LongVideoPipeline(wan, "freelong_pp", progress=False)
    assert pipe.method.native_frames == 6 and pipe.method.resolved_windows(24) == [6, 12, 24]
    validate_config(compose_cfg("model=wan_tiny", "method=freelong_pp", "num_frames=93"))  # 24 latent frames
    validate_config(compose_cfg("model=wan_tiny", "method=freelong_pp_wan", "num_frames=93"))  # the preset too
    with pytest.raises(ValueError, match=r"method\.scales"):  # 25 latent > the widest (global) branch's 24
        validate_config(compose_cfg("model=wan_tiny", "method=freelong_pp", "num_frames=97"))
    with pytest.raises(ValueError, match=r"method\.scales"):
        validate_config(compose_cfg("model=wan_tiny", "method=freelong_pp_wan", "num_frames=97"))
    validate_config(compose_cfg("experiment=freelong_pp_wan_4x"))  # Wan2.1: 81 video = 21 latent; 321 -> 81 <= 84
    video = pipe(PROMPT, num_frames=25, height=32, width=48, num_inference_steps=1)  # 7 latent: 2 branches
    assert video.shape == (25, 32, 48, 3) and bool(torch.isfinite(torch.as_tensor(video, dtype=torch.float32)).all())
