"""Collect a Hydra multirun (or any folder of run dirs) into one pandas table, with plots.

``python -m analysis.aggregate SWEEP_DIR [--out DIR] [--metrics a,b] [--hue KEY] [--heatmap K1,K2]``

* Every ``results.jsonl`` under ``SWEEP_DIR`` is one job; each line (one video) becomes a row, its
  nested fields flattened (``scores.subject_consistency``, ``timings.median_step_s``, ...).
* The job's swept parameters come from Hydra's ``<job>/.hydra/overrides.yaml``; their values are
  read from the job's resolved ``config.yaml`` (a group override such as ``method=direct`` gives
  the group's ``name``). Parameters whose value differs between jobs are the *swept* ones.
* ``runs.csv``: every row. ``summary.csv``: mean / std / count of each metric per combination of
  swept parameters, averaging over seeds and prompts. ``metrics_vs_params.{png,pdf}``: each metric
  (rows) against each swept parameter (columns), mean ± std over everything else, one line per value
  of ``--hue`` (default ``method`` when it varies). ``heatmap.{png,pdf}``: each metric's mean over a
  grid of two parameters (default ``method.d_s`` × ``method.d_t`` when both are swept), with the
  numbers in ``heatmap.csv``.
* Metrics: ``--metrics`` (names with or without the ``scores.`` prefix), else every numeric
  ``scores.*`` column, else the cost columns (wall time, median step time, peak memory).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from freelong.app.records import find_results, generated_records, read_results
from freelong.errors import error_exit
from freelong.video_io import atomic_write_text

from .common import pyplot, save_figure

log = logging.getLogger("freelong.analysis")

COST_METRICS = ("wall_time_s", "timings.median_step_s", "peak_memory_mb")
REPLICATE_KEYS = ("seed", "shard", "num_shards")  # averaged over, never a plotted parameter
DROP_PREFIXES = ("versions.",)
IGNORED_OVERRIDES = ("experiment", "hydra.")
DEFAULT_HEATMAP = ("method.d_s", "method.d_t")


def _override_key(item: str) -> str | None:
    key = item.split("=", 1)[0].lstrip("+~").strip()
    if not key or key.startswith(IGNORED_OVERRIDES) or key == "experiment":
        return None
    return key.split("@", 1)[0]


def _select(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    if isinstance(node, dict):  # a config group (method=direct): its name
        return node.get("name", json.dumps(node, sort_keys=True, default=str))
    if isinstance(node, list):
        return json.dumps(node)
    return node


_MISSING = object()


def job_parameters(job_dir: Path) -> dict[str, Any]:
    """``{key: value}`` of a job's command-line/sweep overrides, values from its resolved config."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return {}
    overrides = yaml.safe_load(overrides_file.read_text()) or []
    cfg = {}
    for name in ("config.yaml", ".hydra/config.yaml"):
        if (job_dir / name).is_file():
            cfg = yaml.safe_load((job_dir / name).read_text()) or {}
            break
    params: dict[str, Any] = {}
    for item in overrides:
        key = _override_key(str(item))
        if key is None:
            continue
        value = _select(cfg, key)
        if value is _MISSING:  # not in the config (e.g. removed with ~): keep the override's text
            value = yaml.safe_load(str(item).split("=", 1)[1]) if "=" in str(item) else None
        params[key] = value
    return params


def collect(sweep_dir: str | Path) -> tuple[Any, list[str]]:
    """One row per video of every job under ``sweep_dir`` and the list of swept parameter keys."""
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {sweep_dir} does not exist")
    files = find_results([sweep_dir])  # job 2 before job 10
    if not files:
        raise FileNotFoundError(f"no results.jsonl under {sweep_dir} (is it a run or multirun directory?)")
    rows, param_keys, params_of = [], [], {}
    for f in files:  # every job's parameters, also of a job with no video yet
        params_of[str(f.parent)] = params = job_parameters(f.parent)
        param_keys.extend(k for k in params if k not in param_keys)
    # failed records left out, each job_key once (shards of one sweep, or a run copied twice)
    for rec in generated_records(read_results(files)):
        job_dir = rec.pop("run_dir")
        params = params_of[job_dir]
        flat = pd.json_normalize(rec, sep=".").iloc[0].to_dict()
        flat = {k: v for k, v in flat.items() if not k.startswith(DROP_PREFIXES)}
        rows.append({"job": str(Path(job_dir).relative_to(sweep_dir)), **{f"param:{k}": v for k, v in params.items()},
                     **flat})
    df = pd.DataFrame(rows)
    swept = [k for k in param_keys if k not in REPLICATE_KEYS and f"param:{k}" in df
             and df[f"param:{k}"].astype(str).nunique(dropna=False) > 1]
    return df, swept


