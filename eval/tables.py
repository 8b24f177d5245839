"""The FreeLong paper's Table 1 from run records (``results.jsonl`` lines), with pandas.

Rows are methods (one per distinct ``method_params`` when a sweep varies them), columns the five VBench
dimensions of the paper in percent (Sub, Back, Motion, Flicker, Imaging) and the time per denoising
step; one table per backbone and frame count. Each cell aggregates the videos as VBench does: subject and
background consistency weighted by frame pairs, the others a plain mean; imaging quality is the mean of
the per-video 0-100 values. Random-init (smoke) runs are never mixed with real ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .base import TABLE1_DIMS, dimension_label

COLUMNS = {dim: dimension_label(dim) for dim in TABLE1_DIMS}  # dimension -> Table 1 header
# Beyond the paper's columns: shown when any run scored it (long-video papers after FreeLong report it).
EXTRA_COLUMNS = {dim: dimension_label(dim) for dim in ("overall_consistency",)}
PROTOCOL_LABELS = {"standard": "VBench (standard protocol)", "long": "VBench-Long protocol"}
TIME_COLUMN = "Time (s/step)"
# Loop-level methods (own sampling loops: a "step" is not comparable) are compared per video as well.
VIDEO_TIME_COLUMN = "Denoise (s/video)"
LOOP_METHODS = ("gen_l_video", "fifo", "freeinit")
PAIR_WEIGHTED = ("subject_consistency", "background_consistency")
PER_VIDEO_PERCENT = ("imaging_quality",)  # VBench stores these per video on 0-100 already

# FreeLong (NeurIPS 2024) Table 1: 128 frames; the paper does not name the backbone, LongDiff (CVPR 2025)
# lists the same numbers as "LaVie, 128 frames". Time unit unstated.
PAPER_TABLE1 = {
    "direct": {"Sub": 88.95, "Back": 93.23, "Motion": 92.77, "Flicker": 91.44, "Imaging": 64.76, "Time": 1.8},
    "sliding_window": {"Sub": 85.80, "Back": 92.83, "Motion": 95.79, "Flicker": 94.00, "Imaging": 66.57, "Time": 2.6},
    "freenoise": {"Sub": 92.30, "Back": 95.87, "Motion": 96.32, "Flicker": 94.94, "Imaging": 67.14, "Time": 2.6},
    "freelong": {"Sub": 95.16, "Back": 96.80, "Motion": 96.85, "Flicker": 96.04, "Imaging": 67.55, "Time": 2.2},
}
PAPER_FAMILY = "lavie"
PAPER_NOTE = "paper: FreeLong Table 1, LaVie, 128 frames, 320x512 (backbone per LongDiff; time unit not stated)"
METHOD_ORDER = ("direct", "sliding_window", "freenoise", "freelong", "freelong_pp", "freepca", *LOOP_METHODS)


def is_random_init(record: dict[str, Any]) -> bool:
    meta = (record.get("scores") or {}).get("meta") or {}
    return bool(record.get("random_init")) or bool(meta.get("random_init")) or meta.get("label") == "random-init"


def record_row(rec: dict[str, Any], run_dir: str | None) -> dict[str, Any]:
    """A video's record (one ``results.jsonl`` line) as a table row: identity, timings, label, each dimension."""
    scores = rec.get("scores") or {}
    meta = scores.get("meta") or {}
    row = {
        "run_dir": None if run_dir is None else str(run_dir),
        "video": rec.get("video"),
        "model": rec.get("model", "?"),
        "family": rec.get("family") or str(rec.get("model", "?")).split("_")[0],
        "method": rec.get("method", "?"),
        "method_params": json.dumps(rec.get("method_params") or {}, sort_keys=True),
        "num_frames": rec.get("num_frames"),
        "height": rec.get("height"),
        "width": rec.get("width"),
        "median_step_s": (rec.get("timings") or {}).get("median_step_s"),
        "denoise_s": (rec.get("timings") or {}).get("denoise_s"),
        "wall_time_s": rec.get("wall_time_s"),
        "device_name": rec.get("device_name"),
        "random_init": is_random_init(rec),
        "eval_frames": meta.get("frames") or rec.get("num_frames"),
        "protocol": meta.get("protocol") or "standard",  # records before protocols existed: standard
        "long_units": (meta.get("long") or {}).get("units") or {},
    }
    for dim in TABLE1_DIMS + ("aesthetic_quality", "dynamic_degree", "overall_consistency"):
        value = scores.get(dim)
        row[dim] = float(value) if isinstance(value, (int, float)) else np.nan
    return row


