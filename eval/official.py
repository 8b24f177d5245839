"""The ``official`` backend: run the real ``vbench`` package in another Python environment and read its JSON.

VBench pins transformers 4.33, numpy < 2 and a CUDA torch, so it cannot share this environment; point
``--vbench-python`` (``eval.vbench_python``) at the interpreter of one where vbench is installed (docs/evaluation.md,
"Check our numbers against your VBench"). One call = **one** VBench process for all videos and dimensions:

* the videos are linked into one flat temporary folder (VBench's ``custom_input`` mode reads a flat folder);
* the driver sets ``VBENCH_CACHE_DIR`` *before* importing vbench (``vbench.utils`` reads it at import) and
  calls ``VBench.evaluate(..., local=True, mode="custom_input")`` once per dimension, timing each. With
  ``local=True`` VBench reads CLIP from ``<cache>/clip_model/`` instead of ``clip.load('ViT-B/32')`` (which
  checks ``~/.cache/clip`` and downloads on a mismatch); DINO's hub entry point still loads its weights from
  torch's hub checkpoint folder, so the driver points ``torch.hub`` at a private folder holding a link to
  ``<cache>/dino_model/dino_vitbase16_pretrain.pth``, the file VBench's local mode keeps but never reads;
* every file VBench's local mode would otherwise ``wget`` is checked here first (:func:`missing_files`), so an
  incomplete cache is one clear error instead of a download attempt;
* ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` lets the vbench 0.1.5 wheel's plain ``torch.load`` of ``amt-s.pth``
  work on torch >= 2.6, as VBench's current code does with ``weights_only=False``.

The results are read back with the original paths restored, in exactly the native backend's layout.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Files VBench's local mode reads from its cache, per dimension (``vbench/utils.py: init_submodules``).
OFFICIAL_CACHE_FILES: dict[str, tuple[str, ...]] = {
    "subject_consistency": ("dino_model/facebookresearch_dino_main/hubconf.py",
                            "dino_model/dino_vitbase16_pretrain.pth"),
    "background_consistency": ("clip_model/ViT-B-32.pt",),
    "aesthetic_quality": ("clip_model/ViT-L-14.pt", "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth"),
    "imaging_quality": ("pyiqa_model/musiq_spaq_ckpt-358bb6af.pth",),
    "motion_smoothness": ("amt_model/amt-s.pth",),
    "dynamic_degree": ("raft_model/models/raft-things.pth",),
    "temporal_flickering": (),
}

# Runs inside the VBench environment; arguments come as one JSON string.
DRIVER = """
import json, os, sys, tempfile, time
args = json.loads(sys.argv[1])
os.environ["VBENCH_CACHE_DIR"] = args["cache_dir"]  # before vbench is imported: vbench.utils reads it then
import torch
dino = os.path.join(args["cache_dir"], "dino_model", "dino_vitbase16_pretrain.pth")
if os.path.isfile(dino):  # DINO's hubconf loads from <hub dir>/checkpoints: serve VBench's own cached file
    hub = tempfile.mkdtemp(prefix="vbench-hub-")
    os.makedirs(os.path.join(hub, "checkpoints"))
    os.symlink(dino, os.path.join(hub, "checkpoints", os.path.basename(dino)))
    torch.hub.set_dir(hub)
import vbench
from vbench import VBench
device = torch.device(args["device"] or ("cuda" if torch.cuda.is_available() else "cpu"))
full_info = os.path.join(os.path.dirname(vbench.__file__), "VBench_full_info.json")
bench = VBench(device, full_info, args["output_dir"])
merged, seconds = {}, {}
for dim in args["dims"]:
    t0 = time.perf_counter()
    bench.evaluate(videos_path=args["videos_path"], name="official_" + dim, dimension_list=[dim], local=True,
                   mode="custom_input", imaging_quality_preprocessing_mode=args["imaging_mode"])
    seconds[dim] = time.perf_counter() - t0
    with open(os.path.join(args["output_dir"], "official_" + dim + "_eval_results.json")) as f:
        merged.update(json.load(f))
try:
    from importlib.metadata import version as _version
    vbench_version = getattr(vbench, "__version__", None) or _version("vbench")
except Exception:
    vbench_version = None
with open(os.path.join(args["output_dir"], "merged.json"), "w") as f:
    json.dump({"results": merged, "seconds": seconds, "vbench_version": vbench_version,
               "torch": torch.__version__, "device": str(device)}, f)
"""


class OfficialBackendError(RuntimeError):
    """The VBench environment is missing, incomplete, or VBench failed."""


def missing_files(dims: Sequence[str], cache_dir: Path) -> list[Path]:
    """The files VBench's local mode would try to download for ``dims`` because ``cache_dir`` lacks them."""
    return [cache_dir / rel for d in dims for rel in OFFICIAL_CACHE_FILES.get(d, ()) if not (cache_dir / rel).is_file()]


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


