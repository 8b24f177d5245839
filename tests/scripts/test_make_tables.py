"""scripts/make_tables.py: Table 1 numbers equal independently computed aggregates of synthetic runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from eval.tables import PAPER_TABLE1

DIMS = ("subject_consistency", "background_consistency", "motion_smoothness", "temporal_flickering",
        "imaging_quality")


# FreeLong (NeurIPS 2024) Table 1, copied by hand from the paper; never imported.
PAPER_ROWS = {
    "direct": {"Sub": 88.95, "Back": 93.23, "Motion": 92.77, "Flicker": 91.44, "Imaging": 64.76, "Time": 1.8},
    "sliding_window": {"Sub": 85.80, "Back": 92.83, "Motion": 95.79, "Flicker": 94.00, "Imaging": 66.57, "Time": 2.6},
    "freenoise": {"Sub": 92.30, "Back": 95.87, "Motion": 96.32, "Flicker": 94.94, "Imaging": 67.14, "Time": 2.6},
    "freelong": {"Sub": 95.16, "Back": 96.80, "Motion": 96.85, "Flicker": 96.04, "Imaging": 67.55, "Time": 2.2},
}


def _record(model, method, params, frames, step_s, scores, random_init=False):
    return {"video": f"videos/{method}.mp4", "model": model, "random_init": random_init, "method": method,
            "method_params": params, "num_frames": frames, "timings": {"median_step_s": step_s},
            "wall_time_s": 10 * step_s, "scores": {**scores, "meta": {"frames": scores.pop("_frames", frames),
                                                                        "random_init": random_init}}}


def _scores(rng, frames=None):
    s = {"subject_consistency": rng.uniform(0.8, 1), "background_consistency": rng.uniform(0.8, 1),
         "motion_smoothness": rng.uniform(0.9, 1), "temporal_flickering": rng.uniform(0.9, 1),
         "imaging_quality": rng.uniform(40, 70)}
    if frames:
        s["_frames"] = frames
    return s


def _write(run_dir, records):
    run_dir.mkdir(parents=True)
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture()
def runs(tmp_path):
    rng = np.random.default_rng(0)
    fl = {"window": 16, "d_s": 0.25}
    lavie = [
        _record("lavie", "direct", {}, 128, 1.5, _scores(rng, frames=128)),
        _record("lavie", "direct", {}, 128, 2.5, _scores(rng, frames=64)),  # different length: pair weighting
        _record("lavie", "freelong", fl, 128, 2.0, _scores(rng)),
        _record("lavie", "freelong", fl, 128, 2.2, _scores(rng)),
        _record("lavie", "freelong", fl, 128, 2.4, _scores(rng)),
    ]
    sweep = [_record("lavie", "sliding_window", {"window": w, "stride": 4}, 128, 3.0, _scores(rng)) for w in (8, 16)]
    vc2 = [_record("videocrafter2", "freenoise", {"window": 16}, 64, 4.0, _scores(rng))]
    smoke = [_record("lavie_tiny", "freelong", fl, 32, 0.1, _scores(rng), random_init=True)]
    _write(tmp_path / "runs" / "a", lavie)
    _write(tmp_path / "runs" / "sweep" / "0", sweep)
    _write(tmp_path / "runs" / "vc2", vc2)
    _write(tmp_path / "smoke", smoke)
    return tmp_path, lavie, sweep, vc2


def _expected(records) -> dict[str, float]:
    """Table 1 cell values computed from the definition: VBench's overall per dimension, in percent."""
    sc = [r["scores"] for r in records]
    pairs = np.array([s["meta"]["frames"] - 1 for s in sc], float)
    out = {}
    for dim, col in zip(DIMS, ("Sub", "Back", "Motion", "Flicker", "Imaging")):
        v = np.array([s[dim] for s in sc])
        if dim in ("subject_consistency", "background_consistency"):
            out[col] = (v * pairs).sum() / pairs.sum() * 100
        elif dim == "imaging_quality":
            out[col] = v.mean()
        else:
            out[col] = v.mean() * 100
    out["Time (s/step)"] = float(np.median([r["timings"]["median_step_s"] for r in records]))
    return out



