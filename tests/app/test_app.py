"""The app layer's contracts: one record store, user-facing errors, the logger always closed, shared setup."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from freelong.app.records import RunRecords, make_jobs, read_results
from freelong.errors import ConfigError, DeviceUnavailableError

ROOT = Path(__file__).resolve().parents[2]


def small(compose_cfg, tmp_path, *overrides):
    cfg = compose_cfg("num_inference_steps=1", "num_frames=16", "height=32", "width=32", "progress=false", *overrides)
    OmegaConf.update(cfg, "paths.output_root", str(tmp_path))
    return cfg


def test_a_corrupt_record_line_is_reported_with_file_and_line_and_the_rest_is_used(tmp_path, caplog):
    run_dir = tmp_path / "sweep" / "0_lavie_tiny_direct"
    run_dir.mkdir(parents=True)
    good = {"video": "videos/a.mp4", "method": "direct", "model": "lavie_tiny", "num_frames": 16}
    (run_dir / "results.jsonl").write_text(json.dumps(good) + "\n{not json\n" + json.dumps({**good, "seed": 1}) + "\n")
    with caplog.at_level(logging.WARNING, logger="freelong"):
        records = read_results([tmp_path / "sweep"])
    assert [r.get("seed") for r in records] == [None, 1]
    assert all(r["run_dir"] == str(run_dir) for r in records)
    assert f"{run_dir / 'results.jsonl'}:2" in caplog.text

    # the same policy in the tables script and the sweep aggregation (both read through the store)
    from analysis.aggregate import collect

    df, _ = collect(tmp_path / "sweep")
    assert len(df) == 2
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        read_results([tmp_path / "no-such-dir"])


def test_run_records_skip_a_corrupt_sidecar_but_keep_the_others(tmp_path, caplog):
    store = RunRecords(tmp_path)
    jobs = make_jobs(["a cat", "a dog"], seed=0, num_seeds=1)
    store.save(jobs[0], {"prompt_index": 0, "seed": 0, "job_key": "k0"})
    store.sidecar(jobs[1]).write_text("{truncated")
    with caplog.at_level(logging.WARNING, logger="freelong"):
        store.rebuild_results()
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["job_key"] for x in lines] == ["k0"]
    assert str(store.sidecar(jobs[1])) in caplog.text
    store.video(jobs[0]).write_bytes(b"x")
    assert store.finished(jobs[0], "k0") is not None and store.finished(jobs[0], "other") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_absent_device_is_one_clear_error(compose_cfg, tmp_path):
    from freelong.app.config import validate_config

    with pytest.raises(DeviceUnavailableError, match=r"device=cuda is not available on this machine; available: auto"):
        validate_config(compose_cfg("device=cuda"))
    assert issubclass(DeviceUnavailableError, ConfigError)
    with pytest.raises(ConfigError, match="device must be"):
        validate_config(compose_cfg("device=tpu"))
    res = subprocess.run([sys.executable, str(ROOT / "run.py"), "device=cuda:1", f"hydra.run.dir={tmp_path / 'r'}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: device=cuda:1 is not available")
    assert "Traceback" not in res.stderr


class _RecordingLogger:
    def __init__(self):
        self.videos, self.finished = [], None

    def log_video(self, record, path):
        self.videos.append(record)

    def finish(self, records):
        self.finished = records


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_logger_is_closed_when_a_video_fails(compose_cfg, tmp_path, monkeypatch, error):
    """An error is contained (recorded, the job goes on, GenerationFailed at the end); an interrupt is not —
    either way the logger is closed with the records made so far."""
    import freelong.app.runner as runner
    from freelong.app.failures import GenerationFailed
    from freelong.pipeline import LongVideoPipeline

    logger = _RecordingLogger()
    monkeypatch.setattr(runner, "make_logger", lambda cfg, run_dir: logger)
    calls = {"n": 0}
    real_call = LongVideoPipeline.__call__

    def second_fails(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise error("CUDA out of memory (simulated)")
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(LongVideoPipeline, "__call__", second_fails)
    cfg = small(compose_cfg, tmp_path, "method=direct", "num_seeds=3")
    expected = GenerationFailed if error is RuntimeError else KeyboardInterrupt
    with pytest.raises(expected):
        runner.run(cfg, tmp_path / "run")
    assert logger.finished is not None  # closed
    statuses = [r.get("status") for r in logger.finished]
    if error is RuntimeError:  # the third video was made after the failed second one
        assert statuses == ["done", "failed", "done"] and len(logger.videos) == 2
    else:  # interrupted: nothing after the first video
        assert statuses == ["done"] and len(logger.videos) == 1


def test_analyses_build_the_run_exactly_as_generation_does(compose_cfg, tmp_path):
    """frame_chunk_size, device/dtype and decode chunking reach an analysis' backbone and pipeline."""
    from freelong.app.setup import prepare

    cfg = small(compose_cfg, tmp_path, "frame_chunk_size=3", "decode_chunk_size=5", "experiment=snr_vs_length")
    setup = prepare(cfg, run_dir=tmp_path / "analysis")
    assert setup.backbone.unet.frame_chunk_size == 3
    pipe = setup.pipeline("direct")
    assert pipe.decode_chunk_size == 5 and pipe.progress is False
    assert (tmp_path / "analysis" / "config.yaml").is_file()
    env = setup.environment()
    assert env["model"] == "lavie_tiny" and env["weights"] == "random-init" and env["dtype"] == "float32"


@pytest.mark.skipif(shutil.which("freelong-run") is None, reason="the console script is installed by pip install -e .")
def test_the_console_script_runs_the_same_app(tmp_path):
    res = subprocess.run(["freelong-run", "--cfg", "job", "model=videocrafter2_tiny", "method=freenoise"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    cfg = OmegaConf.create(res.stdout)
    assert cfg.model.name == "videocrafter2_tiny" and cfg.method.name == "freenoise"
