"""Real-weight code paths of the diffusers backbones, exercised with tiny folders saved by diffusers itself;
configs, registries and the checks that fail before any weight is read."""

import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from freelong import MissingWeightsError, load_backbone
from freelong.app.config import validate_config
from freelong.models.diffusers_unet.backbone import check_motion_adapter
from freelong.models.spec import load_model_config
from freelong.models.tiny import randomize_, tiny_text_encoder, tiny_tokenizer, tiny_vae
from freelong.weights import REPO_ROOT


def _c(node):
    return OmegaConf.to_container(node, resolve=True)


def _save_text_parts(folder, cfg):
    text_cfg = _c(cfg.text_encoder)
    tok = tiny_tokenizer(pad_token=text_cfg.pop("pad_token"))
    tok.save_pretrained(folder / "tokenizer")
    randomize_(tiny_text_encoder(text_cfg, len(tok)), 11).save_pretrained(folder / "text_encoder")
    randomize_(tiny_vae(_c(cfg.vae)), 12).save_pretrained(folder / "vae")


def _sd_and_adapter(root, adapter_overrides=None):
    """A tiny SD1.5-layout folder and motion adapter folder, as the real ones are laid out."""
    from diffusers import MotionAdapter, UNet2DConditionModel

    cfg = load_model_config("animatediff_tiny")
    sd = root / "stable-diffusion-v1-5"
    unet2d = randomize_(UNet2DConditionModel(**_c(cfg.unet)), 13)
    unet2d.save_pretrained(sd / "unet")
    _save_text_parts(sd, cfg)
    adapter = randomize_(MotionAdapter(**{**_c(cfg.extra.motion_adapter), **(adapter_overrides or {})}), 14)
    adapter.save_pretrained(root / "animatediff-motion-adapter-v1-5-2")
    return unet2d, adapter


@torch.no_grad()
def test_animatediff_loads_sd15_and_the_adapter_from_local_folders(tmp_path, one_thread):
    from diffusers import UNetMotionModel

    unet2d, adapter = _sd_and_adapter(tmp_path)
    bb = load_backbone("animatediff", weights_dir=str(tmp_path))
    assert not bb.random_init and bb.weights["sd"] == str(tmp_path / "stable-diffusion-v1-5")
    assert "diffusion_pytorch_model.safetensors" in bb.weights["motion_adapter"]["files"]
    expected = UNetMotionModel.from_unet2d(unet2d, adapter)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 4, 16, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)
    ref = expected(x, 500, encoder_hidden_states=ctx.repeat_interleave(16, 0)).sample
    assert torch.equal(bb.unet(x, 500, ctx), ref)
    assert dict(bb.make_scheduler("ddim").config)["timestep_spacing"] == "linspace"
    video = _one_step(bb)
    assert video.shape == (16, 64, 64, 3)


def _one_step(bb):
    from freelong import LongVideoPipeline

    return LongVideoPipeline(bb, "freelong", progress=False)("a cat", num_frames=16, height=64, width=64,
                                                             num_inference_steps=1)


def test_adapter_version_is_selectable(tmp_path):
    _sd_and_adapter(tmp_path)
    with pytest.raises(MissingWeightsError) as err:
        load_backbone("animatediff", weights_dir=str(tmp_path), overrides={"extra": {"motion_adapter": "v1-5-3"}})
    msg = str(err.value)
    assert "animatediff-motion-adapter-v1-5-3" in msg
    assert "huggingface.co/guoyww/animatediff-motion-adapter-v1-5-3" in msg
    assert "- sd:" not in msg  # the SD1.5 folder was found; only the v1-5-3 adapter is missing


def test_mismatched_adapter_fails_before_reading_weights(tmp_path):
    _sd_and_adapter(tmp_path, {"block_out_channels": [32, 64, 64], "motion_layers_per_block": 1})
    # unreadable weight files: any attempt to load them would raise a different error
    (tmp_path / "stable-diffusion-v1-5" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ValueError, match=r"model\.weights\.motion_adapter.*does not match the base UNet.*3 blocks"):
        load_backbone("animatediff", weights_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"model\.extra\.motion_adapter.*layers"):
        load_backbone("animatediff_tiny", overrides={"extra": {"motion_adapter": {"motion_layers_per_block": 2}}})


def test_check_motion_adapter_accepts_the_real_layouts():
    sd15 = {"down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "layers_per_block": 2,
            "block_out_channels": [320, 640, 1280, 1280]}
    v152 = {"block_out_channels": [320, 640, 1280, 1280], "motion_layers_per_block": 2}
    check_motion_adapter(sd15, v152, "x")
    with pytest.raises(ValueError, match="block_out_channels"):
        check_motion_adapter(sd15, {**v152, "block_out_channels": [320, 640, 1280, 640]}, "x")


