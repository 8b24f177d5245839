"""Every method on VideoCrafter2 through the shared temporal-attention processors, and the run.py smoke runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from freelong import get_method, load_backbone
from freelong.attention.processor import TemporalAttnProcessor, temporal_attention_layers
from freelong.weights import REPO_ROOT

METHODS = {
    "freelong": {},
    "freelong_centered": {"layout": "centered"},
    "freelong_all_levels": {"local_only_levels": []},
    "sliding_window": {},
    "freenoise": {},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bb():
    return load_backbone("videocrafter2_tiny")


def _method(key: str):
    return get_method(key.split("_")[0] if key.startswith("freelong") else key, **METHODS.get(key, {}))


def _unet(bb, x, ctx, call=None):
    with torch.no_grad():
        return bb.unet(x, torch.tensor(501), ctx, call=call, **bb.unet_kwargs())


@pytest.mark.parametrize("key", ["direct", *METHODS])
def test_at_the_native_16_frames_every_method_is_the_plain_model(bb, key):
    gen = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 4, 16, 8, 8, generator=gen), torch.randn(1, 77, 32, generator=gen)
    plain = _unet(bb, x, ctx)
    with bb.attach(_method(key)):
        torch.testing.assert_close(_unet(bb, x, ctx), plain, atol=1e-5, rtol=1e-4)


def test_methods_replace_every_temporal_attention_and_detach_restores(bb):
    layers = temporal_attention_layers(bb.unet)
    # tiny: init_attn + 2 input, 1 middle, 4 output temporal transformers, two self-attentions each
    assert len(layers) == 2 * (1 + 2 + 1 + 4)
    gen = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(1, 4, 24, 8, 8, generator=gen), torch.randn(1, 77, 32, generator=gen)
    plain = _unet(bb, x, ctx)
    outs = {}
    for key in METHODS:
        handle = bb.attach(_method(key))
        assert set(handle.layer_names) == set(layers)
        assert len({id(m.processor) for m in layers.values()}) == 1
        outs[key] = _unet(bb, x, ctx)
        handle.detach()
        assert all(type(m.processor) is TemporalAttnProcessor for m in layers.values())
        assert not torch.allclose(outs[key], plain, atol=1e-4), key
    assert not torch.allclose(outs["freelong"], outs["freelong_centered"], atol=1e-4)
    assert not torch.allclose(outs["freelong"], outs["freelong_all_levels"], atol=1e-4)
    torch.testing.assert_close(_unet(bb, x, ctx), plain, atol=0, rtol=0)


def test_processors_see_each_levels_frame_shape(bb):
    seen = {}

    class Probe(TemporalAttnProcessor):
        def __call__(self, q, k, v, *, bias, ctx):
            seen[ctx.name] = (ctx.level, ctx.frame_shape, ctx.batch, ctx.step_index)
            return super().__call__(q, k, v, bias=bias, ctx=ctx)

    layers = temporal_attention_layers(bb.unet)
    probe = Probe()
    for m in layers.values():
        m.set_processor(probe)
    try:
        from freelong.attention.context import CallContext

        _unet(bb, torch.randn(1, 4, 20, 8, 12), torch.randn(1, 77, 32), call=CallContext(step_index=3, num_steps=8))
    finally:
        for m in layers.values():
            m.set_processor(TemporalAttnProcessor())
    assert set(seen) == set(layers)
    hw = {0: (8, 12), 1: (4, 6), 2: (2, 3)}
    for name, (level, shape, batch, step) in seen.items():
        assert shape == (20, *hw[level]) and batch == 1 and step == 3, name
    assert seen["init_attn.0.transformer_blocks.0.attn1"][0] == 0


def test_official_freelong_experiment_composes(compose_cfg):
    cfg = compose_cfg("experiment=freelong_vc2_official")
    assert cfg.model.name == "videocrafter2" and cfg.method.name == "freelong"
    assert cfg.method.layout == "centered" and cfg.method.window == 16 and cfg.method.noise == "freenoise"
    assert (cfg.num_frames, cfg.seed, cfg.guidance_scale, cfg.eta, cfg.num_inference_steps) == (128, 123, 12.0, 1.0, 50)
    assert (cfg.height, cfg.width) == (320, 512) and cfg.model.extra.fps_condition == 28


@pytest.mark.parametrize("method,frames", [("direct", 16), ("freelong", 24), ("sliding_window", 24),
                                           ("freenoise", 24)])
def test_runner_generates_with_each_method(compose_cfg, tmp_path, method, frames):
    from freelong.app.runner import run

    cfg = compose_cfg("model=videocrafter2_tiny", f"method={method}", f"num_frames={frames}", "num_inference_steps=2",
                      "height=32", "width=48", "progress=false", f"paths.output_root={tmp_path}")
    run_dir = run(cfg)
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert len(records) == 1
    rec = records[0]
    assert rec["model"] == "videocrafter2_tiny" and rec["random_init"] and rec["method"] == method
    assert rec["fps_condition"] == 28 and rec["num_frames"] == frames and rec["fps"] == 10
    assert (run_dir / rec["video"]).stat().st_size > 0


def test_run_py_cli(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "run.py", "model=videocrafter2_tiny", "method=freelong", "num_frames=24",
           "num_inference_steps=1", "height=32", "width=48", "progress=false", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(Path(tmp_path, "videos").glob("*.mp4"))) == 1
