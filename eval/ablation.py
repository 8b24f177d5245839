"""FreeLong's component ablation (paper Fig. 6) as a table: branch modes x VBench dimensions, with n.

The paper shows this ablation only as pictures, so every number here is our measurement; tables say so.
Rows are the ``method.branch`` variants of FreeLong runs (``experiment=ablation_fig6``), in the paper's
order; columns are the dimensions those runs were scored on (percent, aggregated per video as in
:mod:`eval.tables`), the time per denoising step and ``n`` (videos). One table per (random-init?,
backbone, frame count); random-init smoke runs are titled as such.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .base import dimension_label
from .tables import TIME_COLUMN, _dimension_percent

BRANCH_ORDER = ("global", "local", "sum", "low_global", "high_local", "blend")
BRANCH_LABELS = {
    "global": "global only",
    "local": "local only",
    "sum": "mean(global, local)",
    "low_global": "low-freq global",
    "high_local": "high-freq local",
    "blend": "FreeLong (blend)",
}
DIMENSIONS = {dim: dimension_label(dim) for dim in (  # dimension -> header, in VBench's usual order
    "subject_consistency", "background_consistency", "motion_smoothness", "temporal_flickering",
    "aesthetic_quality", "imaging_quality", "dynamic_degree")}
NOTE = ("our measurement: the FreeLong paper shows this ablation (Fig. 6) only qualitatively and gives no "
        "numbers to compare with")


def branch_of(method_params: str) -> str | None:
    """The ``branch`` of a FreeLong record's ``method_params`` JSON (``blend`` when the run predates it)."""
    params = json.loads(method_params or "{}")
    return params.get("branch", "blend")


def ablation_records(df: pd.DataFrame) -> pd.DataFrame:
    """The FreeLong rows of :func:`eval.tables.records_frame`, with a ``branch`` column."""
    if df.empty:
        return df
    out = df[df["method"] == "freelong"].copy()
    out["branch"] = [branch_of(p) for p in out["method_params"]]
    return out


def is_ablation(df: pd.DataFrame) -> bool:
    """Records hold an ablation when some (model, frames) has FreeLong runs with two or more branch modes."""
    rec = ablation_records(df)
    if rec.empty:
        return False
    return bool((rec.groupby(["model", "num_frames"])["branch"].nunique() > 1).any())


def ablation_table(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """``[(title, table)]``: per (random-init?, model, frames), one row per branch variant.

    Variants that also differ in another FreeLong parameter get it in their label (e.g. ``d_s=0.5``),
    so they are never averaged together.
    """
    rec = ablation_records(df)
    if rec.empty:
        return []
    others = [json.dumps({k: v for k, v in json.loads(p).items() if k != "branch"}, sort_keys=True)
              for p in rec["method_params"]]
    rec["_others"] = others
    dims = [d for d in DIMENSIONS if d in rec and rec[d].notna().any()]
    out = []
    for (ri, model, frames), block in rec.groupby(["random_init", "model", "num_frames"], sort=False):
        variants = sorted(block["_others"].unique())
        rows = []
        for (branch, other), group in block.groupby(["branch", "_others"], sort=False):
            label = BRANCH_LABELS.get(branch, branch)
            if len(variants) > 1:
                p, differing = json.loads(other), _differing(variants)
                label += " (" + ", ".join(f"{k}={p.get(k)}" for k in differing) + ")"
            row = {"Variant": label, "branch": branch}
            for dim in dims:
                row[DIMENSIONS[dim]] = _dimension_percent(group, dim)
            steps = group["median_step_s"]
            row[TIME_COLUMN] = float(steps.median()) if steps.notna().any() else np.nan
            row["n"] = len(group)
            row["_order"] = (BRANCH_ORDER.index(branch) if branch in BRANCH_ORDER else len(BRANCH_ORDER), other)
            rows.append(row)
        table = pd.DataFrame(rows).sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
        title = f"{model}, {frames} frames"
        if ri:
            title = f"RANDOM-INIT {title} (smoke test: scores are meaningless)"
        out.append((title, table))
    return out


def _differing(variants: list[str]) -> list[str]:
    dicts = [json.loads(v) for v in variants]
    keys = sorted({k for d in dicts for k in d})
    return [k for k in keys if len({json.dumps(d.get(k)) for d in dicts}) > 1]