def check_official_dims(dims: Sequence[str]) -> None:
    """Raise ValueError for dimensions the official lane does not drive (overall_consistency: see below)."""
    other = [d for d in dims if d not in OFFICIAL_CACHE_FILES]
    if other:  # VBench would take each prompt from the linked file's name, which the lane numbers
        raise ValueError(f"the official backend scores VBench's seven quality dimensions only, not {', '.join(other)} "
                         f"(score it with the native backend)")


def run_official(videos: Sequence[Path], dims: Sequence[str], vbench_python: str | None, device: str | None = None,
                 imaging_mode: str = "longer", cache_dir: str | None = None,
                 timeout: float | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Score all ``videos`` on all ``dims`` in one VBench process; return (VBench JSON, per-video rows, meta).

    ``meta["seconds_per_dim"]`` holds VBench's time per dimension (model loading included).
    """
    from .weights import vbench_cache_dir

    check_official_dims(dims)
    if not vbench_python:
        raise ValueError("the official backend needs the python of a VBench environment: "
                         "--vbench-python /path/to/vbench-env/bin/python (eval.vbench_python=...)")
    if not Path(vbench_python).exists():
        raise FileNotFoundError(f"vbench python {vbench_python} does not exist")
    cache = vbench_cache_dir(cache_dir).resolve()
    missing = missing_files(dims, cache)
    if missing:
        lines = "\n".join(f"  {p}" for p in missing)
        raise OfficialBackendError(f"the VBench cache {cache} lacks files its local (offline) mode reads:\n{lines}\n"
                                   f"place them there (docs/evaluation.md, 'Check our numbers against your VBench'), "
                                   f"pass --cache-dir, or drop those dimensions")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="freelong-vbench-") as tmp:
        tmp_path = Path(tmp)
        folder = tmp_path / "videos"
        folder.mkdir()
        mapping = link_videos(videos, folder)
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        args = {"videos_path": str(folder), "dims": list(dims), "device": device, "output_dir": str(out_dir),
                "imaging_mode": imaging_mode, "cache_dir": str(cache)}
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
        try:
            proc = subprocess.run([vbench_python, "-c", DRIVER, json.dumps(args)], capture_output=True, text=True,
                                  env=env, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise OfficialBackendError(f"vbench did not finish within {timeout:.0f} s") from err
        merged = out_dir / "merged.json"
        if proc.returncode != 0 or not merged.is_file():
            tail = (proc.stderr or proc.stdout)[-4000:]
            raise OfficialBackendError(f"vbench failed (exit {proc.returncode}) with {vbench_python}:\n{tail}")
        answer = json.loads(merged.read_text())
    results = restore_paths(answer["results"], mapping)
    rows = []
    for src in videos:
        row: dict[str, Any] = {"video_path": str(src)}
        for dim in dims:
            entry = next((e for e in results.get(dim, [None, []])[1] if e["video_path"] == str(src)), None)
            row[dim] = entry["video_results"] if entry else None
        row["error"] = "" if all(row[d] is not None for d in dims) else "not scored by vbench"
        row["label"] = "vbench-official"
        rows.append(row)
    for d in dims:
        results.setdefault(d, [None, []])
    meta = {"backend": "official", "vbench_python": vbench_python, "dims": list(dims), "device": answer.get("device"),
            "imaging_mode": imaging_mode, "cache_dir": str(cache), "random_init": False, "label": "vbench-official",
            "vbench_version": answer.get("vbench_version"), "vbench_torch": answer.get("torch"),
            "seconds_per_dim": answer.get("seconds", {}), "wall_time_s": time.perf_counter() - t0,
            "vbench_stdout_tail": proc.stdout[-2000:]}
    return results, rows, meta


def score_official_run(videos: Sequence[Path], dims: Sequence[str], vbench_python: str, device: str | None = None,
                       imaging_mode: str = "longer", cache_dir: str | None = None) -> dict[str, dict[str, Any]]:
    """All of a run's videos in one VBench process → ``{video path: record scores}`` (the run hook's format).

    Each value is ``{dim: per-video value, ..., "meta": {...}}`` as ``record["scores"]`` of ``results.jsonl``;
    when VBench fails as a whole, every video gets ``meta.errors = {"video": <VBench's error>}``.
    """
    t0 = time.perf_counter()
    try:
        _, rows, meta = run_official(videos, dims, vbench_python, device=device, imaging_mode=imaging_mode,
                                     cache_dir=cache_dir)
    except (OfficialBackendError, OSError) as err:
        rows, meta = [{"video_path": str(v), **{d: None for d in dims}} for v in videos], {"error": str(err)[-2000:]}
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        scores: dict[str, Any] = {d: row[d] for d in dims if row[d] is not None}
        errors = {"video": meta["error"]} if "error" in meta else {
            d: "not scored by vbench" for d in dims if row[d] is None}
        scores["meta"] = {"label": "vbench-official", "random_init": False, "backend": "official",
                          "device": meta.get("device"), "vbench_version": meta.get("vbench_version"),
                          "imaging_mode": imaging_mode, "errors": errors, "videos_in_call": len(videos),
                          "seconds": (time.perf_counter() - t0) / max(1, len(videos))}
        out[row["video_path"]] = scores
    return out
