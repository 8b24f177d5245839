"""Tables with sampling-loop methods: they sort after the attention-level methods, FreeInit's nested record
(inner method + its parameters) tells variants apart, and a per-video denoising time column appears."""

from __future__ import annotations

import json

from eval.tables import VIDEO_TIME_COLUMN, aggregate, display_frame, records_frame, split_tables


def _rec(method, params, denoise_s, step_s=1.0):
    scores = {"subject_consistency": 0.9, "background_consistency": 0.9, "motion_smoothness": 0.95,
              "temporal_flickering": 0.95, "imaging_quality": 60.0, "meta": {"frames": 64}}
    return {"video": f"v/{method}.mp4", "model": "videocrafter2", "random_init": False, "method": method,
            "method_params": params, "num_frames": 64, "timings": {"median_step_s": step_s, "denoise_s": denoise_s},
            "scores": scores}


def test_loop_methods_in_table1(tmp_path):
    fi = lambda inner, ip: {"inner": inner, "inner_params": ip, "num_iters": 3, "filter": "butterworth"}  # noqa: E731
    recs = [_rec("fifo", {"num_partitions": 4}, 90.0), _rec("direct", {}, 20.0), _rec("direct", {}, 22.0),
            _rec("freeinit", fi("direct", {}), 63.0), _rec("freeinit", fi("freelong", {"window": 16}), 70.0),
            _rec("gen_l_video", {"window": 16, "stride": 4}, 75.0)]
    table = aggregate(records_frame(recs))
    (title, block), = split_tables(table)
    shown = display_frame(block, reference=False)
    assert list(shown["Method"]) == ["direct", "gen_l_video", "fifo", "freeinit (inner=direct, inner_params={})",
                                     "freeinit (inner=freelong, inner_params={'window': 16})"]
    assert list(shown[VIDEO_TIME_COLUMN]) == [21.0, 75.0, 90.0, 63.0, 70.0]
    params = block.loc[block["Method"].str.contains("freelong"), "method_params"].iloc[0]
    assert json.loads(params)["inner"] == "freelong"
    plain = display_frame(aggregate(records_frame([_rec("direct", {}, 20.0)])), reference=False)
    assert VIDEO_TIME_COLUMN not in plain  # tables without loop methods keep their columns
