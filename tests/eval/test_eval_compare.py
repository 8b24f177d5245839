"""``python -m eval --compare-official``: both backends, a difference table, exit 1 beyond the tolerance.

The VBench side is the fake environment of ``fake_vbench.py`` (it checks how it is called and answers
controlled numbers); the real comparison runs in the slow test when ``FREELONG_VBENCH_PYTHON`` is set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from eval_synthetic import smooth_frames
from fake_vbench import calls, fill_cache, make_fake_vbench

from eval.cli import main
from eval.compare import compare_results, failures
from eval.scorer import Evaluator
from freelong.video_io import write_video


def _entries(values: dict[str, object]) -> list[dict]:
    return [{"video_path": p, "video_results": v} for p, v in values.items()]


def test_differences_are_in_vbench_overall_units():
    native = {"imaging_quality": [0.66, _entries({"a": 66.0, "b": 66.0})],
              "dynamic_degree": [0.5, _entries({"a": True, "b": False})],
              "temporal_flickering": [0.9, _entries({"a": 0.9, "b": None})]}
    official = {"imaging_quality": [0.6600025, _entries({"a": 66.0005, "b": 66.0})],
                "dynamic_degree": [0.5, _entries({"a": True, "b": True})],
                "temporal_flickering": [0.9, _entries({"a": 0.9, "b": 0.95})]}
    report = compare_results(list(native), native, official)
    # imaging per video: 0.0005 on the 0-100 scale is 5e-6 in overall units
    assert report["imaging_quality"]["max_video_diff"] == pytest.approx(5e-6)
    assert report["imaging_quality"]["overall_diff"] == pytest.approx(2.5e-6)
    assert report["dynamic_degree"]["max_video_diff"] == 1.0  # booleans count as 0/1
    assert report["temporal_flickering"]["missing"] == ["b"] and report["temporal_flickering"]["videos_compared"] == 1
    bad = failures(report, tol=1e-5)
    assert not any(b.startswith("imaging") for b in bad)
    assert any(b.startswith("dynamic_degree: max video diff 1") for b in bad)
    assert any("temporal_flickering: scored by one backend only: b" in b for b in bad)
    assert any(b.startswith("imaging") for b in failures(report, tol=1e-6))


@pytest.fixture()
def two_videos(tmp_path):
    videos = []
    for i in range(2):
        p = tmp_path / "vids" / f"v{i}.mp4"
        p.parent.mkdir(exist_ok=True)
        write_video(p, smooth_frames(t=5, h=32, w=48, seed=i), fps=8)
        videos.append(p)
    return videos


@pytest.mark.parametrize("offset, code", [(0.0, 0), (2e-5, 1)])
def test_compare_official_table_and_exit_code(two_videos, tmp_path, capsys, offset, code):
    dims = ["temporal_flickering"]
    ours = Evaluator(dims, device="cpu").score_many(two_videos, progress=False)
    per = {str(v.resolve()): s.results["temporal_flickering"].value + offset for v, s in zip(two_videos, ours)}
    answers = {"temporal_flickering": {"overall": sum(per.values()) / 2, "per_video": per}}
    cache = tmp_path / "cache"
    fill_cache(cache, dims)
    python = make_fake_vbench(tmp_path / "env", two_videos, answers, cache)
    out = tmp_path / "res.json"
    rc = main([str(tmp_path / "vids"), "--dims", "flicker", "--compare-official", "--vbench-python", str(python),
               "--cache-dir", str(cache), "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == code, captured.err
    assert "| temporal_flickering | 2 |" in captured.out and "native s" in captured.out
    assert [c["event"] for c in calls(tmp_path / "env")].count("process") == 1
    report = json.loads(out.with_suffix(".compare.json").read_text())
    diff = report["report"]["temporal_flickering"]["max_video_diff"]
    assert diff == pytest.approx(offset, abs=1e-12)
    if code:
        assert "DIFFERENT  temporal_flickering: max video diff 2e-05 > tol 1e-05" in captured.err
        assert "FAIL" in captured.out
    else:
        assert "OK: tolerance 1e-05 (2 video(s))" in captured.out


def test_compare_official_bad_setup_is_one_line(two_videos, tmp_path, capsys):
    rc = main([str(two_videos[0]), "--dims", "flicker", "--compare-official", "--no-progress",
               "--out", str(tmp_path / "r.json")])
    assert rc == 2 and "--vbench-python" in capsys.readouterr().err
    rc = main([str(two_videos[0]), "--dims", "flicker", "--compare-official", "--random-init",
               "--vbench-python", "x", "--out", str(tmp_path / "r.json")])
    assert rc == 2 and "drop --random-init" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("FREELONG_VBENCH_PYTHON"),
                    reason="no VBench environment configured: set FREELONG_VBENCH_PYTHON=/path/to/vbench-env/bin/python"
                           " (and VBENCH_CACHE_DIR to its cache); see docs/evaluation.md,"
                           " 'Check our numbers against your VBench'")
def test_real_vbench_agrees(tmp_path, capsys):
    """The real comparison: every dimension whose weights the VBench cache holds, on two small videos."""
    from eval.official import missing_files
    from eval.weights import vbench_cache_dir

    dims = [d for d in ("temporal_flickering", "subject_consistency", "background_consistency", "aesthetic_quality",
                        "imaging_quality", "motion_smoothness", "dynamic_degree")
            if not missing_files([d], vbench_cache_dir(None))]
    # FREELONG_VBENCH_WEIGHTS="clip_vit_b32=/p/a.pt;musiq_spaq=/p/m.pth": our side's explicit weights (e.g.
    # random-weight twins of the cache's files, whose published checksums they do not have)
    weights = [w for item in os.environ.get("FREELONG_VBENCH_WEIGHTS", "").split(";") if item
               for w in ("--weight", item)]
    big = []
    for i in range(2):  # >= 128 px: smaller videos make AMT/RAFT's 1-px correlation level return NaN
        big.append(tmp_path / f"big-{i}.mp4")
        write_video(big[-1], smooth_frames(t=12, h=128, w=160, seed=i), fps=8 * (i + 1))
    rc = main([*map(str, big), "--dims", ",".join(dims), "--compare-official", "--precision", "fp32",
               "--device", "cpu", "--vbench-python", os.environ["FREELONG_VBENCH_PYTHON"], *weights,
               "--out", str(tmp_path / "r.json"), "--no-progress",
               "--tol", os.environ.get("FREELONG_VBENCH_TOL", "1e-5")])
    captured = capsys.readouterr()
    print(captured.out)
    assert rc == 0, captured.out + captured.err
    assert Path(tmp_path / "r.compare.json").is_file()


@pytest.mark.parametrize("extra, needle", [(["--protocol", "long"], "--protocol long"),
                                           (["--prompt", "a cat"], "--prompt"),
                                           (["--dims", "overall_consistency"], "overall_consistency")])
def test_compare_official_refuses_what_vbench_cannot_match(two_videos, tmp_path, capsys, extra, needle):
    """Prompts and protocols VBench's custom_input mode does not share: one error line, exit 2, no VBench."""
    python = make_fake_vbench(tmp_path / "env", None, {}, tmp_path / "cache")
    code = main([str(p) for p in two_videos] + ["--compare-official", "--vbench-python", str(python),
                                                "--out", str(tmp_path / "o.json")] + extra)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert calls(tmp_path / "env") == []
