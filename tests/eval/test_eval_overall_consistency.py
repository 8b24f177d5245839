"""overall_consistency: VBench's frame sampling, uint8 preprocessing, prompts, ViCLIP through the vendored code."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from eval_synthetic import random_frames, smooth_frames

from eval.overall_consistency import clip_transform_uint8, middle_frame_indices, prompt_from_filename
from eval.prompts import resolve_prompts
from eval.transforms import CLIP_MEAN, CLIP_STD
from eval.weights import EvalWeightsMissing, resolve_eval_weights

HAS_EXTRA = importlib.util.find_spec("vbench") is not None and importlib.util.find_spec("ftfy") is not None
needs_vbench = pytest.mark.skipif(not HAS_EXTRA,
                                  reason="optional extra: pip install vbench==0.1.5 --no-deps && "
                                         "pip install omegaconf scipy ftfy regex")


def test_middle_frame_indices_as_get_frame_indices():
    # 8 equal intervals of linspace(0, n, 9).astype(int); the middle (a + b - 1) // 2 of each
    assert middle_frame_indices(8, 16) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert middle_frame_indices(8, 80) == [4, 14, 24, 34, 44, 54, 64, 74]
    assert middle_frame_indices(8, 128) == [7, 23, 39, 55, 71, 87, 103, 119]
    assert middle_frame_indices(8, 5) == [0, 1, 2, 3, 4, 4, 4, 4]  # padded with the last index
    assert middle_frame_indices(8, 20) == [0, 3, 5, 8, 10, 13, 15, 18]  # bounds 0,2,5,7,10,12,15,17,20


def test_prompts_from_file_names_and_files(tmp_path):
    assert prompt_from_filename("a cat playing-0.mp4") == "a cat playing"
    assert prompt_from_filename("dir/a-b-12.gif") == "a-b"
    assert prompt_from_filename("plain.mp4") == "plain"
    vids = [tmp_path / "x-0.mp4", tmp_path / "y-1.mp4"]
    assert resolve_prompts(vids) == {}
    assert resolve_prompts(vids, prompt="p") == {vids[0]: "p", vids[1]: "p"}
    (tmp_path / "p.json").write_text(json.dumps({"x-0.mp4": "a dog", str(vids[1]): "a cat"}))
    assert resolve_prompts(vids, prompt_file=str(tmp_path / "p.json")) == {vids[0]: "a dog", vids[1]: "a cat"}
    (tmp_path / "q.json").write_text(json.dumps({"x-0.mp4": "a dog"}))
    with pytest.raises(ValueError, match="no prompt for"):
        resolve_prompts(vids, prompt_file=str(tmp_path / "q.json"))
    with pytest.raises(ValueError, match="together"):
        resolve_prompts(vids, prompt="p", prompt_file=str(tmp_path / "q.json"))


def test_uint8_clip_transform_rounds_and_clamps_like_torchvision_on_integers():
    frames = random_frames(t=2, h=40, w=64)
    x = clip_transform_uint8(frames)
    assert x.shape == (2, 3, 224, 224)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    pixels = (x * std + mean) * 255.0
    # after the resize the values are whole numbers in 0..255 (random noise makes bicubic overshoot)
    assert torch.allclose(pixels, pixels.round(), atol=1e-3)
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
    flat = np.full((1, 300, 480, 3), 100, np.uint8)
    want = (100 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(clip_transform_uint8(flat)[0, :, 100, 100], want, atol=1e-6)


def test_missing_viclip_weights_fail_fast_with_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(EvalWeightsMissing, match=r"python -m eval.weights fetch viclip viclip_bpe") as err:
        resolve_eval_weights(["viclip", "viclip_bpe"], cache_dir=tmp_path / "cache")
    assert "ViCLIP/ViClip-InternVid-10M-FLT.pth" in str(err.value)
    (tmp_path / "cache" / "ViCLIP").mkdir(parents=True)
    for name in ("ViClip-InternVid-10M-FLT.pth", "bpe_simple_vocab_16e6.txt.gz"):
        (tmp_path / "cache" / "ViCLIP" / name).write_bytes(b"x")
    found = resolve_eval_weights(["viclip", "viclip_bpe"], cache_dir=tmp_path / "cache")
    assert found["viclip"].name == "ViClip-InternVid-10M-FLT.pth"


@needs_vbench
def test_viclip_scores_only_the_middle_frames_and_uses_the_prompt():
    from eval.base import EvalContext, get_dimension
    from eval.video import Video

    dim = get_dimension("overall_consistency")(EvalContext(random_init=True))
    frames = smooth_frames(t=40, h=48, w=64)
    idx = middle_frame_indices(8, 40)
    other = random_frames(t=40, h=48, w=64, seed=3)
    other[idx] = frames[idx]  # same frames where VBench samples, noise everywhere else
    a = dim.score(Video(None, frames, 8.0, prompt="the cat and the dog")).value
    b = dim.score(Video(None, other, 8.0, prompt="the cat and the dog")).value
    c = dim.score(Video(None, frames, 8.0, prompt="a red train")).value
    assert a == pytest.approx(b, abs=1e-6) and abs(a - c) > 1e-4 and -1.0 <= a <= 1.0
    # the prompt defaults to the file name, as in VBench's custom-input mode
    from pathlib import Path

    d = dim.score(Video(Path("the cat and the dog-3.mp4"), frames, 8.0)).value
    assert d == pytest.approx(a, abs=1e-6)


@needs_vbench
def test_viclip_tokenizer_is_vbenchs_simple_tokenizer_with_the_given_vocabulary():
    from eval.overall_consistency import TINY_BPE, load_viclip

    model = load_viclip(None, TINY_BPE, random_init=True)
    tokens = model.text_encoder.tokenize("The  cat", context_length=32)
    enc = model.text_encoder._tokenizer.encoder
    assert tokens.shape == (1, 32) and tokens[0, 0] == enc["<|startoftext|>"]
    assert tokens[0, int((tokens[0] == enc["<|endoftext|>"]).nonzero()[0])] == enc["<|endoftext|>"]
    assert int(tokens[0, 1]) == enc["the</w>"]  # lower-cased, whitespace-cleaned, BPE-merged "t h" + "th e</w>"


@needs_vbench
@pytest.mark.slow
def test_full_size_viclip_checkpoint_loads_strictly(tmp_path):
    """The real loader on a full-size (random) checkpoint in VBench's layout {"model": state_dict}."""
    from eval.overall_consistency import TINY_BPE, load_viclip

    ref = load_viclip(None, TINY_BPE, random_init=True, full_size=True, seed=1)
    assert sum(p.numel() for p in ref.parameters()) > 4e8
    torch.save({"model": ref.state_dict()}, tmp_path / "viclip.pth")
    model = load_viclip(tmp_path / "viclip.pth", TINY_BPE)
    x = torch.randn(1, 8, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model.encode_vision(x, test=True), ref.encode_vision(x, test=True))
