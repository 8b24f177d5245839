"""A run's setup, shared by generation (:mod:`.runner`) and every analysis: check, then build.

:func:`prepare` validates the config, loads and checks the prompts, checks that every weight is on the
machine (cheap path lookups) — all before anything heavy — then makes the run directory, builds the
backbone on the run's device and dtype with the run's ``frame_chunk_size``, and writes ``config.yaml``.
:meth:`RunSetup.pipeline` builds a :class:`~freelong.pipeline.LongVideoPipeline` with the run's
``decode_chunk_size`` and progress setting, so an analysis honours every generation setting the runner does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..prompts import normalize_prompt, parse_prompt
from ..video_io import atomic_write_text
from ..weights import resolve_model_weights
from .config import validate_config
from .prompt_suites import load_suite, sample_prompts
from .sharding import job_device

log = logging.getLogger("freelong")


def load_prompts(cfg: DictConfig) -> list[Any]:
    """Prompts from ``prompts.list``, a suite (``prompts=vbench``, :mod:`.prompt_suites`) and/or ``prompts.file``
    (.txt one per line, or a .json list); then ``prompts.limit`` of them (seeded with ``prompts.sample_seed``).

    Multi-prompt items (segment lists) come back in their canonical dict form
    ``{segments: [{prompt, frames}], transition_frames}`` (``freelong.prompts.normalize_prompt``).
    """
    items: list[Any] = list(OmegaConf.to_container(cfg["list"], resolve=True)) if cfg["list"] else []
    if cfg.get("suite"):  # a SuiteError (ConfigError) if the suite file is missing or not VBench's layout
        items.extend(load_suite(cfg))
    if cfg.file:
        path = Path(cfg.file).expanduser()
        if not path.is_file():
            raise ConfigError(f"prompts.file={cfg.file} does not exist")
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(path.read_text())
            except ValueError as err:
                raise ConfigError(f"prompts.file={cfg.file}: not valid JSON ({err})") from None
            if not isinstance(data, list):
                raise ConfigError(f"prompts.file={cfg.file}: expected a JSON list of prompts")
            items.extend(data)
        else:
            items.extend(line.strip() for line in path.read_text().splitlines()
                         if line.strip() and not line.lstrip().startswith("#"))
    items = sample_prompts(items, cfg.limit, cfg.get("sample_seed"))
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


def output_dir(cfg: DictConfig) -> Path:
    """Hydra's output directory of this job, or a timestamped folder under ``paths.output_root``."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_root) / cfg.task_name / "runs" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def check_config(cfg: DictConfig) -> list[Any]:
    """Every cheap check, before anything heavy: values, prompts, and that the weights are on the machine.

    Returns the prompts; raises :class:`ConfigError` or :class:`~freelong.errors.MissingWeightsError`.
    """
    try:
        validate_config(cfg)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    prompts = load_prompts(cfg.prompts)
    resolve_model_weights(cfg.model, cfg.paths.weights_dir)
    return prompts


@dataclass
class RunSetup:
    cfg: DictConfig
    run_dir: Path
    backbone: Any
    device: torch.device
    dtype: torch.dtype
    prompts: list[Any]

    def pipeline(self, method: Any):
        """A pipeline for ``method`` with the run's decode chunking and progress setting."""
        from .. import parallel
        from ..pipeline import LongVideoPipeline

        return LongVideoPipeline(self.backbone, method, decode_chunk_size=self.cfg.decode_chunk_size,
                                 progress=self.cfg.progress and parallel.is_main_process())

    def environment(self) -> dict[str, Any]:
        from .records import environment

        return environment(self.backbone, self.device, self.dtype)


def build(cfg: DictConfig, prompts: list[Any], run_dir: str | Path | None = None) -> RunSetup:
    """Make the run directory, build the backbone on the run's device/dtype/chunking, write ``config.yaml``."""
    from .. import parallel
    from ..metadata import resolve_device
    from ..models.base import build_backbone

    device, dtype = resolve_device(job_device(cfg.device), cfg.dtype)  # cuda:free -> the GPU this process holds
    split = int(cfg.get("parallel", {}).get("context", 1)) > 1
    if split and device.type == "cuda":  # one GPU per rank
        device = parallel.local_device()
    run_dir = Path(run_dir) if run_dir is not None else output_dir(cfg)
    if split:  # Hydra's timestamped directory may differ between ranks: rank 0's is the run's
        run_dir = Path(parallel.broadcast_object(str(run_dir)))
    if parallel.is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
    try:  # a family's config checks (e.g. a motion adapter that does not fit its base UNet) run first
        backbone = build_backbone(cfg.model, cfg.paths.weights_dir)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if backbone.random_init:
        log.warning("%s — model '%s'", backbone.label(), backbone.name)
    backbone.to(device, dtype)
    if hasattr(backbone.unet, "frame_chunk_size"):  # memory-bounded long videos (freelong.chunking)
        backbone.unet.frame_chunk_size = cfg.frame_chunk_size
    if split:
        try:
            parallel.enable_context_parallel(backbone, int(cfg.parallel.context))
        except ValueError as err:
            raise ConfigError(str(err)) from err
    if parallel.is_main_process():
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    return RunSetup(cfg, run_dir, backbone, device, dtype, prompts)


def prepare(cfg: DictConfig, check: Callable[[list[Any]], None] | None = None,
            run_dir: str | Path | None = None) -> RunSetup:
    """:func:`check_config` (``check(prompts)`` adds the caller's checks), then :func:`build`."""
    prompts = check_config(cfg)
    if check is not None:
        check(prompts)
    return build(cfg, prompts, run_dir)


__all__ = ["RunSetup", "build", "check_config", "check_prompts_fit", "load_prompts", "output_dir", "prepare"]
