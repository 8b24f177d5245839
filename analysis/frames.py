"""Paper-style frame strips (FreeLong Fig. 6 and Fig. 7): one row per video, every k-th frame as a still.

    python -m analysis.frames outputs/ablation_fig6/multiruns/<date> --every 16    # Fig. 6: the branch variants
    python -m analysis.frames outputs/multi_prompt/multiruns/<date> --every 16    # Fig. 7: methods, multi-prompt
    python -m analysis.frames RUN_DIR1 RUN_DIR2 --every 8 --out figures/

Every video recorded in the ``results.jsonl`` files below the given run or sweep directories is read.
Videos of the same prompt and seed make one figure, one row each, labelled with its method and the
parameters that differ between the rows (e.g. ``freelong (branch=global)``); columns are frames
``0, k, 2k, ...``. For a multi-prompt video each segment's prompt is written under its frames. Random-init
smoke runs are titled as such. Written as ``frames_<video stem>.png`` and ``.pdf`` (atomically) into
``--out`` (default: ``<first directory>/frames``).
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from freelong.errors import error_exit
from freelong.prompts import MultiPrompt, parse_prompt, prompt_label

from .common import pyplot, save_figure

RANDOM_INIT_TITLE = "RANDOM-INIT WEIGHTS (smoke run, not a real model)"


@dataclass
class VideoRow:
    """One video of a figure: its record, resolved file and row label."""

    record: dict[str, Any]
    path: Path
    label: str = ""

    @property
    def num_frames(self) -> int:
        return int(self.record["num_frames"])


def read_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every record of every ``results.jsonl`` below ``paths``, with ``run_dir`` added (the record store's reader)."""
    from freelong.app.records import is_failed, read_results

    return [r for r in read_results(paths) if not is_failed(r)]  # a failed video has no file


def sample_indices(num_frames: int, every: int) -> list[int]:
    """Frames ``0, every, 2*every, ... < num_frames``; ValueError when ``every`` does not fit the video."""
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    if every > num_frames:
        raise ValueError(f"--every {every} is larger than the video ({num_frames} frames)")
    return list(range(0, num_frames, every))


def segment_of_frames(prompt: Any, num_frames: int, indices: Sequence[int]) -> list[int] | None:
    """For a multi-prompt video, the segment each sampled frame belongs to (None for a single prompt)."""
    parsed = parse_prompt(prompt)
    if not isinstance(parsed, MultiPrompt) or not parsed.is_multi:
        return None
    ends = np.cumsum(parsed.segment_lengths(num_frames))
    return [int(np.searchsorted(ends, f, side="right")) for f in indices]


def segment_groups(segments: Sequence[int]) -> list[tuple[int, int, int]]:
    """Runs of consecutive columns in one segment: ``[(segment, first_col, last_col), ...]``."""
    groups: list[tuple[int, int, int]] = []
    for col, seg in enumerate(segments):
        if groups and groups[-1][0] == seg:
            groups[-1] = (seg, groups[-1][1], col)
        else:
            groups.append((seg, col, col))
    return groups


def group_videos(records: list[dict[str, Any]]) -> list[list[VideoRow]]:
    """Figures: videos of the same prompt and seed, in the order their runs were given."""
    groups: dict[str, list[VideoRow]] = {}
    for rec in records:
        if not rec.get("video"):
            continue
        key = json.dumps([rec.get("prompt"), rec.get("seed")], sort_keys=True, default=str)
        groups.setdefault(key, []).append(VideoRow(rec, Path(rec["run_dir"]) / rec["video"]))
    out = []
    for rows in groups.values():
        rows = sorted(rows, key=_paper_order(rows))
        for row, label in zip(rows, row_labels([r.record for r in rows])):
            row.label = label
        out.append(rows)
    return out


def _paper_order(rows: Sequence[VideoRow]):
    """Sort key: methods in the order met; FreeLong's branch variants in the order of the paper's Fig. 6."""
    from eval.ablation import BRANCH_ORDER

    first = {}
    for row in rows:
        first.setdefault(row.record.get("method"), len(first))

    def key(row: VideoRow) -> tuple[int, int]:
        branch = (row.record.get("method_params") or {}).get("branch", "blend")
        return first[row.record.get("method")], BRANCH_ORDER.index(branch) if branch in BRANCH_ORDER else 99

    return key


def row_labels(records: Sequence[dict[str, Any]]) -> list[str]:
    """``method``, plus ``(k=v, ...)`` for the parameters that differ between rows of the same method."""
    params = [r.get("method_params") or {} for r in records]
    several_models = len({r.get("model") for r in records}) > 1
    labels = []
    for rec, p in zip(records, params):
        same = [q for r, q in zip(records, params) if r.get("method") == rec.get("method")]
        keys = sorted({k for q in same for k in q})
        differing = [k for k in keys if len({json.dumps(q.get(k), default=str) for q in same}) > 1]
        label = str(rec.get("method", "?"))
        if differing:
            label += " (" + ", ".join(f"{k}={p.get(k)}" for k in differing) + ")"
        if several_models:
            label = f"{rec.get('model')}: {label}"
        labels.append(label)
    return labels


