"""Processors explain themselves: the matrices ``attention_probs`` reports, applied to V, give the output."""

from __future__ import annotations

import pytest
import torch
from helpers import column_ctx, random_qkv, relative_bias

from baselines.window_fusion import WindowFusionProcessor
from freelong.attention.kernels import global_attention, local_attention
from freelong.attention.processor import TemporalAttnProcessor
from freelong.attention.windows import local_window_mask
from freelong.methods.freelong import BRANCHES, SpectralBlendProcessor


def _qkv(rows=6, heads=2, t=24, d=8, seed=0):
    return tuple(random_qkv(rows, heads, t, d, seed))


def _bias(heads=2, seed=1):
    return relative_bias(heads, 128, seed)


_ctx = column_ctx


@pytest.mark.parametrize("with_bias", [False, True])
def test_global_processor_probs_times_v_is_its_output(with_bias):
    q, k, v = _qkv()
    bias = _bias() if with_bias else None
    proc = TemporalAttnProcessor()
    probs = proc.attention_probs(q, k, bias, _ctx(24))
    assert set(probs) == {"attn"}
    assert torch.allclose(probs["attn"] @ v, proc(q, k, v, bias=bias, ctx=_ctx(24)), atol=1e-5)
    assert torch.allclose(probs["attn"].sum(-1), torch.ones(6, 2, 24), atol=1e-6)


@pytest.mark.parametrize("window,stride,weighting,t", [(8, 4, "pyramid", 24), (8, 3, "flat", 24),
                                                       (10, 4, "pyramid", 24), (8, 4, "pyramid", 40),
                                                       (24, 4, "pyramid", 24)])
def test_window_fusion_probs_times_v_is_its_output(window, stride, weighting, t):
    q, k, v = _qkv(t=t)
    bias = _bias()
    proc = WindowFusionProcessor(window, stride, weighting, windows_per_call=2)  # several SDPA groups
    a = proc.attention_probs(q, k, bias, _ctx(t))["attn"]
    assert torch.allclose(a @ v, proc(q, k, v, bias=bias, ctx=_ctx(t)), atol=1e-5)
    assert torch.allclose(a.sum(-1), torch.ones(a.shape[:-1]), atol=1e-5)
    i, j = torch.meshgrid(torch.arange(t), torch.arange(t), indexing="ij")
    if window < t:
        assert a[..., (i - j).abs() >= window].abs().max() == 0  # no frame attends beyond one window


@pytest.mark.parametrize("t", [24, 64])  # 64 frames: local attention runs block-wise
@pytest.mark.parametrize("layout", ["adjusted", "centered"])
def test_freelong_branch_maps_times_v_are_its_branches(t, layout):
    q, k, v = _qkv(t=t)
    bias = _bias()
    proc = SpectralBlendProcessor(window=8, layout=layout, local_only_levels=(0,))
    maps = proc.attention_probs(q, k, bias, _ctx(t, level=1))
    assert set(maps) == {"global", "local"}
    assert torch.allclose(maps["global"] @ v, global_attention(q, k, v, bias), atol=1e-5)
    assert torch.allclose(maps["local"] @ v, local_attention(q, k, v, bias, 8, layout), atol=1e-5)
    assert maps["local"][..., ~local_window_mask(t, 8, layout)].abs().max() == 0
    # a local-only level, and a step after blend_steps: the call applies the local branch alone
    assert set(proc.attention_probs(q, k, bias, _ctx(t, level=0))) == {"local"}
    late = SpectralBlendProcessor(window=8, blend_steps=2, local_only_levels=())
    only = late.attention_probs(q, k, bias, _ctx(t, level=0, step=3))
    assert set(only) == {"local"}
    assert torch.allclose(only["local"] @ v, late(q, k, v, bias=bias, ctx=_ctx(t, level=0, step=3)), atol=1e-5)


@pytest.mark.parametrize("branch", BRANCHES)
def test_freelong_branch_modes_report_the_maps_they_read(branch):
    q, k, v = _qkv()
    maps = SpectralBlendProcessor(window=8, branch=branch).attention_probs(q, k, None, _ctx(24, level=1))
    expected = {"global": {"global"}, "low_global": {"global"}, "local": {"local"}, "high_local": {"local"}}
    assert set(maps) == expected.get(branch, {"global", "local"})
    if branch in ("global", "local"):  # a single-branch mode applies exactly that map
        proc = SpectralBlendProcessor(window=8, branch=branch)
        assert torch.allclose(maps[branch] @ v, proc(q, k, v, bias=None, ctx=_ctx(24, level=1)), atol=1e-5)


def test_freelong_with_a_window_covering_the_video_reports_global_attention():
    q, k, v = _qkv(t=16)
    maps = SpectralBlendProcessor(window=16).attention_probs(q, k, None, _ctx(16, level=1))
    ref = torch.softmax(torch.einsum("rhid,rhjd->rhij", q, k) / 8**0.5, dim=-1)
    assert torch.allclose(maps["global"], ref, atol=1e-6) and torch.allclose(maps["local"], ref, atol=1e-6)