def test_table1_values_reference_and_compare(runs, make_tables):
    root, lavie, sweep, vc2 = runs
    proc = make_tables([root / "runs", "--out-dir", root / "tables", "--compare"])
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(root / "tables" / "table1_lavie_128_frames.csv")
    assert table["Method"].tolist() == ["direct", "sliding_window (window=8)", "sliding_window (window=16)",
                                        "freelong"]
    rows = {"direct": lavie[:2], "freelong": lavie[2:], "sliding_window (window=8)": sweep[:1],
            "sliding_window (window=16)": sweep[1:]}
    for method, records in rows.items():
        row = table.set_index("Method").loc[method]
        for col, value in _expected(records).items():
            assert row[col] == pytest.approx(value, rel=1e-9), (method, col)
        assert row["n"] == len(records)
    fl = table.set_index("Method").loc["freelong"]
    for method in rows:  # every LaVie row carries the paper's literal numbers
        row = table.set_index("Method").loc[method]
        for col in ("Sub", "Back", "Motion", "Flicker", "Imaging"):
            paper = PAPER_ROWS[method.split(" ")[0]][col]
            assert row[f"paper {col}"] == paper
            assert row[f"Δ {col}"] == pytest.approx(row[col] - paper)
    # the other backbone gets its own table, without the paper's (LaVie) reference
    other = pd.read_csv(root / "tables" / "table1_videocrafter2_64_frames.csv")
    assert other["Method"].tolist() == ["freenoise"] and other["paper Sub"].isna().all()
    assert other.loc[0, "Sub"] == pytest.approx(_expected(vc2)["Sub"])
    assert (root / "tables" / "table1_lavie_128_frames.tex").read_text().count("freelong") == 1
    assert f"| freelong | {fl['Sub']:.2f} | {fl['Back']:.2f} |" in proc.stdout
    assert "95.16/96.8/96.85/96.04/67.55/2.2" in proc.stdout


def test_paper_table1_rows_are_the_papers_numbers():
    assert PAPER_TABLE1 == PAPER_ROWS


def test_freenoise_row_carries_the_paper_numbers(tmp_path, make_tables):
    rng = np.random.default_rng(1)
    _write(tmp_path / "fn", [_record("lavie", "freenoise", {"window": 16, "stride": 4}, 128, 2.0, _scores(rng))])
    assert make_tables([tmp_path / "fn", "--out-dir", tmp_path / "t", "--compare"]).returncode == 0
    row = pd.read_csv(tmp_path / "t" / "table1_lavie_128_frames.csv").set_index("Method").loc["freenoise"]
    assert [row[f"paper {c}"] for c in ("Sub", "Back", "Motion", "Flicker", "Imaging")] == \
        [92.30, 95.87, 96.32, 94.94, 67.14]


def test_random_init_runs_are_never_mixed_in(runs, make_tables):
    root, *_ = runs
    proc = make_tables([root / "runs", root / "smoke", "--out-dir", root / "t1"])
    assert proc.returncode == 0 and "leaving out 1 video(s) from random-init" in proc.stderr
    assert not any("random" in p.name for p in (root / "t1").iterdir())
    proc = make_tables([root / "smoke", "--out-dir", root / "t2"])
    assert proc.returncode == 1 and "only random-init" in proc.stderr
    proc = make_tables([root / "runs", root / "smoke", "--out-dir", root / "t3", "--include-random-init"])
    assert proc.returncode == 0 and "RANDOM-INIT lavie_tiny, 32 frames" in proc.stdout
    smoke = pd.read_csv(root / "t3" / "table1_random_init_lavie_tiny_32_frames.csv")
    real = pd.read_csv(root / "t3" / "table1_lavie_128_frames.csv")
    assert len(smoke) == 1 and smoke["random_init"].all() and not real["random_init"].any()


def _long_record(method, units: dict[str, list[dict]]):
    """A run record scored under eval.protocol=long: per-dimension unit records in meta.long."""
    scores = {d: float(np.mean([u["value"] for u in us])) for d, us in units.items()}
    rec = _record("lavie", method, {}, 128, 2.0, scores)
    rec["scores"]["meta"].update({"protocol": "long", "long": {"units": units}})
    return rec