def pick_metrics(df: Any, requested: Sequence[str] | None = None) -> list[str]:
    import pandas as pd

    if requested:
        out = []
        for m in requested:
            name = m if m in df.columns else f"scores.{m}"
            if name not in df.columns:
                raise KeyError(f"metric {m!r} not in the results; columns: {', '.join(sorted(df.columns))}")
            out.append(name)
        return out
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    scores = [c for c in numeric if c.startswith("scores.")]
    return scores or [c for c in COST_METRICS if c in numeric]


def summarize(df: Any, swept: Sequence[str], metrics: Sequence[str]) -> Any:
    """Mean / std / count of each metric per combination of swept parameters."""
    cols = [f"param:{k}" for k in swept]
    work = df.copy()
    for c in cols:  # group on a printable key so None/lists group too
        work[c] = work[c].map(_label)
    if cols:
        g = work.groupby(cols, dropna=False, sort=True)[list(metrics)]
        out = g.agg(["mean", "std", "count"])
    else:
        out = work[list(metrics)].agg(["mean", "std", "count"]).T.stack().to_frame().T
    out.columns = [f"{m}:{stat}" for m, stat in out.columns]
    return out.reset_index() if cols else out.reset_index(drop=True)


def _label(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "null"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))  # 10.0 (an int column with nulls, made float by pandas) -> "10"
    return str(v)


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _short(metric: str) -> str:
    return metric.removeprefix("scores.")


def plot_metrics_vs_params(df: Any, swept: Sequence[str], metrics: Sequence[str], hue: str | None = None,
                           title: str = ""):
    """Rows: metrics; columns: swept parameters; mean ± std over everything else, a line per hue value."""
    plt = pyplot()
    params = [p for p in swept if p != hue] or list(swept)
    fig, axes = plt.subplots(len(metrics), max(1, len(params)), figsize=(4.2 * max(1, len(params)),
                             3.0 * len(metrics)), squeeze=False)
    hue_values = list(dict.fromkeys(df[f"param:{hue}"].map(_label))) if hue else [None]
    for r, metric in enumerate(metrics):
        for c, param in enumerate(params):
            ax = axes[r][c]
            col = f"param:{param}"
            raw = list(dict.fromkeys(v for v in df[col] if v is not None))
            numeric = _numeric(raw) and df[col].notna().all()
            cats = sorted(set(df[col].map(_label)), key=_category_order(raw))  # shared x positions
            for hv in hue_values:
                d = df if hv is None else df[df[f"param:{hue}"].map(_label) == hv]
                key = d[col] if numeric else d[col].map(_label)
                stats = d.groupby(key)[metric].agg(["mean", "std"]).sort_index()
                if not numeric:
                    stats = stats.loc[[c for c in cats if c in stats.index]]
                x = list(stats.index) if numeric else [cats.index(c) for c in stats.index]
                ax.errorbar(x, stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", capsize=3,
                            label=None if hv is None else f"{hue}={hv}")
            if not numeric:
                ax.set_xticks(range(len(cats)))
                ax.set_xticklabels(cats)
            ax.set_xlabel(param)
            ax.set_ylabel(_short(metric))
            ax.grid(alpha=0.3)
            if hue and r == 0 and c == 0:
                ax.legend(fontsize=7)
    fig.suptitle(f"metric vs parameter (mean ± std over seeds, prompts and other parameters){title}", fontsize=10)
    fig.tight_layout()
    return fig


def _category_order(raw: Sequence[Any]):
    """null first, then numbers ascending (if every other value is a number), else first appearance."""
    present = [v for v in raw if _label(v) != "null"]
    if _numeric(present):
        present = sorted(present)
    labels = list(dict.fromkeys(_label(v) for v in present))

    def key(label: str):
        if label == "null":
            return (-1, 0)
        return (0, labels.index(label)) if label in labels else (1, 0)

    return key


def heatmap_table(df: Any, keys: tuple[str, str], metric: str) -> Any:
    """Mean of ``metric`` for each (``keys[0]``, ``keys[1]``) pair: rows = first key, columns = second."""
    a, b = keys
    table = df.pivot_table(index=f"param:{a}", columns=f"param:{b}", values=metric, aggfunc="mean")
    return table.sort_index().sort_index(axis=1)


