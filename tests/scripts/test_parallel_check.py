"""scripts/parallel_check.py (gpu_check's multi-GPU section) on two CPU ranks with gloo: its code path and parity."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("direct,freelong:window=5,freelong_pp,freenoise:window=5:stride=2,sliding_window:window=5:stride=2,"
           "riflex:k=1")


@pytest.mark.slow
def test_parallel_check_on_two_cpu_ranks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "p.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(ROOT / "scripts" / "parallel_check.py"), "--model", "wan_tiny",
           "--widths", "config", "--frames", "33", "--height", "32", "--width", "48", "--time-frames", "33",
           "--time-dtype", "float32", "--repeats", "1", "--methods", METHODS, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ranks"] == 2 and len(report["parity"]) == 6 and len(report["timing"]) == 6
    assert all(r["rel_diff"] < 1e-5 for r in report["parity"]), report["parity"]
    assert all(r["one_step_call_s"] > 0 for r in report["timing"])