def test_long_protocol_table_reaggregates_units_and_refuses_mixing(runs, make_tables, tmp_path):
    root, *_ = runs
    # two videos of two scenes each (8 clips per scene): VBench-Long's overall = mean over all units
    a = {"subject_consistency": [{"value": 0.9, "clips": 4, "sim": 54.0, "pairs": 60},
                                 {"value": 0.8, "clips": 4, "sim": 48.0, "pairs": 60}],
         "imaging_quality": [{"value": 60.0, "clips": 4}, {"value": 70.0, "clips": 4}],
         "overall_consistency": [{"value": 0.25, "clips": 1}, {"value": 0.2, "clips": 1}]}
    b = {"subject_consistency": [{"value": 0.7, "clips": 8, "sim": 84.0, "pairs": 120}],
         "imaging_quality": [{"value": 50.0, "clips": 8}],
         "overall_consistency": [{"value": 0.3, "clips": 2}]}
    # single-clip units only: subject is VBench's pair-weighted value
    c = {"subject_consistency": [{"value": 0.9, "clips": 1, "sim": 13.5, "pairs": 15}],
         "imaging_quality": [{"value": 40.0, "clips": 1}]}
    d = {"subject_consistency": [{"value": 0.5, "clips": 1, "sim": 2.5, "pairs": 5}],
         "imaging_quality": [{"value": 80.0, "clips": 1}]}
    _write(root / "long", [_long_record("freelong", a), _long_record("freelong", b), _long_record("direct", c),
                           _long_record("direct", d)])
    proc = make_tables([root / "long", "--protocol", "long", "--out-dir", root / "tl"])
    assert proc.returncode == 0, proc.stderr
    assert "VBench-Long protocol" in proc.stdout and "Overall" in proc.stdout
    table = pd.read_csv(root / "tl" / "table1_lavie_128_frames_long.csv").set_index("method")
    assert table.at["freelong", "Sub"] == pytest.approx((0.9 + 0.8 + 0.7) / 3 * 100)
    assert table.at["freelong", "Imaging"] == pytest.approx((60 + 70 + 50) / 3)
    assert table.at["freelong", "Overall"] == pytest.approx((0.25 + 0.2 + 0.3) / 3 * 100)
    assert table.at["direct", "Sub"] == pytest.approx((13.5 + 2.5) / (15 + 5) * 100)
    assert set(table["Protocol"]) == {"VBench-Long protocol"}
    # the standard runs are refused under --protocol long, and mixing both is refused either way
    proc = make_tables([root / "runs", "--protocol", "long", "--out-dir", root / "t4"])
    assert proc.returncode == 2 and "--protocol standard" in proc.stderr
    proc = make_tables([root / "runs", root / "long", "--out-dir", root / "t5"])
    assert proc.returncode == 2 and "one protocol only" in proc.stderr and not (root / "t5").exists()


def test_report_table1_keeps_protocols_apart():
    """The HTML report's Table 1 (analysis.report.table1): one block per protocol; the VBench-Long block has
    no paper reference and its numbers are the re-aggregated units, never averaged with standard runs."""
    from analysis.report import table1

    std = _record("lavie", "freelong", {}, 128, 2.0, {"subject_consistency": 0.95})
    long = _long_record("freelong", {"subject_consistency": [{"value": 0.9, "clips": 4, "sim": 54.0, "pairs": 60},
                                                             {"value": 0.6, "clips": 4, "sim": 36.0, "pairs": 60}]})
    blocks = table1([{**std, "run_dir": "a"}, {**long, "run_dir": "b"}])
    assert [b["title"] for b in blocks] == ["lavie, 128 frames — VBench-Long protocol", "lavie, 128 frames"]
    by_title = {b["title"]: dict(zip(b["columns"], b["rows"][0])) for b in blocks}
    long_row, std_row = by_title["lavie, 128 frames — VBench-Long protocol"], by_title["lavie, 128 frames"]
    assert long_row["Sub"][1] == pytest.approx((0.9 + 0.6) / 2 * 100) and long_row["n"][1] == 1
    assert std_row["Sub"][1] == pytest.approx(95.0) and std_row["n"][1] == 1
    assert not any(c.startswith("Paper") for c in by_title["lavie, 128 frames — VBench-Long protocol"])
    assert any(c.startswith("Paper") for c in by_title["lavie, 128 frames"])
    assert blocks[0]["note"] == "" and blocks[1]["note"]
