"""The ``official`` backend: run the real ``vbench`` package in another Python environment and read its JSON.

VBench pins transformers 4.33, numpy < 2 and a CUDA torch, so it cannot share this environment; point
``--vbench-python`` (``eval.vbench_python``) at the interpreter of one where ``pip install vbench`` worked.
The videos are linked into one flat temporary folder (VBench's ``custom_input`` mode reads a flat folder),
VBench's Python API is called with ``mode="custom_input"``, and its ``*_eval_results.json`` is read back
with the original paths restored, so the output has exactly the native backend's layout.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Runs inside the VBench environment; arguments come as one JSON string.
DRIVER = """
import json, os, sys
import torch
import vbench
from vbench import VBench

args = json.loads(sys.argv[1])
if args["cache_dir"]:
    os.environ["VBENCH_CACHE_DIR"] = args["cache_dir"]
device = torch.device(args["device"] or ("cuda" if torch.cuda.is_available() else "cpu"))
full_info = os.path.join(os.path.dirname(vbench.__file__), "VBench_full_info.json")
bench = VBench(device, full_info, args["output_dir"])
bench.evaluate(videos_path=args["videos_path"], name="official", dimension_list=args["dims"],
               mode="custom_input", imaging_quality_preprocessing_mode=args["imaging_mode"])
"""


def link_videos(videos: Sequence[Path], folder: Path) -> dict[str, Path]:
    """Symlink (or copy where links are impossible) each video into ``folder``; return link path → original."""
    import shutil

    mapping: dict[str, Path] = {}
    for i, src in enumerate(videos):
        link = folder / f"{i:05d}-{src.name}"
        try:
            link.symlink_to(src.resolve())
        except OSError:
            shutil.copyfile(src, link)
        mapping[str(link)] = src
    return mapping


def restore_paths(results: dict[str, Any], mapping: dict[str, Path]) -> dict[str, Any]:
    """Replace VBench's paths (of the linked files) by the original ones; keep the layout."""
    by_name = {Path(k).name: v for k, v in mapping.items()}
    out: dict[str, Any] = {}
    for dim, (overall, entries) in results.items():
        fixed = []
        for e in entries:
            e = dict(e)
            e["video_path"] = str(mapping.get(e["video_path"]) or by_name.get(Path(e["video_path"]).name)
                                  or e["video_path"])
            fixed.append(e)
        out[dim] = [overall, fixed]
    return out


def run_official(videos: Sequence[Path], dims: Sequence[str], vbench_python: str | None, device: str | None = None,
                 imaging_mode: str = "longer", cache_dir: str | None = None,
                 timeout: float | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Score ``videos`` with the vbench package; return (VBench JSON, per-video rows, meta)."""
    if not vbench_python:
        raise ValueError("the official backend needs the python of a VBench environment: "
                         "--vbench-python /path/to/vbench-env/bin/python (eval.vbench_python=...)")
    if not Path(vbench_python).exists():
        raise FileNotFoundError(f"vbench python {vbench_python} does not exist")
    with tempfile.TemporaryDirectory(prefix="freelong-vbench-") as tmp:
        tmp_path = Path(tmp)
        folder = tmp_path / "videos"
        folder.mkdir()
        mapping = link_videos(videos, folder)
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        args = {"videos_path": str(folder), "dims": list(dims), "device": device, "output_dir": str(out_dir),
                "imaging_mode": imaging_mode, "cache_dir": cache_dir}
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        proc = subprocess.run([vbench_python, "-c", DRIVER, json.dumps(args)], capture_output=True, text=True,
                              env=env, timeout=timeout)
        found = sorted(out_dir.glob("*_eval_results.json"))
        if proc.returncode != 0 or not found:
            tail = (proc.stderr or proc.stdout)[-4000:]
            raise RuntimeError(f"vbench failed (exit {proc.returncode}) with {vbench_python}:\n{tail}")
        raw = json.loads(found[0].read_text())
    results = restore_paths(raw, mapping)
    rows = []
    for src in videos:
        row: dict[str, Any] = {"video_path": str(src)}
        for dim in dims:
            entry = next((e for e in results.get(dim, [None, []])[1] if e["video_path"] == str(src)), None)
            row[dim] = entry["video_results"] if entry else None
        row["error"] = "" if all(row[d] is not None for d in dims) else "not scored by vbench"
        row["label"] = "vbench-official"
        rows.append(row)
    missing = [d for d in dims if d not in results]
    for d in missing:
        results[d] = [None, []]
    meta = {"backend": "official", "vbench_python": vbench_python, "dims": list(dims), "device": device,
            "imaging_mode": imaging_mode, "random_init": False, "label": "vbench-official",
            "vbench_stdout_tail": proc.stdout[-2000:]}
    return results, rows, meta
