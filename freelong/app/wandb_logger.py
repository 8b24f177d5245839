"""``logger=wandb``: the run's config, per-video scores, the aggregated table, videos and figures in wandb.

Offline by default (``logger.mode=offline``): wandb writes ``<run dir>/wandb/offline-run-*/`` and the
user uploads it later with ``wandb sync``. Runs are grouped by experiment (``logger.group``, default
``task_name``) and tagged with the config's tags, the model, the method and ``random-init`` for smoke
models. Each video logs its scores and timings as a step (and the video file, up to
``logger.max_videos``); ``finish`` logs the per-video table, the Table-1 style aggregate, summary values
and matplotlib figures (also saved as PNG under ``<run dir>/figures``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("freelong")
SCORE_DIMS = ("subject_consistency", "background_consistency", "motion_smoothness", "temporal_flickering",
              "imaging_quality", "aesthetic_quality", "dynamic_degree")


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
        return float(v)
    return None


class WandbLogger:
    """``log_video(record, video_path)`` per finished video, ``finish(records)`` once at the end."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        import wandb

        lcfg = cfg.logger
        if lcfg.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode must be offline, online or disabled, got {lcfg.mode!r}")
        self.wandb = wandb
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.max_videos = int(lcfg.max_videos)
        self.log_videos = bool(lcfg.log_videos)
        self.log_figures = bool(lcfg.log_figures)
        self.log_report = bool(lcfg.get("log_report", False))
        self.videos_logged = 0
        self.step = 0
        random_init = bool(OmegaConf.select(cfg, "model.random_init", default=False))
        tags = [*cfg.tags, *lcfg.tags, str(cfg.model.name), str(cfg.method.name)]
        if random_init:
            tags.append("random-init")
        wdir = Path(lcfg.dir).expanduser() if lcfg.dir else self.run_dir
        wdir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=lcfg.project,
            entity=lcfg.entity,
            mode=lcfg.mode,
            dir=str(wdir),
            group=lcfg.group or cfg.task_name,
            job_type="random-init-smoke" if random_init else "generate",
            name=self.run_dir.name,
            tags=list(dict.fromkeys(t for t in tags if t)),
            config=OmegaConf.to_container(cfg, resolve=True),
            reinit="finish_previous",
        )
        self.run.config.update({"run_dir": str(self.run_dir)}, allow_val_change=True)

    # -- per video --------------------------------------------------------------------------------
    def log_video(self, record: dict[str, Any], video_path: Path) -> None:
        data: dict[str, Any] = {"video/index": record.get("prompt_index"), "video/seed": record.get("seed"),
                                "time/wall_s": record.get("wall_time_s"),
                                "time/median_step_s": (record.get("timings") or {}).get("median_step_s"),
                                "memory/peak_mb": record.get("peak_memory_mb")}
        for dim, value in (record.get("scores") or {}).items():
            if (num := _number(value)) is not None:
                data[f"scores/{dim}"] = num
        if self.log_videos and self.videos_logged < self.max_videos and Path(video_path).is_file():
            caption = f"{record.get('prompt')} | {record.get('method')} | seed {record.get('seed')}"
            if record.get("random_init"):
                caption += " | RANDOM-INIT"
            data["video"] = self.wandb.Video(str(video_path), caption=caption, format=Path(video_path).suffix[1:])
            self.videos_logged += 1
        self.run.log({k: v for k, v in data.items() if v is not None}, step=self.step)
        self.step += 1

    # -- end of run -------------------------------------------------------------------------------
    def finish(self, records: list[dict[str, Any]]) -> None:
        import pandas as pd

        try:
            from .records import generated_records

            records = generated_records(records)  # a failed video has no file and no scores
            rows = [self._row(r) for r in records]
            if rows:
                per_video = pd.DataFrame(rows)
                self.run.log({"per_video": self.wandb.Table(dataframe=per_video)}, step=self.step)
                summary = self._summary(records)
                if summary is not None:
                    self.run.log({"table1": self.wandb.Table(dataframe=summary)}, step=self.step)
                for dim in SCORE_DIMS:
                    if dim in per_video and per_video[dim].notna().any():
                        self.run.summary[f"mean/{dim}"] = float(per_video[dim].mean())
                if self.log_figures:
                    for name, path in self._figures(per_video).items():
                        self.run.log({f"figures/{name}": self.wandb.Image(str(path))}, step=self.step)
                if self.log_report:
                    self._log_report(records)
        finally:
            self.run.finish()

    def _row(self, record: dict[str, Any]) -> dict[str, Any]:
        scores = record.get("scores") or {}
        row = {"video": record.get("video"), "prompt": str(record.get("prompt")), "seed": record.get("seed"),
               "model": record.get("model"), "method": record.get("method"),
               "num_frames": record.get("num_frames"), "random_init": bool(record.get("random_init")),
               "wall_time_s": record.get("wall_time_s"),
               "median_step_s": (record.get("timings") or {}).get("median_step_s")}
        for dim in SCORE_DIMS:
            row[dim] = _number(scores.get(dim))
        return row

    def _summary(self, records: list[dict[str, Any]]):
        """The Table 1 aggregate of this run (same code as scripts/make_tables.py)."""
        from eval.tables import aggregate, display_frame, records_frame, with_reference

        table = aggregate(records_frame(records))
        if table.empty:
            return None
        return display_frame(with_reference(table)).astype({"Method": str})

    def _log_report(self, records: list[dict[str, Any]]) -> None:
        """The HTML report of this run (analysis/report.py), videos copied in, as an artifact of type "report"."""
        from .plugins import REPORTS

        index = REPORTS.get("html")([self.run_dir], self.run_dir / "report", copy=True,
                             records=[{**r, "run_dir": str(self.run_dir)} for r in records])
        artifact = self.wandb.Artifact(f"report-{self.run.id}", type="report",
                                       description=f"HTML report of {self.run_dir} (open index.html)")
        artifact.add_dir(str(index.parent))
        self.run.log_artifact(artifact)

    def _figures(self, per_video) -> dict[str, Path]:
        """Per-dimension score strip plot and time per step; saved under <run dir>/figures."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out: dict[str, Path] = {}
        fig_dir = self.run_dir / "figures"
        fig_dir.mkdir(parents=True, exist_ok=True)
        dims = [d for d in SCORE_DIMS if d in per_video and per_video[d].notna().any()]
        label = " (RANDOM-INIT)" if per_video["random_init"].any() else ""
        if dims:
            fig, ax = plt.subplots(figsize=(1.6 * len(dims) + 2, 3.2))
            for i, dim in enumerate(dims):
                vals = per_video[dim].dropna().to_numpy()
                ax.scatter([i] * len(vals), vals, alpha=0.6, s=14)
                ax.hlines(vals.mean(), i - 0.3, i + 0.3, color="k")
            ax.set_xticks(range(len(dims)), [d.replace("_", "\n") for d in dims], fontsize=7)
            ax.set_title(f"VBench scores per video{label}")
            fig.tight_layout()
            out["scores"] = fig_dir / "scores.png"
            fig.savefig(out["scores"], dpi=100)
            plt.close(fig)
        if per_video["median_step_s"].notna().any():
            fig, ax = plt.subplots(figsize=(4, 3))
            ax.bar(range(len(per_video)), per_video["median_step_s"].fillna(0))
            ax.set_xlabel("video")
            ax.set_ylabel("median s / step")
            ax.set_title(f"denoising time{label}")
            fig.tight_layout()
            out["time"] = fig_dir / "time.png"
            fig.savefig(out["time"], dpi=100)
            plt.close(fig)
        return out


def build_logger(cfg: DictConfig, run_dir: Path) -> WandbLogger:
    """The logger for ``logger=wandb`` (``make_logger`` in :mod:`freelong.app.runner` calls this)."""
    if cfg.logger.name != "wandb":
        raise ValueError(f"unknown logger {cfg.logger.name!r}; available: none, wandb")
    return WandbLogger(cfg, run_dir)
