"""``run.py ... parallel.context=2`` under ``torch.distributed.run`` on two CPU processes (tiny Wan, gloo).

Only rank 0 writes; a failure on rank 1 ends the job with one line and keeps the video already written; the same
command then resumes. Two launches of about 30-40 s each on a 2-core CPU: marked slow.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("parallel_run_worker.py")


def launch(run_dir: Path, fail: bool) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("FAIL_SECOND_VIDEO", None)
    if fail:
        env["FAIL_SECOND_VIDEO"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(WORKER), "model=wan_tiny", "method=fail_on_rank1", "parallel.context=2",
           "num_frames=33", "height=32", "width=48", "num_inference_steps=2", "progress=false",
           "prompts.list=[a red fox,a blue boat]", f"hydra.run.dir={run_dir}"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=ROOT)


@pytest.mark.slow
def test_rank1_failure_ends_job_in_one_line_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    first = launch(run_dir, fail=True)
    assert first.returncode != 0
    errors = [line for line in first.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, first.stderr[-3000:]  # rank 0, which lost its peer, says so without "error:"
    assert "rank 0 of 2 stopped: another rank ended the job" in first.stderr
    assert "rank 1 of 2 failed on video 001_" in errors[0] and "injected failure" in errors[0]
    videos = sorted(p.name for p in (run_dir / "videos").iterdir())
    assert videos == ["000_a-red-fox_seed0.json", "000_a-red-fox_seed0.mp4"], videos
    first_video = (run_dir / "videos" / "000_a-red-fox_seed0.mp4").stat().st_mtime_ns

    second = launch(run_dir, fail=False)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (run_dir / "videos" / "000_a-red-fox_seed0.mp4").stat().st_mtime_ns == first_video  # skipped, not redone
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["a red fox", "a blue boat"]
    assert all(r["status"] == "done" and r["parallel_context"] == 2 for r in records)
    assert sorted(p.name for p in (run_dir / "videos").iterdir()) == [
        "000_a-red-fox_seed0.json", "000_a-red-fox_seed0.mp4",
        "001_a-blue-boat_seed0.json", "001_a-blue-boat_seed0.mp4"]


# -- fast checks of parallel.context at compose time (no process group, nothing built) ------------------------
def test_parallel_context_defaults_to_one(compose_cfg):
    from freelong.app.config import validate_config

    cfg = compose_cfg("model=wan_tiny", "method=direct")
    assert cfg.parallel.context == 1
    validate_config(cfg)


@pytest.mark.parametrize(("overrides", "world", "message"), [
    (["model=lavie_tiny"], "2", r"parallel.context=2: model lavie_tiny \(family lavie\) cannot be split"),
    (["model=wan_tiny"], None, r"parallel.context=2 needs 2 processes, found 1: launch with python -m "
                               r"torch.distributed.run --nproc_per_node 2"),
    (["model=wan_tiny", "parallel.context=3"], "3", r"parallel.context=3 must divide the attention heads"),
    # 33 frames -> 9 latent frames x (32/16) x (48/16) = 54 tokens; 4 heads would pass, 54 % 4 does not
    (["model=wan_tiny", "model.unet.num_attention_heads=4", "model.unet.attention_head_dim=6", "parallel.context=4"],
     "4", r"parallel.context=4 must divide the number of latent tokens T'\*H'\*W' = 54"),
    (["model=wan_tiny", "experiment=snr_vs_length"], "2", r"parallel.context=2 splits generation; analysis.task="),
])
def test_bad_parallel_settings_are_one_line_naming_the_key(compose_cfg, monkeypatch, overrides, world, message):
    from freelong.app.config import validate_config

    if world is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world)
    cfg = compose_cfg("method=direct", "parallel.context=2", "num_frames=33", "height=32", "width=48", *overrides)
    with pytest.raises(ValueError, match=message):
        validate_config(cfg)