def plot_heatmap(df: Any, keys: tuple[str, str], metrics: Sequence[str], title: str = ""):
    """Each metric's mean over the grid of two parameters (annotated)."""
    import numpy as np

    plt = pyplot()
    a, b = keys
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        table = heatmap_table(df, keys, metric)
        im = ax.imshow(table.to_numpy(dtype=float), origin="lower", cmap="viridis", aspect="auto")
        ax.set_yticks(range(len(table.index)))
        ax.set_yticklabels([_label(v) for v in table.index])
        ax.set_xticks(range(len(table.columns)))
        ax.set_xticklabels([_label(v) for v in table.columns])
        ax.set_ylabel(a)
        ax.set_xlabel(b)
        ax.set_title(_short(metric), fontsize=9)
        vals = table.to_numpy(dtype=float)
        lo, hi = np.nanmin(vals), np.nanmax(vals)
        for (i, j), v in np.ndenumerate(vals):
            if np.isfinite(v):
                bright = hi > lo and (v - lo) / (hi - lo) > 0.6  # light cells get dark text
                ax.text(j, i, f"{v:.4g}", ha="center", va="center", fontsize=7, color="k" if bright else "w")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.suptitle(f"{a} × {b} (mean over seeds and prompts){title}", fontsize=10)
    fig.tight_layout()
    return fig


def aggregate(
    sweep_dir: str | Path,
    out: str | Path | None = None,
    metrics: Sequence[str] | None = None,
    hue: str | None = None,
    heatmap: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write ``runs.csv``, ``summary.csv`` and the figures to ``out`` (default ``SWEEP_DIR/aggregate``)."""
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    out = Path(out) if out else sweep_dir / "aggregate"
    out.mkdir(parents=True, exist_ok=True)
    df, swept = collect(sweep_dir)
    chosen = pick_metrics(df, metrics)
    if not chosen:
        raise ValueError(f"no numeric metric in the results under {sweep_dir}")
    if hue is None and "method" in swept:
        hue = "method"
    if hue is not None and f"param:{hue}" not in df.columns:
        raise KeyError(f"--hue {hue!r} is not a parameter of this sweep; parameters: {', '.join(swept)}")
    summary = summarize(df, swept, chosen)
    atomic_write_text(out / "runs.csv", df.to_csv(index=False))
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    result: dict[str, Any] = {"table": df, "summary": summary, "swept": swept, "metrics": chosen, "out": out,
                              "figures": []}
    random_init = "random_init" in df.columns and bool(df["random_init"].fillna(False).astype(bool).any())
    title = "\nRANDOM-INIT smoke-run model: values are meaningless" if random_init else ""
    if swept:
        fig = plot_metrics_vs_params(df, swept, chosen, hue, title)
        result["figures"] += save_figure(fig, out / "metrics_vs_params")
    keys = tuple(heatmap) if heatmap else DEFAULT_HEATMAP
    if len(keys) != 2:
        raise ValueError(f"--heatmap needs exactly two parameters, got {list(keys)}")
    if all(k in swept for k in keys):
        result["heatmap"] = {m: heatmap_table(df, keys, m) for m in chosen}
        named = {m: t.rename(columns=lambda c: f"{keys[1]}={_label(c)}").rename_axis(keys[0])
                 for m, t in result["heatmap"].items()}
        atomic_write_text(out / "heatmap.csv", pd.concat(named, names=["metric"]).to_csv())
        fig = plot_heatmap(df, keys, chosen, title)
        result["figures"] += save_figure(fig, out / "heatmap")
    elif heatmap:
        raise KeyError(f"--heatmap {','.join(keys)}: both must be swept parameters; swept: {', '.join(swept)}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun directory (or any folder of run directories)")
    parser.add_argument("--out", help="output folder (default: SWEEP_DIR/aggregate)")
    parser.add_argument("--metrics", help="comma-separated metrics (default: every scores.* column)")
    parser.add_argument("--hue", help="parameter drawn as separate lines (default: method, when swept)")
    parser.add_argument("--heatmap", help="two parameters for the heatmap (default: method.d_s,method.d_t)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        res = aggregate(args.sweep_dir, args.out, args.metrics.split(",") if args.metrics else None, args.hue,
                        args.heatmap.split(",") if args.heatmap else None)
    except (FileNotFoundError, KeyError, ValueError) as err:
        return error_exit(err)
    print(f"{len(res['table'])} rows from {res['table']['job'].nunique()} job(s); swept: "
          f"{', '.join(res['swept']) or 'nothing'}; metrics: {', '.join(res['metrics'])}")
    for path in [res["out"] / "runs.csv", res["out"] / "summary.csv", *res["figures"]]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
