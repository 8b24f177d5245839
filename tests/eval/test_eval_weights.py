"""Weight resolution: explicit path → VBench cache → Hugging Face cache; SHA-256 checks; nothing downloaded."""

from __future__ import annotations

import hashlib

import pytest

from eval.weights import (
    EVAL_WEIGHTS,
    EvalWeightsMissing,
    WeightChecksumError,
    check_sha256,
    resolve_eval_weights,
    vbench_cache_dir,
)
from freelong.weights import MissingWeightsError


@pytest.fixture()
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path / "vbench"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "vbench"


def test_vbench_cache_layout_is_found(caches):
    assert vbench_cache_dir() == caches
    amt = caches / "amt_model" / "amt-s.pth"
    amt.parent.mkdir(parents=True)
    amt.write_bytes(b"weights")
    dino = caches / "hf" / "facebook--dino-vitb16"
    dino.mkdir(parents=True)
    (dino / "config.json").write_text("{}")
    (dino / "pytorch_model.bin").write_bytes(b"x")
    found = resolve_eval_weights(["amt_s", "dino_vitb16"])
    assert found == {"amt_s": amt, "dino_vitb16": dino}


def test_explicit_path_wins_and_unknown_names_are_rejected(caches, tmp_path):
    own = tmp_path / "my_amt.pth"
    own.write_bytes(b"mine")
    (caches / "amt_model").mkdir(parents=True)
    (caches / "amt_model" / "amt-s.pth").write_bytes(b"cache")
    assert resolve_eval_weights(["amt_s"], {"amt_s": str(own)})["amt_s"] == own
    with pytest.raises(ValueError, match="unknown eval weight"):
        resolve_eval_weights(["amt_s"], {"amt_z": str(own)})


def test_missing_weights_error_lists_everything_and_the_fetch_command(caches):
    with pytest.raises(EvalWeightsMissing) as info:
        resolve_eval_weights(["musiq_spaq", "clip_vit_b32", "raft_things"])
    msg = str(info.value)
    assert isinstance(info.value, MissingWeightsError)  # run.py reports it like any missing weight
    assert str(caches / "pyiqa_model" / "musiq_spaq_ckpt-358bb6af.pth") in msg
    assert str(caches / "raft_model" / "models" / "raft-things.pth") in msg
    assert "models--openai--clip-vit-base-patch32 (Hugging Face cache)" in msg
    assert "python -m eval.weights fetch musiq_spaq clip_vit_b32 raft_things" in msg
    assert not any((caches.parent / "hf").rglob("*"))  # nothing was fetched


def test_sha256_prefix_is_checked(caches, tmp_path):
    w = EVAL_WEIGHTS["musiq_spaq"]
    bad = caches / w.vbench[0]
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the MUSIQ checkpoint")
    with pytest.raises(WeightChecksumError, match="does not match the published 358bb6af"):
        resolve_eval_weights(["musiq_spaq"])
    payload = b"abc"
    good = tmp_path / "good.pth"
    good.write_bytes(payload)
    check_sha256(w, good, expected=hashlib.sha256(payload).hexdigest()[:8])  # matching prefix passes
    check_sha256(w, good)  # a file name without a published digest is not checked


def test_vbench_native_dino_and_clip_files_are_found_and_checked(caches, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints" / "dino_vitbase16_pretrain.pth"
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"dino")
    assert resolve_eval_weights(["dino_vitb16"]) == {"dino_vitb16": hub}  # torch-hub cache, as VBench uses
    clip = caches / "clip_model" / "ViT-B-32.pt"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"truncated download")
    with pytest.raises(WeightChecksumError, match="40d365715913c9da"):  # the digest in OpenAI's URL
        resolve_eval_weights(["clip_vit_b32"])