@torch.no_grad()
@pytest.mark.parametrize("name,folder", [("modelscope", "text-to-video-ms-1.7b"), ("zeroscope", "zeroscope_v2_576w")])
def test_modelscope_family_loads_every_part_from_one_folder(tmp_path, name, folder, one_thread):
    from diffusers import DDIMScheduler, UNet3DConditionModel

    cfg = load_model_config("modelscope_tiny")
    root = tmp_path / folder
    unet = randomize_(UNet3DConditionModel(**_c(cfg.unet)), 21).eval()  # eval: its temporal convs have dropout
    unet.save_pretrained(root / "unet")
    _save_text_parts(root, cfg)
    DDIMScheduler(**{**_c(cfg.scheduler), "beta_end": 0.0125}).save_pretrained(root / "scheduler")
    bb = load_backbone(name, weights_dir=str(tmp_path))
    assert dict(bb.make_scheduler("ddim").config)["beta_end"] == 0.0125  # the folder's scheduler, not a default
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 4, 16, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)
    assert torch.equal(bb.unet(x, 500, ctx), unet(x, 500, encoder_hidden_states=ctx).sample)
    assert bb.info()["diffusers_pipeline"] == "TextToVideoSDPipeline"


def test_missing_weights_name_folder_repo_and_command(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        load_backbone("zeroscope", weights_dir=str(tmp_path))
    msg = str(err.value)
    for needle in (str(tmp_path / "zeroscope_v2_576w"), "huggingface.co/cerspense/zeroscope_v2_576w",
                   "python scripts/download_weights.py zeroscope", "unet/config.json"):
        assert needle in msg


def test_download_script_reads_the_yaml(capsys):
    from scripts.download_weights import main

    main(["animatediff", "--list"])
    out = capsys.readouterr().out
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in out and "guoyww/animatediff-motion-adapter-v1-5-2" in out
    main(["animatediff", "--list", "--set", "extra.motion_adapter=v1-5-3"])
    assert "animatediff-motion-adapter-v1-5-3" in capsys.readouterr().out
    main(["modelscope", "--list"])
    assert "ali-vilab/text-to-video-ms-1.7b" in capsys.readouterr().out


def test_families_are_registered_and_listed_as_entry_points():
    from freelong.models.base import FAMILIES

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    eps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["freelong.backbones"]
    for family in ("animatediff", "modelscope"):
        module, func = eps[family].split(":")
        assert FAMILIES.get(family) is getattr(__import__(module, fromlist=[func]), func)
    for name in ("animatediff", "animatediff_tiny", "modelscope", "modelscope_tiny", "zeroscope"):
        assert load_model_config(name).family in eps
        assert load_model_config(name).family in FAMILIES.names()  # the installed metadata sees them too


@pytest.mark.parametrize("overrides,key", [
    (["model=animatediff", "method=freenoise", "num_frames=8"], "method.window"),
    (["model=zeroscope", "method=freelong", "height=324"], "height"),
    (["model=animatediff", "method=sliding_window", "method.window=24", "num_frames=16"], "method.window"),
    (["model=lavie_tiny", "method=freenoise", "method.fusion=block"], "method.fusion=block"),
])
def test_bad_input_fails_at_validation_naming_the_key(compose_cfg, overrides, key):
    cfg = compose_cfg(*overrides)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate_config(cfg)


def test_block_fusion_validates_on_diffusers_models(compose_cfg):
    for model in ("animatediff_tiny", "modelscope_tiny", "zeroscope"):
        validate_config(compose_cfg(f"model={model}", "method=freenoise", "method.fusion=block", "num_frames=32"))


def test_paper_a5_experiments_compose(compose_cfg):
    for exp, model, frames in (("freelong_animatediff_128", "animatediff", 128),
                               ("freelong_zeroscope_128", "zeroscope", 128)):
        cfg = compose_cfg(f"experiment={exp}")
        validate_config(cfg)
        assert (cfg.model.name, cfg.num_frames, cfg.method.name) == (model, frames, "freelong")
        assert json.loads(json.dumps(OmegaConf.to_container(cfg.model.weights, resolve=True)))


def test_mismatched_adapter_is_one_clear_line_from_run_py(tmp_path):
    _sd_and_adapter(tmp_path / "w", {"block_out_channels": [32, 64, 64], "motion_layers_per_block": 1})
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), "model=animatediff", "num_frames=16",
                           "height=64", "width=64", "num_inference_steps=1", f"paths.weights_dir={tmp_path / 'w'}",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert "model.weights.motion_adapter" in proc.stderr and "does not match the base UNet" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
