"""``python -m eval VIDEOS... [--dims D1,D2] [--out results.json]``: score mp4/gif files or folders.

Writes three files: ``results.json`` in VBench's layout (``{dim: [overall, [{video_path, video_results,
...}, ...]]}``), ``results.csv`` with one row per video, and ``results.meta.json`` saying what produced
the numbers (device, precision, weights with SHA-256, versions, timings, random-init label). A video that
cannot be read is listed with its error and does not stop the others. ``--backend official`` runs the
real ``vbench`` package from another Python environment instead, for parity checks.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from freelong.errors import error_exit

from .base import ALIASES, ALL_DIMS, GROUPS, parse_dims
from .transforms import IMAGING_MODES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", help="video files (.mp4/.gif) and/or folders (searched recursively)")
    p.add_argument("--dims", default="fast",
                   help=f"comma-separated dimensions or groups ({', '.join(GROUPS)}); names: {', '.join(ALL_DIMS)}; "
                        f"short: {', '.join(ALIASES)} (default: fast)")
    p.add_argument("--out", default="results.json", help="VBench-layout JSON (default results.json)")
    p.add_argument("--csv", default=None, help="per-video CSV (default: --out with .csv)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=32, help="frames per network call (default 32)")
    p.add_argument("--precision", choices=["vbench", "fp32"], default="vbench",
                   help="vbench: fp16 CLIP on CUDA like VBench (default); fp32: fp32 everywhere")
    p.add_argument("--imaging-mode", choices=IMAGING_MODES, default="longer",
                   help="VBench imaging_quality_preprocessing_mode (default longer)")
    p.add_argument("--cache-dir", default=None, help="VBench cache root (default $VBENCH_CACHE_DIR or ~/.cache/vbench)")
    p.add_argument("--weight", action="append", default=[], metavar="NAME=PATH",
                   help="explicit weight location, e.g. musiq_spaq=/data/musiq.pth (repeatable)")
    p.add_argument("--random-init", action="store_true",
                   help="tiny random-weight networks (smoke test; scores are labelled random-init and meaningless)")
    p.add_argument("--backend", choices=["native", "official"], default="native",
                   help="native (this package) or official (the vbench package, via --vbench-python)")
    p.add_argument("--vbench-python", default=None, help="python of an environment with vbench installed (official)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--write-back", action="store_true",
                   help="the paths are run/sweep dirs: score their videos into their records "
                        "(freelong/app/writeback.py)")
    p.add_argument("--protocol", choices=["standard", "long", "freenoise"], default="standard",
                   help="standard: VBench, each video one clip (videos under 5 s); long: VBench-Long (scenes, "
                        "2 s / 10 s clips, fused; videos of 5 s or more); freenoise: FreeNoise's FVD/KVD of "
                        "16-frame segments against --reference, and CLIP-SIM (--dims is ignored)")
    p.add_argument("--prompt", default=None, help="prompt of every video (overall_consistency; default: file name)")
    p.add_argument("--prompt-file", default=None, help='JSON {"video file": "prompt", ...} covering every video')
    add_compare_arguments(p)
    from .long_eval import add_long_arguments

    add_long_arguments(p)
    from .freenoise_protocol import add_freenoise_arguments

    add_freenoise_arguments(p)
    return p


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    """``--compare-official`` / ``--tol`` (eval/compare.py): both backends on the same files, one table."""
    p.add_argument("--compare-official", action="store_true",
                   help="score with both backends (needs --vbench-python) and print their differences; "
                        "exit 1 if any exceeds --tol")
    p.add_argument("--tol", type=float, default=1e-5,
                   help="largest allowed difference in VBench's overall units (imaging per video /100; default 1e-5)")


def _parse_weights(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"error: --weight expects NAME=PATH, got {item!r}")
        name, path = item.split("=", 1)
        out[name.strip()] = path.strip()
    return out


def write_outputs(out: Path, csv_path: Path, results: dict[str, Any], rows: list[dict[str, Any]],
                  meta: dict[str, Any]) -> None:
    """The three output files, each written atomically."""
    import pandas as pd

    from freelong.video_io import atomic_write_json, atomic_write_text

    atomic_write_json(out, results)
    buf = io.StringIO()
    pd.DataFrame(rows).convert_dtypes().to_csv(buf, index=False)
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_json(out.with_suffix(".meta.json"), meta)


def _freenoise_main(args, videos: list[Path], out: Path, csv_path: Path) -> int:
    """``--protocol freenoise``: one set-level result (FVD, KVD, CLIP-SIM, counts) and one row per video."""
    from freelong.metadata import package_versions

    from .freenoise_protocol import run_freenoise_cli

    if args.backend != "native" or args.compare_official:
        print("error: --protocol freenoise runs with --backend native only", file=sys.stderr)
        return 2
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    code, results, rows, meta = run_freenoise_cli(args, videos, _parse_weights(args.weight))
    if code:
        return code
    failed = [r for r in rows if r.get("error")]
    meta.update({"created": started, "wall_time_s": time.perf_counter() - t0, "versions": package_versions(),
                 "num_with_errors": len(failed), "overall": results})
    write_outputs(out, csv_path, results, rows, meta)
    for key in ("fvd", "kvd", "clip_sim"):
        value = results.get(key)
        print(f"{key:<9} {'n/a' if value is None else f'{value:.4f}'}")
    print(f"{results['num_videos']} video(s), {results['num_segments']} segment(s) of {meta['segment_frames']} "
          f"frames; reference {results['reference_segments']} segment(s)")
    for r in failed:
        print(f"  {r['video_path']}: {r['error']}", file=sys.stderr)
    print(f"wrote {out}, {csv_path}, {out.with_suffix('.meta.json')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .video import find_videos

    try:
        dims = parse_dims(args.dims)
    except ValueError as err:
        return error_exit(err)
    if args.write_back:
        from freelong.app.writeback import main_write_back  # writes run records: app code (lazy; cli is an entry)

        return main_write_back(args, _parse_weights(args.weight))
    videos = find_videos(args.videos)
    if not videos:
        print(f"error: no .mp4/.gif videos found in {' '.join(args.videos)}", file=sys.stderr)
        return 1
    out = Path(args.out)
    csv_path = Path(args.csv) if args.csv else out.with_suffix(".csv")
    if args.protocol == "freenoise":
        return _freenoise_main(args, videos, out, csv_path)
    if args.compare_official:
        from .compare import compare_main

        if args.protocol != "standard" or args.prompt or args.prompt_file:  # VBench reads prompts from file names
            print("error: --compare-official compares the standard protocol with prompts from the file names "
                  "(no --protocol long, --prompt, --prompt-file)", file=sys.stderr)
            return 2

        return compare_main(args, videos, dims, _parse_weights(args.weight))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()

    try:
        from .prompts import resolve_prompts

        prompts = resolve_prompts(videos, args.prompt, args.prompt_file)
    except ValueError as err:
        return error_exit(err)
    if args.protocol == "long":
        from .long_eval import run_long_cli

        code, results, rows, meta = run_long_cli(args, dims, videos, prompts, _parse_weights(args.weight))
        if code:
            return code
    elif args.backend == "official":
        from .official import OfficialBackendError, run_official

        try:
            results, rows, meta = run_official(videos, dims, args.vbench_python, device=args.device,
                                               imaging_mode=args.imaging_mode, cache_dir=args.cache_dir)
        except (OfficialBackendError, FileNotFoundError, ValueError) as err:  # a CUDA error is not a user error
            return error_exit(err)
    else:
        from freelong.metadata import package_versions

        from .models import MissingExtraError
        from .scorer import Evaluator, per_video_rows, vbench_json
        from .weights import EvalWeightsMissing, WeightChecksumError

        try:
            evaluator = Evaluator(dims, device=args.device, random_init=args.random_init,
                                  weights=_parse_weights(args.weight), cache_dir=args.cache_dir,
                                  batch_size=args.batch_size, precision=args.precision,
                                  imaging_mode=args.imaging_mode)
        except (EvalWeightsMissing, MissingExtraError, WeightChecksumError, ValueError) as err:
            return error_exit(err)
        if args.random_init:
            logging.warning("RANDOM-INIT evaluation networks: the scores below are meaningless (smoke test)")
        scores = evaluator.score_many(videos, progress=not args.no_progress, prompts=prompts)
        results = vbench_json(dims, scores)
        rows = per_video_rows(dims, scores, evaluator.label)
        meta = {**evaluator.describe(), "backend": "native", "protocol": "standard", "versions": package_versions(),
                "seconds_per_dim": {d: sum(s.seconds.get(d, 0.0) for s in scores) for d in dims}}

    failed = [r for r in rows if r.get("error")]
    meta.update({"created": started, "wall_time_s": time.perf_counter() - t0, "num_videos": len(rows),
                 "num_with_errors": len(failed), "overall": {d: results[d][0] for d in dims}})
    write_outputs(out, csv_path, results, rows, meta)

    width = max(len(d) for d in dims)
    for d in dims:
        value = results[d][0]
        print(f"{d:<{width}}  {'n/a' if value is None else f'{value:.4f}'}")
    if failed:
        print(f"{len(failed)} of {len(rows)} video(s) had errors (see {csv_path}):", file=sys.stderr)
        for r in failed:
            print(f"  {r['video_path']}: {r['error']}", file=sys.stderr)
    print(f"wrote {out}, {csv_path}, {out.with_suffix('.meta.json')}")
    return 1 if failed and len(failed) == len(rows) else 0
