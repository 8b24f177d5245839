"""The official backend (the real vbench package in another env) against a fake VBench that checks its inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_synthetic import smooth_frames
from fake_vbench import calls, fill_cache, make_fake_vbench

from eval.base import QUALITY_DIMS as ALL_DIMS  # the seven the official lane drives
from eval.official import OfficialBackendError, run_official
from freelong.app.eval_hook import PENDING_NOTE, OfficialRunEvaluator, build_run_evaluator
from freelong.errors import ConfigError
from freelong.video_io import write_video


def _videos(tmp_path: Path, n: int = 3) -> list[Path]:
    out = []
    for i in range(n):
        p = tmp_path / "in" / f"clip{i}.mp4"
        p.parent.mkdir(exist_ok=True)
        write_video(p, smooth_frames(t=4, h=32, w=48, seed=i), fps=8)
        out.append(p)
    return out


def _answers(videos, dims, base=0.5):
    """Controlled numbers: per video base + i/100 (imaging on VBench's 0-100 scale), overall their mean."""
    out = {}
    for d in dims:
        scale = 100.0 if d == "imaging_quality" else 1.0
        per = {str(v.resolve()): (base + i / 100) * scale for i, v in enumerate(videos)}
        out[d] = {"overall": float(np.mean(list(per.values()))) / scale, "per_video": per}
    return out


def test_all_seven_dims_in_one_offline_vbench_process(tmp_path):
    videos = _videos(tmp_path)
    cache = tmp_path / "vbench-cache"
    fill_cache(cache, ALL_DIMS)
    answers = _answers(videos, ALL_DIMS)
    python = make_fake_vbench(tmp_path / "env", videos, answers, cache)
    results, rows, meta = run_official(videos, list(ALL_DIMS), str(python), cache_dir=str(cache))
    log = calls(tmp_path / "env")
    assert [c["event"] for c in log].count("process") == 1  # one VBench process for everything
    evaluations = [c for c in log if c["event"] == "evaluate"]
    assert sorted(d for c in evaluations for d in c["dims"]) == sorted(ALL_DIMS)
    assert all(c["local"] is True and c["mode"] == "custom_input" and len(c["videos"]) == 3 for c in evaluations)
    for dim in ALL_DIMS:
        overall, entries = results[dim]
        assert overall == answers[dim]["overall"]
        assert [e["video_path"] for e in entries] == [str(v) for v in videos]  # original paths restored
        assert [r[dim] for r in rows] == [answers[dim]["per_video"][str(v.resolve())] for v in videos]
    assert set(meta["seconds_per_dim"]) == set(ALL_DIMS) and meta["vbench_version"] == "0.1.5-fake"
    assert all(r["error"] == "" for r in rows)


def test_the_fake_refuses_wrong_calls(tmp_path):
    """The fake is a real check: another cache at import, or a partial video set, makes VBench fail."""
    videos = _videos(tmp_path, 2)
    cache, other = tmp_path / "cache", tmp_path / "other"
    fill_cache(cache, ["subject_consistency"])
    fill_cache(other, ["subject_consistency"])
    answers = _answers(videos, ["subject_consistency"])
    python = make_fake_vbench(tmp_path / "env", videos, answers, cache)
    with pytest.raises(OfficialBackendError, match="VBENCH_CACHE_DIR at import"):
        run_official(videos, ["subject_consistency"], str(python), cache_dir=str(other))
    with pytest.raises(OfficialBackendError, match="videos given"):
        run_official(videos[:1], ["subject_consistency"], str(python), cache_dir=str(cache))
    python = make_fake_vbench(tmp_path / "env", videos, answers, cache, imaging_mode="shorter")
    with pytest.raises(OfficialBackendError, match="imaging_quality_preprocessing_mode"):
        run_official(videos, ["subject_consistency"], str(python), cache_dir=str(cache))


def test_incomplete_cache_is_one_error_before_vbench_starts(tmp_path):
    videos = _videos(tmp_path, 1)
    cache = tmp_path / "cache"
    fill_cache(cache, ["background_consistency"])
    python = make_fake_vbench(tmp_path / "env", videos, _answers(videos, ALL_DIMS), cache)
    with pytest.raises(OfficialBackendError) as err:
        run_official(videos, ["background_consistency", "aesthetic_quality", "motion_smoothness"], str(python),
                     cache_dir=str(cache))
    msg = str(err.value)
    assert "clip_model/ViT-L-14.pt" in msg and "amt-s.pth" in msg and "sa_0_4_vit_l_14_linear.pth" in msg
    assert "ViT-B-32.pt" not in msg and calls(tmp_path / "env") == []
    with pytest.raises(ValueError, match="--vbench-python"):
        run_official(videos, ["temporal_flickering"], None)
    # overall_consistency: VBench would read prompts from the lane's numbered link names; refused up front
    with pytest.raises(ValueError, match="overall_consistency"):
        run_official(videos, ["temporal_flickering", "overall_consistency"], str(python), cache_dir=str(cache))
    assert calls(tmp_path / "env") == []


def test_run_hook_queues_videos_and_scores_them_in_one_call(compose_cfg, tmp_path):
    videos = _videos(tmp_path)
    cache = tmp_path / "cache"
    dims = ["temporal_flickering", "imaging_quality"]
    fill_cache(cache, dims)
    answers = _answers(videos, dims)
    python = make_fake_vbench(tmp_path / "env", videos, answers, cache)
    cfg = compose_cfg("eval=fast", f"eval.dims=[{','.join(dims)}]", "eval.backend=official",
                      f"eval.vbench_python={python}", f"eval.cache_dir={cache}")
    evaluate = build_run_evaluator(cfg.eval, device=torch.device("cpu"), random_init=False)
    assert isinstance(evaluate, OfficialRunEvaluator) and evaluate.batched
    pending = [evaluate(v, smooth_frames(t=4, h=32, w=48)) for v in videos]
    assert all(p["meta"]["pending"] for p in pending) and calls(tmp_path / "env") == []
    scored = evaluate.finish()
    assert [c["event"] for c in calls(tmp_path / "env")].count("process") == 1
    for v in videos:
        s = scored[str(v)]
        assert s["imaging_quality"] == answers["imaging_quality"]["per_video"][str(v.resolve())]
        assert s["meta"]["errors"] == {} and s["meta"]["videos_in_call"] == 3 and s["meta"]["frames"] == 4
    assert evaluate.finish() == {}  # nothing queued: no process
    # set-up errors stop the run before any video: missing cache files, random-init backbones
    bad = compose_cfg("eval=vbench", "eval.backend=official", f"eval.vbench_python={python}",
                      f"eval.cache_dir={tmp_path / 'empty'}")
    with pytest.raises(ConfigError, match="raft-things.pth"):
        build_run_evaluator(bad.eval, device=torch.device("cpu"), random_init=False)
    with pytest.raises(ConfigError, match="random-init"):
        build_run_evaluator(cfg.eval, device=torch.device("cpu"), random_init=True)
    with pytest.raises(ConfigError, match="eval.dims.*overall_consistency"):
        build_run_evaluator(compose_cfg("eval=fast", "eval.dims=[overall_consistency]", "eval.backend=official",
                                        f"eval.vbench_python={python}", f"eval.cache_dir={cache}").eval,
                            device=torch.device("cpu"), random_init=False)


def test_vbench_failure_is_recorded_for_every_video_of_the_call(tmp_path):
    videos = _videos(tmp_path, 2)
    cache = tmp_path / "cache"
    fill_cache(cache, ["temporal_flickering"])
    python = make_fake_vbench(tmp_path / "env", videos[:1], _answers(videos, ["temporal_flickering"]), cache)
    evaluate = OfficialRunEvaluator(["temporal_flickering"], str(python), None, "longer", str(cache))
    for v in videos:
        evaluate(v, np.zeros((4, 8, 8, 3), np.uint8))
    scored = evaluate.finish()
    assert set(scored) == {str(v) for v in videos}
    assert all("videos given" in s["meta"]["errors"]["video"] and "temporal_flickering" not in s
               for s in scored.values())


def test_runner_fills_batched_scores_into_every_record(compose_cfg, tmp_path, monkeypatch):
    """run.py with the official backend: all of the run's videos reach VBench in one process."""
    import freelong.app.runner as runner

    cache = tmp_path / "cache"
    fill_cache(cache, ["temporal_flickering"])
    answers = {"temporal_flickering": {"overall": 0.9, "per_video": {}, "default": 0.875}}
    python = make_fake_vbench(tmp_path / "env", None, answers, cache)
    monkeypatch.setattr(runner, "make_evaluator", lambda cfg, device, random_init: OfficialRunEvaluator(
        ["temporal_flickering"], str(python), None, "longer", str(cache)))
    cfg = compose_cfg("num_frames=16", "num_inference_steps=1", "progress=false", "num_seeds=2",
                      f"paths.output_root={tmp_path / 'out'}")
    run_dir = runner.run(cfg)
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2
    assert all(r["scores"]["temporal_flickering"] == 0.875 and "pending" not in r["scores"]["meta"] for r in records)
    log = calls(tmp_path / "env")
    assert [c["event"] for c in log].count("process") == 1
    (evaluation,) = [c for c in log if c["event"] == "evaluate"]
    assert len(evaluation["videos"]) == 2 and all(os.path.basename(p).endswith(".mp4") for p in evaluation["videos"])


def test_stopped_run_leaves_marked_placeholders_that_a_rerun_scores_without_regenerating(compose_cfg, tmp_path,
                                                                                          monkeypatch):
    """Stopped before the one VBench call: records say so; the same run again scores them, generating nothing."""
    import freelong.app.runner as runner

    cache = tmp_path / "cache"
    fill_cache(cache, ["temporal_flickering"])
    python = make_fake_vbench(tmp_path / "env", None,
                              {"temporal_flickering": {"overall": 0.9, "per_video": {}, "default": 0.625}}, cache)
    evaluator = OfficialRunEvaluator(["temporal_flickering"], str(python), None, "longer", str(cache))
    monkeypatch.setattr(runner, "make_evaluator", lambda cfg, device, random_init: evaluator)
    cfg = compose_cfg("num_frames=16", "num_inference_steps=1", "progress=false", "num_seeds=2",
                      f"paths.output_root={tmp_path / 'out'}")

    def stopped():
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluator, "finish", stopped)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg, run_dir=run_dir)
    first = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert len(first) == 2 and calls(tmp_path / "env") == []
    for r in first:  # clearly placeholders: flagged, explained, no values a table could pick up
        assert r["scores"]["meta"]["pending"] is True and r["scores"]["meta"]["note"] == PENDING_NOTE
        assert "temporal_flickering" not in r["scores"]
    assert "--write-back" in PENDING_NOTE

    monkeypatch.undo()
    evaluator = OfficialRunEvaluator(["temporal_flickering"], str(python), None, "longer", str(cache))
    monkeypatch.setattr(runner, "make_evaluator", lambda cfg, device, random_init: evaluator)
    monkeypatch.setattr(runner, "generate_one", lambda *a, **k: pytest.fail("a finished video was generated again"))
    runner.run(cfg, run_dir=run_dir)
    second = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [r["created"] for r in second] == [r["created"] for r in first]
    for r in second:
        assert r["scores"]["temporal_flickering"] == 0.625 and "pending" not in r["scores"]["meta"]
        assert r["scores"]["meta"]["frames"] == 16 and r["scores"]["meta"]["videos_in_call"] == 2
    assert [c["event"] for c in calls(tmp_path / "env")].count("process") == 1
    runner.run(cfg, run_dir=run_dir)  # nothing pending any more: no VBench process at all
    assert [c["event"] for c in calls(tmp_path / "env")].count("process") == 1


def test_write_back_rescores_placeholders(tmp_path):
    """``python -m eval RUN --write-back`` treats an official placeholder as unscored (native label differs)."""
    from eval.scorer import Evaluator
    from freelong.app.records import RunRecords, read_records
    from freelong.app.writeback import write_back

    (video,) = _videos(tmp_path, 1)
    run_dir = tmp_path / "run"
    (run_dir / "videos").mkdir(parents=True)
    os.replace(video, run_dir / "videos" / "a.mp4")
    placeholder = OfficialRunEvaluator(["temporal_flickering"], "python", None, "longer", None).queue(
        run_dir / "videos" / "a.mp4", 4)
    RunRecords(run_dir).save_stem("a", {"video": "videos/a.mp4", "prompt": "a", "random_init": True,
                                        "status": "done", "scores": placeholder})
    evaluator = Evaluator(["temporal_flickering"], device="cpu", random_init=True)
    report = write_back([run_dir], evaluator, progress=False)
    assert report.scored == [f"{run_dir}/videos/a"]
    scores = read_records(run_dir)["a"]["scores"]
    expected = evaluator.score(run_dir / "videos" / "a.mp4").values()["temporal_flickering"]
    assert scores["temporal_flickering"] == expected and "pending" not in scores["meta"]
