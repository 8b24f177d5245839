"""The sampling-loop methods from the Hydra app: each runs on the families where it makes sense and is recorded
in results.jsonl (``method_params``, FreeInit's inner method included); elsewhere a ConfigError names the key
before any model is built."""

from __future__ import annotations

import json

import pytest
from helpers import assert_run_refused
from omegaconf import OmegaConf

from freelong.app.runner import run
from freelong.errors import ConfigError

CASES = [
    # a 4-frame native length keeps FIFO's base sample and queue small on a shared CPU
    pytest.param("fifo", "videocrafter2_tiny", ["model.native_frames=4", "method.num_partitions=1",
                                                 "method.lookahead=false", "num_frames=6"], marks=pytest.mark.slow),
    ("gen_l_video", "animatediff_tiny", ["method.window=16", "method.stride=8", "num_frames=24"]),
    ("freeinit", "wan_tiny", ["method.num_iters=2", "method.inner=freelong", "+method.inner_params.window=4",
                              "num_frames=25"]),
]


def small(compose_cfg, tmp_path, *overrides):
    cfg = compose_cfg("num_inference_steps=2", "progress=false", "height=32", "width=32", *overrides)
    OmegaConf.update(cfg, "paths.output_root", str(tmp_path))
    return cfg


@pytest.mark.parametrize("method,model,extra", CASES)
def test_loop_methods_run_and_are_recorded(compose_cfg, tmp_path, method, model, extra):
    cfg = small(compose_cfg, tmp_path, f"method={method}", f"model={model}", *extra)
    run_dir = run(cfg)
    rec = json.loads((run_dir / "results.jsonl").read_text().splitlines()[0])
    assert rec["method"] == method and (run_dir / rec["video"]).stat().st_size > 0
    params = rec["method_params"]
    if method == "freeinit":
        assert params["inner"] == "freelong" and params["num_iters"] == 2 and params["inner_params"]["window"] == 4
    if method == "fifo":
        assert params == {"num_partitions": 1, "lookahead": False, "eta": 1.0}


@pytest.mark.parametrize("overrides,needle", [
    (["method=fifo", "model=wan_tiny"], "method=fifo .*multistep solver such as UniPC"),
    (["method=gen_l_video", "model=wan_tiny", "num_frames=81"], "method=gen_l_video"),
    (["method=gen_l_video", "method.window=40", "num_frames=24"], "method.window=40"),
    (["method=fifo", "method.num_partitions=0"], "method.num_partitions"),
    (["method=freeinit", "method.inner=fifo"], "method.inner=fifo"),
    (["method=freeinit", "method.filter=cosine"], "method.filter"),
])
def test_bad_values_fail_before_any_model_is_built(compose_cfg, tmp_path, overrides, needle):
    assert_run_refused(small(compose_cfg, tmp_path, *overrides), ConfigError, needle, tmp_path)
