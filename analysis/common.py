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

from freelong.app.setup import check_prompts_fit
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


def title_suffix(backbone: Any) -> str:
    return f"\n{backbone.name} — RANDOM-INIT WEIGHTS (smoke run, not a real model)" if backbone.random_init \
        else f"\n{backbone.name}"


def save_figure(fig: Any, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically; returns the paths."""
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight")
        target = stem.with_suffix(f".{ext}")
        atomic_write_bytes(target, buf.getvalue())
        paths.append(target)
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
