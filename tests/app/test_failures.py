"""Failures are contained: a video that fails is recorded as failed, the job goes on, a re-run retries only it."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from freelong.app.failures import GenerationFailed
from freelong.app.runner import run

ROOT = Path(__file__).resolve().parents[2]


def small(compose_cfg, tmp_path, *overrides):
    cfg = compose_cfg("num_inference_steps=1", "progress=false", "num_frames=8", "height=32", "width=32",
                      "method=direct", *overrides)
    OmegaConf.update(cfg, "paths.output_root", str(tmp_path))
    return cfg


def fail_on(monkeypatch, prompt: str):
    """Make generating ``prompt`` raise CUDA's out-of-memory error (the other prompts run for real)."""
    import freelong.pipeline as pipeline

    real = pipeline.LongVideoPipeline.__call__

    def flaky(self, p, *args, **kwargs):
        if p == prompt:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        return real(self, p, *args, **kwargs)

    monkeypatch.setattr(pipeline.LongVideoPipeline, "__call__", flaky)


def sidecars(run_dir: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["prompt"]: json.loads(p.read_text()) for p in (run_dir / "videos").glob("*.json")}


def test_a_failing_video_is_recorded_and_the_job_goes_on(compose_cfg, tmp_path, monkeypatch, caplog, one_thread):
    cfg = small(compose_cfg, tmp_path, "prompts.list=[a cat,a dog,a fox]")
    fail_on(monkeypatch, "a dog")
    with pytest.raises(GenerationFailed) as info:
        run(cfg, tmp_path / "run")
    assert info.value.failed == ["001_a-dog_seed0"] and info.value.total == 3
    recs = sidecars(tmp_path / "run")
    assert recs["a cat"]["status"] == recs["a fox"]["status"] == "done"  # the video after the failure was made
    bad = recs["a dog"]
    assert bad["status"] == "failed" and bad["out_of_memory"] and "OutOfMemoryError" in bad["error"]
    assert "video" not in bad and not (tmp_path / "run" / "videos" / "001_a-dog_seed0.mp4").exists()
    assert (bad["num_frames"], bad["height"], bad["seed"], bad["method"]) == (8, 32, 0, "direct")  # its settings
    assert bad["job_key"] and any("flaky" in line for line in bad["traceback"])
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["status"] for x in lines) == ["done", "done", "failed"]

    monkeypatch.undo()  # the cause is gone: a re-run retries the failed video only
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "videos").glob("*.mp4")}
    with caplog.at_level(logging.INFO, logger="freelong"):
        run(cfg, tmp_path / "run")
    assert sum("skip" in m for m in caplog.messages) == 2
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "videos").glob("*.mp4")
            if p.name in mtimes} == mtimes
    assert {r["status"] for r in sidecars(tmp_path / "run").values()} == {"done"}


def test_a_stale_video_beside_a_failed_record_is_regenerated(compose_cfg, tmp_path, monkeypatch, one_thread):
    cfg = small(compose_cfg, tmp_path, "prompts.list=[a cat]")
    run(cfg, tmp_path / "run")
    side = tmp_path / "run" / "videos" / "000_a-cat_seed0.json"
    rec = json.loads(side.read_text())
    side.write_text(json.dumps({**rec, "status": "failed", "error": "RuntimeError: boom"}))  # same job_key, mp4 kept
    run(cfg, tmp_path / "run")
    assert json.loads(side.read_text())["status"] == "done"


@pytest.mark.slow  # a run.py subprocess (~20-30 s on a small shared CPU)
def test_the_cli_exits_non_zero_when_a_video_failed(tmp_path):
    code = (
        "import runpy, sys, torch\n"
        "import freelong.pipeline as p\n"
        "real = p.LongVideoPipeline.__call__\n"
        "def flaky(self, prompt, *a, **k):\n"
        "    if prompt == 'a dog':\n"
        "        raise torch.OutOfMemoryError('CUDA out of memory (simulated)')\n"
        "    return real(self, prompt, *a, **k)\n"
        "p.LongVideoPipeline.__call__ = flaky\n"
        "sys.argv = ['run.py'] + sys.argv[1:]\n"
        "runpy.run_path('run.py', run_name='__main__')\n"
    )
    args = ["num_inference_steps=1", "num_frames=8", "height=32", "width=32", "method=direct", "progress=false",
            "prompts.list=[a cat,a dog]", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=env)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "1 of 2 video(s) failed" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "run" / "videos" / "000_a-cat_seed0.mp4").is_file()
