"""The job behind ``run.py``: validate → build backbone and method → generate → (evaluate) → record.

A run directory holds ``config.yaml`` (resolved), ``videos/<stem>.mp4`` with a ``videos/<stem>.json``
sidecar per video, and ``results.jsonl`` (one line per video, rebuilt from the sidecars). Files are
written atomically; a re-run with the same ``hydra.run.dir`` (or sweep dir) skips videos whose
sidecar matches the job, so an interrupted run or sweep resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .config import method_from_config, validate_config
from .metadata import device_name, git_commit, package_versions, peak_memory, reset_peak_memory, resolve_device
from .prompts import normalize_prompt, parse_prompt, prompt_label
from .video_io import atomic_write_json, atomic_write_text, write_video
from .weights import resolve_model_weights

log = logging.getLogger("freelong")


class ConfigError(ValueError):
    """A configuration value is wrong; raised before any heavy work."""


@dataclass
class Job:
    index: int
    prompt: Any
    seed: int

    @property
    def prompt_text(self) -> str:
        try:
            return prompt_label(self.prompt)
        except ValueError:
            return json.dumps(self.prompt, default=str)

    @property
    def stem(self) -> str:
        return f"{self.index:03d}_{slugify(self.prompt_text)}_seed{self.seed}"


def slugify(text: str, max_len: int = 48) -> str:
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()
    return slug[:max_len].rstrip("-") or "prompt"


def load_prompts(cfg: DictConfig) -> list[Any]:
    """Prompts from ``prompts.list`` and/or ``prompts.file`` (.txt one per line, or a .json list).

    Multi-prompt items (segment lists) come back in their canonical dict form
    ``{segments: [{prompt, frames}], transition_frames}`` (``freelong.prompts.normalize_prompt``).
    """
    items: list[Any] = list(OmegaConf.to_container(cfg["list"], resolve=True)) if cfg["list"] else []
    if cfg.file:
        path = Path(cfg.file).expanduser()
        if not path.is_file():
            raise ConfigError(f"prompts.file={cfg.file} does not exist")
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if not isinstance(data, list):
                raise ConfigError(f"prompts.file={cfg.file}: expected a JSON list of prompts")
            items.extend(data)
        else:
            items.extend(line.strip() for line in path.read_text().splitlines()
                         if line.strip() and not line.lstrip().startswith("#"))
    if cfg.limit is not None:
        items = items[: cfg.limit]
    if not items:
        raise ConfigError("no prompts to generate (prompts.list / prompts.file are empty)")
    transition = cfg.get("transition_frames", 8)
    out = []
    for i, item in enumerate(items):
        try:
            out.append(normalize_prompt(item, transition))
        except ValueError as err:
            raise ConfigError(f"prompts item {i}: {err}") from None
    return out


def check_prompts_fit(prompts: Iterable[Any], num_frames: int) -> None:
    """Raise ConfigError if a multi-prompt's segments/transitions do not fit ``num_frames`` frames."""
    for i, item in enumerate(prompts):
        parsed = parse_prompt(item)
        if not isinstance(parsed, str):
            try:
                parsed.frame_weights(num_frames)
            except ValueError as err:
                raise ConfigError(f"prompts item {i}: {err}") from None


def sampling_settings(cfg: DictConfig) -> dict[str, Any]:
    return {k: cfg[k] for k in ("num_frames", "height", "width", "num_inference_steps", "guidance_scale",
                                "sampler", "eta", "negative_prompt")}


def job_key(cfg: DictConfig, job: Job, dtype: torch.dtype) -> str:
    """Fingerprint of everything that determines a video's pixels."""
    payload = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "method": OmegaConf.to_container(cfg.method, resolve=True),
        "sampling": sampling_settings(cfg),
        "prompt": job.prompt,
        "seed": job.seed,
        "dtype": str(dtype),
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def output_dir(cfg: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_root) / cfg.task_name / "runs" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


