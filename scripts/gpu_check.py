"""A prepared GPU check: one process, random weights (no downloads), about 5-8 minutes on one H100/H200.

    python scripts/gpu_check.py              # full-size models on cuda -> docs/benchmarks/gpu_check.{json,md}
    python scripts/gpu_check.py --out-dir /tmp/check --budget-s 420
    python scripts/gpu_check.py --smoke      # tiny configs on the CPU, < 2 min: the code path only

What it measures, in this order (a section that fails or runs out of ``--budget-s`` is recorded and skipped):

0. FreeLong's shared global/local branches on a DiT (``freelong/attention/lse.py``): whether the device's fused
   log-sum-exp kernels pass their check (bf16, fp16, fp32), their agreement with global SDPA and token-masked
   local attention, and one Wan2.1-1.3B self-attention at 321 frames, 832x480 (126,360 tokens, 12 heads x 128,
   bf16) and at 416x240 (31,590 tokens: query blocks of 3 frames, window edges cut into tiles) timed as global
   SDPA, the separate branches and the shared ones.
1. Evaluation networks at full size: frames/s of DINO ViT-B/16 (subject_consistency), CLIP ViT-B/32
   (background_consistency), CLIP ViT-L/14 (aesthetic_quality) and MUSIQ (imaging_quality), each through
   its dimension's own preprocessing and dtype (CLIP fp16 on CUDA as VBench), on 320x512 frames.
2. The fp16-vs-fp32 difference of the CLIP-based scores (background_consistency, aesthetic_quality) on a
   few random smooth videos, same weights: what VBench's fp16 CLIP costs in score digits.
3. Per backbone (full-size LaVie, VideoCrafter2, and every other ``conf/model`` config whose family is
   registered, e.g. Wan/diffusers backbones once they exist; unregistered families are skipped with a
   note): step time of each method at 128 frames, fp16 (``scripts/benchmark.py``'s step runner: one
   guided UNet call + DDIM update), then peak ``torch.cuda.max_memory_allocated`` per method at
   128/256/512 frames (an out-of-memory is recorded as such).

4. Several GPUs (only when 2 or more are visible; skipped with a note otherwise, and in ``--smoke``): one video
   split over the GPUs (``parallel.context``, diffusers' Ulysses context parallelism) by
   ``scripts/parallel_check.py`` under ``torch.distributed.run``: every method's final latents (Wan2.1-1.3B
   architecture, 81 frames 480x832, fp32, 2 steps) against one GPU, and each method's split one-step call at 321
   frames in bf16 with the peak memory per rank.

Random weights give the real cost (timings and memory do not depend on the values); the scores in
section 2 are only used as differences between two precisions of the same network.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scripts.benchmark import METHODS, StepRunner, build, format_table, model_config, run_steps
from scripts.eval_benchmark import full_eval_network

FULL = {"models": ["lavie", "videocrafter2"], "frames": 128, "memory_frames": [256, 512], "height": 320,
        "width": 512, "eval_frames": 64, "eval_size": [320, 512], "eval_videos": 4, "eval_batch": 32,
        "warmup": 1, "repeats": 2}
SMOKE = {"models": ["lavie_tiny", "videocrafter2_tiny"], "frames": 16, "memory_frames": [24], "height": 32,
         "width": 32, "eval_frames": 6, "eval_size": [48, 64], "eval_videos": 2, "eval_batch": 8,
         "warmup": 1, "repeats": 1}
EVAL_NETWORKS = {  # name -> (dimension, attribute holding the network, builder of the full-size random network)
    "DINO ViT-B/16": ("subject_consistency", "model", "dino"),
    "CLIP ViT-B/32": ("background_consistency", "model", "clip_b32"),
    "CLIP ViT-L/14": ("aesthetic_quality", "clip", "clip_l14"),
    "MUSIQ": ("imaging_quality", "model", "musiq"),
}


class Budget:
    def __init__(self, seconds: float):
        self.t0, self.seconds = time.perf_counter(), seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed


def guarded(out: dict[str, Any], key: str, budget: Budget, fn: Callable[[], Any]) -> None:
    """Run one section; an error or an exhausted budget is recorded instead of stopping the check."""
    if budget.left() <= 0:
        out[key] = {"skipped": f"time budget of {budget.seconds:.0f} s used up"}
        print(f"[{budget.elapsed:6.1f}s] {key}: skipped (budget)", flush=True)
        return
    t0 = time.perf_counter()
    try:
        out[key] = fn()
    except Exception as err:  # noqa: BLE001 - one broken part must not lose the others
        out[key] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc().splitlines()[-8:]}
    if isinstance(out[key], dict) and "error" in out[key]:
        print(f"[{budget.elapsed:6.1f}s] {key}: ERROR {out[key]['error']}", flush=True)
    else:
        print(f"[{budget.elapsed:6.1f}s] {key}: done in {time.perf_counter() - t0:.1f}s", flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# 0. FreeLong's shared branches on a DiT
# ----------------------------------------------------------------------------------------------
def dit_attention_check(device: torch.device, smoke: bool) -> dict[str, Any]:
    """Section 0: the fused log-sum-exp kernels and FreeLong's shared branches, checked and timed."""
    import torch.nn.functional as F

    from freelong.attention.lse import fused_lse_ok, global_and_local_attention_frames
    from freelong.attention.windows import local_window_mask

    out: dict[str, Any] = {"fused_ok": {str(dt).removeprefix("torch."): fused_lse_ok(device, dt)
                                        for dt in (torch.bfloat16, torch.float16, torch.float32)}}
    g = torch.Generator().manual_seed(0)
    t, s, window = 23, 6, 7
    q, k, v = (torch.randn(1, 2, t * s, 64, generator=g).to(device) for _ in range(3))
    if out["fused_ok"]["float32"]:
        glob, local = global_and_local_attention_frames(q, k, v, window, "adjusted", s, 3)
        mask = local_window_mask(t, window).repeat_interleave(s, 0).repeat_interleave(s, 1).to(device)
        out["max_abs_diff_global"] = float((glob - F.scaled_dot_product_attention(q, k, v)).abs().max())
        out["max_abs_diff_local"] = float((local - F.scaled_dot_product_attention(q, k, v, attn_mask=mask)).abs().max())
    # Wan2.1-1.3B at 321 frames: 832x480 (1,560 tokens per latent frame: one-frame query blocks) and 416x240
    # (390: blocks of 3 frames whose window edges are cut into tiles)
    shapes = [(21, 40, 2), (21, 10, 2)] if smoke else [(81, 1560, 12), (81, 390, 12)]
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    if not fused_lse_ok(device, dtype):
        return out
    out["self_attentions"] = [one_self_attention(device, dtype, *shape) for shape in shapes]
    return out


