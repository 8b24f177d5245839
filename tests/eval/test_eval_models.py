"""The transformers routes (DINO, CLIP) at tiny sizes, and MUSIQ against the checkpoint layout and definition."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eval.base import EvalContext, get_dimension
from eval.models import dino_interpolate_pos_encoding, load_aesthetic_head, load_dino
from eval.musiq import MUSIQ, load_musiq_state, multiscale_tokens, patch_tokens
from eval.transforms import clip_transform
from eval.video import Video
from eval.weights import WeightChecksumError


# ---------------------------------------------------------------------------------- DINO
def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
    def k(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    return [k(t + 1), k(t), k(1 - t), k(2 - t)]


def _bicubic_axis(x: np.ndarray, out_len: int, scale: float, axis: int) -> np.ndarray:
    """1-D bicubic resampling with source coordinate ``(i + 0.5) / scale - 0.5`` and edge clamping."""
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    out = []
    for i in range(out_len):
        src = (i + 0.5) / scale - 0.5
        i0 = math.floor(src)
        w = _cubic_weights(src - i0)
        out.append(sum(wj * x[min(max(i0 - 1 + j, 0), n - 1)] for j, wj in enumerate(w)))
    return np.moveaxis(np.stack(out), 0, axis)


def test_dino_position_interpolation_uses_dinos_scale_factor_rule():
    torch.manual_seed(0)
    emb = torch.nn.Module()
    emb.position_embeddings = torch.nn.Parameter(torch.randn(1, 14 * 14 + 1, 8))
    emb.patch_size = 16
    tokens = torch.zeros(1, 14 * 22 + 1, 8)
    got = dino_interpolate_pos_encoding(emb, tokens, 224, 358)  # grid 14 x 22
    grid = emb.position_embeddings[0, 1:].detach().reshape(14, 14, 8).double().numpy()
    ref = _bicubic_axis(_bicubic_axis(grid, 14, (14 + 0.1) / 14, 0), 22, (22 + 0.1) / 14, 1)
    assert got.shape == (1, 14 * 22 + 1, 8)
    torch.testing.assert_close(got[0, 0], emb.position_embeddings[0, 0])
    np.testing.assert_allclose(got[0, 1:].detach().reshape(14, 22, 8).numpy(), ref, atol=2e-5)
    # HF's own rule (explicit target size) gives different numbers: the reason for the override
    hf = F.interpolate(emb.position_embeddings[:, 1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2), size=(14, 22),
                       mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, -1, 8)
    assert (hf - got[:, 1:]).abs().max() > 1e-3
    assert dino_interpolate_pos_encoding(emb, torch.zeros(1, 197, 8), 224, 224) is emb.position_embeddings


def test_dino_route_square_input_equals_plain_vit_and_features_are_cls():
    enc = load_dino(None, random_init=True, seed=0)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = enc.vit(pixel_values=x).last_hidden_state[:, 0]
        torch.testing.assert_close(enc(x), plain, rtol=0, atol=0)
        assert enc(torch.randn(1, 3, 224, 358)).shape == (1, enc.vit.config.hidden_size)
    assert enc.vit.config.layer_norm_eps == 1e-6 and enc.vit.config._attn_implementation == "eager"
    again = load_dino(None, random_init=True, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("dim", ["subject_consistency", "background_consistency"])
def test_identical_frames_are_perfectly_consistent(dim):
    frame = np.random.default_rng(0).integers(0, 256, (1, 40, 64, 3), dtype=np.uint8)
    video = Video(path=None, frames=np.repeat(frame, 4, axis=0))
    scorer = get_dimension(dim)(EvalContext(random_init=True))
    result = scorer.score(video)
    assert result.value == pytest.approx(1.0, abs=1e-6)
    assert result.extra["cnt_per_video"] == 3


def test_aesthetic_is_head_on_normalised_embeddings_over_10(tmp_path):
    head = torch.nn.Linear(768, 1)
    torch.save(head.state_dict(), tmp_path / "head.pth")
    loaded = load_aesthetic_head(tmp_path / "head.pth")
    assert torch.equal(loaded.weight, head.weight) and torch.equal(loaded.bias, head.bias)

    scorer = get_dimension("aesthetic_quality")(EvalContext(random_init=True, batch_size=3))
    frames = np.random.default_rng(2).integers(0, 256, (5, 40, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        emb = scorer.clip(clip_transform(torch.from_numpy(frames).permute(0, 3, 1, 2).float()))
        per_frame = scorer.head(emb / emb.norm(dim=-1, keepdim=True))[:, 0] / 10
    assert scorer.score(Video(None, frames)).value == pytest.approx(per_frame.mean().item(), abs=1e-6)


# ---------------------------------------------------------------------------------- MUSIQ
def test_musiq_state_dict_matches_pyiqa_checkpoint_layout():
    model = MUSIQ()
    sd = model.state_dict()
    block = ["norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
             "mlp.fc2.weight", "mlp.fc2.bias"] + [f"attention.{p}.{w}" for p in ("query", "key", "value", "out")
                                                  for w in ("weight", "bias")]
    expected = {"conv_root.weight", "gn_root.weight", "gn_root.bias", "embedding.weight", "embedding.bias",
                "head.weight", "head.bias", "transformer_encoder.posembed_input.position_emb",
                "transformer_encoder.scaleembed_input.scale_emb", "transformer_encoder.cls",
                "transformer_encoder.encoder_norm.weight", "transformer_encoder.encoder_norm.bias"}
    expected |= {f"block1.{c}.weight" for c in ("conv1", "conv2", "conv3", "conv_proj")}
    expected |= {f"block1.{g}.{w}" for g in ("gn1", "gn2", "gn3", "gn_proj") for w in ("weight", "bias")}
    expected |= {f"transformer_encoder.transformer.encoderblock_{i}.{n}" for i in range(14) for n in block}
    assert set(sd) == expected and len(sd) == 248
    assert sum(v.numel() for v in sd.values()) == 27_125_825
    assert sd["embedding.weight"].shape == (384, 8 * 8 * 256)
    assert sd["transformer_encoder.posembed_input.position_emb"].shape == (1, 100, 384)
    assert sd["transformer_encoder.scaleembed_input.scale_emb"].shape == (3, 384)
    assert sd["conv_root.weight"].shape == (64, 3, 7, 7) and sd["head.weight"].shape == (1, 384)


def test_musiq_tokens_layout_positions_and_masks():
    x = torch.randn(1, 3, 320, 512)
    patches, spatial, scale, mask = multiscale_tokens(x)
    assert patches.shape == (1, 49 + 144 + 160, 3 * 32 * 32)
    # 224 scale: 140x224 -> 5x7 = 35 real tokens of 49; 384 scale: 240x384 -> 8x12 = 96 of 144; native 10x16
    assert mask[0, :49].sum() == 35 and mask[0, 49:193].sum() == 96 and mask[0, 193:].all()
    assert set(scale[0, :35].tolist()) == {0} and set(scale[0, 49:145].tolist()) == {1}
    assert set(scale[0, 193:].tolist()) == {2}
    # hashed ids on a 10x10 grid: row r of R -> r*10//R, column c of C -> c*10//C
    expected = [(r * 10 // 10) * 10 + (c * 10 // 16) for r in range(10) for c in range(16)]
    assert spatial[0, 193:].tolist() == expected
    # token (row 2, col 3) of the native scale is the 32x32 patch there, channel-major
    torch.testing.assert_close(patches[0, 193 + 2 * 16 + 3], x[0, :, 64:96, 96:128].reshape(-1))
    # SAME padding: a 40x40 image gives 2x2 patches, zero padding split 12/12
    p, *_ = patch_tokens(torch.ones(1, 3, 40, 40), 32, 10, 2, None)
    first = p[0, 0].reshape(3, 32, 32)
    assert first[:, :12].abs().sum() == 0 and first[:, 12:, :12].abs().sum() == 0 and first[:, 12:, 12:].eq(1).all()


def _reference_musiq(model: MUSIQ, x: torch.Tensor) -> torch.Tensor:
    """Transformer with explicit attention: logits where query or key is padding set to -1000, softmax."""
    patches, spatial, scale, mask = multiscale_tokens((x - 0.5) * 2)
    enc = model.transformer_encoder
    h = model.embed_patches(patches) + enc.posembed_input.position_emb[0][spatial]
    h = h + enc.scaleembed_input.scale_emb[scale]
    h = torch.cat([enc.cls.expand(h.shape[0], -1, -1), h], 1)
    m = torch.cat([torch.ones_like(mask[:, :1]), mask], 1).float()
    pair = m[:, None, :, None] * m[:, None, None, :]
    for blk in enc.transformer.values():
        a = blk.attention
        y = blk.norm1(h)
        b, n, c = y.shape
        q, k, v = (lin(y).view(b, n, a.heads, c // a.heads).transpose(1, 2) for lin in (a.query, a.key, a.value))
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(c // a.heads)
        att = logits.masked_fill(pair == 0, -1000.0).softmax(-1)
        h = h + a.out((att @ v).transpose(1, 2).reshape(b, n, c))
        h = h + blk.mlp(blk.norm2(h))
    return model.head(enc.encoder_norm(h)[:, 0])[:, 0]


def test_musiq_forward_matches_masked_attention_reference_and_ignores_padding():
    torch.manual_seed(0)
    model = MUSIQ(hidden_size=32, mlp_dim=64, num_heads=2, num_layers=2, stem_channels=32).eval()
    with torch.no_grad():  # zero-initialised embeddings (cls, positions, scales) would hide mistakes
        for name, p in model.named_parameters():
            if p.dim() < 2 or name.endswith(("position_emb", "scale_emb", ".cls")):
                torch.nn.init.normal_(p, std=0.2)
    x = torch.rand(2, 3, 48, 80)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, _reference_musiq(model, x), rtol=1e-4, atol=1e-4)
        tokens = list(multiscale_tokens((x - 0.5) * 2))
        noisy = tokens[0].clone()
        noisy[~tokens[3]] = torch.randn_like(noisy[~tokens[3]])  # change only padded tokens
        torch.testing.assert_close(model.forward_tokens(noisy, *tokens[1:]), out, rtol=1e-5, atol=1e-5)


def test_musiq_checkpoint_wrappers_load_strictly(tmp_path):
    torch.manual_seed(0)
    tiny = dict(hidden_size=32, mlp_dim=64, num_heads=2, num_layers=1, stem_channels=32)
    src = MUSIQ(**tiny)
    torch.save({"params": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "m.pth")
    dst = load_musiq_state(str(tmp_path / "m.pth"), MUSIQ(**tiny))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    torch.save({"head.weight": torch.zeros(1, 32)}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_musiq_state(str(tmp_path / "bad.pth"), MUSIQ(**tiny))
    # arbitrary pickled objects are not unpickled from a file no published digest vouches for
    torch.save({"params": src.state_dict(), "opts": argparse.Namespace(lr=1)}, tmp_path / "pickled.pth")
    with pytest.raises(WeightChecksumError, match="pickled objects"):
        load_musiq_state(str(tmp_path / "pickled.pth"), MUSIQ(**tiny))
