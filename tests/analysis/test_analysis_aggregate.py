"""Sweep aggregation: a real tiny 2x2 Hydra multirun, and a hand-built sweep with known scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from analysis.aggregate import aggregate, collect, main

REPO = Path(__file__).resolve().parents[2]


def test_tiny_2x2_multirun_is_collected_into_one_table(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", "experiment=sweep_tiny", f"hydra.sweep.dir={sweep}",
         f"paths.output_root={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = aggregate(sweep)
    df = res["table"]
    assert len(df) == 4 and df["job"].nunique() == 4
    assert res["swept"] == ["method.d_s", "method.d_t"]
    # the parameters read from each job's overrides + resolved config agree with what the job recorded
    assert (df["param:method.d_s"] == df["method_params.d_s"]).all()
    assert (df["param:method.d_t"] == df["method_params.d_t"]).all()
    assert sorted(zip(df["param:method.d_s"], df["param:method.d_t"])) == [
        (0.25, 0.25), (0.25, 0.5), (0.5, 0.25), (0.5, 0.5)]
    # no eval in the tiny sweep: the cost columns are the metrics; one video per cell, so mean = the value
    assert res["metrics"] == ["wall_time_s", "timings.median_step_s", "peak_memory_mb"]
    summary = res["summary"].set_index(["param:method.d_s", "param:method.d_t"])
    for row in df.to_dict("records"):
        cell = summary.loc[(str(row["param:method.d_s"]), str(row["param:method.d_t"]))]
        assert cell["wall_time_s:mean"] == pytest.approx(row["wall_time_s"])
        assert cell["wall_time_s:count"] == 1
    table = res["heatmap"]["wall_time_s"]
    assert table.shape == (2, 2) and table.loc[0.5, 0.25] == pytest.approx(
        df[(df["param:method.d_s"] == 0.5) & (df["param:method.d_t"] == 0.25)]["wall_time_s"].item())
    out = sweep / "aggregate"
    for name in ("runs.csv", "summary.csv", "heatmap.csv", "metrics_vs_params.png", "metrics_vs_params.pdf",
                 "heatmap.png", "heatmap.pdf"):
        assert (out / name).stat().st_size > 0, name


def _fake_job(root: Path, num: int, overrides: list[str], cfg: dict, records: list[dict]) -> None:
    job = root / f"{num}_job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / "config.yaml").write_text(yaml.safe_dump(cfg))
    (job / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_hand_built_sweep_with_seeds_gives_exact_means(tmp_path):
    # method.window x seed, two prompts per job; score = window/100 + seed/10 + prompt_index/1000
    num = 0
    for window in (8, 16):
        for seed in (0, 1):
            cfg = {"seed": seed, "method": {"name": "freelong", "window": window}}
            recs = [{"prompt_index": p, "seed": seed, "method": "freelong", "random_init": False,
                     "scores": {"subject_consistency": window / 100 + seed / 10 + p / 1000}, "wall_time_s": 1.0}
                    for p in (0, 1)]
            _fake_job(tmp_path, num, [f"method.window={window}", f"seed={seed}", "experiment=x"], cfg, recs)
            num += 1
    df, swept = collect(tmp_path)
    assert swept == ["method.window"]  # seed is a replicate, experiment is ignored
    res = aggregate(tmp_path, out=tmp_path / "agg")
    assert res["metrics"] == ["scores.subject_consistency"]
    s = res["summary"].set_index("param:method.window")
    for window in (8, 16):
        vals = [window / 100 + seed / 10 + p / 1000 for seed in (0, 1) for p in (0, 1)]
        mean = sum(vals) / 4
        std = (sum((v - mean) ** 2 for v in vals) / 3) ** 0.5
        assert s.loc[str(window), "scores.subject_consistency:mean"] == pytest.approx(mean)
        assert s.loc[str(window), "scores.subject_consistency:std"] == pytest.approx(std)
        assert s.loc[str(window), "scores.subject_consistency:count"] == 4
    assert "heatmap" not in res and (tmp_path / "agg" / "metrics_vs_params.png").is_file()


def test_group_overrides_and_cli_errors(tmp_path, capsys):
    for i, name in enumerate(("direct", "freelong")):
        _fake_job(tmp_path, i, [f"method={name}"], {"method": {"name": name}},
                  [{"scores": {"imaging_quality": 0.5 + i}, "method": name}])
    res = aggregate(tmp_path)
    assert res["swept"] == ["method"] and list(res["table"]["param:method"]) == ["direct", "freelong"]
    assert main([str(tmp_path), "--metrics", "imaging_quality"]) == 0
    assert main([str(tmp_path), "--metrics", "nope"]) == 2
    assert "metric 'nope' not in the results" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2