def one_self_attention(device: torch.device, dtype: torch.dtype, frames: int, tokens: int, heads: int) -> dict:
    """One DiT self-attention (window 21) timed as global SDPA, separate branches and shared branches."""
    import torch.nn.functional as F

    from freelong.attention.kernels import local_attention_frames
    from freelong.attention.lse import global_and_local_attention_frames

    q, k, v = (torch.randn(1, frames * tokens, heads, 128, device=device, dtype=dtype).transpose(1, 2)
               for _ in range(3))
    runs = {"global_sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
            "separate_branches": lambda: (F.scaled_dot_product_attention(q, k, v),
                                          local_attention_frames(q, k, v, None, 21, "adjusted", tokens)),
            "shared_branches": lambda: global_and_local_attention_frames(q, k, v, 21, "adjusted", tokens)}
    times: dict[str, list[float]] = {}
    for _ in range(3):  # interleaved rounds; the first is a warm-up
        for name, fn in runs.items():
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times.setdefault(name, []).append(time.perf_counter() - t0)
    med = {name: statistics.median(ts[1:]) for name, ts in times.items()}
    return {"latent_frames": frames, "tokens_per_frame": tokens, "heads": heads,
            "dtype": str(dtype).removeprefix("torch."), "seconds": med,
            "x_global": {n: med[n] / med["global_sdpa"] for n in med}}


# ----------------------------------------------------------------------------------------------
# 1-2. Evaluation networks
# ----------------------------------------------------------------------------------------------
def eval_dimension(dim: str, device: torch.device, precision: str, smoke: bool, batch: int,
                   networks: dict[str, torch.nn.Module] | None = None):
    """The dimension's scorer (its preprocessing and dtype); full-size random networks unless ``smoke``."""
    from eval.base import EvalContext, get_dimension

    ctx = EvalContext(device=device, random_init=True, batch_size=batch, precision=precision)
    scorer = get_dimension(dim)(ctx)  # tiny random twins, replaced below at full size
    if not smoke:
        for name, (d, attr, kind) in EVAL_NETWORKS.items():
            if d == dim:
                net = networks[name] if networks is not None else full_eval_network(kind)
                half = d in ("background_consistency", "aesthetic_quality")  # CLIP: fp16 on CUDA, as VBench
                setattr(scorer, attr, copy.deepcopy(net).to(device, ctx.half_on_gpu() if half else torch.float32))
    return scorer


