"""Attention-map capture: equals a direct softmax of q·k, applies to V as the processors do, streams, detaches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import column_ctx, random_qkv, relative_bias

from analysis.attention_maps import (
    AttentionMapStore,
    CaptureMethod,
    CapturingProcessor,
    locality_summary,
)
from freelong import get_method
from freelong.attention.context import CallContext
from freelong.attention.kernels import global_attention
from freelong.attention.maps import global_attention_probs
from freelong.attention.processor import TemporalAttnProcessor, temporal_attention_layers
from freelong.methods.freelong import SpectralBlendProcessor


def _unet_inputs(backbone, frames=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, frames, 4, 4, generator=g)
    ctx = backbone.encode_text(["a cat"])
    return x, ctx


def test_capture_equals_a_direct_softmax_for_one_layer(lavie_tiny):
    unet = lavie_tiny.unet
    name, layer = list(temporal_attention_layers(unet).items())[1]
    inputs = []
    hook = layer.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].detach().clone()))
    store = AttentionMapStore(layers=[name], max_chunk_elems=1000)  # forces several row chunks
    handle = lavie_tiny.attach(CaptureMethod(get_method("direct"), store))
    try:
        x, ctx = _unet_inputs(lavie_tiny)
        unet(x, torch.tensor(500), ctx, call=CallContext(step_index=0, num_steps=1))
    finally:
        handle.detach()
        hook.remove()
    assert list(store.layer_maps()["attn"]) == [name]
    # reference written from the definition: q, k from the layer's own projections and rotary, + relative bias
    (h,) = inputs
    rows, t, _ = h.shape
    q = layer.to_q(h).view(rows, t, layer.heads, layer.dim_head).transpose(1, 2)
    k = layer.to_k(h).view(rows, t, layer.heads, layer.dim_head).transpose(1, 2)
    q, k = layer.rotate(q, k)
    idx = torch.arange(t)
    logits = torch.einsum("rhid,rhjd->rhij", q, k) / layer.dim_head**0.5 + layer.position_bias(idx, idx)
    expected = torch.softmax(logits.double(), dim=-1).mean(dim=(0, 1))
    got = torch.from_numpy(store.maps()["attn"])
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got.sum(dim=1), torch.ones(t, dtype=torch.float64), atol=1e-6)


def _qkv(rows=6, heads=2, t=24, d=8, seed=0):
    return tuple(random_qkv(rows, heads, t, d, seed))


def _bias(heads=2, seed=1):
    return relative_bias(heads, 32, seed)


_ctx = column_ctx


class _HalfwayProcessor(TemporalAttnProcessor):
    """A third-party processor: output = (global + uniform average over frames) / 2, and it says so."""

    def __call__(self, q, k, v, *, bias, ctx):
        return (global_attention(q, k, v, bias) + v.mean(dim=-2, keepdim=True).expand_as(v)) / 2

    def attention_probs(self, q, k, bias, ctx):
        t = q.shape[-2]
        return {"attn": (global_attention_probs(q, k, bias) + 1.0 / t) / 2}


class _SilentProcessor(TemporalAttnProcessor):
    """Changes __call__ but inherits the base class's attention_probs: the store must not trust it."""

    def __call__(self, q, k, v, *, bias, ctx):
        return v


def test_the_store_captures_what_each_processor_says_it_applies(caplog):
    q, k, v = _qkv()
    bias = _bias()
    store = AttentionMapStore()
    custom = _HalfwayProcessor()
    maps = store.probs_of(custom)(q, k, bias, _ctx(24))
    assert torch.allclose(maps["attn"] @ v, custom(q, k, v, bias=bias, ctx=_ctx(24)), atol=1e-5)
    store.add(custom, q, k, bias, _ctx(24))
    ref = ((torch.softmax(_reference_logits(q, k, bias).double(), -1) + 1 / 24) / 2).mean(dim=(0, 1))
    assert np.allclose(store.maps()["attn"], ref.numpy(), atol=1e-6)
    with caplog.at_level("WARNING", logger="freelong.analysis"):
        silent = store.probs_of(_SilentProcessor())(q, k, bias, _ctx(24))
    assert "_SilentProcessor does not define attention_probs" in caplog.text
    assert torch.allclose(silent["attn"], torch.softmax(_reference_logits(q, k, bias), -1), atol=1e-6)
    glob = AttentionMapStore(mode="global").probs_of(custom)(q, k, bias, _ctx(24))
    assert torch.allclose(glob["attn"], torch.softmax(_reference_logits(q, k, bias), -1), atol=1e-6)


def _reference_logits(q, k, bias):
    t = q.shape[-2]
    idx = torch.arange(t)
    return torch.einsum("rhid,rhjd->rhij", q, k) / q.shape[-1] ** 0.5 + bias(idx, idx)


