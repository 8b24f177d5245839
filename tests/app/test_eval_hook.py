"""run.py integration (eval=fast scores each video into results.jsonl) and fail-fast setup."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from eval_synthetic import smooth_frames

from eval.weights import EvalWeightsMissing
from freelong.app.eval_hook import build_run_evaluator
from freelong.app.runner import run
from freelong.errors import ConfigError
from freelong.video_io import write_video


def test_run_with_eval_fast_writes_labelled_scores_next_to_videos(compose_cfg, tmp_path):
    cfg = compose_cfg("eval=fast", "num_frames=16", "num_inference_steps=1", "progress=false",
                      f"paths.output_root={tmp_path}", "eval.batch_size=8")
    run_dir = run(cfg)
    (line,) = (run_dir / "results.jsonl").read_text().splitlines()
    record = json.loads(line)
    scores = record["scores"]
    assert set(scores) == {"temporal_flickering", "subject_consistency", "background_consistency",
                           "aesthetic_quality", "imaging_quality", "meta"}
    assert all(np.isfinite(scores[d]) for d in scores if d != "meta")
    assert 0 <= scores["temporal_flickering"] <= 1
    meta = scores["meta"]
    assert meta["label"] == "random-init" and meta["random_init"] is True and meta["errors"] == {}
    assert meta["frames"] == 16 and meta["source"] == "file"
    sidecar = json.loads((run_dir / record["video"]).with_suffix(".json").read_text())
    assert sidecar["scores"] == scores


def test_real_backbone_stops_at_start_when_eval_weights_are_missing(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    cfg = compose_cfg("eval=fast")
    with pytest.raises(EvalWeightsMissing, match="musiq_spaq"):
        build_run_evaluator(cfg.eval, device=torch.device("cpu"), random_init=False)
    # dropping the dimensions that need weights leaves a working evaluator
    cfg = compose_cfg("eval=fast", "eval.dims=[flicker]")
    evaluate = build_run_evaluator(cfg.eval, device=torch.device("cpu"), random_init=False)
    write_video(tmp_path / "v.mp4", smooth_frames(t=3), fps=8)
    scores = evaluate(tmp_path / "v.mp4", smooth_frames(t=3))
    assert set(scores) == {"temporal_flickering", "meta"} and scores["meta"]["label"] == "vbench"


def test_missing_optional_extra_is_a_config_error(compose_cfg, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vbench" else real_find_spec(name, *a))
    for name in [m for m in sys.modules if m == "vbench" or m.startswith("vbench.")]:
        monkeypatch.delitem(sys.modules, name)
    cfg = compose_cfg("eval=vbench")
    with pytest.raises(ConfigError, match="pip install vbench==0.1.5 --no-deps"):
        build_run_evaluator(cfg.eval, device=torch.device("cpu"), random_init=True)
    with pytest.raises(ConfigError, match="eval.dims"):
        build_run_evaluator(compose_cfg("eval=fast", "eval.dims=[colour]").eval, torch.device("cpu"), True)
