"""Plumbing shared by the analysis experiments: options, the methods to compare, the backbone, outputs.

An analysis experiment is a Hydra config with ``analysis.task`` set (``run.py`` dispatches on it);
its options live under ``analysis.*``. ``analysis.methods`` lists the methods to compare, each a
name (its ``conf/method/<name>.yaml``; the method selected with ``method=`` keeps the command
line's ``method.*`` overrides) or a dict ``{name, label?, <parameters>}``. The run itself is set up by the
app exactly as generation is (:func:`freelong.app.setup.prepare`: every generation setting honoured) and
per-video results are cached through the record store (:class:`freelong.app.records.KeyedCache`,
``<run dir>/records/<key>.json``) so a re-run of the same directory resumes.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from freelong.app.records import Job, fingerprint, make_jobs, sampling_settings
from freelong.app.setup import RunSetup, check_prompts_fit, prepare
from freelong.errors import ConfigError
from freelong.methods import Method, get_method
from freelong.models.spec import CONF_DIR, latent_frames
from freelong.video_io import atomic_write_bytes, atomic_write_text

log = logging.getLogger("freelong.analysis")


def analysis_options(cfg: DictConfig, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg.analysis`` over ``defaults``; an unknown key is a ConfigError naming it."""
    given = OmegaConf.to_container(cfg.analysis, resolve=True) if cfg.get("analysis") else {}
    unknown = sorted(set(given) - set(defaults) - {"task"})
    if unknown:
        raise ConfigError(f"unknown analysis option(s) {', '.join('analysis.' + k for k in unknown)} for task "
                          f"{given.get('task')!r}; valid: {', '.join(sorted(defaults))}")
    return {**defaults, **given}


def check_lengths(lengths: Any, key: str = "analysis.lengths") -> list[int]:
    if not isinstance(lengths, (list, tuple)) or not lengths:
        raise ConfigError(f"{key} must be a non-empty list of frame counts, got {lengths!r}")
    out = []
    for n in lengths:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{key} must hold positive integers, got {n!r}")
        out.append(n)
    if len(set(out)) != len(out):
        raise ConfigError(f"{key} has duplicates: {out}")
    return sorted(out)


@dataclass
class MethodEntry:
    label: str
    method: Method


def _method_yaml(name: str) -> dict[str, Any]:
    from freelong.methods import available_methods

    path = CONF_DIR / "method" / f"{name}.yaml"
    if not path.is_file() and name in available_methods():  # a plugin method: its dataclass defaults
        return {"name": name}
    if not path.is_file():
        known = sorted({p.stem for p in (CONF_DIR / "method").glob("*.yaml")} | set(available_methods()))
        raise ConfigError(f"analysis.methods: unknown method {name!r}; available: {', '.join(known)}")
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    base: dict[str, Any] = {}
    for parent in raw.pop("defaults", None) or []:  # presets built on another method file (freelong_vc2, *_wan)
        if isinstance(parent, str) and not parent.startswith("/") and parent != "_self_":
            base.update(_method_yaml(parent))
    return {**base, **raw}


def methods_from_config(cfg: DictConfig, entries: Any) -> list[MethodEntry]:
    """The methods an experiment compares (``entries=None``: just the ``method=`` one)."""
    current = OmegaConf.to_container(cfg.method, resolve=True)
    if entries is None:
        entries = [current["name"]]
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ConfigError(f"analysis.methods must be a non-empty list, got {entries!r}")
    out: list[MethodEntry] = []
    for entry in entries:
        if isinstance(entry, str):
            params = dict(current) if entry == current["name"] else _method_yaml(entry)
            label = entry
        elif isinstance(entry, Mapping) and "name" in entry:
            entry = dict(entry)
            label = str(entry.pop("label", "")) or None
            params = {**_method_yaml(entry["name"]), **{k: v for k, v in entry.items() if k != "name"}}
            if label is None:
                extra = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "name")
                label = f"{entry['name']}({extra})" if extra else entry["name"]
        else:
            raise ConfigError(f"analysis.methods entries are names or {{name, label?, params...}}, got {entry!r}")
        name = params.pop("name")
        try:
            method = get_method(name, **params).with_native_frames(latent_frames(cfg.model, cfg.model.native_frames))
        except ValueError as err:
            raise ConfigError(f"analysis.methods ({label}): {err}") from None
        out.append(MethodEntry(label, method))
    labels = [m.label for m in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"analysis.methods labels must be unique, got {labels} (give entries a 'label')")
    return out


