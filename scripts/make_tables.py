"""The FreeLong paper's Table 1 from run directories.

    python scripts/make_tables.py outputs/paper_table1_lavie/multiruns/2026-01-01_00-00-00
    python scripts/make_tables.py RUN_DIR1 RUN_DIR2 --compare          # add "ours - paper" columns
    python scripts/make_tables.py RUN_DIRS... --out-dir tables/        # where the CSV / LaTeX go

Every ``results.jsonl`` below the given directories is read (a sweep directory works). One table per
backbone and frame count: methods x Sub/Back/Motion/Flicker/Imaging (VBench, percent) and seconds per
denoising step, with the paper's published values as a reference column for LaVie. Printed as markdown;
written as CSV (all numbers, paper columns included) and LaTeX. Runs of random-init smoke models are
left out (``--include-random-init`` shows them, in tables of their own).

FreeLong runs that differ in ``method.branch`` (``experiment=ablation_fig6``) are detected and shown as the
paper's Fig. 6 ablation instead (variants x dimensions, with n; our measurement, the paper has no numbers);
``--ablation`` / ``--no-ablation`` force either table.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from eval.ablation import NOTE as ABLATION_NOTE
from eval.ablation import ablation_table, is_ablation
from eval.tables import (
    FREELOC_NOTE,
    PAPER_FAMILY,
    PAPER_NOTE,
    PROTOCOL_LABELS,
    aggregate,
    display_frame,
    freeloc_table,
    records_frame,
    split_tables,
    to_markdown,
    with_reference,
)
from freelong.app.records import generated_records, read_results
from freelong.app.status import missing_warnings
from freelong.errors import error_exit
from freelong.video_io import atomic_write_text


def print_ablation(records, out_dir: Path, digits: int, protocol: str = "standard") -> int:
    """The Fig. 6 ablation table(s) of the FreeLong records, printed and written as CSV and LaTeX."""
    tables = ablation_table(records)
    others = int((records["method"] != "freelong").sum())
    if others:
        print(f"note: the ablation table leaves out {others} video(s) of other methods "
              f"(--no-ablation shows Table 1)", file=sys.stderr)
    if not tables:
        print("error: --ablation: no FreeLong runs in these directories", file=sys.stderr)
        return 1
    for title, table in tables:
        shown = table.drop(columns="branch")
        if protocol != "standard":  # standard-protocol titles stay as they were
            title = f"{title} — {PROTOCOL_LABELS[protocol]}"
        print(f"\n### Ablation (FreeLong Fig. 6), our measurement — {title}\n")
        print(to_markdown(shown, digits))
        print(f"\n{ABLATION_NOTE}")
        stem = "ablation_" + re.sub(r"[^A-Za-z0-9]+", "_", title.split(" (")[0].split(" — ")[0]).strip("_").lower()
        stem += "_long" if protocol == "long" else ""
        atomic_write_text(out_dir / f"{stem}.csv", table.to_csv(index=False))
        latex = shown.to_latex(index=False, float_format=f"%.{digits}f", na_rep="--", escape=True,
                               caption=f"Ablation (FreeLong Fig. 6), our measurement: {title}".replace("_", r"\_"),
                               label=f"tab:{stem}")
        atomic_write_text(out_dir / f"{stem}.tex", latex)
        print(f"\nwrote {out_dir / stem}.csv and .tex")
    return 0


def print_freenoise(args) -> int:
    """FreeNoise's Table 1 from runs scored with ``python -m eval RUNS --write-back --protocol freenoise``."""
    from eval.freenoise_protocol import PAPER_NOTE as FREENOISE_NOTE
    from eval.freenoise_protocol import freenoise_table, load_reference, table_title

    if not args.reference:
        print("error: --protocol freenoise needs --reference REF_DIR_OR_STATS", file=sys.stderr)
        return 2
    try:
        records = generated_records(read_results(args.run_dirs))
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    scored = [r for r in records if ((r.get("scores") or {}).get("meta") or {}).get("protocol") == "freenoise"]
    if not scored:
        print("error: no video here is scored with the freenoise protocol: python -m eval RUN_OR_SWEEP_DIRS "
              "--write-back --protocol freenoise", file=sys.stderr)
        return 1
    random_init = {bool(r["scores"]["meta"].get("random_init")) for r in scored}
    if len(random_init) > 1 or (True in random_init and not args.include_random_init):
        print("error: random-init smoke scores here (meaningless); --include-random-init tabulates them alone",
              file=sys.stderr)
        return 1
    for line in missing_warnings([p for p in args.run_dirs if Path(p).is_dir()]):
        print(line, file=sys.stderr)
    try:
        ref = load_reference(args.reference, random_init=True in random_init)
        table = freenoise_table(scored, ref, args.min_segments)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\n### {table_title(ref, True in random_init)}\n")
    print(to_markdown(table, args.digits))
    print(f"\n{FREENOISE_NOTE}")
    out_dir = Path(args.out_dir)
    atomic_write_text(out_dir / "freenoise_table1.csv", table.to_csv(index=False))
    atomic_write_text(out_dir / "freenoise_table1.tex",
                      table.to_latex(index=False, float_format=f"%.{args.digits}f", na_rep="--", escape=True,
                                     caption="FreeNoise Table 1 protocol", label="tab:freenoise_table1"))
    print(f"\nwrote {out_dir / 'freenoise_table1'}.csv and .tex")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="run or sweep directories (or results.jsonl files)")
    parser.add_argument("--out-dir", default="tables", help="folder for the CSV and LaTeX files (default tables/)")
    parser.add_argument("--compare", action="store_true", help="add columns with our value minus the paper's")
    parser.add_argument("--include-random-init", action="store_true",
                        help="also tabulate random-init smoke runs (always in separate tables)")
    parser.add_argument("--digits", type=int, default=2, help="decimals in markdown/LaTeX (default 2)")
    parser.add_argument("--protocol", choices=["standard", "long", "freenoise"], default="standard",
                        help="which scoring protocol the runs used (eval.protocol, or --write-back --protocol "
                             "freenoise); tables never mix them")
    parser.add_argument("--reference", default=None,
                        help="--protocol freenoise: the reference videos (experiment=freenoise_reference) or their "
                             "statistics .npz")
    parser.add_argument("--min-segments", type=int, default=None,
                        help="--protocol freenoise: smallest set FVD is computed for (default feature dim + 1)")
    parser.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=None,
                        help="the Fig. 6 ablation table of FreeLong's branch modes (default: when the runs hold one)")
    args = parser.parse_args(argv)

    if args.protocol == "freenoise":
        return print_freenoise(args)
    try:
        records = records_frame(generated_records(read_results(args.run_dirs)))  # failed out, each video once
    except FileNotFoundError as err:
        return error_exit(err)
    if records.empty:
        print(f"error: no results.jsonl with videos under {' '.join(args.run_dirs)}", file=sys.stderr)
        return 1
    n_random = int(records["random_init"].sum())
    if n_random and not args.include_random_init:
        print(f"note: leaving out {n_random} video(s) from random-init smoke runs "
              f"(--include-random-init shows them separately)", file=sys.stderr)
        records = records[~records["random_init"]]
        if records.empty:
            print("error: only random-init smoke runs found; their scores are meaningless. "
                  "Use --include-random-init to tabulate them anyway.", file=sys.stderr)
            return 1
    for line in missing_warnings([p for p in args.run_dirs if Path(p).is_dir()]):  # shards not done yet, failures
        print(line, file=sys.stderr)
    unscored = records[[c for c in ("subject_consistency", "temporal_flickering") if c in records]].isna().all(axis=1)
    if unscored.all():
        print("warning: no VBench scores in these runs (were they run with eval=fast or eval=vbench?)",
              file=sys.stderr)

    found = sorted(set(records["protocol"]))
    if found != [args.protocol]:
        print(f"error: these runs were scored with the {' and the '.join(found)} protocol(s); a table holds one "
              f"protocol only: pass --protocol {found[0]}" + (" and give the runs of each protocol separately"
                                                          if len(found) > 1 else ""), file=sys.stderr)
        return 2
    long = args.protocol == "long"
    out_dir = Path(args.out_dir)
    if args.ablation or (args.ablation is None and is_ablation(records)):
        return print_ablation(records, out_dir, args.digits, args.protocol)
    table = aggregate(records) if long else with_reference(aggregate(records), compare=args.compare)
    for title, block in split_tables(table):
        shown = display_frame(block, compare=args.compare and not long, reference=not long)
        title = f"{title} — {PROTOCOL_LABELS[args.protocol]}"
        print(f"\n### Table 1 — {title}\n")
        print(to_markdown(shown, args.digits))
        if (block["family"] == PAPER_FAMILY).any() and not long:
            print(f"\n{PAPER_NOTE}")
        if long:
            print("\n(VBench-Long: scenes cut into 2 s clips, 10 s for Overall; not comparable with the paper's "
                  "standard-protocol numbers)")
        stem = "table1_" + re.sub(r"[^A-Za-z0-9]+", "_", title.split(" (")[0].split(" — ")[0]).strip("_").lower()
        stem += "_long" if long else ""
        atomic_write_text(out_dir / f"{stem}.csv", block.to_csv(index=False))
        tex = shown.rename(columns=lambda c: c.replace("Δ ", "") + " (ours-paper)" if c.startswith("Δ ") else c)
        latex = tex.to_latex(index=False, float_format=f"%.{args.digits}f", na_rep="--", escape=True,
                             caption=f"Table 1: {title}".replace("_", r"\_"), label=f"tab:{stem}")
        atomic_write_text(out_dir / f"{stem}.tex", latex)
        print(f"\nwrote {out_dir / stem}.csv and .tex")
    wan = freeloc_table(records) if not long else None  # FreeLOC's numbers are standard-protocol VBench
    if wan is not None and not wan.empty:  # experiment=wan_4x: FreeLOC's columns and published rows
        print("\n### Wan2.1-T2V-1.3B, 321 frames (FreeLOC protocol)\n")
        print(to_markdown(wan, args.digits))
        print(f"\n{FREELOC_NOTE}")
        atomic_write_text(out_dir / "wan_4x_freeloc.csv", wan.to_csv(index=False))
        print(f"\nwrote {out_dir / 'wan_4x_freeloc.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
