"""An offline HTML report of runs and sweeps: side-by-side videos played in sync, Table 1, figures, metadata.

    python -m analysis.report RUN_OR_SWEEP_DIRS... --out report/ [--copy] [--strip-every K] [--title TEXT]
    python -m analysis.report SWEEP_DIR --reference REF_VIDEOS_OR_NPZ    # runs scored with --protocol freenoise

Writes ``<out>/index.html`` (plus ``assets/``, ``stills/``, ``figures/``) that opens from ``file://`` with
no server and no network. One section per prompt: rows are seeds, columns the method and whatever else
differs between the runs (model, frames, method parameters); each cell a ``<video>`` with its label,
parameters and scores, one control bar per prompt that plays, pauses and scrubs all its videos together
(by frame), and a frame strip (every k-th frame as a still, extracted here). Below: Table 1 (the
numbers of ``scripts/make_tables.py``, from the same ``eval.tables`` functions, sortable; for videos
scored with ``--write-back --protocol freenoise``, FreeNoise's table with FVD/KVD against ``--reference``),
the analysis figures found in the directories (``snr_vs_length.png``, ``attention_maps.png``) and each
run's metadata; random-init smoke runs get a banner. Videos are linked relatively; ``--copy`` copies them in,
so the folder can be zipped or uploaded (the wandb logger does that).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from freelong.errors import error_exit

log = logging.getLogger("freelong.analysis")

ASSETS = Path(__file__).with_name("report_assets")
TEMPLATE = "report.html.j2"
STATIC = ("report.js", "report.css")
FIGURES = {"snr_vs_length.png": "Per-band SNR vs video length (Fig. 2)",
           "attention_maps.png": "Temporal attention maps (Fig. 3)"}
# Settings that make two runs different columns (besides the method and its parameters).
SETTINGS = ("model", "num_frames", "height", "width", "num_inference_steps", "guidance_scale", "sampler", "eta",
            "dtype", "fps")
STRIP_STILLS = 8  # stills per strip when --strip-every is not given


SCORE_LABELS = {"clip_sim": "CLIP-SIM"}  # score keys of other protocols (FreeNoise's), as its table names them


def _score_name(key: str) -> str:
    """A VBench dimension's column header (:func:`eval.base.dimension_label`), FreeNoise's CLIP-SIM as its table
    names it, any other score key as it is."""
    from eval.base import DIMENSION_MODULES, dimension_label

    return dimension_label(key) if key in DIMENSION_MODULES else SCORE_LABELS.get(key, key)


class ReportError(ValueError):
    """Nothing to report, or an unreadable input; the CLI prints it as one line."""


def read_run_records(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every video record below the run/sweep directories, each with ``run_dir`` (the record store's reader)."""
    from freelong.app.records import is_failed, read_results

    return [r for r in read_results(paths) if not is_failed(r)]  # a failed video has no file


