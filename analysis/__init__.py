"""Analyses beyond plain generation: SNR vs length, temporal attention maps, sweep aggregation.

``run.py`` runs an analysis instead of plain generation when the config sets ``analysis.task``
(the ``experiment=snr_vs_length`` and ``experiment=attention_maps`` configs do);
``python -m analysis.aggregate SWEEP_DIR`` collects a Hydra multirun into tables and plots.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from omegaconf import DictConfig

# task name -> "module:function"; imported lazily so `run.py` stays light for plain generation.
TASKS: dict[str, str] = {
    "snr_vs_length": "analysis.frequency:run_experiment",
    "attention_maps": "analysis.attention_maps:run_experiment",
}


def run_task(cfg: DictConfig) -> Any:
    """Run the analysis named by ``cfg.analysis.task``."""
    from freelong.runner import ConfigError

    task = cfg.analysis.get("task")
    if task not in TASKS:
        raise ConfigError(f"unknown analysis.task {task!r}; available: {', '.join(sorted(TASKS))}")
    module, func = TASKS[task].split(":")
    return getattr(import_module(module), func)(cfg)


__all__ = ["TASKS", "run_task"]