def test_freelong_branches_reproduce_its_global_and_local_attention():
    from freelong.attention.kernels import global_attention, local_attention

    q, k, v = _qkv()
    bias = _bias()
    proc = SpectralBlendProcessor(window=8, local_only_levels=(0,))
    store = AttentionMapStore()
    fn = store.probs_of(proc)
    maps = fn(q, k, bias, _ctx(24, level=1))
    assert set(maps) == {"global", "local"}
    assert torch.allclose(maps["global"] @ v, global_attention(q, k, v, bias), atol=1e-5)
    assert torch.allclose(maps["local"] @ v, local_attention(q, k, v, bias, 8), atol=1e-5)
    assert set(fn(q, k, bias, _ctx(24, level=0))) == {"local"}  # a local-only level
    store.add(proc, q, k, bias, _ctx(24, level=0))
    store.add(proc, q, k, bias, _ctx(24, level=1))
    means = store.maps()
    assert store.total["local"][1] == 2 and store.total["global"][1] == 1  # global averages the blending calls only
    assert np.allclose(means["local"], maps["local"].double().mean(dim=(0, 1)).numpy(), atol=1e-6)


def test_capture_leaves_the_output_unchanged_and_detach_restores(lavie_tiny):
    unet = lavie_tiny.unet
    method = get_method("freelong", window=8)
    x, ctx = _unet_inputs(lavie_tiny, frames=16)
    call = CallContext(step_index=0, num_steps=1)
    with lavie_tiny.attach(method):
        plain = unet(x, torch.tensor(500), ctx, call=call)
    before = {n: layer.processor for n, layer in temporal_attention_layers(unet).items()}
    store = AttentionMapStore(steps=[0])
    handle = lavie_tiny.attach(CaptureMethod(method, store))
    assert all(isinstance(layer.processor, CapturingProcessor) for layer in temporal_attention_layers(unet).values())
    captured = unet(x, torch.tensor(500), ctx, call=call)
    unet(x, torch.tensor(400), ctx, call=CallContext(step_index=1, num_steps=2))  # not a selected step
    handle.detach()
    assert torch.equal(plain, captured)
    assert {n: layer.processor for n, layer in temporal_attention_layers(unet).items()} == before
    n_layers = len(before)
    assert store.total["local"][1] == n_layers and list(store.step_maps()["local"]) == [0]


def test_locality_summary_of_known_maps():
    eye = np.eye(5)
    s = locality_summary(eye)
    assert s["mean_distance"] == 0 and s["diag_mass_pm1"] == 1 and s["entropy_over_log_t"] == 0
    uni = np.full((5, 5), 0.2)
    assert locality_summary(uni)["entropy_over_log_t"] == pytest.approx(1.0)
    assert locality_summary(uni)["mean_distance"] == pytest.approx(np.abs(np.subtract.outer(range(5), range(5))).mean())


def test_attention_maps_experiment_on_the_tiny_model(compose_cfg, tmp_path):
    from analysis.attention_maps import run_experiment

    cfg = compose_cfg("experiment=attention_maps", "analysis.lengths=[16,32]",
                      "analysis.methods=[direct,{name: sliding_window, window: 8},freelong]", "analysis.steps=[0]",
                      "num_inference_steps=1", "height=32", "width=32", "progress=false",
                      f"paths.output_root={tmp_path}")
    res = run_experiment(cfg)
    out = res["run_dir"]
    for name in ("attention_maps.png", "attention_maps.pdf", "attention_maps.npz", "attention_maps.csv"):
        assert (out / name).stat().st_size > 0, name
    maps = res["maps"]
    assert set(maps) == {(c, n) for n in (16, 32) for c in ("direct", "sliding_window(window=8)",
                                                            "freelong (global)", "freelong (local)")}
    for (col, n), m in maps.items():
        assert m.shape == (n, n) and np.allclose(m.sum(axis=1), 1.0, atol=1e-5), col
    # at 16 frames FreeLong (window 16) is plain global attention: same map as direct
    assert np.allclose(maps[("freelong (local)", 16)], maps[("direct", 16)], atol=1e-6)
    # FreeLong's local branch and the sliding window put no mass outside their windows
    local = maps[("freelong (local)", 32)]
    i, j = np.indices(local.shape)
    assert local[np.abs(i - j) > 16].max() == 0.0
    sw = maps[("sliding_window(window=8)", 32)]
    assert sw[np.abs(i - j) >= 8].max() == 0.0
    with np.load(out / "attention_maps.npz") as data:
        assert any(k.startswith("direct|32|layer|") for k in data.files)
