"""logger=wandb offline: the files wandb writes hold the config, scores, table, videos and figures."""

from __future__ import annotations

import json

import numpy as np
import wandb
from eval_synthetic import smooth_frames

from freelong.app.wandb_logger import build_logger
from freelong.video_io import write_video


def _record(i, run_dir, scores):
    return {"video": f"videos/v{i}.mp4", "prompt": f"prompt {i}", "prompt_index": i, "seed": i, "model": "lavie_tiny",
            "random_init": True, "method": "freelong", "method_params": {"window": 16}, "num_frames": 6,
            "wall_time_s": 1.5 + i, "timings": {"median_step_s": 0.25 * (i + 1)}, "peak_memory_mb": 100.0,
            "scores": {**scores, "meta": {"label": "random-init", "random_init": True, "frames": 6}}}


def test_wandb_offline_run_files(compose_cfg, tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose_cfg("logger=wandb", f"logger.dir={tmp_path / 'wb'}", "logger.max_videos=1", "task_name=exp42",
                      "tags=[smoke]")
    logger = build_logger(cfg, run_dir)
    records = []
    for i in range(2):
        write_video(run_dir / f"videos/v{i}.mp4", smooth_frames(t=6, h=32, w=48, seed=i), fps=8)
        rec = _record(i, run_dir, {"subject_consistency": 0.9 + 0.01 * i, "temporal_flickering": 0.95,
                                   "imaging_quality": 50.0 + i})
        logger.log_video(rec, run_dir / rec["video"])
        records.append(rec)
    logger.finish(records)
    wandb.teardown()  # what process exit does: the wandb service flushes the offline run files

    (offline,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    (binary,) = offline.glob("run-*.wandb")
    data = binary.read_bytes()
    for needle in (b"exp42", b"random-init", b"smoke", b"lavie_tiny", b"num_frames", b"scores/subject_consistency"):
        assert needle in data, needle  # group, tags, config and per-video metrics are in the run record
    media = offline / "files" / "media"
    assert len(list((media / "videos").glob("*.mp4"))) == 1  # max_videos
    (per_video,) = (media / "table").glob("per_video_*.table.json")
    table = json.loads(per_video.read_text())
    sub = table["columns"].index("subject_consistency")
    assert [row[sub] for row in table["data"]] == [0.9, 0.91]
    (t1,) = (media / "table").glob("table1_*.table.json")
    t1 = json.loads(t1.read_text())
    assert t1["data"][0][t1["columns"].index("Method")] == "freelong"
    assert np.isclose(t1["data"][0][t1["columns"].index("Imaging")], 50.5)
    assert {p.name.split("_")[0] for p in (media / "images" / "figures").glob("*.png")} == {"scores", "time"}
    assert (run_dir / "figures" / "scores.png").is_file()
