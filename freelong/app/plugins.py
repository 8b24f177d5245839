"""The app's plugin registries, fed by entry points like the core's methods and backbones.

- ``freelong.tasks``: analyses that ``run.py`` runs instead of generation when ``analysis.task`` is set
  (``snr_vs_length``, ``attention_maps``; ``fn(cfg)``);
- ``freelong.reports``: report writers (``html`` = :func:`analysis.report.build_report`;
  ``fn(dirs, out_dir, **options) -> index path``), used by ``report=true`` and the wandb logger.

Looking them up by name keeps the app from importing the analyses that sit on top of it.
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry

TASKS: Registry[Any] = Registry("freelong.tasks", "analysis task")
REPORTS: Registry[Any] = Registry("freelong.reports", "report writer")


def in_multirun() -> bool:
    """Whether this job is one of a Hydra multirun (whose report is written once, at the sweep's end)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


__all__ = ["REPORTS", "TASKS", "in_multirun"]