# -- the grid ------------------------------------------------------------------------------------------
@dataclass
class Cell:
    record: dict[str, Any]
    src: str  # the video's URL relative to index.html
    frames: int
    fps: float
    stills: list[tuple[int, str]] = field(default_factory=list)  # (frame index, URL)

    @property
    def params(self) -> str:
        """Model, length, size, steps, guidance and every method parameter, as one caption line."""
        r = self.record
        parts = [str(r.get("model", "?")), f"{r.get('num_frames', self.frames)}f"]
        if r.get("width") and r.get("height"):
            parts.append(f"{r['width']}x{r['height']}")
        if r.get("num_inference_steps"):
            parts.append(f"{r['num_inference_steps']} steps")
        if r.get("guidance_scale") is not None:
            parts.append(f"cfg {r['guidance_scale']}")
        parts += [f"{k}={v}" for k, v in (r.get("method_params") or {}).items()]
        return " · ".join(parts)

    @property
    def scores(self) -> list[tuple[str, str]]:
        scores = self.record.get("scores") or {}
        out = [(_score_name(k), _fmt(v)) for k, v in scores.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
        meta = scores.get("meta") or {}
        if meta.get("protocol") == "freenoise" and meta.get("segments") is not None:  # FVD/KVD are set-level
            out.append(("segments", str(meta["segments"])))
        step = (self.record.get("timings") or {}).get("median_step_s")
        if isinstance(step, (int, float)):
            out.append(("s/step", f"{step:.3g}"))
        return out


@dataclass
class Column:
    key: str
    method: str
    settings: dict[str, Any]
    params: dict[str, Any]
    label: str = ""


@dataclass
class PromptSection:
    prompt: str
    columns: list[Column]
    rows: list[tuple[int, list[Cell | None]]]  # (seed, one cell or None per column)
    fps: float
    frames: int  # the longest video of the section: the length of its scrub bar
    random_init: bool


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _prompt_text(prompt: Any) -> str:
    from freelong.prompts import prompt_label

    try:
        return prompt_label(prompt)
    except (ValueError, TypeError, KeyError):
        return json.dumps(prompt, default=str)


def _column_of(rec: dict[str, Any]) -> Column:
    settings = {k: rec.get(k) for k in SETTINGS}
    params = dict(rec.get("method_params") or {})
    key = json.dumps([rec.get("method"), settings, params], sort_keys=True, default=str)
    return Column(key, str(rec.get("method")), settings, params)


def label_columns(columns: Sequence[Column]) -> None:
    """``method`` plus the settings that differ across columns and the parameters that differ within a method."""
    differing = [k for k in SETTINGS if len({json.dumps(c.settings.get(k), default=str) for c in columns}) > 1]
    for col in columns:
        same_method = [c for c in columns if c.method == col.method]
        params = sorted(k for k in col.params if any(c.params.get(k) != col.params[k] for c in same_method))
        parts = [f"{k}={col.settings[k]}" for k in differing] + [f"{k}={col.params[k]}" for k in params]
        col.label = f"{col.method} ({', '.join(parts)})" if parts else col.method


def _url(target: Path, out: Path) -> str:
    return quote(Path(os.path.relpath(target, out)).as_posix())


def extract_stills(video: Path, every: int | None, dest: Path, out: Path) -> tuple[int, list[tuple[int, str]]]:
    """Decode ``video`` once; save every ``every``-th frame (default: about STRIP_STILLS of them) as JPEG."""
    import numpy as np
    from PIL import Image

    from freelong.video_io import atomic_write_bytes, read_video

    frames = read_video(video)
    n = len(frames)
    step = every or max(1, math.ceil(n / STRIP_STILLS))
    stills = []
    for i in range(0, n, step):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frames[i])).save(buf, format="JPEG", quality=90)
        path = dest.with_name(f"{dest.name}_f{i:04d}.jpg")
        atomic_write_bytes(path, buf.getvalue())
        stills.append((i, _url(path, out)))
    return n, stills


def build_sections(records: list[dict[str, Any]], out: Path, copy: bool, strip_every: int | None
                   ) -> list[PromptSection]:
    """Group videos by prompt (sections), seed (rows) and column; extract stills; link or copy the videos."""
    columns: dict[str, Column] = {}
    for rec in records:
        col = _column_of(rec)
        columns.setdefault(col.key, col)
    label_columns(list(columns.values()))
    by_prompt: dict[str, dict[int, dict[str, Cell]]] = {}
    for rec in records:
        video = Path(rec["run_dir"]) / str(rec.get("video"))
        if not video.is_file():
            log.warning("report: %s is missing; its cell stays empty", video)
            continue
        ident = hashlib.sha1(str(video.resolve()).encode()).hexdigest()[:10]
        if copy:
            target = out / "videos" / f"{ident}_{video.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(video, target)
            video = target
        frames, stills = extract_stills(video, strip_every, out / "stills" / ident, out)
        cell = Cell(rec, _url(video, out), frames, float(rec.get("fps") or 8), stills)
        seeds = by_prompt.setdefault(_prompt_text(rec.get("prompt")), {})
        seeds.setdefault(int(rec.get("seed", 0)), {})[_column_of(rec).key] = cell
    sections = []
    for prompt, seeds in by_prompt.items():
        used = [c for c in columns.values() if any(c.key in row for row in seeds.values())]
        cells = [cell for row in seeds.values() for cell in row.values()]
        rows = [(seed, [seeds[seed].get(c.key) for c in used]) for seed in sorted(seeds)]
        sections.append(PromptSection(prompt, used, rows, fps=max(c.fps for c in cells),
                                      frames=max(c.frames for c in cells),
                                      random_init=any(bool(c.record.get("random_init")) for c in cells)))
    return sections


# -- Table 1, figures, metadata ------------------------------------------------------------------------
def _cells(frame) -> list[list[tuple[str, Any]]]:
    """A table's rows as ``(shown text, sort value)`` cells (an empty sort value for NaN)."""
    return [[(_fmt(v), "" if isinstance(v, float) and math.isnan(v) else v) for v in row]
            for row in frame.itertuples(index=False)]


