"""make_tables: the Wan2.1 4x rows in FreeLOC's columns beside FreeLOC's published values (papers.md §2.3)."""

import json

import numpy as np


def _rec(method, frames, sc, aq, dd, eval_frames=321, model="wan2_1_t2v_1_3b", random_init=False):
    scores = {"subject_consistency": sc, "background_consistency": sc, "motion_smoothness": 0.99,
              "imaging_quality": 60.0, "aesthetic_quality": aq, "dynamic_degree": dd,
              "meta": {"frames": eval_frames, "random_init": random_init}}
    return {"video": f"v/{method}.mp4", "model": model, "random_init": random_init, "method": method,
            "method_params": {}, "num_frames": frames, "timings": {"median_step_s": 1.0}, "scores": scores}


def test_freeloc_rows_beside_ours(tmp_path, capsys):
    from scripts.make_tables import main

    recs = [_rec("direct", 321, 0.9, 0.5, True, eval_frames=321), _rec("direct", 321, 0.8, 0.4, False, eval_frames=161),
            _rec("riflex", 321, 0.95, 0.45, False), _rec("freelong", 81, 0.99, 0.6, True)]
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main([str(run), "--out-dir", str(tmp_path / "tables")]) == 0
    out = capsys.readouterr().out
    assert "FreeLOC protocol" in out and "FreeLOC (CVPR 2026)" in out
    from eval.tables import freeloc_table, records_frame
    from freelong.app.records import read_results

    table = freeloc_table(records_frame(read_results([run]))).set_index("Method")
    assert list(table.index) == ["direct", "riflex"]  # 81-frame rows are not the 4x protocol
    # subject consistency is weighted by frame pairs (VBench): (0.9*320 + 0.8*160) / 480
    assert np.isclose(table.at["direct", "SC"], (0.9 * 320 + 0.8 * 160) / 480 * 100)
    assert np.isclose(table.at["direct", "AQ"], 45.0) and np.isclose(table.at["direct", "DD"], 50.0)
    assert table.at["direct", "FreeLOC (SC/BC/MS/IQ/AQ/DD)"] == "98.5/97.89/98.83/59.21/49.43/4.32"
    assert table.at["riflex", "FreeLOC (SC/BC/MS/IQ/AQ/DD)"] == "98.41/97.87/98.86/59.92/49.67/4.45"
    assert (tmp_path / "tables" / "wan_4x_freeloc.csv").is_file()


def test_freeloc_reference_holds_the_published_rows():
    from eval.tables import FREELOC_WAN_4X

    assert FREELOC_WAN_4X["sliding_window"] == {"SC": 96.15, "BC": 95.92, "MS": 98.54, "IQ": 65.64, "AQ": 54.04,
                                                "DD": 39.81}
    assert FREELOC_WAN_4X["freenoise"]["DD"] == 35.11 and FREELOC_WAN_4X["freelong"]["AQ"] == 54.56
    assert FREELOC_WAN_4X["freeloc"]["AQ"] == 61.21
