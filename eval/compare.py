"""``python -m eval VIDEOS --compare-official --vbench-python PY``: our numbers next to the vbench package's.

Both backends score the same files; the table gives per dimension the largest per-video |difference|, the
difference of the overall values, and each backend's time. Differences are in VBench's units of the
overall value: imaging_quality's per-video values (0-100 in VBench's JSON) are divided by 100 first, as
VBench's overall does; dynamic_degree's booleans count as 0/1. The exit code is 1 when any difference
exceeds ``--tol`` (or a video has a value on one side only), so the check can gate a script.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from freelong.errors import error_exit

# per-video values → the overall value's units
PER_VIDEO_SCALE = {"imaging_quality": 0.01}


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def compare_results(dims: Sequence[str], native: dict[str, Any], official: dict[str, Any]) -> dict[str, dict]:
    """Per dimension: ``max_video_diff``, ``overall_diff``, ``missing`` (videos scored by one side only).

    Both arguments are VBench-layout results (``{dim: [overall, [{video_path, video_results}, ...]]}``).
    """
    out = {}
    for dim in dims:
        scale = PER_VIDEO_SCALE.get(dim, 1.0)
        ours = {e["video_path"]: _num(e.get("video_results")) for e in native.get(dim, [None, []])[1]}
        theirs = {e["video_path"]: _num(e.get("video_results")) for e in official.get(dim, [None, []])[1]}
        diffs, missing = [], []
        for path in sorted(set(ours) | set(theirs)):
            a, b = ours.get(path), theirs.get(path)
            if a is None and b is None:
                continue
            if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
                missing.append(path)
                continue
            diffs.append(abs(a - b) * scale)
        a, b = _num(native.get(dim, [None])[0]), _num(official.get(dim, [None])[0])
        out[dim] = {"max_video_diff": max(diffs) if diffs else None,
                    "overall_diff": abs(a - b) if a is not None and b is not None else None,
                    "native_overall": a, "official_overall": b, "videos_compared": len(diffs), "missing": missing}
    return out


def failures(report: dict[str, dict], tol: float) -> list[str]:
    """Human-readable reasons the comparison fails (empty: it passes)."""
    bad = []
    for dim, r in report.items():
        if r["missing"]:
            bad.append(f"{dim}: scored by one backend only: {', '.join(r['missing'])}")
        if r["overall_diff"] is None:
            bad.append(f"{dim}: no overall value on {'both sides' if r['native_overall'] is None else 'one side'}")
        for key in ("max_video_diff", "overall_diff"):
            if r[key] is not None and r[key] > tol:
                bad.append(f"{dim}: {key.replace('_', ' ')} {r[key]:.3g} > tol {tol:g}")
    return bad


def format_table(report: dict[str, dict], native_s: dict[str, float], official_s: dict[str, float]) -> str:
    def f(v: float | None, spec: str = ".2e") -> str:
        return "n/a" if v is None else format(v, spec)

    lines = ["| dimension | videos | max per-video |diff| | overall diff | native overall | official overall "
             "| native s | official s |", "|---|---|---|---|---|---|---|---|"]
    for dim, r in report.items():
        lines.append(f"| {dim} | {r['videos_compared']} | {f(r['max_video_diff'])} | {f(r['overall_diff'])} "
                     f"| {f(r['native_overall'], '.6f')} | {f(r['official_overall'], '.6f')} "
                     f"| {f(native_s.get(dim), '.1f')} | {f(official_s.get(dim), '.1f')} |")
    return "\n".join(lines)


def compare_main(args: Any, videos: list[Path], dims: list[str], weights: dict[str, str]) -> int:
    """The ``--compare-official`` path of :func:`eval.cli.main` (its parsed ``args``; ``weights`` from ``--weight``)."""
    import time

    from freelong.video_io import atomic_write_json

    from .models import MissingExtraError
    from .official import OfficialBackendError, check_official_dims, run_official
    from .scorer import Evaluator, vbench_json
    from .weights import EvalWeightsMissing, WeightChecksumError

    try:
        check_official_dims(dims)
    except ValueError as err:
        return error_exit(err)
    if args.random_init:
        print("error: --compare-official compares against VBench's real weights; drop --random-init",
              file=sys.stderr)
        return 2
    try:
        t0 = time.perf_counter()
        evaluator = Evaluator(dims, device=args.device, weights=weights,
                              cache_dir=args.cache_dir, batch_size=args.batch_size, precision=args.precision,
                              imaging_mode=args.imaging_mode)
        setup_s = time.perf_counter() - t0
    except (EvalWeightsMissing, MissingExtraError, WeightChecksumError, ValueError) as err:
        return error_exit(err)
    scores = evaluator.score_many(videos, progress=not args.no_progress)
    native = vbench_json(dims, scores)
    native_s = {d: sum(s.seconds.get(d, 0.0) for s in scores) for d in dims}
    try:
        official, _, meta = run_official(videos, dims, args.vbench_python, device=args.device,
                                         imaging_mode=args.imaging_mode, cache_dir=args.cache_dir)
    except (OfficialBackendError, FileNotFoundError, ValueError) as err:
        return error_exit(err)
    official_s = meta.get("seconds_per_dim", {})
    report = compare_results(dims, native, official)
    print(format_table(report, native_s, official_s))
    print(f"native setup (model loading) {setup_s:.1f} s, not included above; official times include VBench's "
          f"model loading; VBench {meta.get('vbench_version')} on {meta.get('device')}")
    out = Path(args.out).with_suffix(".compare.json")
    atomic_write_json(out, {"tol": args.tol, "dims": dims, "videos": [str(v) for v in videos], "report": report,
                            "native": native, "official": official, "native_seconds": native_s,
                            "native_setup_s": setup_s, "official_seconds": official_s,
                            "native_meta": evaluator.describe(),
                            "official_meta": {k: v for k, v in meta.items() if k != "vbench_stdout_tail"}})
    bad = failures(report, args.tol)
    for line in bad:
        print(f"DIFFERENT  {line}", file=sys.stderr)
    print(f"{'FAIL' if bad else 'OK'}: tolerance {args.tol:g} ({len(videos)} video(s)); wrote {out}")
    return 1 if bad else 0