def table1(records: list[dict[str, Any]], reference: str | os.PathLike | None = None,
           min_segments: int | None = None) -> list[dict[str, Any]]:
    """``make_tables.py``'s Table 1 blocks (random-init ones titled as such) as ``{title, columns, rows, note}``:
    VBench's (standard, VBench-Long) and FreeNoise's (:func:`freenoise_tables`)."""
    import pandas as pd

    from eval import tables as t1

    if not records:
        return []
    frame = pd.DataFrame([t1.record_row(r, r["run_dir"]) for r in records])
    out = []
    for protocol, recs in frame.groupby("protocol", sort=True):  # never one table for two protocols
        if protocol == "freenoise":  # set-level FVD/KVD: not VBench dimensions
            continue
        long = protocol == "long"  # VBench-Long numbers: no paper reference beside them
        table = t1.aggregate(recs) if long else t1.with_reference(t1.aggregate(recs))
        for title, block in t1.split_tables(table):
            shown = t1.display_frame(block, reference=not long)
            paper = not long and (block["family"] == t1.PAPER_FAMILY).any()
            out.append({"title": f"{title} — {t1.PROTOCOL_LABELS['long']}" if long else title,
                        "columns": list(shown.columns), "rows": _cells(shown), "note": t1.PAPER_NOTE if paper else ""})
    return out + freenoise_tables(records, reference, min_segments)


def freenoise_tables(records: list[dict[str, Any]], reference: str | os.PathLike | None = None,
                     min_segments: int | None = None) -> list[dict[str, Any]]:
    """``make_tables.py --protocol freenoise``'s table of the records scored with ``--write-back --protocol
    freenoise``, one per feature extractor (real and random-init apart): FVD/KVD against ``reference`` (a folder
    of reference videos or its statistics ``.npz``; without it they stay empty), CLIP-SIM, videos, segments, time."""
    from eval.freenoise_protocol import PAPER_NOTE, freenoise_table, load_reference, table_title
    from eval.fvd import min_samples
    from eval.tables import is_random_init

    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        meta = (rec.get("scores") or {}).get("meta") or {}
        if meta.get("protocol") == "freenoise" and meta.get("features"):
            groups.setdefault(str(meta.get("extractor")), []).append(rec)
    out = []
    for extractor, recs in sorted(groups.items()):
        random_init = any(is_random_init(r) for r in recs)
        notes = []
        try:
            ref = None if reference is None else load_reference(reference, random_init=random_init, progress=False)
            if ref is not None and ref.extractor != extractor:
                notes.append(f"FVD/KVD not computed: these videos' features come from {extractor}, the reference's "
                             f"from {ref.extractor}.")
                ref = None
            table = freenoise_table(recs, ref, min_segments)
        except ValueError as err:
            raise ReportError(str(err)) from None
        if ref is not None and table.loc[table["videos"] > 0, "FVD"].isna().any():
            notes.append(f"FVD/KVD are empty where a set has fewer than "
                         f"{min_segments if min_segments is not None else min_samples(ref.dim)} segments "
                         f"(--min-segments).")
        out.append({"title": table_title(ref, random_init), "columns": list(table.columns), "rows": _cells(table),
                    "note": " ".join([*notes, PAPER_NOTE])})
    return out


def _figure_model(run_dir: Path) -> tuple[str, bool]:
    """(model name, random-init?) from the analysis run's resolved ``config.yaml``, if it has one."""
    import yaml

    try:
        model = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("model") or {}
    except (OSError, yaml.YAMLError):
        return "", False
    return str(model.get("name", "")), bool(model.get("random_init"))


def collect_figures(paths: Sequence[Path], out: Path) -> list[dict[str, Any]]:
    """Copy every analysis figure found below ``paths`` into ``<out>/figures`` (they are small)."""
    found = []
    for root in paths:
        candidates = [root] if root.is_file() else sorted(p for name in FIGURES for p in root.rglob(name))
        for fig in candidates:
            if fig.name in FIGURES and out.resolve() not in fig.resolve().parents:
                target = out / "figures" / f"{len(found):02d}_{fig.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(fig, target)
                model, random_init = _figure_model(fig.parent)
                found.append({"title": FIGURES[fig.name], "src": _url(target, out), "origin": str(fig.parent),
                              "model": model, "random_init": random_init})
    return found


def _weights_text(weights: Any) -> str:
    if weights == "random-init" or not weights:
        return "random-init"
    if isinstance(weights, dict):
        parts = []
        for name, info in weights.items():
            sha = (info or {}).get("sha256") if isinstance(info, dict) else None
            parts.append(f"{name}: sha256 {sha[:16]}…" if sha else f"{name}: {info}")
        return "; ".join(parts)
    return str(weights)