def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per video record (:func:`record_row`).

    Records come from the app's record store (``freelong.app.records.read_results``), which adds ``run_dir``;
    tables count each video once and leave failed ones out (``freelong.app.records.generated_records``).
    """
    rows = [record_row(rec, rec.get("run_dir")) for rec in records]
    return pd.DataFrame(rows)


def _dimension_percent(group: pd.DataFrame, dim: str) -> float:
    if (group["protocol"] == "long").all():  # VBench-Long: re-aggregate the stored per-scene unit values
        from .long import overall_from_units

        overall = overall_from_units(dim, [u for units in group["long_units"] for u in units.get(dim, [])])
        return np.nan if overall is None else overall * 100
    values = group[dim]
    ok = values.notna()
    if not ok.any():
        return np.nan
    if dim in PAIR_WEIGHTED:  # VBench: sum of pair terms / number of pairs
        pairs = (group.loc[ok, "eval_frames"].astype(float) - 1).clip(lower=1)
        return float((values[ok] * pairs).sum() / pairs.sum() * 100)
    mean = float(values[ok].mean())
    return mean if dim in PER_VIDEO_PERCENT else mean * 100


def _variant_labels(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """``method`` alone, or ``method (k=v, ...)`` with only the parameters that differ between its variants."""
    labels = {}
    by_method: dict[str, list[dict[str, Any]]] = {}
    for method, params in keys:
        by_method.setdefault(method, []).append(json.loads(params))
    for method, params in keys:
        variants = by_method[method]
        p = json.loads(params)
        # methods rebuilt from public descriptions (FreeLong++) say so wherever they are shown
        name = f"{method} [reconstruction]" if p.get("reconstruction") else method
        if len(variants) == 1:
            labels[(method, params)] = name
            continue
        differing = sorted(k for k in p if any(v.get(k) != p[k] for v in variants))
        labels[(method, params)] = f"{name} ({', '.join(f'{k}={p[k]}' for k in differing)})"
    return labels


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (random_init, model, num_frames, method variant): Table 1 columns in percent, time, n."""
    if df.empty:
        return pd.DataFrame()
    rows = []
    group_keys = ["random_init", "model", "family", "num_frames", "method", "method_params"]
    for keys, group in df.groupby(group_keys, sort=False, dropna=False):
        row = dict(zip(group_keys, keys))
        row["Protocol"] = PROTOCOL_LABELS.get(group["protocol"].iloc[0], group["protocol"].iloc[0])
        for dim, col in {**COLUMNS, **EXTRA_COLUMNS}.items():
            row[col] = _dimension_percent(group, dim) if dim in group else np.nan
        row[TIME_COLUMN] = float(group["median_step_s"].median()) if group["median_step_s"].notna().any() else np.nan
        video_s = group["denoise_s"] if "denoise_s" in group else pd.Series(dtype=float)
        row[VIDEO_TIME_COLUMN] = float(video_s.median()) if video_s.notna().any() else np.nan
        row["n"] = len(group)
        rows.append(row)
    out = pd.DataFrame(rows)
    labels: dict[int, str] = {}
    for _, block in out.groupby(["random_init", "model", "num_frames"], sort=False, dropna=False):
        names = _variant_labels(list(zip(block["method"], block["method_params"])))
        for i, method, params in zip(block.index, block["method"], block["method_params"]):
            labels[i] = names[(method, params)]
    out.insert(0, "Method", [labels[i] for i in out.index])
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    out["_order"] = out["method"].map(lambda m: order.get(m, len(order)))
    out = out.sort_values(["random_init", "model", "num_frames", "_order"], kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def with_reference(table: pd.DataFrame, compare: bool = False) -> pd.DataFrame:
    """Add the paper's values (LaVie rows only) as ``paper <col>`` columns; with ``compare`` also ``Δ <col>``."""
    out = table.copy()
    for col in [*COLUMNS.values(), "Time"]:
        out[f"paper {col}"] = [
            PAPER_TABLE1.get(m, {}).get(col, np.nan) if fam == PAPER_FAMILY else np.nan
            for m, fam in zip(out["method"], out["family"])
        ]
    if compare:
        for col in COLUMNS.values():
            out[f"Δ {col}"] = out[col] - out[f"paper {col}"]
    return out


def split_tables(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """``[(title, table), ...]`` per (random-init?, model, frames); random-init tables are titled as such."""
    out = []
    for (ri, model, frames), block in table.groupby(["random_init", "model", "num_frames"], sort=False):
        title = f"{model}, {frames} frames"
        if ri:
            title = f"RANDOM-INIT {title} (smoke test: scores are meaningless)"
        out.append((title, block.reset_index(drop=True)))
    return out


def display_frame(block: pd.DataFrame, compare: bool = False, reference: bool = True) -> pd.DataFrame:
    """The columns people read: Method, the five dimensions (+ Overall if scored), time, n, the protocol,
    the paper reference (and Δ); ``reference=False`` leaves the paper out (other protocol)."""
    extra = [c for c in EXTRA_COLUMNS.values() if c in block and block[c].notna().any()]
    video = [VIDEO_TIME_COLUMN] if "method" in block and block["method"].isin(LOOP_METHODS).any() else []
    cols = ["Method", *COLUMNS.values(), *extra, TIME_COLUMN, *video, "n", "Protocol"]
    out = block[[c for c in cols if c in block]].copy()
    if not reference:
        return out
    has_ref = block[[f"paper {c}" for c in COLUMNS.values()]].notna().any(axis=1)
    out["Paper (Sub/Back/Motion/Flicker/Imaging/Time)"] = [
        "/".join(f"{block.at[i, f'paper {c}']:g}" for c in [*COLUMNS.values(), "Time"]) if has_ref[i] else "—"
        for i in block.index
    ]
    if compare:
        for c in COLUMNS.values():
            out[f"Δ {c}"] = block[f"Δ {c}"]
    return out


def to_markdown(df: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub markdown table (no extra dependency)."""

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "—" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, sep, *body])


# FreeLOC (CVPR 2026, official README): Wan2.1-T2V-1.3B at 4x = 321 frames, 832x480,
# sample_shift 8, guide_scale 6, VBench in percent. A separate, source-labelled reference for the Wan rows.
FREELOC_COLUMNS = {  # dimension -> FreeLOC header
    "subject_consistency": "SC",
    "background_consistency": "BC",
    "motion_smoothness": "MS",
    "imaging_quality": "IQ",
    "aesthetic_quality": "AQ",
    "dynamic_degree": "DD",
}
FREELOC_WAN_4X = {
    "direct": {"SC": 98.50, "BC": 97.89, "MS": 98.83, "IQ": 59.21, "AQ": 49.43, "DD": 4.32},
    "sliding_window": {"SC": 96.15, "BC": 95.92, "MS": 98.54, "IQ": 65.64, "AQ": 54.04, "DD": 39.81},
    "riflex": {"SC": 98.41, "BC": 97.87, "MS": 98.86, "IQ": 59.92, "AQ": 49.67, "DD": 4.45},
    "freelong": {"SC": 97.88, "BC": 97.51, "MS": 98.91, "IQ": 63.17, "AQ": 54.56, "DD": 21.21},
    "freenoise": {"SC": 97.31, "BC": 97.25, "MS": 98.84, "IQ": 66.32, "AQ": 56.01, "DD": 35.11},
    "freeloc": {"SC": 98.44, "BC": 97.78, "MS": 98.97, "IQ": 67.44, "AQ": 61.21, "DD": 36.27},
}
FREELOC_MODEL, FREELOC_FRAMES = "wan2_1_t2v_1_3b", 321
FREELOC_NOTE = ("reference: FreeLOC (CVPR 2026) README, Wan2.1-T2V-1.3B, 321 frames, 832x480, shift 8, guidance 6 "
                "(its own prompt set)")


def freeloc_table(df: pd.DataFrame) -> pd.DataFrame:
    """Our Wan2.1-1.3B 321-frame methods in FreeLOC's columns, with FreeLOC's published row beside each."""
    ours = df[(df["model"] == FREELOC_MODEL) & (df["num_frames"] == FREELOC_FRAMES) & ~df["random_init"]]
    rows = []
    for method, group in ours.groupby("method", sort=False):
        row = {"Method": method, **{col: _dimension_percent(group, dim) for dim, col in FREELOC_COLUMNS.items()}}
        row["n"] = len(group)
        ref = FREELOC_WAN_4X.get(method)
        row["FreeLOC (SC/BC/MS/IQ/AQ/DD)"] = "/".join(f"{ref[c]:g}" for c in FREELOC_COLUMNS.values()) if ref else "—"
        rows.append(row)
    order = {m: i for i, m in enumerate((*METHOD_ORDER, "riflex", "freeloc"))}
    rows.sort(key=lambda r: order.get(r["Method"], len(order)))
    return pd.DataFrame(rows)
