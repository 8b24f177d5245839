"""Scoring inside ``run.py`` (``eval=fast`` / ``eval=vbench``): one evaluator per run, one call per video.

:func:`build_run_evaluator` is called by :mod:`freelong.app.runner` before the first video is generated, so a
missing weight or optional package stops the run at its start with the actionable error (unless the
dimension is dropped with ``eval.dims=[...]``). The callable it returns scores each video right after
it is written and returns ``{dim: per-video value, ..., "meta": {...}}``, stored as ``record["scores"]``
in the video's sidecar and ``results.jsonl``. Per-video values are in VBench's per-video units
(imaging_quality on 0-100, dynamic_degree a bool). ``meta.label`` is ``"random-init"`` when the backbone
is a random-init smoke model: the evaluation networks are then tiny random-weight twins and the scores
mean nothing; ``scripts/make_tables.py`` keeps them out of tables with real runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from eval.base import parse_dims

from ..errors import ConfigError

SOURCES = ("file", "frames")


def _config_error(msg: str) -> Exception:
    return ConfigError(msg)


def eval_dims(cfg: DictConfig) -> list[str]:
    """``eval.dims`` if set, else the group named by ``eval.name`` (fast / vbench)."""
    spec = list(cfg.dims) if cfg.get("dims") else cfg.name
    try:
        return parse_dims(spec)
    except ValueError as err:
        raise _config_error(f"eval.dims: {err}") from err


def build_run_evaluator(cfg: DictConfig, device: torch.device, random_init: bool) -> Callable[[Path, np.ndarray], dict]:
    """The per-video scorer for a run. Raises before any generation if something it needs is missing."""
    from eval.models import MissingExtraError
    from eval.scorer import Evaluator

    dims = eval_dims(cfg)
    source = cfg.get("source", "file")
    if source not in SOURCES:
        raise _config_error(f"eval.source must be one of {SOURCES}, got {source!r}")
    weights = {k: v for k, v in (OmegaConf.to_container(cfg.get("weights") or {}, resolve=True) or {}).items() if v}
    backend = cfg.get("backend", "native")
    protocol = cfg.get("protocol", "standard")
    if protocol == "long":
        return _long_hook(cfg, dims, source, weights, device, random_init)
    if protocol != "standard":
        raise _config_error(f"eval.protocol must be standard or long, got {protocol!r}")
    if backend == "official":
        return _official_hook(cfg, dims, random_init)
    if backend != "native":
        raise _config_error(f"eval.backend must be native or official, got {backend!r}")
    try:
        evaluator = Evaluator(dims, device=cfg.get("device") or device, random_init=random_init, weights=weights,
                              cache_dir=cfg.get("cache_dir"), batch_size=cfg.get("batch_size", 32),
                              precision=cfg.get("precision", "vbench"), imaging_mode=cfg.get("imaging_mode", "longer"),
                              seed=cfg.get("seed", 0))
    except MissingExtraError as err:
        raise _config_error(f"eval={cfg.name}: {err}\n(or use eval=fast, or set eval.dims=[...])") from err
    except ValueError as err:
        raise _config_error(f"eval: {err}") from err
    weight_ids = evaluator_weight_ids(evaluator)

    def evaluate(video_path: Path, frames: np.ndarray, prompt: str | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        s = evaluator.score(video_path, frames=frames if source == "frames" else None, prompt=prompt)
        return record_scores(evaluator, s, source, weight_ids, time.perf_counter() - t0)

    return evaluate


def evaluator_weight_ids(evaluator) -> dict[str, str | None]:
    """``{weight name: sha256}`` of the networks an :class:`~eval.scorer.Evaluator` loaded (empty: random-init)."""
    return {name: info.get("sha256") for name, info in evaluator.describe()["weights"].items()}


def record_scores(evaluator, s, source: str, weight_ids: dict[str, str | None], seconds: float) -> dict[str, Any]:
    """``record["scores"]`` of one video: its per-video values and ``meta`` (also used by :mod:`.writeback`)."""
    scores: dict[str, Any] = dict(s.values())
    scores["meta"] = {
        "label": evaluator.label,
        "random_init": evaluator.random_init,
        "backend": "native",
        "protocol": "standard",
        "source": source,
        "frames": s.num_frames,
        "device": str(evaluator.ctx.device),
        "precision": evaluator.ctx.precision,
        "imaging_mode": evaluator.ctx.imaging_mode,
        "weights": weight_ids,
        "errors": ({"video": s.error} if s.error else dict(s.errors)),
        "seconds": seconds,
    }
    return scores


def _long_hook(cfg: DictConfig, dims: list[str], source: str, weights: dict[str, str], device: torch.device,
               random_init: bool) -> Callable[[Path, np.ndarray], dict]:
    """``eval.protocol=long``: VBench-Long values per video, its per-scene unit records in ``meta.long``."""
    from eval.long import LongSettings
    from eval.long_eval import long_run_scorer
    from eval.models import MissingExtraError

    if cfg.get("backend", "native") != "native":
        raise _config_error("eval.protocol=long runs with eval.backend=native only")
    raw = OmegaConf.to_container(cfg.get("long") or {}, resolve=True) or {}
    try:
        settings = LongSettings.from_mapping(raw)
    except (TypeError, ValueError) as err:
        raise _config_error(f"eval.long: {err}") from err
    try:
        return long_run_scorer(dims, settings, source=source, random_init=random_init,
                               device=cfg.get("device") or device, weights=weights, cache_dir=cfg.get("cache_dir"),
                               batch_size=cfg.get("batch_size", 32), precision=cfg.get("precision", "vbench"),
                               imaging_mode=cfg.get("imaging_mode", "longer"), seed=cfg.get("seed", 0))
    except MissingExtraError as err:
        raise _config_error(f"eval={cfg.name} eval.protocol=long: {err}") from err
    except ValueError as err:
        raise _config_error(f"eval: {err}") from err


def _official_hook(cfg: DictConfig, dims: list[str], random_init: bool) -> Callable[[Path, np.ndarray], dict]:
    from eval.official import run_official

    if random_init:
        raise _config_error("eval.backend=official cannot score a random-init smoke model (VBench would need its "
                            "real weights for meaningless videos); use eval.backend=native")
    python = cfg.get("vbench_python")
    if not python or not Path(python).exists():
        raise _config_error(f"eval.backend=official needs eval.vbench_python=/path/to/vbench-env/bin/python "
                            f"(got {python!r})")

    def evaluate(video_path: Path, frames: np.ndarray, prompt: str | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            results, rows, _ = run_official([Path(video_path)], dims, python, device=cfg.get("device"),
                                            imaging_mode=cfg.get("imaging_mode", "longer"),
                                            cache_dir=cfg.get("cache_dir"))
            scores: dict[str, Any] = {d: rows[0][d] for d in dims if rows[0][d] is not None}
            errors = {d: "not scored by vbench" for d in dims if rows[0][d] is None}
        except (RuntimeError, OSError) as err:
            scores, errors = {}, {"video": str(err)[-2000:]}
        scores["meta"] = {"label": "vbench-official", "random_init": False, "backend": "official",
                          "protocol": "standard", "frames": int(frames.shape[0]), "errors": errors,
                          "seconds": time.perf_counter() - t0}
        return scores

    return evaluate
