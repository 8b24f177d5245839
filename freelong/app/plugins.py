"""The app's plugin registries, fed by entry points like the core's methods and backbones.

- ``freelong.tasks``: analyses that ``run.py`` runs instead of generation when ``analysis.task`` is set
  (``snr_vs_length``, ``attention_maps``; ``fn(cfg)``);
- ``freelong.reports``: report writers (``html`` = :func:`analysis.report.build_report`;
  ``fn(dirs, out_dir, **options) -> index path``), used by ``report=true`` and the wandb logger.

Looking them up by name keeps the app from importing the analyses that sit on top of it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from ..registry import Registry

log = logging.getLogger("freelong")

TASKS: Registry[Any] = Registry("freelong.tasks", "analysis task")
REPORTS: Registry[Any] = Registry("freelong.reports", "report writer")


def in_multirun() -> bool:
    """Whether this job is one of a Hydra multirun (whose report is written once, at the sweep's end)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class ReportCallback(Callback):
    """Hydra callback (``conf/hydra/default.yaml``): with ``report=true`` a sweep ends with ``<sweep dir>/report``."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if not config.get("report"):
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        log.info("report: %s", REPORTS.get("html")([sweep_dir], sweep_dir / "report"))


__all__ = ["REPORTS", "TASKS", "ReportCallback", "in_multirun"]