def random_video(frames: int, height: int, width: int, seed: int, smooth: bool = True):
    """uint8 ``(T, H, W, 3)``: a random image drifting slowly (consistency scores near real videos'), or noise."""
    from eval.video import Video

    rng = np.random.default_rng(seed)
    if smooth:
        base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
        base = np.kron(base, np.ones((8, 8, 1), np.float32))[:height, :width]
        drift = np.linspace(0, 12, frames, dtype=np.float32)[:, None, None, None]
        noise = rng.normal(0, 4, (frames, height, width, 3)).astype(np.float32)
        arr = np.clip(base[None] + drift + noise, 0, 255).astype(np.uint8)
    else:
        arr = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    return Video(Path(f"random_{seed}.mp4"), arr, 8.0)


def eval_throughput(device: torch.device, spec: dict[str, Any], smoke: bool) -> dict[str, Any]:
    rows = []
    video = random_video(spec["eval_frames"], *spec["eval_size"], seed=0)
    for name, (dim, attr, _kind) in EVAL_NETWORKS.items():
        scorer = eval_dimension(dim, device, "vbench", smoke, spec["eval_batch"])
        net = getattr(scorer, attr)
        scorer.score(video)  # warm-up (cudnn/kernels)
        times = []
        for _ in range(2):
            synchronize(device)
            t0 = time.perf_counter()
            scorer.score(video)
            synchronize(device)
            times.append(time.perf_counter() - t0)
        dt = statistics.median(times)
        dtype = str(next(net.parameters()).dtype).replace("torch.", "")
        rows.append({"network": name, "dimension": dim, "dtype": dtype,
                     "parameters_m": sum(p.numel() for p in net.parameters()) / 1e6, "frames": video.num_frames,
                     "frame_size": list(video.size), "batch": spec["eval_batch"], "seconds": dt,
                     "frames_per_s": video.num_frames / dt})
        del scorer, net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows}


def clip_precision_gap(device: torch.device, spec: dict[str, Any], smoke: bool) -> dict[str, Any]:
    networks = None if smoke else {n: full_eval_network(k) for n, (_, _, k) in EVAL_NETWORKS.items()
                                   if k.startswith("clip")}
    videos = [random_video(spec["eval_frames"], *spec["eval_size"], seed=s) for s in range(spec["eval_videos"])]
    rows = []
    for dim in ("background_consistency", "aesthetic_quality"):
        values = {}
        for precision in ("vbench", "fp32"):
            scorer = eval_dimension(dim, device, precision, smoke, spec["eval_batch"], networks)
            values[precision] = [float(scorer.score(v).value) for v in videos]
            del scorer
        gap = np.abs(np.array(values["vbench"]) - np.array(values["fp32"]))
        rows.append({"dimension": dim, "videos": len(videos), "fp16_values": values["vbench"],
                     "fp32_values": values["fp32"], "max_abs_diff": float(gap.max()),
                     "mean_abs_diff": float(gap.mean()),
                     "note": "" if device.type == "cuda" else "not on CUDA: both runs are fp32 (fp16 is GPU-only)"})
    return {"rows": rows}


# ----------------------------------------------------------------------------------------------
# 3. Backbones
# ----------------------------------------------------------------------------------------------
def backbone_config(name: str, smoke: bool):
    """A random-weight config of the model at its real size (``smoke``: the tiny config as is)."""
    from freelong.models.spec import load_model_config

    if smoke:
        return model_config(name, "config")
    try:
        return model_config(name, "full")  # scripts/benchmark.py's full-width preset (LaVie)
    except SystemExit:  # no preset for this family: the YAML's architecture, random weights
        cfg = load_model_config(name)
        cfg.random_init = True
        cfg.description = f"{cfg.name} architecture, RANDOM weights (gpu_check)"
        return cfg


