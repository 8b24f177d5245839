"""The one record store: jobs, their fingerprints, resumable per-video records and every reader of them.

A run directory holds ``videos/<stem>.mp4`` with a ``videos/<stem>.json`` sidecar per video (its record) and
``results.jsonl`` (one line per video, rebuilt from the sidecars after each video). Everything is written
atomically; a re-run over the same directory skips videos whose record carries the same ``job_key`` (a
fingerprint of everything that determines the pixels), so an interrupted run or sweep resumes.

Every consumer — the runner, the analyses (their own keyed caches), ``scripts/make_tables.py``,
``analysis.aggregate``, the wandb logger — reads records through :func:`read_results` /
:class:`RunRecords`, with one policy for a corrupt line or file: a warning naming the file and line, and
every other record still used. A record with ``status: failed`` (:mod:`.failures`) is not done (a re-run
retries it) and is no video: tables count :func:`generated_records` (failed out, each ``job_key`` once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..prompts import prompt_label
from ..video_io import atomic_write_json, atomic_write_text

log = logging.getLogger("freelong")

RESULTS = "results.jsonl"
STATUS_DONE = "done"  # a record's ``status``: its video was written
STATUS_FAILED = "failed"  # no video; the record holds the error (:mod:`.failures`)
SAMPLING_KEYS = ("num_frames", "height", "width", "num_inference_steps", "guidance_scale", "sampler", "eta",
                 "negative_prompt")


# ----------------------------------------------------------------------------------------------
# Jobs and their fingerprints
# ----------------------------------------------------------------------------------------------
@dataclass
class Job:
    """One video to generate: the ``index``-th prompt with one seed."""

    index: int
    prompt: Any
    seed: int

    @property
    def prompt_text(self) -> str:
        try:
            return prompt_label(self.prompt)
        except ValueError:
            return json.dumps(self.prompt, default=str)

    @property
    def stem(self) -> str:
        return f"{self.index:03d}_{slugify(self.prompt_text)}_seed{self.seed}"


def slugify(text: str, max_len: int = 48) -> str:
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()
    return slug[:max_len].rstrip("-") or "prompt"


def make_jobs(prompts: Iterable[Any], seed: int, num_seeds: int) -> list[Job]:
    return [Job(i, p, seed + s) for i, p in enumerate(prompts) for s in range(num_seeds)]


def sampling_settings(cfg: DictConfig) -> dict[str, Any]:
    """The run's sampling keys (what, besides model, method, prompt and seed, fixes the pixels)."""
    return {k: cfg[k] for k in SAMPLING_KEYS}


