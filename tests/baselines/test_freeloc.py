"""FreeLOC: equality with the official model (goldens written by the release's code, and live when a checkout is
named), the tiered kernel against an explicit single-softmax reference, the clean geometry's position property,
the re-encoded RoPE, cost, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import random_qkv
from official_code import FREELOC_CASES, TINY_WAN, official_freeloc_case, repo

from freelong import get_method
from freelong.attention.lse import tiered_attention
from freelong.models.base import denoiser_view
from freelong.models.wan.attention import WanFrameRope, wan_rotary

DATA = __import__("pathlib").Path(__file__).resolve().parents[1] / "data"


def tiny_transformer():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=TINY_WAN["num_heads"], attention_head_dim=12, in_channels=4,
        out_channels=4, text_dim=32, freq_dim=32, ffn_dim=48, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6).eval()


def run_ours(case: dict[str, torch.Tensor], method) -> torch.Tensor:
    tr = tiny_transformer()
    tr.load_state_dict({k.removeprefix("weight."): v for k, v in case.items() if k.startswith("weight.")}, strict=True)
    with torch.no_grad(), denoiser_view(tr).attach(method):
        return tr(hidden_states=case["x"], timestep=case["timestep"], encoder_hidden_states=case["context"],
                  return_dict=False)[0]


def dense(case):
    return run_ours(case, get_method("direct"))


@pytest.mark.parametrize("name", sorted(FREELOC_CASES))
def test_equals_the_official_release_output_with_quirks(name):
    """Goldens from ``model_freeloc.py``'s forward (41 latent frames: VRPR 12/20/2/8 and TSA on block 0, the gap
    and 128-token rounding at 16 tokens per frame; 81: VRPR 10/14/2/8, TSA on block 1 with the frame-78 sink)."""
    from safetensors.torch import load_file

    case = load_file(str(DATA / f"freeloc_official_{name}.safetensors"))
    layers = case["tsa_layers"].tolist()
    ours = run_ours(case, get_method("freeloc", tsa_layers=layers, official_quirks=True))
    base = dense(case)
    ref = case["official"]
    # official (complex float64 RoPE, its own modulation code) vs diffusers' model: ~1e-5 in fp32 either way
    assert (base - ref).abs().max() > 1e-2  # FreeLOC changes the output ...
    assert torch.allclose(ours, ref, atol=5e-5, rtol=0)  # ... exactly as the release does
    # and the clean geometry is a different method at this size (the gap, rounding and fixed sinks matter)
    clean = run_ours(case, get_method("freeloc", tsa_layers=layers))
    assert (clean - ref).abs().max() > 1e-3


@pytest.mark.skipif(repo("FREELONG_FREELOC_REPO") is None, reason="set FREELONG_FREELOC_REPO to a FreeLOC checkout")
@pytest.mark.parametrize("name", sorted(FREELOC_CASES))
def test_equals_the_live_official_code(name):
    from official_code import freeloc_modules

    mf, _ = freeloc_modules(repo("FREELONG_FREELOC_REPO"))
    case = official_freeloc_case(mf, name, seed=3)
    ours = run_ours(case, get_method("freeloc", tsa_layers=case["tsa_layers"].tolist(), official_quirks=True))
    assert torch.allclose(ours, case["official"], atol=5e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- the kernel
def full_mask(tier, r0, r1, a, b, s):
    m = tier.mask(r0, r1, a, b, s)
    return torch.ones(r1 - r0, b - a, dtype=torch.bool) if m is None else m


def reference_tiered(qk, v, tiers, s):
    """One explicit softmax over all tokens: each (query, key) logit from the first tier whose mask holds it
    (tiers are disjoint), written from the definition with the masks evaluated pair by pair."""
    n = v.shape[-2]
    logits = torch.full(v.shape[:2] + (n, n), float("-inf"))
    for tier in tiers:
        q, k = qk[tier.name]
        m = full_mask(tier, 0, n, 0, n, s)
        lt = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.shape[-1])
        logits = torch.where(m, lt, logits)
    return torch.softmax(logits, dim=-1) @ v


@pytest.mark.parametrize("block", [3, 1])  # 1: one-frame blocks (unmasked spans, the stripe's gathered keys)
@pytest.mark.parametrize("kind,quirks", [("vrpr", True), ("vrpr", False), ("tsa", True), ("tsa", False)])
def test_tiered_attention_is_one_softmax_over_the_union(kind, quirks, block):
    from baselines.freeloc import tsa_tiers, vrpr_tiers

    frames, s = 81, 40 if block == 1 else 6  # 40 tokens per frame: a stripe of 5 raster positions, 3 chunks
    if kind == "vrpr":
        tps = vrpr_tiers(frames, s, 10, 14, 2, 8, 20, quirks)
    else:
        tps = tsa_tiers(frames, s, 8, 24, 8, 12, 1, 3, 20, quirks)
    tiers = [tp.tier for tp in tps]
    # tiers are disjoint
    n = frames * s
    cover = sum(full_mask(t, 0, n, 0, n, s).int() for t in tiers)
    assert cover.max() == 1
    q, k, v = random_qkv(1, 2, n, 8, seed=1)
    qk = {t.name: (q + 0.1 * i, k - 0.1 * i) for i, t in enumerate(tiers)}
    got = tiered_attention(qk, v, tiers, s, block_frames=block)
    torch.testing.assert_close(got, reference_tiered(qk, v, tiers, s), atol=2e-5, rtol=1e-4)


def test_quirk_geometry_is_the_releases_token_rounding():
    """At 16 tokens per frame the release's VRPR (41 frames) leaves keys at token distances 177..255 in no tier
    (diag <= (12-1)*16, near >= ceil(12*16/128)*128 = 256); its first-frame sink is 128 tokens = 8 frames; the
    clean geometry covers every key exactly once."""
    from baselines.freeloc import tsa_tiers, vrpr_tiers

    s, frames = 16, 41
    n = s * frames
    tiers = [tp.tier for tp in vrpr_tiers(frames, s, 12, 20, 2, 8, 20, True)]
    cover = sum(full_mask(t, 0, n, 0, n, s).int() for t in tiers)
    delta = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs()
    assert torch.equal(cover == 0, (delta > 176) & (delta < 256))
    clean = [tp.tier for tp in vrpr_tiers(frames, s, 12, 20, 2, 8, 20, False)]
    assert torch.equal(sum(full_mask(t, 0, n, 0, n, s).int() for t in clean), torch.ones(n, n, dtype=torch.int))
    sink = next(tp.tier for tp in tsa_tiers(frames, s, 8, 24, 8, 12, 1, 3, 20, True) if tp.tier.name == "sink_first")
    assert full_mask(sink, 0, n, 0, n, s).any(dim=0).nonzero().max().item() == 127


@pytest.mark.parametrize("frames", [21, 41, 81, 161])
@pytest.mark.parametrize("kind", ["vrpr", "tsa"])
def test_clean_positions_stay_in_the_native_range_with_their_sign(frames, kind):
    """Without quirks, every attended pair of every re-encoded tier has a relative position ``p_q - p_k`` in
    ``[-20, 20]`` (21 trained latent frames) with the sign of its frame distance, at any length."""
    from baselines.freeloc import FreeLOC

    m = FreeLOC(tsa_layers=[0])
    proc = m.processor()
    s = 3
    n = frames * s
    f = torch.arange(n) // s
    for tp in proc.tiers(kind, frames, s):
        if tp.q_pos is None:
            if kind == "vrpr":  # standard positions only within window_1 - 1 frames
                mask = full_mask(tp.tier, 0, n, 0, n, s)
                assert (f[:, None] - f[None, :]).abs()[mask].max() <= m.vrpr_setting(frames)[0] - 1
            continue
        mask = full_mask(tp.tier, 0, n, 0, n, s)
        if not mask.any():
            continue
        rel = torch.tensor(tp.q_pos)[f][:, None] - torch.tensor(tp.k_pos)[f][None, :]
        dist = f[:, None] - f[None, :]
        assert rel[mask].abs().max() <= 20, tp.tier.name
        assert (torch.sign(rel[mask]) == torch.sign(dist[mask])).all(), tp.tier.name


def test_release_far_tier_clips_absolute_positions_beyond_its_lengths():
    """Why the clean geometry exists: the release's far tier caps query positions at 20, so at 161 latent frames a
    far-past key can get a *negative* (future) relative position."""
    from baselines.freeloc import vrpr_tiers

    tp = vrpr_tiers(321, 1, 10, 14, 2, 8, 20, True)[3]  # far past
    rel = tp.q_pos[320] - tp.k_pos[300]
    assert 320 - 300 >= 14 and rel < 0


# ---------------------------------------------------------------------------------------------- RoPE, cost
def test_frame_rope_at_standard_positions_is_diffusers_rotation():
    tr = tiny_transformer()
    x = torch.randn(1, 4, 5, 4, 6)
    cos, sin = tr.rope(x)
    q = torch.randn(1, 5 * 2 * 3, 2, 12)
    rope = WanFrameRope(q, q, (cos, sin), (5, 2, 3))
    torch.testing.assert_close(rope.q_at(torch.arange(5)), wan_rotary(q, cos, sin).transpose(1, 2))
    # shifting every frame by c rotates the temporal channels by c*theta_j only
    shifted = rope.q_at(torch.arange(5) + 3)
    t_dim = 12 - 4 * 2
    torch.testing.assert_close(shifted[..., t_dim:], rope.q_at(torch.arange(5))[..., t_dim:])
    assert not torch.allclose(shifted[..., :t_dim], rope.q_at(torch.arange(5))[..., :t_dim])
    # relative: q(f+c).k(f'+c) == q(f).k(f')
    a = (rope.q_at(torch.arange(5) + 3) * rope.k_at(torch.arange(5) + 3)).sum(-1)
    b = (rope.q_at(torch.arange(5)) * rope.k_at(torch.arange(5))).sum(-1)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_tsa_reads_fewer_keys_than_dense_at_321_frames():
    """At the release's grid (81 latent frames, 1560 tokens per frame) TSA's tiers hold about a third of the keys."""
    from baselines.freeloc import tsa_tiers

    frames, s = 81, 1560
    n = frames * s
    rows = torch.arange(0, n, 97 * s // 10)[:60]  # a sample of query tokens over the video
    allowed = 0
    for tp in tsa_tiers(frames, s, 8, 24, 8, 12, 1, 3, 20, True):
        for r in rows.tolist():
            allowed += int(full_mask(tp.tier, r, r + 1, 0, n, s).sum())
    density = allowed / (len(rows) * n)
    assert 0.15 < density < 0.45


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_fails_at_validation_naming_the_key(compose_cfg):
    from freelong.app.config import validate_config

    cases = {
        ("model=wan_tiny", "method=freeloc", "method.tsa_layers=[5]"): "method.tsa_layers",
        ("model=wan_tiny", "method=freeloc"): "method.tsa_layers",
        ("model=wan2_1_t2v_14b", "method=freeloc"): "method.tsa_layers",
        ("model=wan_tiny", "method=freeloc", "method.tsa_layers=[0]", "method.tsa_window_1=30"): "method.tsa_window_1",
        ("model=wan_tiny", "method=freeloc", "method.tsa_layers=[0]", "method.vrpr_window_1=14",
         "method.vrpr_window_2=10", "method.vrpr_group_1=2", "method.vrpr_group_2=8"): "method.vrpr_window_1",
        ("model=videocrafter2_tiny", "method=freeloc"): "method=freeloc",
        ("model=wan_tiny", "method=freeloc", "method.tsa_layers=[0]", "method.official_quirks=true"):
            "method.official_quirks",
    }
    for overrides, key in cases.items():
        with pytest.raises(ValueError, match=key.replace("[", r"\[")) as err:
            validate_config(compose_cfg(*overrides))
        assert "\n" not in str(err.value)
    validate_config(compose_cfg("model=wan2_1_t2v_1_3b", "method=freeloc"))  # the release's list, no weights read


def test_processor_refuses_an_unknown_wan_without_a_layer_list():
    tr = tiny_transformer()
    x = torch.randn(1, 4, 3, 4, 4)
    with pytest.raises(ValueError, match="method.tsa_layers"), denoiser_view(tr).attach(get_method("freeloc")):
        tr(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=torch.randn(1, 4, 32))


# ---------------------------------------------------------------------------------------------- app, tables
def test_wan_4x_sweeps_freeloc_as_released(compose_cfg):
    from omegaconf import OmegaConf

    from freelong.app.config import CONF_DIR, method_from_config, validate_config

    sweep = OmegaConf.load(CONF_DIR / "experiment" / "wan_4x.yaml").hydra.sweeper.params.method.split(",")
    assert "freeloc_official" in sweep
    cfg = compose_cfg("experiment=wan_4x", "method=freeloc_official")
    validate_config(cfg)  # 321 frames = 81 latent frames: the release's 4x setting
    m = method_from_config(cfg.method)
    assert m.name == "freeloc" and m.official_quirks and m.tsa_layers is None
    assert m.vrpr_setting(81) == (10, 14, 2, 8)


def test_make_tables_puts_our_freeloc_row_beside_the_published_one(tmp_path):
    import json

    from eval.tables import freeloc_table, records_frame
    from freelong.app.records import read_results

    scores = {"subject_consistency": 0.98, "background_consistency": 0.97, "motion_smoothness": 0.99,
              "imaging_quality": 60.0, "aesthetic_quality": 0.6, "dynamic_degree": True, "meta": {"frames": 321}}
    recs = [{"video": f"v/{m}.mp4", "model": "wan2_1_t2v_1_3b", "random_init": False, "method": m,
             "method_params": {}, "num_frames": 321, "timings": {"median_step_s": 1.0}, "scores": scores}
            for m in ("freeloc", "riflex", "direct")]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    table = freeloc_table(records_frame(read_results([tmp_path]))).set_index("Method")
    assert list(table.index) == ["direct", "riflex", "freeloc"]
    assert table.at["freeloc", "FreeLOC (SC/BC/MS/IQ/AQ/DD)"] == "98.44/97.78/98.97/67.44/61.21/36.27"
