"""Additive frame positions (ctx.positions): each branch against a loop written from the definition."""

import math

import pytest
import torch
from helpers import random_qkv

from baselines.sliding_window import LocalWindowProcessor
from baselines.window_fusion import WindowFusionProcessor
from freelong.attention.context import TemporalAttentionContext
from freelong.attention.kernels import global_attention, local_attention
from freelong.attention.maps import global_attention_probs, local_attention_probs
from freelong.attention.processor import TemporalAttnProcessor
from freelong.attention.windows import local_window_bounds, sliding_windows
from freelong.methods.freelong import SpectralBlendProcessor
from freelong.methods.freelong_pp import MultiBandProcessor
from freelong.models.diffusers_unet.attention import DiffusersNativeProcessor

HEADS, D = 2, 4


class TablePositions:
    """Offsets from an explicit per-position table ``(P, heads, d)`` for q, k and v."""

    def __init__(self, n: int, seed: int = 7):
        g = torch.Generator().manual_seed(seed)
        self.tables = [torch.randn(n, HEADS, D, generator=g) for _ in range(3)]

    def __call__(self, idx):
        return tuple(t[idx].transpose(0, 1) for t in self.tables)


def _qkv(t, rows=3, seed=0):
    return random_qkv(rows, HEADS, t, D, seed)


def _attend(qi, ks, vs):
    """One query row ``(d,)`` against keys/values ``(n, d)``: softmax(q k / sqrt(d)) v."""
    w = torch.softmax(ks @ qi / math.sqrt(D), dim=0)
    return w @ vs


def _ctx(t, positions):
    return TemporalAttentionContext(frame_shape=(t, 1, 3), batch=1, level=1, name="x", positions=positions)


