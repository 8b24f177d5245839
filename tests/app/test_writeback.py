"""Scoring apart from generation: ``python -m eval DIR --write-back`` writes what ``eval=`` writes, once."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from eval.cli import main as eval_main
from freelong.app.runner import run
from freelong.app.writeback import dims_to_score, merge_scores

SETTINGS = ("num_frames=8", "height=32", "width=32", "num_inference_steps=1", "progress=false", "method=direct",
            "prompts.list=[a cat,a dog]", "eval.batch_size=8")


def generate(compose_cfg, tmp_path, run_dir: Path, *extra) -> Path:
    cfg = compose_cfg(*SETTINGS, *extra)
    OmegaConf.update(cfg, "paths.output_root", str(tmp_path))
    return run(cfg, run_dir)


def records(run_dir: Path) -> dict[str, dict]:
    return {json.loads(x)["prompt"]: json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()}


def without_volatile(scores: dict) -> dict:
    meta = {k: v for k, v in scores["meta"].items() if k not in ("seconds", "written_back")}
    return {**scores, "meta": meta}


def test_write_back_equals_scoring_during_the_run_and_resumes(compose_cfg, tmp_path, capsys, one_thread):
    inline = generate(compose_cfg, tmp_path, tmp_path / "inline", "eval=fast", "eval.dims=[flicker,subject]")
    later = generate(compose_cfg, tmp_path, tmp_path / "later")  # eval=none (a GPU node), scored below
    assert all("scores" not in r for r in records(later).values())

    args = [str(tmp_path / "later"), "--write-back", "--dims", "flicker,subject", "--random-init", "--no-progress",
            "--batch-size", "8"]
    assert eval_main(args) == 0
    assert "2 video(s) scored" in capsys.readouterr().out
    got, want = records(later), records(inline)
    for prompt in ("a cat", "a dog"):
        assert without_volatile(got[prompt]["scores"]) == without_volatile(want[prompt]["scores"])
        side = json.loads((later / got[prompt]["video"]).with_suffix(".json").read_text())
        assert side["scores"] == got[prompt]["scores"]  # sidecar and results.jsonl agree

    # nothing left to do: a second pass writes nothing
    mtimes = {p: p.stat().st_mtime_ns for p in (later / "videos").glob("*.json")}
    assert eval_main(args) == 0
    assert "0 video(s) scored, 2 already up to date" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # an interrupted pass: one record lost its scores -> only it is scored again; a new dimension is added
    # to both while the existing values stay
    dog = next(p for p in (later / "videos").glob("*.json") if "dog" in p.name)
    rec = json.loads(dog.read_text())
    dog.write_text(json.dumps({k: v for k, v in rec.items() if k != "scores"}))
    assert eval_main(args) == 0
    assert "1 video(s) scored, 1 already up to date" in capsys.readouterr().out
    before = records(later)
    assert eval_main([*args[:3], "flicker,background", *args[4:]]) == 0
    after = records(later)
    for prompt in ("a cat", "a dog"):
        assert after[prompt]["scores"]["subject_consistency"] == before[prompt]["scores"]["subject_consistency"]
        assert after[prompt]["scores"]["temporal_flickering"] == before[prompt]["scores"]["temporal_flickering"]
        assert 0 <= after[prompt]["scores"]["background_consistency"] <= 1


def test_random_init_networks_never_score_real_videos_and_failed_records_are_left(tmp_path, capsys, compose_cfg,
                                                                                   one_thread):
    run_dir = generate(compose_cfg, tmp_path, tmp_path / "run")
    side = sorted((run_dir / "videos").glob("*.json"))
    real = json.loads(side[0].read_text())
    side[0].write_text(json.dumps({**real, "random_init": False}))  # pretend a real run's video
    failed = json.loads(side[1].read_text())
    side[1].write_text(json.dumps({**failed, "status": "failed", "error": "OutOfMemoryError: ..."}))
    assert eval_main([str(tmp_path), "--write-back", "--dims", "flicker", "--random-init", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "0 video(s) scored" in out.out and "1 not generated" in out.out and "1 skipped" in out.out
    assert "scores" not in json.loads(side[0].read_text())


def test_bad_paths_and_dims_are_one_line_errors(tmp_path, capsys):
    assert eval_main([str(tmp_path / "nope"), "--write-back", "--dims", "flicker"]) == 2
    assert eval_main([str(tmp_path), "--write-back", "--dims", "flicker"]) == 2
    assert eval_main([str(tmp_path), "--write-back", "--dims", "colour"]) == 2
    err = capsys.readouterr().err
    assert "no such run" in err and "no run directories" in err and "unknown VBench dimension" in err


def test_a_dimension_is_rescored_when_its_weights_changed():
    rec = {"scores": {"subject_consistency": 0.9, "temporal_flickering": 0.95,
                      "meta": {"label": "vbench", "weights": {"dino_vitb16": "aaa"}}}}
    dims = ["subject_consistency", "temporal_flickering"]
    assert dims_to_score(rec, dims, "vbench", {"dino_vitb16": "aaa"}) == []
    assert dims_to_score(rec, dims, "vbench", {"dino_vitb16": "bbb"}) == ["subject_consistency"]
    assert dims_to_score(rec, dims, "random-init", {}) == dims  # other kind of networks: everything
    assert dims_to_score({}, dims, "vbench", {}) == dims


@pytest.mark.parametrize("old_label", ["vbench", "random-init"])
def test_merge_keeps_other_dimensions_only_from_the_same_kind_of_networks(old_label):
    old = {"a": 1.0, "b": 2.0, "meta": {"label": old_label, "weights": {"x": "1"}, "errors": {"b": "boom"}}}
    new = {"b": 3.0, "meta": {"label": "vbench", "weights": {"y": "2"}, "errors": {}}}
    merged = merge_scores(old, new, ["b"])
    if old_label == "vbench":
        assert (merged["a"], merged["b"]) == (1.0, 3.0)
        assert merged["meta"]["weights"] == {"x": "1", "y": "2"} and merged["meta"]["errors"] == {}
    else:
        assert "a" not in merged and merged["b"] == 3.0 and merged["meta"]["weights"] == {"y": "2"}
