"""Scoring inside ``run.py`` (``eval=fast`` / ``eval=vbench``): one evaluator per run, one call per video.

:func:`build_run_evaluator` is called by :mod:`freelong.app.runner` before the first video is generated, so a
missing weight or optional package stops the run at its start with the actionable error (unless the
dimension is dropped with ``eval.dims=[...]``). The callable it returns scores each video right after
it is written and returns ``{dim: per-video value, ..., "meta": {...}}``, stored as ``record["scores"]``
in the video's sidecar and ``results.jsonl``. Per-video values are in VBench's per-video units
(imaging_quality on 0-100, dynamic_degree a bool). ``meta.label`` is ``"random-init"`` when the backbone
is a random-init smoke model: the evaluation networks are then tiny random-weight twins and the scores
mean nothing; ``scripts/make_tables.py`` keeps them out of tables with real runs.

``eval.backend=official`` returns an :class:`OfficialRunEvaluator` instead (``batched = True``): it queues
each video and scores all of them in one VBench process when the run loop calls ``finish()``.
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
    if protocol == "freenoise":  # FVD/KVD are numbers of a whole set of videos, not of one video
        raise _config_error("eval.protocol=freenoise scores a set, not each video: generate with eval=none, then "
                            "python -m eval RUN_OR_SWEEP_DIR --write-back --protocol freenoise and "
                            "python scripts/make_tables.py --protocol freenoise --reference REF RUN_OR_SWEEP_DIR")
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


PENDING_NOTE = ("placeholder: queued for the run's one VBench process, which scores every video after the last "
                "one is generated; still here means the run stopped first (re-running it rescores these videos, "
                "or: python -m eval RUN_DIR --write-back)")


def is_pending(scores: dict[str, Any] | None) -> bool:
    """True for the placeholder scores of a video queued for a batched evaluator but never scored."""
    return bool(((scores or {}).get("meta") or {}).get("pending"))


class OfficialRunEvaluator:
    """The official backend inside a run: videos are queued as they are written, scored in ONE VBench call.

    ``evaluator(video_path, frames)`` queues the video and returns placeholder scores (``meta.pending`` and
    :data:`PENDING_NOTE`, no values); ``evaluator.finish()`` runs VBench once for every queued video and
    returns ``{video path: scores}`` in the native hook's format, for the run loop to write into the records
    (``batched`` tells it to). A run stopped before ``finish()`` leaves placeholders, which
    :func:`is_pending` recognises: the next run over the same directory queues those videos again
    (:meth:`queue`), and ``--write-back`` rescores them (their label is not the native one).
    """

    batched = True

    def __init__(self, dims: list[str], python: str, device: str | None, imaging_mode: str, cache_dir: str | None):
        self.dims, self.python, self.device = dims, python, device
        self.imaging_mode, self.cache_dir = imaging_mode, cache_dir
        self.queued: list[Path] = []
        self.frames: dict[str, int | None] = {}

    def queue(self, video_path: Path, num_frames: int | None) -> dict[str, Any]:
        """Queue a written video for :meth:`finish`; its placeholder scores."""
        self.queued.append(Path(video_path))
        self.frames[str(video_path)] = num_frames
        return {"meta": {"label": "vbench-official", "random_init": False, "backend": "official",
                         "protocol": "standard", "pending": True, "note": PENDING_NOTE, "frames": num_frames,
                         "errors": {}}}

    def __call__(self, video_path: Path, frames: np.ndarray, prompt: str | None = None) -> dict[str, Any]:
        # prompt is not passed on: VBench's custom_input mode takes each prompt from the file name
        return self.queue(video_path, int(frames.shape[0]))

    def finish(self) -> dict[str, dict[str, Any]]:
        """Score everything queued so far in one VBench process (nothing queued: no process)."""
        from eval.official import score_official_run

        if not self.queued:
            return {}
        videos, self.queued = self.queued, []
        out = score_official_run(videos, self.dims, self.python, device=self.device, imaging_mode=self.imaging_mode,
                                 cache_dir=self.cache_dir)
        for path, scores in out.items():
            scores["meta"]["frames"] = self.frames.get(path)
            scores["meta"]["protocol"] = "standard"
        return out


def _official_hook(cfg: DictConfig, dims: list[str], random_init: bool) -> OfficialRunEvaluator:
    from eval.official import check_official_dims, missing_files
    from eval.weights import vbench_cache_dir

    try:
        check_official_dims(dims)
    except ValueError as err:
        raise _config_error(f"eval.dims: {err}") from err

    if random_init:
        raise _config_error("eval.backend=official cannot score a random-init smoke model (VBench would need its "
                            "real weights for meaningless videos); use eval.backend=native")
    python = cfg.get("vbench_python")
    if not python or not Path(python).exists():
        raise _config_error(f"eval.backend=official needs eval.vbench_python=/path/to/vbench-env/bin/python "
                            f"(got {python!r})")
    missing = missing_files(dims, vbench_cache_dir(cfg.get("cache_dir")))
    if missing:  # before any video is generated
        raise _config_error("eval.backend=official: the VBench cache lacks " + ", ".join(map(str, missing))
                            + " (set eval.cache_dir=..., or drop those dimensions with eval.dims=[...])")
    return OfficialRunEvaluator(dims, python, cfg.get("device"), cfg.get("imaging_mode", "longer"),
                                cfg.get("cache_dir"))
