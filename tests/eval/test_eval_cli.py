"""``python -m eval``: VBench JSON + CSV layout, decode-once scoring, failure isolation, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from eval_synthetic import smooth_frames, transparent_gif

from eval.cli import main
from eval.temporal_flickering import flicker_score
from eval.video import load_video
from freelong.video_io import write_video


@pytest.fixture()
def video_dir(tmp_path):
    d = tmp_path / "videos"
    write_video(d / "a-0.mp4", smooth_frames(t=5, h=40, w=64), fps=8)
    write_video(d / "b-0.mp4", smooth_frames(t=3, h=40, w=64, seed=5), fps=8)
    transparent_gif(d / "c-0.gif")
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 4)
    return d


def test_cli_scores_folder_isolates_corrupt_file_and_writes_vbench_layout(video_dir, tmp_path, capsys):
    out = tmp_path / "res" / "results.json"
    rc = main([str(video_dir), "--dims", "flicker,sub", "--out", str(out), "--random-init", "--device", "cpu",
               "--no-progress", "--batch-size", "2"])
    assert rc == 0
    results = json.loads(out.read_text())
    assert list(results) == ["temporal_flickering", "subject_consistency"]
    paths = [str(video_dir / n) for n in ("a-0.mp4", "b-0.mp4", "broken.mp4", "c-0.gif")]
    for _overall, entries in results.values():
        assert [e["video_path"] for e in entries] == paths
        bad = entries[2]
        assert bad["video_results"] is None and "broken.mp4" in bad["error"]
        assert all(isinstance(e["video_results"], float) for i, e in enumerate(entries) if i != 2)
    # overall: flicker = mean over the readable videos; subject = pair-weighted (4, 2 and 1 frame pairs)
    flick = [e["video_results"] for e in results["temporal_flickering"][1] if e["video_results"] is not None]
    assert results["temporal_flickering"][0] == pytest.approx(np.mean(flick))
    expected = [flicker_score(load_video(p).frames) for p in (paths[0], paths[1], paths[3])]
    assert flick == pytest.approx(expected, abs=0)
    sub = [e for e in results["subject_consistency"][1] if e["video_results"] is not None]
    assert [e["cnt_per_video"] for e in sub] == [4, 2, 1]
    assert results["subject_consistency"][0] == pytest.approx(sum(e["video_sim"] for e in sub) / 7)

    csv = pd.read_csv(out.with_suffix(".csv"), dtype={"error": str}).fillna({"error": ""})
    assert list(csv.columns) == ["video_path", "num_frames", "height", "width", "fps", "temporal_flickering",
                                 "subject_consistency", "error", "label"]
    assert csv["num_frames"].tolist()[:2] == [5, 3] and csv["height"].tolist()[:2] == [40, 40]
    assert (csv["label"] == "random-init").all()
    assert csv.loc[2, "error"].startswith("VideoDecodeError") and csv.loc[0, "error"] == ""
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["random_init"] is True and meta["label"] == "random-init" and meta["num_with_errors"] == 1
    assert "1 of 4 video(s) had errors" in capsys.readouterr().err


def test_cli_missing_weights_and_bad_dims_fail_fast(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path / "vbench-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    write_video(tmp_path / "v.mp4", smooth_frames(t=3), fps=8)
    rc = main([str(tmp_path / "v.mp4"), "--dims", "imaging,sub", "--out", str(tmp_path / "r.json"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "r.json").exists()
    assert "musiq_spaq" in err and "pyiqa_model/musiq_spaq_ckpt-358bb6af.pth" in err
    assert "dino_vitb16" in err and "python -m eval.weights fetch musiq_spaq dino_vitb16" in err
    assert main([str(tmp_path / "v.mp4"), "--dims", "colorfulness"]) == 2
    assert "unknown VBench dimension" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "no .mp4/.gif videos found" in capsys.readouterr().err


def test_python_dash_m_eval_entry_point(tmp_path):
    write_video(tmp_path / "v.mp4", np.repeat(smooth_frames(t=1), 4, axis=0), fps=8)
    proc = subprocess.run([sys.executable, "-m", "eval", str(tmp_path / "v.mp4"), "--dims", "flicker", "--out",
                           str(tmp_path / "r.json"), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    overall, entries = json.loads((tmp_path / "r.json").read_text())["temporal_flickering"]
    assert overall == 1.0 and entries[0]["video_results"] == 1.0  # a static video does not flicker
