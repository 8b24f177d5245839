"""scripts/benchmark.py --loop: whole videos per method; the denoiser frame-evaluations are exact counts."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # ~1 min: whole FIFO video


def test_loop_mode_counts_frame_evaluations(tmp_path):
    from scripts.benchmark import main

    out = main(["--loop", "--model", "videocrafter2_tiny", "--frames", "17", "--height", "32", "--width", "32",
                "--methods", "direct,gen_l_video:stride=4,fifo:num_partitions=1:lookahead=false,freeinit:num_iters=2",
                "--sampling-steps", "2", "--threads", "1", "--json", str(tmp_path / "b.json")])
    rows = {r["method"].split(":")[0]: r for r in out["loop"]}
    cfg = 2  # VideoCrafter2: cond and uncond are separate calls
    assert rows["direct"]["frame_evals"] == 2 * cfg * 17
    assert rows["gen_l_video"]["frame_evals"] == 2 * 2 * cfg * 16  # views [0, 16) and [1, 17)
    # FIFO (window 16, 1 partition): a 16-step base video of 16 frames, then 17 + 16 - 16 queue iterations
    assert rows["fifo"]["frame_evals"] == 16 * cfg * 16 + 17 * cfg * 16
    assert rows["freeinit"]["frame_evals"] == 2 * rows["direct"]["frame_evals"]
    assert rows["freeinit"]["x_direct_evals"] == 2.0 and all(r["peak_mb"] > 0 for r in rows.values())
    assert (tmp_path / "b.json").is_file()