def fingerprint(payload: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-able payload (sorted keys)."""
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def job_key(cfg: DictConfig, job: Job, dtype: Any) -> str:
    """Fingerprint of everything that determines a video's pixels. The model's ``methods`` block is left out: what
    it gives the run's method is in the resolved method, and runs made before the block existed keep their keys."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model.pop("methods", None)
    return fingerprint({
        "model": model,
        "method": OmegaConf.to_container(cfg.method, resolve=True),
        "sampling": sampling_settings(cfg),
        "prompt": job.prompt,
        "seed": job.seed,
        "dtype": str(dtype),
    })


# ----------------------------------------------------------------------------------------------
# Reading, with one policy for what cannot be read
# ----------------------------------------------------------------------------------------------
def _corrupt(path: Path, line: int, err: Exception) -> None:
    log.warning("ignoring unreadable record %s:%d (%s); the other records are used", path, line, err)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file; a corrupt line is reported with its line number and skipped."""
    path = Path(path)
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as err:
            _corrupt(path, n, err)
            continue
        if isinstance(rec, dict):
            out.append(rec)
        else:
            _corrupt(path, n, ValueError("not a JSON object"))
    return out


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """One JSON record file, or None (reported) when it cannot be read."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        _corrupt(path, 1, err)
        return None
    return rec if isinstance(rec, dict) else None


def natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_results(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every ``results.jsonl`` in the given run or sweep directories (or the files themselves), job 2
    before job 10; a path that does not exist is a FileNotFoundError naming it."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(p.rglob(RESULTS), key=natural_key))
        else:
            raise FileNotFoundError(f"{p}: no such run directory or {RESULTS}")
    return out


def read_results(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every video record under the given run/sweep directories; each gains ``run_dir`` (its directory)."""
    return [{**rec, "run_dir": str(f.parent)} for f in find_results(paths) for rec in read_jsonl(f)]


def read_records(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{video stem: record}`` of a run directory's sidecars (``videos/<stem>.json``); nothing is created."""
    video_dir = Path(run_dir) / "videos"
    return {side.stem: r for side in sorted(video_dir.glob("*.json")) if (r := read_json(side)) is not None}


def is_failed(record: Mapping[str, Any] | None) -> bool:
    """A record of a video that failed (no video; ``python -m freelong status`` lists it)."""
    return bool(record) and record.get("status") == STATUS_FAILED


def generated_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of videos that exist, each ``job_key`` once (the first seen).

    Failed records are dropped (they count as missing); a video found twice — two shards of one sweep
    overlapping, or a run directory copied — is counted once, with a warning. Records without a
    ``job_key`` are all kept. What every table (``make_tables``, ``analysis.aggregate``) counts.
    """
    out, seen, dups = [], set(), 0
    for rec in records:
        if is_failed(rec):
            continue
        key = rec.get("job_key")
        if key is not None:
            if key in seen:
                dups += 1
                continue
            seen.add(key)
        out.append(rec)
    if dups:
        log.warning("%d video(s) appear in more than one run directory with the same job_key; each is counted once",
                    dups)
    return out


# ----------------------------------------------------------------------------------------------
# Writing: a run directory's per-video records, and keyed caches for the analyses
# ----------------------------------------------------------------------------------------------
class RunRecords:
    """The sidecar JSON per video of one run directory and the ``results.jsonl`` built from them."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.video_dir = self.run_dir / "videos"
        self.video_dir.mkdir(parents=True, exist_ok=True)

    def sidecar(self, job: Job) -> Path:
        return self.video_dir / f"{job.stem}.json"

    def video(self, job: Job) -> Path:
        return self.video_dir / f"{job.stem}.mp4"

    def finished(self, job: Job, key: str) -> dict[str, Any] | None:
        """The job's record if its video and record exist and the record has ``job_key == key``."""
        side, vid = self.sidecar(job), self.video(job)
        if not (side.is_file() and vid.is_file()):
            return None
        record = read_json(side)
        if record is None or is_failed(record):  # a failed record is not done: a re-run retries it
            return None
        return record if record.get("job_key") == key else None

    def save(self, job: Job, record: dict[str, Any]) -> None:
        atomic_write_json(self.sidecar(job), record)
        self.rebuild_results()

    def save_stem(self, stem: str, record: dict[str, Any]) -> None:
        """Rewrite the record of the video ``stem`` (e.g. scores written back later), then ``results.jsonl``."""
        atomic_write_json(self.video_dir / f"{stem}.json", record)
        self.rebuild_results()

    def records(self) -> list[dict[str, Any]]:
        out = list(read_records(self.run_dir).values())
        return sorted(out, key=lambda r: (r.get("prompt_index", 0), r.get("seed", 0)))

    def rebuild_results(self) -> None:
        lines = "".join(json.dumps(r, default=str) + "\n" for r in self.records())
        atomic_write_text(self.run_dir / RESULTS, lines)


class KeyedCache:
    """One JSON file per finished unit of work (``<root>/<key>.json``), so an interrupted analysis resumes."""

    def __init__(self, root: str | os.PathLike, overwrite: bool = False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.overwrite = overwrite

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> Any | None:
        if self.overwrite or not self.path(key).is_file():
            return None
        return read_json(self.path(key))

    def put(self, key: str, value: Any) -> None:
        atomic_write_json(self.path(key), value)


def environment(backbone: Any, device: Any, dtype: Any) -> dict[str, Any]:
    """What every record says about where it was made: model and weights, device, dtype, versions, commit."""
    from ..metadata import device_name, git_commit, package_versions

    return {
        **backbone.info(),
        "device": str(device),
        "device_name": device_name(device),
        "dtype": str(dtype).replace("torch.", ""),
        "versions": package_versions(),
        "git_commit": git_commit(),
    }


__all__ = [
    "RESULTS",
    "STATUS_DONE",
    "STATUS_FAILED",
    "Job",
    "KeyedCache",
    "RunRecords",
    "environment",
    "find_results",
    "fingerprint",
    "generated_records",
    "is_failed",
    "job_key",
    "make_jobs",
    "natural_key",
    "read_json",
    "read_jsonl",
    "read_records",
    "read_results",
    "sampling_settings",
    "slugify",
]