def extra_models(smoke: bool) -> list[str]:
    """Every other real (or, with ``smoke``, tiny) model config: Wan / diffusers backbones once they exist."""
    from freelong.models.spec import CONF_DIR

    names = []
    for p in sorted((Path(CONF_DIR) / "model").glob("*.yaml")):
        tiny = p.stem.endswith("_tiny")
        if tiny == smoke and p.stem not in (SMOKE if smoke else FULL)["models"]:
            names.append(p.stem)
    return names


def registered_families() -> set[str]:
    from freelong.models.base import FAMILIES

    return set(FAMILIES.names())  # built-in and plugin families (entry points)


def backbone_check(name: str, device: torch.device, dtype: torch.dtype, spec: dict[str, Any], smoke: bool,
                   budget: Budget) -> dict[str, Any]:
    from freelong.methods import get_method
    from freelong.methods.base import supported_families

    cfg = backbone_config(name, smoke)
    if cfg.family not in registered_families():
        return {"skipped": f"model family {cfg.family!r} is not registered (no backbone builder yet)"}
    backbone = build(cfg, device, dtype)
    backbone.unet.frame_chunk_size = None  # automatic, as the runner
    args = argparse.Namespace(guidance=7.5, height=spec["height"], width=spec["width"], warmup=spec["warmup"],
                              repeats=spec["repeats"], clock="wall")
    runner = StepRunner(backbone, args, device)
    native = backbone.method_frames(backbone.native_frames)  # freelong_pp is bound to the native (latent) length
    methods = [get_method(m).with_native_frames(native) for m in METHODS]
    methods = [m for m in methods if cfg.family in supported_families(m, [cfg.family])]  # FreePCA: UNets only
    params = sum(p.numel() for p in backbone.unet.parameters()) / 1e6
    out: dict[str, Any] = {"model": name, "family": cfg.family, "unet_parameters_m": params, "dtype": str(dtype),
                           "size": [spec["height"], spec["width"]], "steps": [], "memory": []}
    frames = takeable_frames(backbone, spec["frames"], args, methods)
    for r in run_steps(runner, methods, frames, args, device):  # memory from the first warm-up run
        out["steps"].append({"method": r.method, "frames": r.frames, "step_s": r.step_s, "ratio": r.ratio,
                             "repeats": r.repeats, "peak_mb": r.peak_mb, "act_mb": r.act_mb, "note": r.note})
        out["memory"].append({"method": r.method, "frames": r.frames, "peak_mb": r.peak_mb, "act_mb": r.act_mb,
                              "memory_kind": r.memory_kind, "step_s": r.step_s, "note": r.note})
    for frames in (takeable_frames(backbone, f, args, methods) for f in spec["memory_frames"]):
        for m in methods:
            if budget.left() <= 0:
                out["memory"].append({"method": m.name, "frames": frames, "note": "skipped: time budget used up"})
                continue
            out["memory"].append({"method": m.name, "frames": frames, **peak_memory_step(runner, m, frames, device)})
    del runner, backbone
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def takeable_frames(backbone, frames: int, args: argparse.Namespace, methods: list) -> int:
    """The first frame count from ``frames`` on that the backbone and every method can take.

    Wan's VAE takes 4n+1 frames and its methods count windows in latent frames, so 16 becomes 65 there
    (17 latent frames for the 16-frame windows); the SD-like UNets keep ``frames``.
    """
    for n in range(frames, 8 * frames + 2):
        try:
            backbone.check_shape(n, args.height, args.width)
            for m in methods:
                m.check_frames(backbone.method_frames(n))
            return n
        except ValueError:
            continue
    return frames  # none near: each step reports the backbone's or the method's own error as its note