def load_stills(row: VideoRow, indices: Sequence[int]) -> list[np.ndarray]:
    """The frames ``indices`` of a row's video (uint8 ``(H, W, 3)`` each)."""
    from freelong.video_io import read_video

    if not row.path.is_file():
        raise FileNotFoundError(f"{row.path}: video listed in results.jsonl is missing")
    frames = read_video(row.path)
    return [frames[i] for i in indices if i < len(frames)]


def make_figure(rows: Sequence[VideoRow], every: int, stills: Sequence[Sequence[np.ndarray]] | None = None):
    """The strip figure: rows = videos, columns = frames ``0, every, ...``, segment prompts underneath."""
    plt = pyplot()
    longest = max(rows, key=lambda r: r.num_frames)
    for row in rows:
        try:
            sample_indices(row.num_frames, every)
        except ValueError as err:
            raise ValueError(f"{err}: {row.path}") from None
    indices = sample_indices(longest.num_frames, every)
    stills = stills if stills is not None else [load_stills(r, indices) for r in rows]
    first = next(s[0] for s in stills if s)
    aspect = first.shape[0] / first.shape[1]
    cell_w, label_w = 1.5, 2.2
    segments = segment_of_frames(longest.record.get("prompt"), longest.num_frames, indices)
    caption_h = 0.9 if segments else 0.0
    title_h = 0.9
    width = label_w + cell_w * len(indices)
    height = title_h + cell_w * aspect * len(rows) * 1.05 + 0.3 + caption_h
    fig = plt.figure(figsize=(width, height))
    left, right = label_w / width, 1 - 0.05 / width
    top, bottom = 1 - title_h / height, (0.3 + caption_h) / height
    axes = fig.subplots(len(rows), len(indices), squeeze=False,
                        gridspec_kw={"left": left, "right": right, "top": top, "bottom": bottom,
                                     "wspace": 0.03, "hspace": 0.05})
    for r, (row, frames) in enumerate(zip(rows, stills)):
        for c, idx in enumerate(indices):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(frames):
                ax.imshow(frames[c], interpolation="nearest")
            if r == 0:
                ax.set_title(f"frame {idx}", fontsize=8)
        axes[r][0].set_ylabel("\n".join(textwrap.wrap(row.label, 26)), rotation=0, ha="right", va="center",
                              fontsize=8, labelpad=6)
    if segments:
        parsed = parse_prompt(longest.record["prompt"])
        y = bottom - 0.15 / height
        for seg, c0, c1 in segment_groups(segments):
            x0, x1 = axes[-1][c0].get_position().x0, axes[-1][c1].get_position().x1
            fig.add_artist(plt.Line2D([x0, x1], [y, y], color=f"C{seg % 10}", lw=2, transform=fig.transFigure))
            chars = max(12, int((c1 - c0 + 1) * cell_w * 11))
            fig.text((x0 + x1) / 2, y - 0.05 / height, "\n".join(textwrap.wrap(parsed.segments[seg].prompt, chars)),
                     ha="center", va="top", fontsize=7, color=f"C{seg % 10}")
    fig.suptitle(_title(rows, every), fontsize=9, y=1 - 0.08 / height, va="top")
    return fig


def _title(rows: Sequence[VideoRow], every: int) -> str:
    rec = rows[0].record
    prompt = rec.get("prompt")
    try:
        text = prompt_label(prompt)
    except ValueError:
        text = str(prompt)
    lines = []
    if any(r.record.get("random_init") for r in rows):
        lines.append(RANDOM_INIT_TITLE)
    models = sorted({str(r.record.get("model", "?")) for r in rows})
    lines.append(f"{', '.join(models)}, {max(r.num_frames for r in rows)} frames, a still every {every} frames, "
                 f"seed {rec.get('seed')}")
    parsed = parse_prompt(prompt) if prompt is not None else None
    if isinstance(parsed, MultiPrompt) and parsed.is_multi:
        lines.append(f"multi-prompt, {len(parsed.segments)} segments (each prompt under its frames)")
    else:
        lines.extend(textwrap.wrap(f'"{text}"', 140)[:2])
    return "\n".join(lines)


def write_figures(paths: Sequence[str | Path], every: int, out: Path | None = None) -> list[Path]:
    """Every figure for the videos below ``paths``; returns the files written."""
    records = read_records(paths)
    groups = group_videos(records)
    if not groups:
        raise ValueError(f"no videos recorded in results.jsonl under {' '.join(map(str, paths))}")
    first = Path(paths[0])
    out = out or ((first if first.is_dir() else first.parent) / "frames")
    written = []
    for rows in groups:
        written.extend(save_figure(make_figure(rows, every), out / f"frames_{rows[0].path.stem}"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.frames", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run or sweep directories (or results.jsonl files)")
    parser.add_argument("--every", type=int, default=16, help="take every k-th frame (default 16)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default <first dir>/frames)")
    args = parser.parse_args(argv)
    try:
        written = write_figures(args.paths, args.every, args.out)
    except (FileNotFoundError, ValueError) as err:
        return error_exit(err)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
