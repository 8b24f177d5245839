"""The Hydra entry point (``python run.py``, the ``freelong-run`` console script) and user-facing errors.

A config with ``analysis.task`` set runs that analysis (found through the ``freelong.tasks`` entry points:
``snr_vs_length``, ``attention_maps``, or a plugin's) instead of plain generation. Errors the user can fix —
a bad value, missing weights, an unavailable device — are printed as one line (``error: ...``) with exit
status 2, never as a traceback; composition errors keep Hydra's own message and status 1. Videos that
failed while the others were made (:mod:`.failures`) are one line with status 1.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from ..errors import ConfigError, MissingWeightsError, WeightChecksumError
from ..models.spec import CONF_DIR
from .config import register_configs
from .failures import GenerationFailed
from .plugins import TASKS, in_multirun

USER_ERRORS = (ConfigError, MissingWeightsError, WeightChecksumError)


def run_task(cfg: DictConfig) -> Any:
    """Run the analysis named by ``cfg.analysis.task``."""
    try:
        task = TASKS.get(str(cfg.analysis.get("task")))
    except ValueError as err:
        raise ConfigError(f"analysis.task: {err}") from None
    return task(cfg)


def dispatch(cfg: DictConfig) -> Any:
    """Generation, or the analysis the config names."""
    if cfg.analysis.get("task"):
        return run_task(cfg)
    from .runner import run

    return run(cfg)


def main(cfg: DictConfig) -> None:
    try:
        dispatch(cfg)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except GenerationFailed as err:  # the other videos were written; exit non-zero so the cluster shows it
        print(f"error: {err}", file=sys.stderr)
        if in_multirun():
            raise  # Hydra marks this job failed, runs the others, and exits non-zero at the end
        raise SystemExit(1) from None


def cli() -> None:
    """``freelong-run [group=option ...] [key=value ...]``: the same app as ``python run.py``."""
    register_configs()
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(main)()


__all__ = ["TASKS", "cli", "dispatch", "main", "run_task"]
