"""RIFLEx: the intrinsic frequency, the edited RoPE against its formula, and RoPE-less backbones."""

import math

import pytest
import torch
from helpers import attach

from freelong import get_method
from freelong.models.spec import load_model_config
from freelong.models.wan.attention import RopeFrequencyEdit


def periods_from_definition(b: float, d: int) -> list[int]:
    """N_j = round(2*pi / theta_j), theta_j = b^(-2(j-1)/d), j = 1..d/2 (the paper's Eq. 4)."""
    return [round(2 * math.pi * b ** (2 * (j - 1) / d)) for j in range(1, d // 2 + 1)]


def test_wan_intrinsic_component_is_the_period_closest_to_21_latent_frames():
    from baselines.riflex import intrinsic_index

    t_dim = 128 - 2 * 2 * (128 // 6)  # Wan2.1: head dim 128, h/w parts 42 each
    assert t_dim == 44
    freqs = 1.0 / (10000 ** (torch.arange(0, t_dim, 2, dtype=torch.float64) / t_dim))
    periods = periods_from_definition(10000, t_dim)
    assert periods[:4] == [6, 10, 15, 22]
    assert intrinsic_index(freqs, 21) == 3  # k = 4 (1-based), N_k = 22
    # HunyuanVideo, the official identify_k example: b=256, d=16, N=48 -> k=4, N_k=50
    hy = 1.0 / (256 ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16))
    assert intrinsic_index(hy, 48) == 3 and periods_from_definition(256, 16)[3] == 50


@pytest.fixture(scope="module")
def tiny_transformer():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=24, in_channels=4,
                                 out_channels=4, text_dim=16, freq_dim=16, ffn_dim=16, num_layers=1)


def test_edited_rope_matches_formula_on_temporal_channels_only(tiny_transformer):
    rope = tiny_transformer.rope  # head dim 24: t 8, h 8, w 8 channels
    frames, h, w = 30, 4, 6
    x = torch.zeros(1, 4, frames, h, w)
    method = get_method("riflex", k=1)  # N_1 = 6 < 30: edited
    edited = RopeFrequencyEdit(rope, method.rope_frequencies, native_positions=7)
    cos0, sin0 = rope(x)
    cos, sin = edited(x)
    assert cos.shape == cos0.shape == (1, frames * (h // 2) * (w // 2), 1, 24)
    t_dim = rope.t_dim
    theta = 1.0 / (10000 ** (torch.arange(0, t_dim, 2, dtype=torch.float64) / t_dim))
    theta[0] = 0.9 * 2 * math.pi / frames  # Eq. 8 with k = 1, L = 30 latent frames
    pos = torch.arange(frames, dtype=torch.float64)
    want_cos = torch.cos(pos[:, None] * theta[None]).repeat_interleave(2, dim=1)  # interleaved pairs
    want_sin = torch.sin(pos[:, None] * theta[None]).repeat_interleave(2, dim=1)
    per_frame = cos.view(frames, -1, 24)
    assert torch.allclose(per_frame[..., :t_dim], want_cos[:, None].expand_as(per_frame[..., :t_dim]).to(cos.dtype))
    assert torch.allclose(sin.view(frames, -1, 24)[..., :t_dim],
                          want_sin[:, None].expand(-1, per_frame.shape[1], -1).to(sin.dtype))
    assert torch.equal(cos[..., t_dim:], cos0[..., t_dim:]) and torch.equal(sin[..., t_dim:], sin0[..., t_dim:])
    changed = (cos != cos0).any(dim=(0, 1, 2)).nonzero().flatten().tolist()
    assert changed == [0, 1]  # only the k-th pair
    k2 = RopeFrequencyEdit(rope, get_method("riflex", k=2).rope_frequencies, native_positions=7)
    assert torch.equal(k2(x)[0], cos0)  # N_2 = 63 >= 30 latent frames: nothing to do


def test_no_edit_up_to_the_intrinsic_period(tiny_transformer):
    rope = tiny_transformer.rope
    method = get_method("riflex")  # t_dim 8: periods 6, 63, ...; native 7 -> k = 1, N_k = 6
    edited = RopeFrequencyEdit(rope, method.rope_frequencies, native_positions=7)
    x6 = torch.zeros(1, 4, 6, 4, 4)
    assert all(torch.equal(a, b) for a, b in zip(edited(x6), rope(x6)))
    x7 = torch.zeros(1, 4, 7, 4, 4)
    assert not torch.equal(edited(x7)[0], rope(x7)[0])


def test_riflex_on_lavie_rotary_matches_formula_and_detaches(lavie_tiny):
    from freelong.models.lavie.blocks import RotaryEmbedding

    rotaries = [m for m in lavie_tiny.unet.modules() if isinstance(m, RotaryEmbedding)]
    rot = rotaries[0]
    assert len(rotaries) > 1 and len(rot.freqs) == 16  # the real LaVie's 32 rotary channels: 16 frequencies
    g = torch.Generator().manual_seed(0)
    x20, x40 = torch.randn(2, 3, 20, 40, generator=g), torch.randn(2, 3, 40, 40, generator=g)
    plain20, plain40 = rot.rotate(x20), rot.rotate(x40)
    periods = periods_from_definition(10000, 32)
    assert periods[:4] == [6, 11, 20, 35]  # 16 native frames -> k = 3 (N_k = 20)
    handle = lavie_tiny.attach(get_method("riflex"))
    assert all(m.freq_edit is not None for m in rotaries)
    assert torch.equal(rot.rotate(x20), plain20)  # 20 <= N_k: unchanged
    ref = RotaryEmbedding(32)
    ref.freqs[2] = 0.9 * 2 * math.pi / 40
    assert torch.allclose(rot.rotate(x40), ref.rotate(x40), atol=1e-6)
    assert not torch.allclose(rot.rotate(x40), plain40)
    handle.detach()
    assert all(m.freq_edit is None for m in rotaries) and torch.equal(rot.rotate(x40), plain40)


def test_riflex_fails_validation_on_backbones_without_rope():
    method = get_method("riflex")
    with pytest.raises(ValueError, match="no RoPE it can edit"):
        method.check_model(load_model_config("videocrafter2_tiny"))
    for name in ("wan_tiny", "lavie_tiny", "wan2_1_t2v_1_3b"):
        method.check_model(load_model_config(name))
    from torch import nn

    with pytest.raises(ValueError, match="no rotary embedding"):
        attach(method, nn.Linear(2, 2))
    with pytest.raises(ValueError, match="method.factor"):
        get_method("riflex", factor=1.5)
    with pytest.raises(ValueError, match="method.k"):
        get_method("riflex", k=0)
