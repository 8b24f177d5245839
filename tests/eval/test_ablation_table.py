"""make_tables.py on a FreeLong branch sweep: the Fig. 6 ablation table, values from the definition."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

FAST = ("temporal_flickering", "subject_consistency", "background_consistency", "aesthetic_quality",
        "imaging_quality")
BRANCHES = ("blend", "global", "local", "sum", "low_global", "high_local")


def _record(branch, rng, random_init=False, frames=128, model="lavie", extra=None):
    scores = {d: float(rng.uniform(40, 70) if d == "imaging_quality" else rng.uniform(0.8, 1)) for d in FAST}
    params = {"window": 16, "d_s": 0.25, **(extra or {})}
    if branch is not None:
        params["branch"] = branch
    return {"video": "videos/v.mp4", "model": model, "random_init": random_init, "method": "freelong",
            "method_params": params, "num_frames": frames, "timings": {"median_step_s": float(rng.uniform(1, 3))},
            "scores": {**scores, "meta": {"frames": frames, "random_init": random_init}}}


def _write(run_dir, records):
    run_dir.mkdir(parents=True)
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))



def _expected(records):
    """Cells from the definition: pair-weighted consistency (equal lengths here: the mean), 0-100 imaging as is."""
    out = {}
    for dim, col in (("subject_consistency", "Sub"), ("background_consistency", "Back"),
                     ("temporal_flickering", "Flicker"), ("aesthetic_quality", "Aesthetic")):
        out[col] = 100 * np.mean([r["scores"][dim] for r in records])
    out["Imaging"] = np.mean([r["scores"]["imaging_quality"] for r in records])
    out["n"] = len(records)
    return out


def test_ablation_table_rows_are_the_variants_with_their_numbers(tmp_path, make_tables):
    rng = np.random.default_rng(0)
    runs = {b: [_record(b, rng) for _ in range(2 if b == "blend" else 1)] for b in BRANCHES}
    runs["blend"].append(_record(None, rng))  # a run from before branch modes existed is FreeLong (blend)
    for i, recs in enumerate(runs.values()):
        _write(tmp_path / "sweep" / str(i), recs)
    proc = make_tables([tmp_path / "sweep", "--out-dir", tmp_path / "t"])  # detected without a flag
    assert proc.returncode == 0, proc.stderr
    assert "Ablation (FreeLong Fig. 6), our measurement — lavie, 128 frames" in proc.stdout
    assert "no numbers" in proc.stdout and "Table 1" not in proc.stdout
    table = pd.read_csv(tmp_path / "t" / "ablation_lavie_128_frames.csv")
    assert table["branch"].tolist() == ["global", "local", "sum", "low_global", "high_local", "blend"]
    assert table["Variant"].tolist()[-1] == "FreeLong (blend)"
    assert "Motion" not in table  # eval=fast has no motion smoothness: no empty column
    for _, row in table.iterrows():
        for col, value in _expected(runs[row["branch"]]).items():
            assert row[col] == pytest.approx(value, rel=1e-9), (row["branch"], col)
    assert (tmp_path / "t" / "ablation_lavie_128_frames.tex").read_text().count("FreeLong (blend)") == 1


def test_ablation_keeps_random_init_apart_and_other_parameters_in_labels(tmp_path, make_tables):
    rng = np.random.default_rng(1)
    _write(tmp_path / "a", [_record(b, rng, extra={"d_s": d}) for b in ("blend", "global") for d in (0.25, 0.5)])
    _write(tmp_path / "smoke", [_record(b, rng, random_init=True, frames=32, model="lavie_tiny") for b in BRANCHES])
    proc = make_tables([tmp_path, "--out-dir", tmp_path / "t", "--include-random-init"])
    assert proc.returncode == 0, proc.stderr
    assert "our measurement — RANDOM-INIT lavie_tiny, 32 frames" in proc.stdout
    real = pd.read_csv(tmp_path / "t" / "ablation_lavie_128_frames.csv")
    assert real["Variant"].tolist() == ["global only (d_s=0.25)", "global only (d_s=0.5)",
                                        "FreeLong (blend) (d_s=0.25)", "FreeLong (blend) (d_s=0.5)"]
    assert (real["n"] == 1).all()
    # without a branch sweep, the same script prints Table 1; --ablation forces the ablation view
    _write(tmp_path / "plain", [_record("blend", rng)])
    assert "Table 1" in make_tables([tmp_path / "plain", "--out-dir", tmp_path / "t2"]).stdout
    forced = make_tables([tmp_path / "plain", "--out-dir", tmp_path / "t3", "--ablation"])
    assert forced.returncode == 0 and "Ablation (FreeLong Fig. 6)" in forced.stdout
    direct = _record("blend", rng)
    direct.update(method="direct", method_params={})
    _write(tmp_path / "direct", [direct])
    mixed = make_tables([tmp_path / "a", tmp_path / "direct", "--out-dir", tmp_path / "t4"])
    assert mixed.returncode == 0 and "leaves out 1 video(s) of other methods" in mixed.stderr


@pytest.mark.slow
def test_ablation_experiment_smoke_run_on_the_tiny_models(tmp_path):
    """The whole chain: experiment=ablation_fig6 (tiny models, eval=fast) -> make_tables -> analysis.frames."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sweep = tmp_path / "sweep"
    res = subprocess.run([sys.executable, "run.py", "experiment=ablation_fig6", "model=lavie_tiny", "num_frames=16",
                          "method.window=8", "height=32", "width=32", "num_inference_steps=1", "progress=false",
                          f"hydra.sweep.dir={sweep}"], cwd=root, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.jsonl"))]
    assert sorted(r["method_params"]["branch"] for r in records) == sorted(BRANCHES)
    assert all(r["random_init"] and "temporal_flickering" in r["scores"] for r in records)
    tables = subprocess.run([sys.executable, "scripts/make_tables.py", str(sweep), "--include-random-init",
                             "--out-dir", str(tmp_path / "t")], cwd=root, capture_output=True, text=True, timeout=300)
    assert tables.returncode == 0, tables.stderr
    assert "our measurement — RANDOM-INIT lavie_tiny, 16 frames" in tables.stdout
    assert len(pd.read_csv(tmp_path / "t" / "ablation_random_init_lavie_tiny_16_frames.csv")) == 6
    frames = subprocess.run([sys.executable, "-m", "analysis.frames", str(sweep), "--every", "4"], cwd=root,
                            capture_output=True, text=True, timeout=300)
    assert frames.returncode == 0, frames.stderr
    assert len(list((sweep / "frames").glob("frames_*.p*"))) == 2