def run_metadata(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run directory: model, weights (hashes) or random-init, versions, commit, device, dtype, experiment."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        runs.setdefault(rec["run_dir"], []).append(rec)
    out = []
    for run_dir, recs in runs.items():
        first = recs[0]
        versions = first.get("versions") or {}
        out.append({
            "run_dir": run_dir,
            "random_init": any(bool(r.get("random_init")) for r in recs),
            "fields": [
                ("experiment", first.get("experiment", "")),
                ("model", ", ".join(sorted({str(r.get("model")) for r in recs}))),
                ("weights", _weights_text(first.get("weights"))),
                ("methods", ", ".join(sorted({str(r.get("method")) for r in recs}))),
                ("videos", str(len(recs))),
                ("device", f"{first.get('device', '')} — {first.get('device_name', '')}"),
                ("dtype", first.get("dtype", "")),
                ("commit", ", ".join(sorted({str(r.get("git_commit")) for r in recs}))),
                ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
                ("created", first.get("created", "")),
            ],
        })
    return out


# -- the page ------------------------------------------------------------------------------------------
def build_report(paths: Sequence[str | os.PathLike], out: str | os.PathLike, copy: bool = False,
                 strip_every: int | None = None, title: str | None = None,
                 records: list[dict[str, Any]] | None = None, reference: str | os.PathLike | None = None,
                 min_segments: int | None = None) -> Path:
    """Write the report folder for these run/sweep directories; returns the path of ``index.html``.

    ``records`` (each with its ``run_dir``) replaces reading them from ``paths`` (figures are still found there);
    ``reference`` and ``min_segments``: FreeNoise's FVD/KVD of the videos scored with ``--protocol freenoise``.
    """
    import jinja2

    from freelong.video_io import atomic_write_text

    roots = [Path(p) for p in paths]
    for p in roots:
        if not p.exists():
            raise ReportError(f"{p}: no such run or sweep directory")
    if strip_every is not None and strip_every < 1:
        raise ReportError(f"--strip-every must be a positive number of frames, got {strip_every}")
    out = Path(out)
    records = read_run_records(roots) if records is None else records
    out.mkdir(parents=True, exist_ok=True)
    figures = collect_figures(roots, out)
    if not records and not figures:
        raise ReportError(f"nothing to report under {' '.join(map(str, roots))}: no results.jsonl with videos "
                          f"and no {' / '.join(FIGURES)}")
    for stale in ("stills", "videos"):
        shutil.rmtree(out / stale, ignore_errors=True)
    sections = build_sections(records, out, copy, strip_every)
    (out / "assets").mkdir(exist_ok=True)
    for name in STATIC:
        shutil.copy2(ASSETS / name, out / "assets" / name)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ASSETS)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    html = env.get_template(TEMPLATE).render(
        title=title or "freelong-bench report: " + ", ".join(p.name or str(p) for p in roots),
        sources=[str(p) for p in roots],
        sections=sections,
        tables=table1(records, reference, min_segments),
        figures=figures,
        runs=run_metadata(records),
        random_init=any(bool(r.get("random_init")) for r in records) or any(f["random_init"] for f in figures),
    )
    index = out / "index.html"
    atomic_write_text(index, html)
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run or sweep directories (or results.jsonl files)")
    parser.add_argument("--out", default="report", help="output folder (default report/)")
    parser.add_argument("--copy", action="store_true", help="copy the videos into the folder instead of linking")
    parser.add_argument("--strip-every", type=int, default=None,
                        help=f"frame strip: every K-th frame (default: about {STRIP_STILLS} stills per video)")
    parser.add_argument("--title", default=None, help="page title")
    parser.add_argument("--reference", default=None,
                        help="FreeNoise's protocol: the reference videos (experiment=freenoise_reference) or their "
                             "statistics .npz; FVD/KVD of the videos scored with --write-back --protocol freenoise")
    parser.add_argument("--min-segments", type=int, default=None,
                        help="FreeNoise's protocol: smallest set FVD is computed for (default feature dim + 1)")
    args = parser.parse_args(argv)
    try:
        index = build_report(args.paths, args.out, copy=args.copy, strip_every=args.strip_every, title=args.title,
                             reference=args.reference, min_segments=args.min_segments)
    except (ReportError, FileNotFoundError, OSError) as err:
        return error_exit(err)
    print(f"wrote {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
