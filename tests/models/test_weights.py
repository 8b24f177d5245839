"""Weight resolution (explicit path → weights folder → HF cache) and the real LaVie loader on tiny weights."""

import pytest
import torch
from fakes import write_fake_lavie_weights
from omegaconf import OmegaConf

from freelong import MissingWeightsError, load_backbone
from freelong.weights import WeightSpec, resolve, resolve_many


def test_missing_weights_error_lists_every_file_places_and_command(tmp_path, monkeypatch):
    from freelong.models import lavie

    def no_build(*args, **kwargs):  # fails fast = before any network is built or any file is read
        raise AssertionError("the UNet was built although its weights are missing")

    monkeypatch.setattr(lavie.LaVieUNet, "__init__", no_build)
    with pytest.raises(MissingWeightsError) as err:
        load_backbone("lavie", weights_dir=str(tmp_path))
    msg = str(err.value)
    assert err.value.missing == ["unet", "sd"]
    for needle in ("lavie_base.pt", "huggingface.co/Vchitect/LaVie", str(tmp_path / "lavie" / "lavie_base.pt"),
                   "stable-diffusion-v1-4", "Hugging Face cache", "python scripts/download_weights.py lavie"):
        assert needle in msg


def test_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = WeightSpec(name="unet", local=["a/w.pt", "w.pt"], repo_id="org/repo", filename="w.pt")
    # 3. the Hugging Face cache (the real cache layout: models--org--repo/snapshots/<rev>/file + refs/main)
    snap = tmp_path / "hub" / "models--org--repo" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "w.pt").write_bytes(b"hub")
    (tmp_path / "hub" / "models--org--repo" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--repo" / "refs" / "main").write_text("abc123")
    wdir = tmp_path / "weights"
    assert resolve(spec, wdir, "m") == snap / "w.pt"
    # 2. the weights folder wins over the cache, first candidate first
    (wdir).mkdir()
    (wdir / "w.pt").write_bytes(b"second")
    assert resolve(spec, wdir, "m") == wdir / "w.pt"
    (wdir / "a").mkdir()
    (wdir / "a" / "w.pt").write_bytes(b"first")
    assert resolve(spec, wdir, "m") == wdir / "a" / "w.pt"
    # 1. an explicit path wins over everything; a wrong explicit path is reported
    explicit = tmp_path / "mine.pt"
    explicit.write_bytes(b"x")
    assert resolve(WeightSpec(**{**spec.__dict__, "path": str(explicit)}), wdir, "m") == explicit
    with pytest.raises(MissingWeightsError, match="explicit path"):
        resolve_many([WeightSpec(name="u", path=str(tmp_path / "nope.pt"))], tmp_path / "empty", "m")


def test_folder_spec_requires_alternatives(tmp_path):
    spec = WeightSpec(name="sd", kind="folder", local=["sd"], required=["vae/config.json", "vae/a.bin|vae/a.st"])
    (tmp_path / "sd" / "vae").mkdir(parents=True)
    (tmp_path / "sd" / "vae" / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="vae/a.bin"):
        resolve(spec, tmp_path, "m")
    (tmp_path / "sd" / "vae" / "a.st").write_text("x")
    assert resolve(spec, tmp_path, "m") == tmp_path / "sd"


@torch.no_grad()
@pytest.mark.parametrize("layout", ["freelong", "official"])
def test_real_lavie_loader_reproduces_the_saved_tiny_model(tmp_path, layout):
    saved = write_fake_lavie_weights(tmp_path, layout=layout)
    bb = load_backbone("lavie", weights_dir=str(tmp_path))
    assert not bb.random_init and bb.weights["unet"]["path"] == str(saved["checkpoint"])
    assert len(bb.weights["unet"]["sha256"]) == 64
    x, ctx = torch.randn(2, 4, 6, 8, 8), torch.randn(2, 77, 32)
    torch.testing.assert_close(bb.unet(x, 300, ctx), saved["unet"](x, 300, ctx), atol=0, rtol=0)
    ids = bb.tokenize(["a cat", ""])
    assert ids.shape == (2, 77) and ids[0, 0] == 0 and ids[1, 1] == 1  # <|startoftext|>, then padding
    torch.testing.assert_close(bb.encode_text(["a cat"]), saved["text_encoder"](ids[:1])[0])
    z = torch.randn(1, 4, 3, 8, 8)
    video = bb.decode(z, chunk_size=2)
    ref = saved["vae"].decode(z[0].transpose(0, 1) / 0.18215).sample
    ref = ((ref / 2 + 0.5) * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    assert video.shape == (1, 3, 64, 64, 3)
    # decoded in chunks of 2 vs one batch of 3: conv kernels may round differently -> at most 1 level
    assert abs(video[0].astype(int) - ref.numpy().astype(int)).max() <= 1


def test_lavie_and_lavie_tiny_share_the_noise_schedule():
    from freelong.models.spec import load_model_config

    real, tiny = load_model_config("lavie"), load_model_config("lavie_tiny")
    assert OmegaConf.to_container(real.scheduler) == OmegaConf.to_container(tiny.scheduler)
    assert real.scheduler.beta_start == 1e-4 and real.scheduler.beta_end == 0.02
    assert real.scheduler.beta_schedule == "linear"
