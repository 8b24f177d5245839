"""RIFLEx's rotary tables on the DiTs equal the official RIFLEx functions (thu-ml/RIFLEx riflex_utils.py,
cogvideox.py, hunyuanvideo.py) at the official settings, and nothing changes up to N_k.

The reference below is the official definition written out: diffusers' 1D RoPE frequencies ``theta^(-2j/d)`` in fp32
with the 1-based component ``k`` set to ``0.9 * 2*pi / L_test``, cos/sin of ``outer(positions, freqs)`` with each
column repeated twice; CogVideoX's table is diffusers' ``get_3d_rotary_pos_embed`` with its temporal part replaced by
that (the official ``get_3d_rotary_pos_embed_riflex`` changes only ``freqs_t``).
"""

import math

import pytest
import torch

from freelong import get_method, load_backbone


def riflex_1d(dim, positions, theta, k=None, l_test=None):
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    if k is not None:
        freqs[k - 1] = 0.9 * 2 * math.pi / l_test
    angles = torch.outer(positions, freqs)
    return angles.cos().repeat_interleave(2, dim=1).float(), angles.sin().repeat_interleave(2, dim=1).float()


def identify_k(b, d, n):
    periods = [round(2 * math.pi / (1.0 / (b ** (2 * (j - 1) / d)))) for j in range(1, d // 2 + 1)]
    diffs = [abs(p - n) for p in periods]
    k = diffs.index(min(diffs)) + 1
    return k, periods[k - 1]


def test_official_identify_k_examples_and_our_presets():
    from omegaconf import OmegaConf

    from freelong.models.spec import CONF_DIR

    assert identify_k(256, 16, 48) == (4, 50)  # HunyuanVideo, the official example
    assert identify_k(10000, 16, 20) == (2, 20)  # CogVideoX-5B, the README settings
    assert identify_k(10000, 44, 50) == (6, 51)  # Wan: repetition near 50 latent frames

    presets = {"riflex_cogvideox": (2, 20), "riflex_hunyuanvideo": (4, 50), "riflex_wan": (6, None)}
    for name, (k, n_k) in presets.items():
        cfg = OmegaConf.load(CONF_DIR / "method" / f"{name}.yaml")
        assert cfg.k == k and cfg.get("n_k") == n_k


@pytest.fixture(scope="module")
def cog64():
    """cogvideox_5b_tiny with the real head size 64 (temporal RoPE 16 channels, as CogVideoX-5B)."""
    return load_backbone("cogvideox_5b_tiny", overrides={"unet": {"attention_head_dim": 64, "num_attention_heads": 1}})


def test_cogvideox_table_equals_official_at_97_frames(cog64):
    """Official README: k=2, N_k=20, 97 frames -> L_test = 25 latent frames (> 20: edited), 480x720 -> 60x90 latent."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    method = get_method("riflex", k=2, n_k=20)
    frames, h, w = 25, 60, 90
    with cog64.attach(method):
        cos, sin = cog64.rotary_embedding(frames, h, w)
    cfg = cog64.transformer.config
    gh, gw = h // 2, w // 2
    crops = get_resize_crop_region_for_grid((gh, gw), cfg.sample_width // 2, cfg.sample_height // 2)
    ref_cos, ref_sin = get_3d_rotary_pos_embed(64, crops, (gh, gw), frames)
    grid_t = torch.linspace(0, frames * (frames - 1) / frames, frames, dtype=torch.float32)
    t_cos, t_sin = riflex_1d(16, grid_t, 10000, k=2, l_test=frames)
    tokens = gh * gw
    ref_cos.view(frames, tokens, -1)[..., :16] = t_cos[:, None]
    ref_sin.view(frames, tokens, -1)[..., :16] = t_sin[:, None]
    assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)
    # the edit is real: it differs from the unedited table in the second temporal pair only
    plain_cos, _ = cog64.rotary_embedding(frames, h, w)
    changed = (cos != plain_cos).any(dim=0).nonzero().flatten().tolist()
    assert changed == [2, 3]


def test_cogvideox_no_edit_up_to_n_k(cog64):
    method = get_method("riflex", k=2, n_k=20)
    for frames in (13, 20):
        plain = cog64.rotary_embedding(frames, 8, 8)
        with cog64.attach(method):
            edited = cog64.rotary_embedding(frames, 8, 8)
        assert all(torch.equal(a, b) for a, b in zip(plain, edited))
    plain = cog64.rotary_embedding(21, 8, 8)[0]
    with cog64.attach(method):
        assert not torch.equal(cog64.rotary_embedding(21, 8, 8)[0], plain)  # 21 > N_k = 20: edited


def test_explicit_n_k_overrides_the_period():
    freqs = 1.0 / (10000 ** (torch.arange(0, 16, 2).float() / 16))
    m = get_method("riflex", k=2, n_k=30)  # N_2 = 20, but the trigger says 30
    assert torch.equal(m.rope_frequencies(freqs.clone(), axis="t", num_positions=25, native_positions=13), freqs)
    out = m.rope_frequencies(freqs.clone(), axis="t", num_positions=31, native_positions=13)
    assert out[1] == torch.tensor(0.9 * 2 * math.pi / 31, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"method\.n_k"):
        get_method("riflex", n_k=0)


def test_riflex_refuses_cogvideox_without_rope():
    m = get_method("riflex")
    m.check_model({"family": "cogvideox", "name": "cogvideox_5b", "unet": {"use_rotary_positional_embeddings": True}})
    with pytest.raises(ValueError, match="no RoPE"):
        m.check_model({"family": "cogvideox", "name": "cogvideox_2b",
                       "unet": {"use_rotary_positional_embeddings": False}})