def check_methods_fit(methods: list[MethodEntry], lengths: list[int], prompts: list[Any]) -> None:
    for n in lengths:
        try:
            check_prompts_fit(prompts, n)
        except ConfigError as err:
            raise ConfigError(f"at {n} frames: {err}") from None
        for m in methods:
            try:
                m.method.check_frames(n)
            except ValueError as err:
                raise ConfigError(f"analysis.methods ({m.label}) at {n} frames: {err}") from None


@dataclass
class LengthSweep:
    """Every method at every length on every job (prompt x seed), set up as generation is.

    The per-length experiments (``snr_vs_length``, ``attention_maps``) share it so that they validate,
    build, key their cached results and sample the same way; only what they record differs."""

    cfg: DictConfig
    methods: list[MethodEntry]
    lengths: list[int]
    setup: RunSetup
    meta: dict[str, Any]  # the run's environment (model, weights, versions)
    sampling: dict[str, Any]  # the sampling settings but the frame count (the sweep sets it)
    jobs: list[Job]

    @classmethod
    def prepare(cls, cfg: DictConfig, methods: Any, lengths: list[int]) -> LengthSweep:
        """``methods``: ``analysis.methods``; checks that each fits every length, then builds the run."""
        entries = methods_from_config(cfg, methods)
        setup = prepare(cfg, check=lambda prompts: check_methods_fit(entries, lengths, prompts))
        sampling = {k: v for k, v in sampling_settings(cfg).items() if k != "num_frames"}
        return cls(cfg, entries, lengths, setup, setup.environment(), sampling,
                   make_jobs(setup.prompts, cfg.seed, cfg.num_seeds))

    def tag(self, table: Any) -> Any:
        """``table`` (a DataFrame, in place) with the run's ``model`` and ``random_init`` columns: every CSV an
        experiment writes says what made it, and a random-init smoke run is never mistaken for a result."""
        table["model"] = self.meta["model"]
        table["random_init"] = self.meta["random_init"]
        return table

    def finish(self, fig: Any, stem: str, written: list[Path], **results: Any) -> dict[str, Any]:
        """Save ``fig`` as ``<run dir>/<stem>.{png,pdf}``, log it with the files ``written`` before it (the
        experiment's outputs in one line) and return the experiment's result: ``run_dir``, ``results``, ``figures``."""
        figures = save_figure(fig, self.setup.run_dir / stem)
        log.info("wrote %s and %s", ", ".join(map(str, written)), ", ".join(map(str, figures)))
        return {"run_dir": self.setup.run_dir, **results, "figures": figures}

    def key(self, task: str, entry: MethodEntry, frames: int, job: Job, **options: Any) -> str:
        """The cache key of one video's result: all that fixes the video, plus the task and its ``options``."""
        return fingerprint({"task": task, "model": self.meta["model"], "weights": self.meta["weights"],
                            "method": entry.method.name, "params": entry.method.params(), "frames": frames,
                            "sampling": self.sampling, "prompt": job.prompt, "seed": job.seed, **options,
                            "dtype": str(self.setup.dtype)})

    def sample(self, pipe: Any, frames: int, job: Job, **kwargs: Any) -> Any:
        """The final latents of ``job`` at ``frames`` through ``pipe``, with the run's sampling settings."""
        cfg = self.cfg
        return pipe(job.prompt, frames, cfg.height, cfg.width, cfg.num_inference_steps, cfg.guidance_scale,
                    job.seed, negative_prompt=cfg.negative_prompt, sampler=cfg.sampler, eta=cfg.eta,
                    output_type="latent", **kwargs)


def title_suffix(backbone: Any) -> str:
    return f"\n{backbone.name} — RANDOM-INIT WEIGHTS (smoke run, not a real model)" if backbone.random_init \
        else f"\n{backbone.name}"


def save_figure(fig: Any, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically, then close ``fig`` (a written figure is done with, and
    pyplot would keep it alive); returns the paths."""
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight")
        target = stem.with_suffix(f".{ext}")
        atomic_write_bytes(target, buf.getvalue())
        paths.append(target)
    pyplot().close(fig)
    return paths


def write_csv(df: Any, path: Path) -> Path:
    atomic_write_text(path, df.to_csv(index=False))
    return path


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (figures are files, never windows)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
