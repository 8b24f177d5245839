"""``python -m freelong status SWEEP_DIR``: per job of a (sharded) sweep, which videos are done, failed, missing.

A job's expected videos are recomputed from its resolved ``config.yaml`` exactly as the runner makes them
(prompts x seeds, then the job's shard); its records are the ``videos/<stem>.json`` sidecars. A video is
``done`` when its record says so, its mp4 exists and its ``job_key`` is the one the config gives;
``failed`` when its record says ``status: failed`` (the error is shown); ``stale`` when a record from
another configuration sits in its place; ``missing`` otherwise. :func:`missing_by_method` sums this up
per backbone/method for ``scripts/make_tables.py``'s warning.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..errors import ConfigError, error_exit
from .records import is_failed, job_key, make_jobs, natural_key, read_records
from .sharding import select_shard


@dataclass
class JobStatus:
    job_dir: Path
    model: str = "?"
    method: str = "?"
    num_frames: int | None = None
    shard: str = ""
    expected: list[str] | None = None  # None: the prompts could not be recomputed here (e.g. suite file absent)
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def complete(self) -> bool:
        return self.expected is not None and not (self.failed or self.stale or self.missing)


def find_jobs(root: str | Path) -> list[Path]:
    """Run directories at or below ``root``: a resolved ``config.yaml`` or a Hydra ``.hydra/`` folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run or sweep directory")
    dirs = {p.parent for p in root.rglob("config.yaml") if p.parent.name != ".hydra"}
    dirs |= {p.parent for p in root.rglob(".hydra") if p.is_dir() and (p / "config.yaml").is_file()}
    dirs = {d for d in dirs if not any(part.startswith(".") for part in d.relative_to(root).parts)}
    return sorted(dirs, key=natural_key)


def _load_config(job_dir: Path):
    for name in ("config.yaml", ".hydra/config.yaml"):
        if (job_dir / name).is_file():
            return OmegaConf.load(job_dir / name)
    return None


def job_status(job_dir: Path) -> JobStatus:
    """What is done, failed, stale and missing in one run directory."""
    import torch

    from .setup import load_prompts

    st = JobStatus(Path(job_dir))
    records = read_records(st.job_dir)
    cfg = _load_config(st.job_dir)
    keys: dict[str, Any] = {}
    if cfg is not None:
        try:
            st.model, st.method = str(cfg.model.name), str(cfg.method.name)
            st.num_frames = int(cfg.num_frames)
            shard, num = int(cfg.get("shard", 0)), int(cfg.get("num_shards", 1))
            st.shard = f"{shard}/{num}" if num > 1 else ""
            jobs = select_shard(make_jobs(load_prompts(cfg.prompts), int(cfg.seed), int(cfg.num_seeds)), shard, num)
            st.expected = [j.stem for j in jobs]
            keys = {j.stem: (cfg, j) for j in jobs}
        except (ConfigError, ValueError, KeyError, AttributeError, TypeError) as err:  # incl. omegaconf errors
            st.note = f"expected videos unknown: {str(err).splitlines()[0]}"
    for stem in st.expected if st.expected is not None else sorted(records):
        rec = records.get(stem)
        if rec is None:
            st.missing.append(stem)
        elif is_failed(rec):
            st.failed[stem] = str(rec.get("error", "?")).splitlines()[0]
        elif not rec.get("video") or not (st.job_dir / rec["video"]).is_file():
            st.missing.append(stem)
        elif stem in keys and rec.get("dtype") and rec.get("job_key") != job_key(
                keys[stem][0], keys[stem][1], getattr(torch, str(rec["dtype"]), torch.float32)):
            st.stale.append(stem)
        else:
            st.done.append(stem)
        if st.model == "?" and rec:
            st.model, st.method, st.num_frames = rec.get("model", "?"), rec.get("method", "?"), rec.get("num_frames")
    return st


def sweep_status(paths: Iterable[str | Path]) -> list[JobStatus]:
    return [job_status(j) for p in paths for j in find_jobs(p)]


def missing_by_method(statuses: Iterable[JobStatus]) -> dict[tuple[str, str, Any], dict[str, Any]]:
    """``{(model, method, frames): {expected, done, failed: [...], missing: [...]}}`` over all shards."""
    out: dict[tuple[str, str, Any], dict[str, Any]] = {}
    for st in statuses:
        row = out.setdefault((st.model, st.method, st.num_frames),
                             {"expected": 0, "done": 0, "failed": [], "missing": [], "unknown": False})
        row["expected"] += len(st.expected) if st.expected is not None else len(st.done)
        row["unknown"] |= st.expected is None
        row["done"] += len(st.done)
        row["failed"] += [f"{st.job_dir.name}/{s}" for s in st.failed]
        row["missing"] += [f"{st.job_dir.name}/{s}" for s in st.missing + st.stale]
    return out


def missing_warnings(paths: Iterable[str | Path], max_listed: int = 10) -> list[str]:
    """One warning per backbone/method whose videos are not all there, listing what is missing."""
    out = []
    for (model, method, frames), row in missing_by_method(sweep_status(paths)).items():
        gone = row["failed"] + row["missing"]
        if not gone:
            continue
        listed = ", ".join(gone[:max_listed]) + (f", ... (+{len(gone) - max_listed})" if len(gone) > max_listed else "")
        out.append(f"warning: {model} {method} ({frames} frames): {row['done']} of {row['expected']} video(s) done, "
                   f"{len(row['failed'])} failed, {len(row['missing'])} missing: {listed}")
    return out


def format_status(statuses: list[JobStatus], root: Path, verbose: bool = False) -> str:
    lines = [f"{'job':<48} {'model':<14} {'method':<15} {'shard':<6} {'done':>9} {'failed':>6} {'missing':>7}"]
    for st in statuses:
        name = str(st.job_dir.relative_to(root)) if st.job_dir != root and root in st.job_dir.parents else "."
        expected = "?" if st.expected is None else str(len(st.expected))
        lines.append(f"{name:<48} {st.model:<14} {st.method:<15} {st.shard:<6} "
                     f"{f'{len(st.done)}/{expected}':>9} {len(st.failed):>6} {len(st.missing) + len(st.stale):>7}")
        for stem, err in st.failed.items():
            lines.append(f"    failed  {stem}: {err[:160]}")
        shown = st.missing + st.stale if verbose else (st.missing + st.stale)[:5]
        for stem in shown:
            lines.append(f"    {'stale' if stem in st.stale else 'missing'} {stem}")
        if len(st.missing) + len(st.stale) > len(shown):
            lines.append(f"    ... {len(st.missing) + len(st.stale) - len(shown)} more missing (--verbose lists all)")
        if st.note:
            lines.append(f"    note: {st.note}")
    total = sum(len(s.done) for s in statuses)
    expected = sum(len(s.expected or []) for s in statuses)
    failed = sum(len(s.failed) for s in statuses)
    missing = sum(len(s.missing) + len(s.stale) for s in statuses)
    lines.append(f"{len(statuses)} job(s): {total}/{expected} video(s) done, {failed} failed, {missing} missing")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m freelong status", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", help="a run or (sharded) sweep directory")
    p.add_argument("--verbose", "-v", action="store_true", help="list every missing video")
    args = p.parse_args(argv)
    root = Path(args.sweep_dir)
    try:
        jobs = find_jobs(root)
    except FileNotFoundError as err:
        return error_exit(err)
    if not jobs:
        return error_exit(f"no run directories (config.yaml or .hydra/) under {root}")
    statuses = [job_status(j) for j in jobs]
    print(format_status(statuses, root, args.verbose))
    return 0 if all(s.complete for s in statuses) else 1
