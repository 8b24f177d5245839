"""analysis.frames: the right frames of the right videos, labelled, segment prompts under their frames."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.frames import (
    RANDOM_INIT_TITLE,
    group_videos,
    main,
    make_figure,
    read_records,
    sample_indices,
    segment_groups,
    segment_of_frames,
)
from freelong.video_io import write_video

ROOT = Path(__file__).resolve().parents[2]
MULTI = {"segments": [{"prompt": "a man running", "frames": None}, {"prompt": "a man standing", "frames": None},
                      {"prompt": "a man flying", "frames": None}], "transition_frames": 4}


def _coded_video(frames: int) -> np.ndarray:
    """Frame t is one flat colour: red = 8 t, green = 255 - 8 t (flat colours survive H.264)."""
    t = np.arange(frames)
    v = np.zeros((frames, 32, 48, 3), dtype=np.uint8)
    v[..., 0] = (8 * t)[:, None, None]
    v[..., 1] = (255 - 8 * t)[:, None, None]
    return v


def _run(run_dir: Path, method_params: dict, prompt, frames=32, random_init=True, method="freelong"):
    stem = "000_prompt_seed0"
    write_video(run_dir / "videos" / f"{stem}.mp4", _coded_video(frames), fps=8)
    rec = {"video": f"videos/{stem}.mp4", "prompt": prompt, "seed": 0, "model": "lavie_tiny", "method": method,
           "method_params": method_params, "num_frames": frames, "random_init": random_init}
    (run_dir / "results.jsonl").write_text(json.dumps(rec) + "\n")


@pytest.fixture()
def sweep(tmp_path):
    base = {"window": 8, "d_s": 0.25}
    for i, branch in enumerate(("blend", "global", "high_local")):  # listed as the sweep numbers them
        _run(tmp_path / "sweep" / str(i), {**base, "branch": branch}, "a cow walking")
    return tmp_path / "sweep"


def test_sample_indices_and_bad_strides():
    assert sample_indices(128, 16) == [0, 16, 32, 48, 64, 80, 96, 112]
    assert sample_indices(20, 8) == [0, 8, 16]
    with pytest.raises(ValueError, match="--every 200 is larger than the video"):
        sample_indices(128, 200)
    with pytest.raises(ValueError, match="--every must be >= 1, got 0"):
        sample_indices(128, 0)


def test_rows_are_the_variants_with_the_frames_asked_for(sweep):
    (rows,) = group_videos(read_records([sweep]))
    # rows in the paper's Fig. 6 order: global, ..., high-frequency local, FreeLong
    assert [r.label for r in rows] == ["freelong (branch=global)", "freelong (branch=high_local)",
                                       "freelong (branch=blend)"]
    from analysis.frames import load_stills

    stills = load_stills(rows[0], sample_indices(32, 8))
    assert len(stills) == 4
    for t, still in zip((0, 8, 16, 24), stills):  # decoded colour = the code of frame t (H.264 rounding)
        assert abs(float(still[..., 0].mean()) - 8 * t) < 6 and abs(float(still[..., 1].mean()) - (255 - 8 * t)) < 6
    fig = make_figure(rows, 8)
    assert fig._suptitle.get_text().startswith(RANDOM_INIT_TITLE)
    axes = np.array(fig.axes).reshape(3, 4)
    assert [ax.get_title() for ax in axes[0]] == ["frame 0", "frame 8", "frame 16", "frame 24"]
    assert [ax.get_ylabel().replace("\n", " ") for ax in axes[:, 0]] == [r.label for r in rows]
    assert int(axes[2, 3].images[0].get_array()[..., 0].mean()) == pytest.approx(8 * 24, abs=6)


def test_segment_of_each_sampled_frame_follows_the_schedule():
    # three free segments at 48 frames hold 16 frames each: frame f is in segment f // 16
    idx = sample_indices(48, 8)
    assert segment_of_frames(MULTI, 48, idx) == [f // 16 for f in idx]
    fixed = {"segments": [{"prompt": "a", "frames": 10}, {"prompt": "b", "frames": None}], "transition_frames": 0}
    assert segment_of_frames(fixed, 32, [0, 9, 10, 31]) == [0, 0, 1, 1]
    assert segment_of_frames("one prompt", 48, idx) is None
    assert segment_groups([0, 0, 1, 1, 2, 2]) == [(0, 0, 1), (1, 2, 3), (2, 4, 5)]


def test_multi_prompt_figure_puts_each_segment_prompt_under_its_frames(tmp_path):
    _run(tmp_path / "mp" / "0", {}, MULTI, frames=48, method="direct", random_init=False)
    _run(tmp_path / "mp" / "1", {"window": 16}, MULTI, frames=48, method="freenoise", random_init=False)
    (rows,) = group_videos(read_records([tmp_path / "mp"]))
    assert [r.label for r in rows] == ["direct", "freenoise"]
    fig = make_figure(rows, 8)
    assert RANDOM_INIT_TITLE not in fig._suptitle.get_text()
    texts = {t.get_text(): t for t in fig.texts}
    assert {"a man running", "a man standing", "a man flying"} <= set(texts)
    bottom = np.array(fig.axes).reshape(2, 6)[1]
    for k, prompt in enumerate(("a man running", "a man standing", "a man flying")):
        x = texts[prompt].get_position()[0]  # centred under its two columns (frames 16k, 16k + 8)
        cols = bottom[2 * k].get_position(), bottom[2 * k + 1].get_position()
        assert cols[0].x0 < x < cols[1].x1 and abs(x - (cols[0].x0 + cols[1].x1) / 2) < 1e-6


def test_cli_writes_png_and_pdf_and_rejects_a_stride_longer_than_the_video(sweep, tmp_path, capsys):
    assert main([str(sweep), "--every", "16", "--out", str(tmp_path / "figs")]) == 0
    for ext in ("png", "pdf"):
        assert (tmp_path / "figs" / f"frames_000_prompt_seed0.{ext}").stat().st_size > 1000
    assert main([str(sweep), "--every", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--every 64" in err and "32 frames" in err
    res = subprocess.run([sys.executable, "-m", "analysis.frames", str(sweep), "--every", "999"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "999" in res.stderr and "Traceback" not in res.stderr
    assert main([str(tmp_path / "nothing")]) == 2
