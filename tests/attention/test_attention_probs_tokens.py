"""attention_probs with tokens_per_frame = S > 1 (a DiT): each map applied to v reproduces the processor's
output (computed by frame-gathered SDPA, no mask), and the DiT frame maps agree between the processors'
token maps and the per-query-frame computation of analysis/dit_attention.py."""

import pytest
import torch
from helpers import random_qkv

from analysis.attention_maps import AttentionMapStore, frame_pooled
from baselines.sliding_window import LocalWindowProcessor
from baselines.window_fusion import WindowFusionProcessor
from freelong.attention.context import TemporalAttentionContext
from freelong.attention.kernels import sparse_global_attention
from freelong.attention.processor import TemporalAttnProcessor
from freelong.methods.freelong import SpectralBlendProcessor
from freelong.methods.freelong_pp import MultiBandProcessor


def qkv(t, s, rows=1, heads=2, d=8, seed=0):
    return random_qkv(rows, heads, t * s, d, seed)


def ctx_for(t, h, w, rows=1, level=1):
    return TemporalAttentionContext(frame_shape=(t, h, w), batch=rows, level=level, name="blocks.0.attn1",
                                    tokens_per_frame=h * w)


def applied(p, v):
    return torch.matmul(p, v.float())


@pytest.mark.parametrize("proc", [TemporalAttnProcessor(), LocalWindowProcessor(4), LocalWindowProcessor(3, "centered"),
                                  WindowFusionProcessor(5, 2, "pyramid"), WindowFusionProcessor(4, 3, "flat")],
                         ids=repr)
def test_single_map_processors_apply_their_map(proc):
    t, h, w = 11, 2, 2
    q, k, v = qkv(t, h * w)
    c = ctx_for(t, h, w)
    (p,) = proc.attention_probs(q, k, None, c).values()
    assert p.shape == (1, 2, t * h * w, t * h * w)
    torch.testing.assert_close(p.sum(-1), torch.ones(1, 2, t * h * w), atol=1e-5, rtol=0)
    torch.testing.assert_close(applied(p, v), proc(q, k, v, bias=None, ctx=c).float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("branch", ["blend", "local", "global"])
def test_freelong_branch_maps_reproduce_its_branch_outputs(branch):
    t, h, w = 12, 2, 3
    q, k, v = qkv(t, h * w, seed=1)
    c = ctx_for(t, h, w)
    proc = SpectralBlendProcessor(window=4, local_only_levels=(), branch=branch)
    maps = proc.attention_probs(q, k, None, c)
    glob = applied(maps["global"], v) if "global" in maps else None
    local = applied(maps["local"], v) if "local" in maps else None
    assert set(maps) == {"blend": {"global", "local"}, "local": {"local"}, "global": {"global"}}[branch]
    ref = proc.combine(glob, local, c) if branch == "blend" else (glob if branch == "global" else local)
    torch.testing.assert_close(proc(q, k, v, bias=None, ctx=c).float(), ref.float(), atol=1e-5, rtol=0)


def test_freelong_low_global_plus_high_local_is_the_blend_with_many_tokens():
    t, h, w = 12, 2, 2
    q, k, v = qkv(t, h * w, seed=2)
    c = ctx_for(t, h, w)
    out = {m: SpectralBlendProcessor(window=4, local_only_levels=(), branch=m)(q, k, v, bias=None, ctx=c)
           for m in ("blend", "low_global", "high_local")}
    torch.testing.assert_close(out["low_global"] + out["high_local"], out["blend"], atol=1e-5, rtol=0)


def test_freelong_pp_branch_maps_with_many_tokens():
    t, h, w = 16, 1, 3
    q, k, v = qkv(t, h * w, seed=3)
    c = ctx_for(t, h, w)
    proc = MultiBandProcessor((4, 8, 16), (0.25, 0.125), (0.25, 0.125), sparse_global_keys=0.5,
                              local_only_levels=())
    maps = proc.attention_probs(q, k, None, c)
    assert set(maps) == {"window4", "window8", "global"}
    local4 = LocalWindowProcessor(4)(q, k, v, bias=None, ctx=c)
    torch.testing.assert_close(applied(maps["window4"], v), local4.float(), atol=1e-5, rtol=0)
    sparse = sparse_global_attention(q, k, v, None, 0.5, tokens_per_frame=h * w)
    torch.testing.assert_close(applied(maps["global"], v), sparse.float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("proc", [TemporalAttnProcessor(), SpectralBlendProcessor(window=3, local_only_levels=()),
                                  WindowFusionProcessor(4, 2, "pyramid"), LocalWindowProcessor(3)], ids=repr)
def test_dit_frame_maps_from_token_maps_equal_the_per_query_frame_computation(proc):
    t, h, w = 9, 2, 2
    q, k, _ = qkv(t, h * w, rows=2, seed=4)
    c = ctx_for(t, h, w, rows=2)
    big, small = AttentionMapStore(), AttentionMapStore(max_chunk_elems=64)  # small: one query frame at a time
    big.add(proc, q, k, None, c)
    small.add(proc, q, k, None, c)
    a, b = big.maps(), small.maps()
    assert set(a) == set(b) and a
    for branch in a:
        assert a[branch].shape == (t, t)
        torch.testing.assert_close(torch.from_numpy(a[branch]), torch.from_numpy(b[branch]), atol=1e-5, rtol=0)


def test_frame_pooling_is_mass_per_key_frame_averaged_over_query_tokens():
    s, t = 3, 4
    p = torch.softmax(torch.randn(t * s, t * s, generator=torch.Generator().manual_seed(5)), dim=-1)
    pooled = frame_pooled(p, s)
    for i in range(t):
        for j in range(t):
            ref = p[i * s:(i + 1) * s, j * s:(j + 1) * s].sum(1).mean()
            assert abs(float(pooled[i, j]) - float(ref)) < 1e-6