class RunRecorder:
    """Sidecar JSON per video and the ``results.jsonl`` built from them."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.video_dir = run_dir / "videos"
        self.video_dir.mkdir(parents=True, exist_ok=True)

    def sidecar(self, job: Job) -> Path:
        return self.video_dir / f"{job.stem}.json"

    def video(self, job: Job) -> Path:
        return self.video_dir / f"{job.stem}.mp4"

    def finished(self, job: Job, key: str) -> dict[str, Any] | None:
        side, vid = self.sidecar(job), self.video(job)
        if not (side.is_file() and vid.is_file()):
            return None
        try:
            record = json.loads(side.read_text())
        except ValueError:
            return None
        return record if record.get("job_key") == key else None

    def save(self, job: Job, record: dict[str, Any]) -> None:
        atomic_write_json(self.sidecar(job), record)
        self.rebuild_results()

    def records(self) -> list[dict[str, Any]]:
        out = []
        for side in sorted(self.video_dir.glob("*.json")):
            try:
                out.append(json.loads(side.read_text()))
            except ValueError:
                log.warning("ignoring unreadable sidecar %s", side)
        return sorted(out, key=lambda r: (r.get("prompt_index", 0), r.get("seed", 0)))

    def rebuild_results(self) -> None:
        lines = "".join(json.dumps(r, default=str) + "\n" for r in self.records())
        atomic_write_text(self.run_dir / "results.jsonl", lines)


def make_jobs(prompts: Iterable[Any], seed: int, num_seeds: int) -> list[Job]:
    return [Job(i, p, seed + s) for i, p in enumerate(prompts) for s in range(num_seeds)]


def make_evaluator(cfg: DictConfig, device: torch.device, random_init: bool):
    """The per-video scorer for ``eval=...`` (None for ``eval=none``)."""
    if cfg.eval.name == "none":
        return None
    from eval.hook import build_run_evaluator  # the eval package (VBench dimensions)

    return build_run_evaluator(cfg.eval, device=device, random_init=random_init)


def make_logger(cfg: DictConfig, run_dir: Path):
    """The experiment logger for ``logger=...`` (None for ``logger=none``)."""
    if cfg.logger.name == "none":
        return None
    from .wandb_logger import build_logger

    return build_logger(cfg, run_dir)


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> Path:
    """Generate every (prompt, seed) of the config into the run directory; return its path.

    ``run_dir`` defaults to Hydra's output directory (``hydra.run.dir`` / the sweep subdir), or a
    timestamped folder under ``paths.output_root`` when called outside Hydra.
    """
    from .models.base import build_backbone
    from .pipeline import LongVideoPipeline

    try:
        validate_config(cfg)
        prompts = load_prompts(cfg.prompts)
        check_prompts_fit(prompts, cfg.num_frames)
        method = method_from_config(cfg.method)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    run_dir = Path(run_dir) if run_dir is not None else output_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    device, dtype = resolve_device(cfg.device, cfg.dtype)

    # Everything that can be missing is checked before anything heavy is loaded: the backbone's
    # weights (cheap path lookups), then the evaluation networks, then the backbone itself.
    resolve_model_weights(cfg.model, cfg.paths.weights_dir)
    evaluator = make_evaluator(cfg, device, bool(cfg.model.random_init))
    try:  # a family's config checks (e.g. a motion adapter that does not fit its base UNet) run first
        backbone = build_backbone(cfg.model, cfg.paths.weights_dir)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if backbone.random_init:
        log.warning("%s — model '%s'", backbone.label(), backbone.name)
    backbone.to(device, dtype)
    if hasattr(backbone.unet, "frame_chunk_size"):  # memory-bounded long videos (freelong.chunking)
        backbone.unet.frame_chunk_size = cfg.frame_chunk_size
    pipe = LongVideoPipeline(backbone, method, decode_chunk_size=cfg.decode_chunk_size, progress=cfg.progress)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    recorder = RunRecorder(run_dir)
    logger = make_logger(cfg, run_dir)

    jobs = make_jobs(prompts, cfg.seed, cfg.num_seeds)
    log.info("run dir %s: %d video(s), %s on %s, %d frames %dx%d", run_dir, len(jobs), method.describe(),
             backbone.name, cfg.num_frames, cfg.height, cfg.width)
    for job in jobs:
        key = job_key(cfg, job, dtype)
        done = None if cfg.overwrite else recorder.finished(job, key)
        if done is not None:
            log.info("skip %s (already generated)", job.stem)
            continue
        reset_peak_memory(device)
        t0 = time.perf_counter()
        video = pipe(job.prompt, cfg.num_frames, cfg.height, cfg.width, cfg.num_inference_steps,
                     cfg.guidance_scale, job.seed, negative_prompt=cfg.negative_prompt, sampler=cfg.sampler,
                     eta=cfg.eta)
        wall = time.perf_counter() - t0
        write_video(recorder.video(job), video, fps=cfg.fps)
        record = {
            "video": f"videos/{job.stem}.mp4",
            "prompt": job.prompt,
            "prompt_index": job.index,
            "seed": job.seed,
            **backbone.info(),
            "method": method.name,
            "method_params": pipe.effective_method.params(),
            **sampling_settings(cfg),
            "fps": cfg.fps,
            "device": str(device),
            "device_name": device_name(device),
            "dtype": str(dtype).replace("torch.", ""),
            "wall_time_s": wall,
            "timings": pipe.stats.as_dict(),
            **peak_memory(device),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "experiment": cfg.task_name,
            "tags": list(cfg.tags),
            "job_key": key,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if evaluator is not None:
            record["scores"] = evaluator(recorder.video(job), video)
        recorder.save(job, record)
        if logger is not None:
            logger.log_video(record, recorder.video(job))
        log.info("wrote %s (%.1fs)", recorder.video(job), wall)
    if logger is not None:
        logger.finish(recorder.records())
    return run_dir
