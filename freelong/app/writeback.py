"""Scoring apart from generation: ``python -m eval SWEEP_OR_RUN_DIR --write-back --dims table1``.

GPU nodes generate with ``eval=none``; this scores the videos later, anywhere, and writes the scores into
each video's record exactly as ``eval=`` would have (``record["scores"]``: per-video values + ``meta``),
each sidecar atomically, ``results.jsonl`` rebuilt after every video. A dimension is skipped for a video
whose record already holds a value for it, produced with the same evaluation weights (SHA-256 per weight
name) and the same label (real vs random-init): so a re-run after an interruption scores only what is
left, and adding a dimension later scores only that one. Values of other dimensions stay as they were.

Videos of random-init smoke runs are only scored with ``--random-init`` (tiny random networks), and
real videos never are, so meaningless numbers never land in real records.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from eval.base import get_dimension

from ..errors import error_exit
from .records import RunRecords, is_failed, natural_key, read_records

log = logging.getLogger("freelong.eval")


@dataclass
class WriteBackReport:
    """What one pass did, per video stem (``run_dir/videos/<stem>``)."""

    scored: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    not_generated: list[str] = field(default_factory=list)  # failed records or missing mp4
    wrong_kind: list[str] = field(default_factory=list)  # random-init video vs real networks, or the reverse
    errors: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{len(self.scored)} video(s) scored, {len(self.up_to_date)} already up to date, "
                f"{len(self.not_generated)} not generated (failed or missing), {len(self.wrong_kind)} skipped "
                f"(random-init vs real), {len(self.errors)} with errors")


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (holding ``videos/*.json`` records) at or below the given paths."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such run or sweep directory")
        candidates = [p / "videos"] if (p / "videos").is_dir() else sorted(p.rglob("videos"), key=natural_key)
        for v in candidates:
            if v.is_dir() and any(v.glob("*.json")) and not any(part.startswith(".") for part in v.parts[-3:]):
                out.append(v.parent)
    return list(dict.fromkeys(out))


# --- what needs scoring --------------------------------------------------------------------------------------


def _has_value(v: Any) -> bool:
    return isinstance(v, (bool, int, float)) and v == v  # a number that is not NaN


def dims_to_score(record: dict[str, Any], dims: Sequence[str], label: str,
                  weight_ids: dict[str, str | None]) -> list[str]:
    """The requested dimensions this record lacks, or holds from other weights / another label."""
    scores = record.get("scores") or {}
    meta = scores.get("meta") or {}
    if scores and (meta.get("label") != label or (meta.get("protocol") or "standard") != "standard"):
        return list(dims)  # other networks, or VBench-Long values: everything is scored again
    old_weights = meta.get("weights") or {}
    todo = []
    for dim in dims:
        same_weights = all(old_weights.get(w) == weight_ids.get(w) for w in get_dimension(dim).weights
                           if w in weight_ids)
        if not (_has_value(scores.get(dim)) and same_weights):
            todo.append(dim)
    return todo


def merge_scores(old: dict[str, Any] | None, new: dict[str, Any], rescored: Sequence[str]) -> dict[str, Any]:
    """Old values of the dimensions not re-scored, the new ones, and one ``meta`` describing both."""
    old = dict(old or {})
    old_meta = old.pop("meta", None) or {}
    new_meta = dict(new.get("meta") or {})
    if (old_meta.get("label") not in (None, new_meta.get("label"))
            or (old_meta.get("protocol") or "standard") != (new_meta.get("protocol") or "standard")):
        old, old_meta = {}, {}  # other networks or protocol: nothing of the old scores survives
    merged = {k: v for k, v in old.items() if k not in rescored}
    merged.update({k: v for k, v in new.items() if k != "meta"})
    errors = {k: v for k, v in (old_meta.get("errors") or {}).items() if k not in rescored and k != "video"}
    errors.update(new_meta.get("errors") or {})
    merged["meta"] = {**old_meta, **new_meta, "weights": {**(old_meta.get("weights") or {}),
                                                          **(new_meta.get("weights") or {})},
                      "errors": errors, "written_back": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return merged


# --- the pass ------------------------------------------------------------------------------------------------


def write_back(paths: Sequence[str | Path], evaluator, progress: bool = True) -> WriteBackReport:
    """Score every generated video below ``paths`` that needs it; each record is saved as soon as it is scored."""
    from .eval_hook import evaluator_weight_ids, record_scores

    report = WriteBackReport()
    weight_ids = evaluator_weight_ids(evaluator)
    work: list[tuple[Path, str, dict[str, Any], list[str]]] = []
    for run_dir in find_run_dirs(paths):
        for stem, rec in read_records(run_dir).items():
            name = f"{run_dir}/videos/{stem}"
            video = run_dir / str(rec.get("video") or "")
            if is_failed(rec) or not rec.get("video") or not video.is_file():
                report.not_generated.append(name)
            elif bool(rec.get("random_init")) != bool(evaluator.random_init):
                report.wrong_kind.append(name)
            else:
                todo = dims_to_score(rec, evaluator.dims, evaluator.label, weight_ids)
                if todo:
                    work.append((run_dir, stem, rec, todo))
                else:
                    report.up_to_date.append(name)
    try:
        from tqdm.auto import tqdm

        iterator = tqdm(work, desc="write-back", unit="video", disable=not progress)
    except ImportError:  # pragma: no cover
        iterator = work
    for run_dir, stem, rec, todo in iterator:
        t0 = time.perf_counter()
        s = evaluator.score(run_dir / rec["video"], prompt=_prompt_text(rec))
        new = record_scores(evaluator, s, "file", weight_ids, time.perf_counter() - t0)
        new = {k: v for k, v in new.items() if k == "meta" or k in todo}
        # the record atomically, then results.jsonl rebuilt from all records (as the runner does)
        RunRecords(run_dir).save_stem(stem, {**rec, "scores": merge_scores(rec.get("scores"), new, todo)})
        name = f"{run_dir}/videos/{stem}"
        report.scored.append(name)
        if s.error or s.errors:
            report.errors[name] = s.error or "; ".join(f"{d}: {e}" for d, e in s.errors.items())
    return report


def _prompt_text(rec: dict[str, Any]) -> str | None:
    """The record's prompt as the runner's scorer saw it (overall_consistency), None if it has none."""
    from ..prompts import prompt_label

    try:
        return prompt_label(rec["prompt"]) if rec.get("prompt") is not None else None
    except ValueError:
        return None


def main_write_back(args, weights: dict[str, str]) -> int:
    """``python -m eval DIRS --write-back``: the eval CLI's arguments (``weights`` parsed from ``--weight``)."""
    from eval.models import MissingExtraError
    from eval.scorer import Evaluator
    from eval.weights import EvalWeightsMissing, WeightChecksumError

    try:
        run_dirs = find_run_dirs(args.videos)
    except FileNotFoundError as err:
        return error_exit(err)
    if not run_dirs:
        return error_exit(f"no run directories (videos/*.json records) under {' '.join(args.videos)}")
    if args.backend != "native":
        print("error: --write-back scores with the native backend only", file=sys.stderr)
        return 2
    if getattr(args, "protocol", "standard") == "freenoise":
        return _main_write_back_freenoise(args, run_dirs, weights)
    if getattr(args, "protocol", "standard") != "standard":
        print("error: --write-back scores with the standard or freenoise protocol (eval.protocol=long scores at "
              "run time)", file=sys.stderr)
        return 2
    try:
        evaluator = Evaluator(args.dims, device=args.device, random_init=args.random_init,
                              weights=weights, cache_dir=args.cache_dir,
                              batch_size=args.batch_size, precision=args.precision, imaging_mode=args.imaging_mode)
    except (EvalWeightsMissing, MissingExtraError, WeightChecksumError, ValueError) as err:
        return error_exit(err)
    report = write_back(run_dirs, evaluator, progress=not args.no_progress)
    print(f"write-back ({', '.join(evaluator.dims)}) in {len(run_dirs)} run dir(s): {report.summary()}")
    if report.wrong_kind:
        hint = "without --random-init" if args.random_init else "with --random-init (smoke runs)"
        print(f"note: {len(report.wrong_kind)} video(s) left alone; score them {hint}", file=sys.stderr)
    for name, err in report.errors.items():
        print(f"  {name}: {err}", file=sys.stderr)
    return 1 if report.errors else 0


