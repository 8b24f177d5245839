"""The Hydra app: config composition and validation, run directories, resume, and the CLI contract."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_run_refused
from omegaconf import OmegaConf

from freelong.app.runner import run
from freelong.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GROUPS = {g: sorted(p.stem for p in (ROOT / "conf" / g).glob("*.yaml") if p.stem != "file")
          for g in ("model", "method", "prompts", "eval", "logger")}


def small(compose_cfg, tmp_path, *overrides):
    cfg = compose_cfg("num_inference_steps=2", "progress=false", *overrides)
    OmegaConf.update(cfg, "paths.output_root", str(tmp_path))
    return cfg


# Options that run only on some backbones or lengths, composed with a setting they take (the rest: the defaults;
# every model with the default method, FreeLong with the model's own window: tests/app/test_method_defaults.py); a
# backbone's own presets with that backbone (validation reads no weights).
NEEDS = {("method", "freeloc"): ["model=wan2_1_t2v_1_3b"],
         ("method", "freeloc_official"): ["model=wan2_1_t2v_1_3b", "num_frames=321"],  # the release's 81 latent frames
         **{("method", f"{m}_hunyuanvideo"): ["model=hunyuanvideo"]
            for m in ("freelong", "freenoise", "sliding_window")}}


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_config_option_composes_and_validates(compose_cfg, group, option):
    from freelong.app.config import validate_config

    cfg = compose_cfg(f"{group}={option}", *NEEDS.get((group, option), []))
    validate_config(cfg)


def test_defaults_follow_the_command_line_contract(compose_cfg):
    cfg = compose_cfg()
    assert (cfg.model.name, cfg.method.name, cfg.prompts.name, cfg.logger.name) == ("lavie_tiny", "freelong", "demo",
                                                                                    "none")
    real = compose_cfg("model=lavie")
    assert (real.num_frames, real.height, real.width, real.num_inference_steps, real.guidance_scale,
            real.sampler) == (128, 320, 512, 50, 7.5, "ddim")
    over = compose_cfg("model=lavie", "num_frames=64", "method.window=8", "method.d_s=0.5", "sampler=ddpm")
    assert (over.num_frames, over.method.window, over.method.d_s, over.sampler) == (64, 8, 0.5, "ddpm")


@pytest.mark.parametrize("overrides,needle", [
    (["method.window=40", "num_frames=24"], "method.window=40"),
    (["method.d_s=0"], "d_s"),
    (["method.filter=triangle"], "filter"),
    (["method=sliding_window", "method.stride=20"], "stride"),
    (["height=100"], "height"),
    (["sampler=euler"], "sampler"),
    (["dtype=float8"], "dtype"),
    (["prompts=file", "prompts.file=/no/such/prompts.txt"], "prompts.file"),
])
def test_bad_values_fail_before_any_model_is_built(compose_cfg, tmp_path, overrides, needle):
    assert_run_refused(small(compose_cfg, tmp_path, *overrides), ConfigError, needle, tmp_path)


def test_unknown_keys_and_wrong_types_fail_at_compose_time(compose_cfg):
    from hydra.errors import ConfigCompositionException

    for bad in ("method.windw=3", "method.window=abc", "num_frames=many", "model.latent_scal=1"):
        with pytest.raises(ConfigCompositionException):
            compose_cfg(bad)


@pytest.mark.parametrize("method", ["direct", "sliding_window", "freenoise", "freelong"])
@pytest.mark.parametrize("frames", [16, 24, 40])
def test_every_method_runs_at_several_lengths(compose_cfg, tmp_path, method, frames):
    cfg = small(compose_cfg, tmp_path, f"method={method}", f"num_frames={frames}", "height=32", "width=48")
    run_dir = run(cfg)
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["method"] == method and rec["num_frames"] == frames and (rec["height"], rec["width"]) == (32, 48)
    assert (run_dir / rec["video"]).stat().st_size > 0


def test_run_directory_records_everything_and_resumes(compose_cfg, tmp_path, caplog):
    import logging

    from freelong.video_io import read_video

    cfg = small(compose_cfg, tmp_path, "num_seeds=2", "prompts.list=[a cat,a dog]", "num_frames=12",
                "method.window=8")
    run_dir = run(cfg, tmp_path / "run")
    recs = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["seed"]) for r in recs] == [("a cat", 0), ("a cat", 1), ("a dog", 0), ("a dog", 1)]
    r = recs[0]
    for key in ("method_params", "num_inference_steps", "guidance_scale", "wall_time_s", "peak_memory_mb",
                "device_name", "versions", "weights", "git_commit", "job_key", "timings", "label"):
        assert key in r
    assert r["weights"] == "random-init" and r["random_init"] and "SMOKE RUN" in r["label"]
    assert r["versions"]["torch"].startswith("2.")
    assert OmegaConf.load(run_dir / "config.yaml").method.window == 8
    frames = read_video(run_dir / r["video"])
    assert frames.shape == (12, cfg.height, cfg.width, 3)

    mtimes = {p: p.stat().st_mtime_ns for p in (run_dir / "videos").glob("*.mp4")}
    (run_dir / "videos" / Path(recs[3]["video"]).name).unlink()  # simulate an interrupted run
    with caplog.at_level(logging.INFO, logger="freelong"):
        run(cfg, run_dir)
    assert sum("skip" in m for m in caplog.messages) == 3
    for p, m in mtimes.items():
        if p.exists() and p.name != Path(recs[3]["video"]).name:
            assert p.stat().st_mtime_ns == m
    assert len((run_dir / "results.jsonl").read_text().splitlines()) == 4
    # a different config in the same directory regenerates instead of silently reusing
    cfg2 = small(compose_cfg, tmp_path, "num_seeds=2", "prompts.list=[a cat,a dog]", "num_frames=12",
                 "method.window=4")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="freelong"):
        run(cfg2, run_dir)
    assert not any("skip" in m for m in caplog.messages)


def test_prompt_files(compose_cfg, tmp_path):
    from freelong.app.setup import load_prompts

    txt = tmp_path / "p.txt"
    txt.write_text("# comment\na cat\n\na dog\n")
    js = tmp_path / "p.json"
    js.write_text(json.dumps(["x", "y", "z"]))
    assert load_prompts(compose_cfg("prompts=file", f"prompts.file={txt}").prompts) == ["a cat", "a dog"]
    assert load_prompts(compose_cfg("prompts=file", f"prompts.file={js}", "prompts.limit=2").prompts) == ["x", "y"]


def cli(*args, cwd=ROOT, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FREELONG_WEIGHTS": os.environ.get("PYTEST_EMPTY_WEIGHTS", "")}
    return subprocess.run([sys.executable, "run.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_real_model_without_weights_fails_fast_with_instructions(tmp_path):
    os.environ["PYTEST_EMPTY_WEIGHTS"] = str(tmp_path / "weights")
    t0 = time.perf_counter()
    res = cli("model=lavie", "method=freelong", f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 2
    assert time.perf_counter() - t0 < 60
    assert "lavie_base.pt" in res.stderr and "scripts/download_weights.py lavie" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_smoke_run_and_multirun(tmp_path):
    res = cli("num_inference_steps=2", "num_frames=16", "progress=false", f"hydra.run.dir={tmp_path / 'one'}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert len((tmp_path / "one" / "results.jsonl").read_text().splitlines()) == 1
    res = cli("-m", "method=direct,freelong", "method.window=8,16", "num_frames=16", "num_inference_steps=1",
              "height=32", "width=32", "progress=false", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert res.returncode == 0, res.stderr[-2000:]
    results = sorted((tmp_path / "sweep").glob("*/results.jsonl"))
    assert len(results) == 4  # 2 methods x 2 windows (direct accepts and ignores method.window)
    methods = sorted(json.loads(p.read_text().splitlines()[0])["method"] for p in results)
    assert methods == ["direct", "direct", "freelong", "freelong"]


def _experiment_model(experiment: str) -> str | None:
    """The model an experiment file selects (``override /model``), following the experiments it extends."""
    defaults = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "experiment" / f"{experiment}.yaml")).get(
        "defaults", [])
    for d in defaults:
        if isinstance(d, dict) and "override /model" in d:
            return d["override /model"]
        if isinstance(d, str) and d != "_self_" and (ROOT / "conf" / "experiment" / f"{d}.yaml").is_file():
            found = _experiment_model(d)
            if found is not None:
                return found
    return None


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_validates(compose_cfg, experiment):
    from freelong.app.config import validate_config

    model = _experiment_model(experiment)
    if model is not None and not (ROOT / "conf" / "model" / f"{model}.yaml").is_file():
        pytest.skip(f"model {model} is not on this branch yet")  # e.g. the Wan experiments before the Wan backbone
    cfg = compose_cfg(f"experiment={experiment}")
    validate_config(cfg)
    assert cfg.task_name == experiment


def test_missing_eval_weights_stop_a_real_run_before_the_backbone_is_loaded(compose_cfg, tmp_path, monkeypatch):
    from fakes import write_fake_lavie_weights

    import freelong.models.base as base
    from freelong.weights import MissingWeightsError

    write_fake_lavie_weights(tmp_path / "weights")
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path / "vbench"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(base, "build_backbone", lambda *a, **k: pytest.fail("backbone loaded before eval checks"))
    cfg = small(compose_cfg, tmp_path, "model=lavie", "eval=fast", f"paths.weights_dir={tmp_path / 'weights'}",
                "num_frames=16", "height=64", "width=64")
    assert_run_refused(cfg, MissingWeightsError, "dino_vitb16", tmp_path / "run", run_dir=tmp_path / "run")
