"""One video on several GPUs: every method split over the ranks against one GPU (``scripts/gpu_check.py`` runs it).

    python -m torch.distributed.run --nproc_per_node 4 scripts/parallel_check.py --out parallel.json
    python -m torch.distributed.run --nproc_per_node 2 scripts/parallel_check.py --model wan_tiny --widths config \\
        --frames 33 --height 32 --width 48 --time-frames 0 --out /tmp/p.json      # the code path on CPU (gloo)

Random weights (``scripts/benchmark.py``'s width presets; nothing is downloaded). Rank 0 first samples every method
alone (fp32, ``--steps`` steps, the reference); then all ranks sample it with the transformer split over them
(``freelong.parallel``, Ulysses) and rank 0 records the relative difference of the final latents. With
``--time-frames`` > 0 every method's split step time (median of ``--repeats`` guided steps after a warm-up, in
``--time-dtype``) is measured at that length too. Rank 0 writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from freelong import LongVideoPipeline, parallel
from scripts.benchmark import DIT_METHODS, build, method_from_spec, model_config, model_defaults, with_label


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def methods_for(cfg, names: list[str], native: int):
    return [with_label(method_from_spec(n, model_defaults(cfg, n)).with_native_frames(native), n) for n in names]


def sample(backbone, method, frames: int, height: int, width: int, steps: int) -> torch.Tensor:
    pipe = LongVideoPipeline(backbone, method, progress=False)
    return pipe("a teddy bear walking on the street", frames, height, width, steps, 5.0, seed=0,
                output_type="latent").float().cpu()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wan2_1_t2v_1_3b")
    p.add_argument("--widths", default="full", help="full | reduced | config (scripts/benchmark.py presets)")
    p.add_argument("--methods", default=",".join(DIT_METHODS))
    p.add_argument("--frames", type=int, default=81, help="parity check length (video frames, 4n+1)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--time-frames", type=int, default=321, help="timed length (0: no timing)")
    p.add_argument("--time-dtype", default="bfloat16")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    parallel.init_process_group()
    n, main_rank = parallel.world_size(), parallel.is_main_process()
    device = parallel.local_device()
    cfg = model_config(args.model, args.widths)
    parallel.check_context_parallel(cfg, n)
    torch.manual_seed(0)
    whole = build(cfg, device, torch.float32) if main_rank else None
    torch.manual_seed(0)
    split = build(cfg, device, torch.float32)  # the same random weights on every rank (same seed)
    parallel.enable_context_parallel(split, n)
    native = split.method_frames(split.native_frames)
    rows = []
    for method in methods_for(cfg, [m for m in args.methods.split(",") if m], native):
        ref = sample(whole, method, args.frames, args.height, args.width, args.steps) if main_rank else None
        t0 = time.perf_counter()
        got = sample(split, method, args.frames, args.height, args.width, args.steps)
        sync()
        row = {"method": method.name, "ranks": n, "frames": args.frames, "split_s": time.perf_counter() - t0}
        if main_rank:
            row["rel_diff"] = float((got - ref).norm() / ref.norm())
        rows.append(row)
    del whole
    timed = []
    if args.time_frames:
        split.to(device, getattr(torch, args.time_dtype))
        for method in methods_for(cfg, [m for m in args.methods.split(",") if m], native):
            seconds = []
            for _ in range(args.repeats + 1):  # the first is a warm-up
                sync()
                t0 = time.perf_counter()
                sample(split, method, args.time_frames, args.height, args.width, 1)
                sync()
                seconds.append(time.perf_counter() - t0)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            timed.append({"method": method.name, "ranks": n, "frames": args.time_frames, "dtype": args.time_dtype,
                          "one_step_call_s": statistics.median(seconds[1:]), "peak_mb_rank": peak})
    out = {"model": cfg.name, "description": cfg.description, "ranks": n, "device": str(device),
           "size": [args.height, args.width], "parity": rows, "timing": timed}
    if main_rank:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    torch.distributed.destroy_process_group()
    return out


if __name__ == "__main__":
    main()
