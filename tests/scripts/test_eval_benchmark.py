"""scripts/eval_benchmark.py: the extrapolation units and one short run (no timing is asserted)."""

from __future__ import annotations

import json

import pytest

from scripts.eval_benchmark import main, units


def test_cost_units_per_dimension_follow_vbench_sampling():
    assert units("subject_consistency", 128) == 128
    assert units("motion_smoothness", 128) == 63  # 64 even frames -> 63 interpolated pairs
    assert units("motion_smoothness", 16) == 7
    assert units("dynamic_degree", 128, fps=8) == 127
    assert units("dynamic_degree", 128, fps=16) == 63  # every 2nd frame
    assert units("overall_consistency", 128) == 1


def test_short_run_writes_a_record(tmp_path, one_thread, capsys):
    out = tmp_path / "b.json"
    assert main(["--dims", "flicker", "--frames", "3", "--height", "32", "--width", "48", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    (row,) = rec["rows"]
    assert row["dimension"] == "temporal_flickering" and row["frames_scored"] == 128
    assert row["s_per_128f_video"] == pytest.approx(row["wall_s"])
    assert "| temporal_flickering |" in capsys.readouterr().out