# --- FreeNoise's protocol: per-video segment features and CLIP-SIM (the set-level FVD/KVD come in make_tables) ---


def write_back_freenoise(paths: Sequence[str | Path], ev, progress: bool = True) -> WriteBackReport:
    """Store each video's 16-frame-segment I3D features (``videos/<stem>.freenoise.npz``) and CLIP-SIM in its record.

    A record already holding them from the same extractor (network and weights) and label is up to date; any
    other scores of the record (another protocol) are replaced, as a protocol change does in :func:`merge_scores`.
    """
    from eval.freenoise_protocol import FEATURES_SUFFIX, record_scores, save_video_features

    report = WriteBackReport()
    work: list[tuple[Path, str, dict[str, Any]]] = []
    for run_dir in find_run_dirs(paths):
        for stem, rec in read_records(run_dir).items():
            name = f"{run_dir}/videos/{stem}"
            video = run_dir / str(rec.get("video") or "")
            meta = (rec.get("scores") or {}).get("meta") or {}
            if is_failed(rec) or not rec.get("video") or not video.is_file():
                report.not_generated.append(name)
            elif bool(rec.get("random_init")) != bool(ev.random_init):
                report.wrong_kind.append(name)
            elif (meta.get("protocol") == "freenoise" and meta.get("extractor") == ev.extractor
                  and meta.get("label") == ev.label and meta.get("features")
                  and (run_dir / "videos" / meta["features"]).is_file()):
                report.up_to_date.append(name)
            else:
                work.append((run_dir, stem, rec))
    from tqdm.auto import tqdm

    for run_dir, stem, rec in tqdm(work, desc="write-back (freenoise)", unit="video", disable=not progress):
        r = ev.score(run_dir / rec["video"])
        name = f"{run_dir}/videos/{stem}"
        features = None
        if r.features is not None:
            features = stem + FEATURES_SUFFIX
            save_video_features(run_dir / "videos" / features, r.features)
        scores = record_scores(ev, r, features)
        scores["meta"]["written_back"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        RunRecords(run_dir).save_stem(stem, {**rec, "scores": scores})
        report.scored.append(name)
        if r.error:
            report.errors[name] = r.error
    return report


def _main_write_back_freenoise(args, run_dirs: list[Path], weights: dict[str, str]) -> int:
    from eval.freenoise_protocol import FreeNoiseEvaluator
    from eval.models import MissingExtraError
    from eval.weights import EvalWeightsMissing, WeightChecksumError

    try:
        ev = FreeNoiseEvaluator(device=args.device, random_init=args.random_init, weights=weights,
                                cache_dir=args.cache_dir, batch_size=min(args.batch_size, 8),
                                clip_sim=not getattr(args, "no_clip_sim", False))
    except (EvalWeightsMissing, MissingExtraError, WeightChecksumError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = write_back_freenoise(run_dirs, ev, progress=not args.no_progress)
    print(f"write-back (freenoise: segment features, clip_sim) in {len(run_dirs)} run dir(s): {report.summary()}")
    if report.wrong_kind:
        hint = "without --random-init" if args.random_init else "with --random-init (smoke runs)"
        print(f"note: {len(report.wrong_kind)} video(s) left alone; score them {hint}", file=sys.stderr)
    for name, err in report.errors.items():
        print(f"  {name}: {err}", file=sys.stderr)
    return 1 if report.errors else 0