def peak_memory_step(runner: StepRunner, method, frames: int, device: torch.device) -> dict[str, Any]:
    """One guided step at ``frames`` frames: peak memory (CUDA max allocated / CPU peak RSS) and its time."""
    from scripts.benchmark import _memory_before, _memory_peak

    try:
        method.check_frames(runner.bb.method_frames(frames))
    except ValueError as err:
        return {"note": f"skipped: {err}"}
    try:
        latents = runner.latents(method, frames)
        before = _memory_before(device)
        with runner.bb.attach(method):
            synchronize(device)
            t0 = time.perf_counter()
            runner.step(latents)
            synchronize(device)
            dt = time.perf_counter() - t0
        peak, kind = _memory_peak(device)
        return {"peak_mb": peak, "act_mb": peak - before, "memory_kind": kind, "step_s": dt, "note": ""}
    except torch.OutOfMemoryError as err:
        return {"note": f"out of memory: {err}"[:200]}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def multi_gpu_check(smoke: bool, budget: Budget, model: str = "wan2_1_t2v_1_3b") -> dict[str, Any]:
    """Section 4: ``scripts/parallel_check.py`` over the largest rank count that the GPUs and the heads allow."""
    import os
    import socket
    import subprocess
    import tempfile

    from freelong.models.spec import load_model_config

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if smoke or gpus < 2:
        return {"skipped": f"{gpus} GPU(s) visible{' (smoke run)' if smoke else ''}: splitting one video over GPUs "
                           f"(scripts/parallel_check.py) needs 2 or more"}
    heads = int(load_model_config(model).unet.num_attention_heads)
    ranks = max(r for r in range(2, gpus + 1) if heads % r == 0)
    root = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "parallel.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
               str(port), str(root / "scripts" / "parallel_check.py"), "--model", model, "--out", str(out)]
        env = {**os.environ, "PYTHONPATH": str(root)}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env,
                              timeout=max(60.0, budget.left()))
        if proc.returncode != 0:
            return {"error": f"parallel_check.py over {ranks} GPUs exited {proc.returncode}",
                    "traceback": proc.stderr.splitlines()[-12:]}
        return {"gpus": gpus, **json.loads(out.read_text())}


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# GPU check ({'SMOKE: tiny configs, numbers meaningless' if report['smoke'] else 'full-size models'})",
             "", f"Device: **{m['device']}**; torch {m['versions'].get('torch')}, CUDA {m['versions'].get('cuda')}; "
             f"commit `{m['git_commit']}`; {report['wall_s']:.0f} s in all; random weights.", ""]
    dit = report.get("dit_attention", {})
    if "fused_ok" in dit:
        lines += ["## FreeLong's shared branches on a DiT (fused log-sum-exp kernels)", "",
                  f"Kernel check passed: {dit['fused_ok']}; max |diff| vs SDPA: global "
                  f"{dit.get('max_abs_diff_global')}, local {dit.get('max_abs_diff_local')}.", ""]
        for one in dit.get("self_attentions", []):
            lines += [f"One self-attention, {one['latent_frames']} latent frames x {one['tokens_per_frame']} tokens, "
                      f"{one['heads']} heads x 128, {one['dtype']}:", "",
                      format_table(["computation", "seconds", "x global SDPA"],
                                   [[n, sec, one["x_global"][n]] for n, sec in one["seconds"].items()],
                                   markdown=True), ""]
    ev = report.get("eval_throughput", {})
    if "rows" in ev:
        lines += ["## Evaluation networks (frames/s, each dimension's own preprocessing and dtype)", "",
                  format_table(["network", "dimension", "dtype", "params M", "frames", "frame", "frames/s"],
                               [[r["network"], r["dimension"], r["dtype"], r["parameters_m"], r["frames"],
                                 "x".join(map(str, r["frame_size"])), r["frames_per_s"]] for r in ev["rows"]],
                               markdown=True), ""]
    gap = report.get("clip_fp16_vs_fp32", {})
    if "rows" in gap:
        lines += ["## CLIP scores, fp16 (VBench on GPU) vs fp32, same weights, random smooth videos", "",
                  format_table(["dimension", "videos", "max abs diff", "mean abs diff", "note"],
                               [[r["dimension"], r["videos"], r["max_abs_diff"], r["mean_abs_diff"], r["note"]]
                                for r in gap["rows"]], markdown=True), ""]
    for key, part in report.items():
        if not key.startswith("backbone:") or not isinstance(part, dict):
            continue
        if "steps" not in part:
            lines += [f"## {key[9:]}", "", f"{part.get('skipped') or part.get('error')}", ""]
            continue
        lines += [f"## {part['model']} ({part['unet_parameters_m']:.0f} M UNet parameters, {part['dtype']}, "
                  f"{part['size'][0]}x{part['size'][1]})", "",
                  format_table(["method", "frames", "median step s", "x direct", "peak MB", "note"],
                               [[s["method"], s["frames"], s["step_s"], s["ratio"], s["peak_mb"], s["note"]]
                                for s in part["steps"]], markdown=True), ""]
        frames = sorted({r["frames"] for r in part["memory"]})
        methods = list(dict.fromkeys(r["method"] for r in part["memory"]))
        cell = {(r["method"], r["frames"]): (r.get("peak_mb") if r.get("peak_mb") is not None else
                                             (r.get("note") or "-")[:24]) for r in part["memory"]}
        lines += ["Peak memory (MB, `torch.cuda.max_memory_allocated` on CUDA) by length:", "",
                  format_table(["method", *[f"{f} frames" for f in frames]],
                               [[mm, *[cell.get((mm, f)) for f in frames]] for mm in methods], markdown=True), ""]
    multi = report.get("multi_gpu", {})
    if "parity" in multi:
        lines += [f"## One video over {multi['ranks']} GPUs ({multi['description']})", "",
                  f"Final latents split vs one GPU ({multi['parity'][0]['frames'] if multi['parity'] else '-'} "
                  f"frames, {multi['size'][0]}x{multi['size'][1]}, fp32):", "",
                  format_table(["method", "ranks", "relative difference", "split seconds"],
                               [[r["method"], r["ranks"], r.get("rel_diff"), r["split_s"]] for r in multi["parity"]],
                               markdown=True), "",
                  format_table(["method", "frames", "dtype", "one-step call s", "peak MB per rank"],
                               [[r["method"], r["frames"], r["dtype"], r["one_step_call_s"], r["peak_mb_rank"]]
                                for r in multi["timing"]], markdown=True), ""]
    elif multi:
        lines += ["## One video over several GPUs", "", f"{multi.get('skipped') or multi.get('error')}", ""]
    errors = {k: v["error"] for k, v in report.items() if isinstance(v, dict) and "error" in v}
    if errors:
        lines += ["## Errors", "", *[f"- {k}: {v}" for k, v in errors.items()], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from diffusers.utils import logging as diffusers_logging

    from freelong.metadata import device_name, git_commit, package_versions
    from freelong.video_io import atomic_write_json, atomic_write_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny configs on the CPU (< 2 min): tests the code path")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    p.add_argument("--out-dir", default=None, help="default docs/benchmarks (smoke: outputs/gpu_check_smoke)")
    p.add_argument("--budget-s", type=float, default=None, help="stop starting new measurements after this "
                   "(default 420 s; smoke 100 s)")
    p.add_argument("--models", default=None, help="comma-separated model configs (default: lavie,videocrafter2 "
                   "+ every other registered one)")
    args = p.parse_args(argv)
    diffusers_logging.set_verbosity_error()
    spec = dict(SMOKE if args.smoke else FULL)
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (torch.cuda.is_available() is False); use --smoke for the CPU code path",
              file=sys.stderr)
        return 2
    if device.type == "cpu":
        torch.set_num_threads(min(4, torch.get_num_threads()))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    out_dir = Path(args.out_dir or ("outputs/gpu_check_smoke" if args.smoke else "docs/benchmarks"))
    budget = Budget(args.budget_s or (100 if args.smoke else 420))
    models = args.models.split(",") if args.models else [*spec["models"], *extra_models(args.smoke)]

    report: dict[str, Any] = {"smoke": args.smoke, "machine": {"device": device_name(device),
                              "versions": package_versions(), "git_commit": git_commit(),
                              "command": "python scripts/gpu_check.py " + " ".join(sys.argv[1:] if argv is None
                                                                                     else argv)},
                              "spec": spec}
    guarded(report, "dit_attention", budget, lambda: dit_attention_check(device, args.smoke))
    guarded(report, "eval_throughput", budget, lambda: eval_throughput(device, spec, args.smoke))
    guarded(report, "clip_fp16_vs_fp32", budget, lambda: clip_precision_gap(device, spec, args.smoke))
    for name in models:
        guarded(report, f"backbone:{name}", budget,
                lambda name=name: backbone_check(name, device, dtype, spec, args.smoke, budget))
    guarded(report, "multi_gpu", budget, lambda: multi_gpu_check(args.smoke, budget))
    report["wall_s"] = budget.elapsed
    stem = "gpu_check_smoke" if args.smoke else "gpu_check"
    atomic_write_json(out_dir / f"{stem}.json", json.loads(json.dumps(report, default=str)))
    atomic_write_text(out_dir / f"{stem}.md", markdown(report))
    print(markdown(report))
    print(f"\nwrote {out_dir / stem}.json and .md ({budget.elapsed:.0f} s)")
    return 1 if any(isinstance(v, dict) and "error" in v for v in report.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
