"""Runs of the video DiTs (their tiny twins, generated here through run.py's runner) in make_tables and the HTML
report: one table per model and length in video frames (not latent ones), each method's row with its own scores and
step time, the model's own method values in the records; the report's grid, captions, videos and run metadata."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from helpers import ReportPage, compose_config
from omegaconf import OmegaConf

from freelong.app.runner import run

pytestmark = pytest.mark.usefixtures("one_thread")

# tiny twin: 2x its native 21 frames (11 latent frames, past its 6-frame window), its own sampling size
MODELS = {"cogvideox_5b_tiny": "cogvideox", "hunyuanvideo_tiny": "hunyuanvideo", "wan2_2_ti2v_5b_tiny": "wan"}
FRAMES, LATENT = 41, 11
METHODS = ("direct", "freelong")


def records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dit_runs(tmp_path_factory) -> Path:
    """<root>/<model>/<method>: one video each, 1 step, scored with temporal_flickering (no network)."""
    root = tmp_path_factory.mktemp("dits")
    for model in MODELS:
        for method in METHODS:
            cfg = compose_config(f"model={model}", f"method={method}", f"num_frames={FRAMES}", "num_inference_steps=1",
                                 "progress=false", "device=cpu", "prompts.list=[a red fox]", "eval=fast",
                                 "eval.dims=[temporal_flickering]")
            OmegaConf.update(cfg, "paths.output_root", str(root))
            run(cfg, root / model / method)
    return root


def test_the_records_hold_video_frames_and_the_model_method_values(dit_runs):
    for model in MODELS:
        (rec,) = records(dit_runs / model / "freelong")
        assert (rec["model"], rec["family"], rec["num_frames"], rec["status"]) == (model, MODELS[model], FRAMES, "done")
        params = rec["method_params"]  # FreeLong with the model's own values (conf/model methods:)
        assert (params["window"], params["noise_stride"], params["local_only_levels"]) == (6, 2, [])
        assert 0 < rec["scores"]["temporal_flickering"] <= 1


def test_make_tables_has_one_table_per_model_in_video_frames(dit_runs, make_tables, tmp_path):
    out = tmp_path / "tables"
    r = make_tables([dit_runs, "--include-random-init", "--out-dir", out])
    assert r.returncode == 0, r.stderr
    for model in MODELS:
        assert f"Table 1 — RANDOM-INIT {model}, {FRAMES} frames (smoke test" in r.stdout
        assert f"{model}, {LATENT} frames" not in r.stdout
        table = pd.read_csv(out / f"table1_random_init_{model}_{FRAMES}_frames.csv").set_index("Method")
        assert list(table.index) == list(METHODS) and (table["n"] == 1).all()
        assert set(table["family"]) == {MODELS[model]}
        for method in METHODS:
            (rec,) = records(dit_runs / model / method)
            assert table.loc[method, "Flicker"] == pytest.approx(100 * rec["scores"]["temporal_flickering"])
            assert table.loc[method, "Time (s/step)"] == pytest.approx(rec["timings"]["median_step_s"])
            assert json.loads(table.loc[method, "method_params"]) == rec["method_params"]
            assert math.isnan(table.loc[method, "paper Sub"])  # the paper's LaVie numbers are not beside DiTs
    assert len(list(out.glob("table1_*.csv"))) == len(MODELS)


def test_report_shows_every_dit_run(dit_runs, make_tables, tmp_path):
    from analysis.report import build_report

    page = ReportPage(build_report([dit_runs], tmp_path / "report").read_text())
    for model in MODELS:
        table = page.table(f"RANDOM-INIT {model}, {FRAMES} frames")
        assert page.column(table, "Method", values=False) == list(METHODS)
        flicker = [100 * records(dit_runs / model / m)[0]["scores"]["temporal_flickering"] for m in METHODS]
        assert page.column(table, "Flicker") == pytest.approx(flicker)
    (grid,) = page.grids  # one prompt: one section, a column per (model, method)
    assert grid[0] == "seed" and len(grid) == 1 + len(MODELS) * len(METHODS)
    for model in MODELS:
        assert sorted(c.split(" (")[0] for c in grid[1:] if f"model={model}" in c) == sorted(METHODS), grid
    assert len(page.captions) == len(MODELS) * len(METHODS)
    for model in MODELS:
        assert sum(f"{model} · {FRAMES}f" in c for c in page.captions) == len(METHODS), page.captions
    assert [int(v["data-frames"]) for v in page.videos] == [FRAMES] * len(page.captions)  # decoded video frames
    assert len(page.runs) == len(MODELS) * len(METHODS)
    for run_dir, fields in page.runs.items():
        model, method = Path(run_dir).parts[-2:]
        assert (fields["model"], fields["methods"], fields["videos"]) == (model, method, "1")
        assert fields["weights"] == "random-init"


@pytest.mark.slow
@pytest.mark.parametrize("model,size", [("cogvideox_5b", "height=32 width=48"), ("hunyuanvideo", "height=32 width=48"),
                                        ("wan2_2_ti2v_5b", "height=64 width=96"),
                                        ("wan2_2_t2v_a14b", "height=32 width=48")])
def test_the_4x_sweep_of_the_tiny_twin_tables_and_report(model, size, tmp_path):
    """``python run.py experiment=<model>_4x model=<model>_tiny ...`` (the documented smoke run, Hydra multirun): six
    methods in six job dirs, make_tables' table of them at 81 frames, the sweep's report (report=true)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "run.py", f"experiment={model}_4x", f"model={model}_tiny", "num_frames=81", *size.split(),
           "num_inference_steps=1", "dtype=float32", "eval.dims=[temporal_flickering]", "device=cpu",
           "progress=false", "prompts.list=[a red fox]", "report=true", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    swept = ["direct", "sliding_window", "freenoise", "freelong", "freelong_pp", "riflex"]
    out = tmp_path / "tables"
    tables = subprocess.run([sys.executable, "scripts/make_tables.py", str(sweep), "--include-random-init",
                             "--out-dir", str(out)], cwd=root, capture_output=True, text=True)
    assert tables.returncode == 0, tables.stderr
    table = pd.read_csv(out / f"table1_random_init_{model}_tiny_81_frames.csv")
    assert sorted(table["method"]) == sorted(swept) and (table["n"] == 1).all()
    assert table["Flicker"].notna().all()
    page = ReportPage((sweep / "report" / "index.html").read_text())
    assert page.column(page.table(f"RANDOM-INIT {model}_tiny, 81 frames"), "Method", values=False) == \
        list(table["Method"])
    assert [int(v["data-frames"]) for v in page.videos] == [81] * len(swept)