def test_global_attention_adds_absolute_positions():
    t = 12
    q, k, v = _qkv(t)
    pos = TablePositions(t)
    dq, dk, dv = pos.tables
    out = global_attention(q, k, v, None, pos)
    r, h = 1, 1
    ref = torch.stack([_attend(q[r, h, i] + dq[i, h], k[r, h] + dk[:, h], v[r, h] + dv[:, h]) for i in range(t)])
    torch.testing.assert_close(out[r, h], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("t,window,stride", [(24, 8, 4), (26, 16, 4), (20, 8, 3)])
def test_window_fusion_sees_window_local_positions(t, window, stride):
    q, k, v = _qkv(t, seed=1)
    pos = TablePositions(window)
    dq, dk, dv = pos.tables
    out = WindowFusionProcessor(window, stride, "pyramid")(q, k, v, bias=None, ctx=_ctx(t, pos))
    c = (window - 1) / 2
    w = [window / 2 - math.floor(abs(p - c)) for p in range(window)]
    for r, h in [(0, 0), (2, 1)]:
        num = torch.zeros(t, D)
        den = torch.zeros(t)
        for s, e in sliding_windows(t, window, stride):
            ks, vs = k[r, h, s:e] + dk[:, h], v[r, h, s:e] + dv[:, h]
            for i in range(s, e):
                num[i] += w[i - s] * _attend(q[r, h, i] + dq[i - s, h], ks, vs)
                den[i] += w[i - s]
        torch.testing.assert_close(out[r, h], num / den[:, None], atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["adjusted", "centered"])
def test_local_branch_sees_window_local_positions(layout):
    t, window = 30, 8
    q, k, v = _qkv(t, seed=2)
    pos = TablePositions(window + 1)
    dq, dk, dv = pos.tables
    out = local_attention(q, k, v, None, window, layout, positions=pos)
    start, end = local_window_bounds(t, window, layout)
    for r, h in [(0, 1), (1, 0)]:
        ref = []
        for i in range(t):
            s, e = int(start[i]), int(end[i])
            ref.append(_attend(q[r, h, i] + dq[i - s, h], k[r, h, s:e] + dk[: e - s, h], v[r, h, s:e] + dv[: e - s, h]))
        torch.testing.assert_close(out[r, h], torch.stack(ref), atol=1e-5, rtol=0)


def test_spectral_blend_uses_absolute_global_and_window_local_local_branches():
    t, window = 24, 8
    q, k, v = _qkv(t, rows=1 * 1 * 3, seed=3)
    pos = TablePositions(t)
    proc = SpectralBlendProcessor(window=window, local_only_levels=())
    out = proc(q, k, v, bias=None, ctx=_ctx(t, pos))
    glob = global_attention(q, k, v, None, pos)
    local = local_attention(q, k, v, None, window, "adjusted", positions=pos)
    torch.testing.assert_close(out, proc.blend(glob, local, _ctx(t, pos)), atol=1e-6, rtol=0)
    assert not torch.allclose(glob, global_attention(q, k, v, None), atol=1e-3)  # positions do change it


@pytest.mark.parametrize("layout", ["adjusted", "centered"])
def test_zero_positions_give_the_plain_local_and_window_branches(layout):
    """The per-query gather path with zero offsets equals the mask/block paths used without positions."""
    t = 40
    q, k, v = _qkv(t, seed=4)

    def zero(idx):
        z = torch.zeros(HEADS, len(idx), D)
        return z, z, z

    torch.testing.assert_close(local_attention(q, k, v, None, 8, layout, positions=zero),
                               local_attention(q, k, v, None, 8, layout), atol=1e-6, rtol=0)
    proc = WindowFusionProcessor(8, 4)
    torch.testing.assert_close(proc(q, k, v, bias=None, ctx=_ctx(t, zero)), proc(q, k, v, bias=None, ctx=_ctx(t, None)),
                               atol=1e-6, rtol=0)


def test_local_positions_blocks_and_groups_do_not_change_the_result():
    from freelong.attention.kernels import local_attention_positions

    t = 70
    q, k, v = _qkv(t, seed=5)
    pos = TablePositions(17)
    ref = local_attention_positions(q, k, v, None, 16, "adjusted", pos, block_size=70)  # one block: plain
    for block, budget in ((16, 256.0), (32, 1e-4), (7, 1e-4)):
        out = local_attention_positions(q, k, v, None, 16, "adjusted", pos, block_size=block, budget_mb=budget)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


class NoValueOffsets:
    """``pos`` with zero value offsets: then each processor's output is exactly its maps applied to ``v``."""

    def __init__(self, pos):
        self.pos = pos

    def __call__(self, idx):
        a, b, c = self.pos(idx)
        return a, b, torch.zeros_like(c)


def test_local_probs_use_window_local_positions():
    """The local map's entries from the definition: window-local offsets on q and k, zero outside."""
    t, window = 20, 8
    q, k, _ = _qkv(t, seed=6)
    pos = TablePositions(t)
    dq, dk, _ = pos.tables
    probs = local_attention_probs(q, k, None, window, "adjusted", positions=pos)
    start, end = local_window_bounds(t, window, "adjusted")
    r, h = 1, 0
    for i in range(t):
        s, e = int(start[i]), int(end[i])
        ref = torch.softmax((k[r, h, s:e] + dk[: e - s, h]) @ (q[r, h, i] + dq[i - s, h]) / math.sqrt(D), dim=0)
        torch.testing.assert_close(probs[r, h, i, s:e], ref, atol=1e-5, rtol=0)
        assert float(probs[r, h, i].sum()) == pytest.approx(1.0, abs=1e-5)
        assert float(probs[r, h, i, :s].abs().sum() + probs[r, h, i, e:].abs().sum()) == 0.0
    # global: absolute offsets; applied to v plus its absolute offsets it is global attention's output
    g = global_attention_probs(q, k, None, positions=pos)
    _, _, v = _qkv(t, seed=6)
    torch.testing.assert_close(g @ (v + dv_abs(pos, t)), global_attention(q, k, v, None, pos), atol=1e-5, rtol=0)


def dv_abs(pos, t):
    return pos(torch.arange(t))[2][None]


def _single_map_processors(window):
    return [
        TemporalAttnProcessor(),
        DiffusersNativeProcessor(None),
        WindowFusionProcessor(window, 4, "pyramid"),
        LocalWindowProcessor(window),
        SpectralBlendProcessor(window=window, local_only_levels=(), branch="global"),
        SpectralBlendProcessor(window=window, local_only_levels=(), branch="local"),
        SpectralBlendProcessor(window=window, local_only_levels=(1,)),  # level 1: local only
        MultiBandProcessor((window, 64), (0.25,), (0.25,), local_only_levels=(), branch="global"),
        MultiBandProcessor((window, 64), (0.25,), (0.25,), local_only_levels=(), branch="local"),
    ]


@pytest.mark.parametrize("t", [20, 6])
def test_processor_maps_reproduce_outputs_with_positions(t):
    """Every processor whose call applies one matrix: ``probs @ v == output`` with positions on q/k
    (value offsets zero, so the maps alone carry the positions); ``t=6 <= window``: the global path."""
    window = 8
    q, k, v = _qkv(t, seed=8)
    pos = NoValueOffsets(TablePositions(t))
    ctx = _ctx(t, pos)
    for proc in _single_map_processors(window):
        maps = proc.attention_probs(q, k, None, ctx)
        out = proc(q, k, v, bias=None, ctx=ctx)
        used = [m for name, m in maps.items() if name in ("attn", "global", "local") or name.startswith("window")]
        if isinstance(proc, MultiBandProcessor) and proc.schedule.branch == "global" and t > window:
            used = [maps["global"]]
        torch.testing.assert_close(used[0] @ v, out, atol=1e-5, rtol=0, msg=lambda m, p=proc: f"{p}: {m}")
        # and the positions matter: without them the map differs
        plain = proc.attention_probs(q, k, None, _ctx(t, None))
        assert not torch.allclose(next(iter(plain.values())), used[0], atol=1e-3), proc


def test_spectral_blend_maps_are_its_branches_with_positions():
    t, window = 24, 8
    q, k, v = _qkv(t, rows=3, seed=9)
    pos = NoValueOffsets(TablePositions(t))
    proc = SpectralBlendProcessor(window=window, local_only_levels=())
    maps = proc.attention_probs(q, k, None, _ctx(t, pos))
    torch.testing.assert_close(maps["global"] @ v, global_attention(q, k, v, None, pos), atol=1e-5, rtol=0)
    torch.testing.assert_close(maps["local"] @ v, local_attention(q, k, v, None, window, positions=pos),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(proc(q, k, v, bias=None, ctx=_ctx(t, pos)),
                               proc.blend(maps["global"] @ v, maps["local"] @ v, _ctx(t, pos)), atol=1e-5, rtol=0)


def test_window_fusion_map_with_value_offsets():
    """With value offsets the output adds each window's weighted value offsets: ``A @ v + Σ_w ...``."""
    t, window = 20, 8
    q, k, v = _qkv(t, seed=10)
    pos = TablePositions(t)
    proc = WindowFusionProcessor(window, 4)
    a = proc.attention_probs(q, k, None, _ctx(t, pos))["attn"]
    out = proc(q, k, v, bias=None, ctx=_ctx(t, pos))
    w = proc._weights.float()
    dv = pos.tables[2]  # (P, heads, d)
    extra = torch.zeros_like(out)
    den = torch.zeros(t)
    for s, e in sliding_windows(t, window, 4):
        for i in range(s, e):
            den[i] += w[i - s]
    for s, e in sliding_windows(t, window, 4):
        for i in range(s, e):
            # row i of window (s, e): its softmax (the window's share of A, un-normalised) applied to dv[0..L)
            p = proc.attention_probs(q[:, :, s:e], k[:, :, s:e], None, _ctx(e - s, pos))["attn"][:, :, i - s]
            extra[:, :, i] += w[i - s] / den[i] * (p[:, :, None] @ dv[: e - s].transpose(0, 1)).squeeze(2)
    torch.testing.assert_close(a @ v + extra, out, atol=1e-5, rtol=0)


def test_attention_maps_experiment_on_animatediff_tiny(compose_cfg, tmp_path, caplog):
    """The analysis reads every processor's own maps on diffusers' motion modules (no fallback warning)."""
    import logging

    import numpy as np

    from analysis.attention_maps import run_experiment

    cfg = compose_cfg("experiment=attention_maps", "model=animatediff_tiny", "analysis.lengths=[16,32]",
                      "analysis.methods=[direct,freenoise,freelong]", "analysis.steps=[0]",
                      "num_inference_steps=1", "height=32", "width=32", "progress=false",
                      f"paths.output_root={tmp_path}")
    with caplog.at_level(logging.WARNING, logger="freelong"):
        maps = run_experiment(cfg)["maps"]
    assert "does not define attention_probs" not in caplog.text
    for (col, n), m in maps.items():
        assert m.shape == (n, n) and np.allclose(m.sum(axis=1), 1.0, atol=1e-5), col
    # at 16 frames every method is the model itself (absolute positions): the same map as direct
    for col in ("freenoise", "freelong (local)", "freelong (global)"):
        assert np.allclose(maps[(col, 16)], maps[("direct", 16)], atol=1e-6), col
    i, j = np.indices((32, 32))
    assert maps[("freelong (local)", 32)][np.abs(i - j) > 16].max() == 0.0
    assert maps[("freenoise", 32)][np.abs(i - j) >= 16].max() == 0.0
