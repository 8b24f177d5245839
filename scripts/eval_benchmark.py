"""Evaluation speed per VBench dimension, with full-size random-weight networks (nothing to download).

    python scripts/eval_benchmark.py                           # CPU, 1 thread, a few frames, extrapolated
    python scripts/eval_benchmark.py --device cuda --frames 128 --batch-size 32 --pair-batch 8
    python scripts/eval_benchmark.py --dims table1 --threads 2 --json docs/benchmarks/eval_cpu.json

Each dimension scores one synthetic 320x512 video with the real architecture at its real width (DINO
ViT-B/16, CLIP ViT-B/32 and ViT-L/14 + head, MUSIQ, AMT-S, RAFT, ViCLIP ViT-L/14), random weights:
timings do not depend on the weights. ``--frames`` frames are scored (default 8 on CPU, to keep the
run short) after one warm-up call, and the time is **extrapolated** to a 128-frame video by the unit
the dimension's cost grows with: frames (subject, background, aesthetic, imaging, flicker), even-frame
pairs (motion: 63 pairs at 128 frames), 8-fps frame pairs (dynamic: 127), one 8-frame clip
(overall_consistency: 1 per video, 2 under VBench-Long's 10 s clips). Decoding the 128-frame mp4 is
measured in full (it happens once for all dimensions). Output: a markdown table, and ``--json``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

from freelong.errors import error_exit

TARGET_FRAMES = 128


def units(dim: str, frames: int, fps: float = 8.0) -> float:
    """How many cost units a video of ``frames`` frames has for ``dim`` (see the module docstring)."""
    if dim == "motion_smoothness":
        return max(0, (frames + 1) // 2 - 1)
    if dim == "dynamic_degree":
        step = max(1, round(fps / 8))
        return max(0, len(range(0, frames, step)) - 1)
    if dim == "overall_consistency":
        return 1
    return frames


def full_eval_network(kind: str):
    """The full-size architecture VBench uses for ``kind`` (dino, clip_b32, clip_l14, musiq), random weights.

    Built under seed 0 (the caller's RNG state untouched), with the transformers / eval.musiq classes.
    """
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, ViTConfig, ViTModel

    from eval.models import ClipImageEncoder, DinoEncoder, _build_seeded
    from eval.musiq import MUSIQ

    if kind == "dino":
        cfg = ViTConfig(patch_size=16, image_size=224, layer_norm_eps=1e-6)  # ViT-B: 768 wide, 12 layers
        cfg._attn_implementation = "eager"  # as eval.models.load_dino
        return DinoEncoder(_build_seeded(lambda: ViTModel(cfg, add_pooling_layer=False), 0)).eval()
    if kind in ("clip_b32", "clip_l14"):
        big = kind == "clip_l14"
        cfg = CLIPVisionConfig(hidden_size=1024 if big else 768, intermediate_size=4096 if big else 3072,
                               num_hidden_layers=24 if big else 12, num_attention_heads=16 if big else 12,
                               patch_size=14 if big else 32, image_size=224, projection_dim=768 if big else 512,
                               hidden_act="quick_gelu", layer_norm_eps=1e-5)
        return ClipImageEncoder(_build_seeded(lambda: CLIPVisionModelWithProjection(cfg), 0)).eval()
    if kind == "musiq":
        return _build_seeded(MUSIQ, 0).eval()
    raise ValueError(kind)


# dimension -> (scorer attribute holding the network, full_eval_network kind)
FULL_SIZE_NETWORKS = {"subject_consistency": ("model", "dino"), "background_consistency": ("model", "clip_b32"),
                      "aesthetic_quality": ("clip", "clip_l14"), "imaging_quality": ("model", "musiq")}


def full_size_networks(dim, scorer) -> None:
    """Swap a random-init scorer's tiny networks for full-size random ones of the same classes."""
    dev = scorer.ctx.device
    if dim in FULL_SIZE_NETWORKS:
        attr, kind = FULL_SIZE_NETWORKS[dim]
        net = full_eval_network(kind)
        net = net.to(dev, scorer.ctx.half_on_gpu()) if kind.startswith("clip") else net.to(dev)
        setattr(scorer, attr, net)
    elif dim == "overall_consistency":
        from eval.overall_consistency import TINY_BPE, load_viclip

        scorer.model = load_viclip(None, TINY_BPE, random_init=True, full_size=True).to(dev)
    # motion (AMT-S), dynamic (RAFT): the random-init twins already are the full architectures


def synthetic_video(frames: int, height: int, width: int):
    """Smoothly moving gradients (a realistic mp4 size; flow and interpolation get real motion)."""
    import numpy as np

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((frames, height, width, 3), np.uint8)
    for i in range(frames):
        out[i, ..., 0] = np.clip(128 + 100 * np.sin((x + 3 * i) / 23.0), 0, 255)
        out[i, ..., 1] = np.clip(128 + 100 * np.cos((y - 2 * i) / 17.0), 0, 255)
        out[i, ..., 2] = np.clip(128 + 60 * np.sin((x + y + i) / 31.0), 0, 255)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", default="vbench,overall_consistency", help="dimensions or groups (default: all 8)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--frames", type=int, default=None, help="frames scored (default 8 on CPU, 128 on GPU)")
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: a shared machine)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pair-batch", type=int, default=None, help="AMT/RAFT pairs per call (default 1 CPU, 8 GPU)")
    p.add_argument("--precision", default="vbench", choices=["vbench", "fp32"])
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--vbench-python", default=None,
                   help="also time the official vbench package (python of a VBench environment with its real "
                        "weights) on the same 128-frame video, one dimension at a time, side by side")
    args = p.parse_args(argv)

    import torch

    from eval.base import EvalContext, get_dimension, parse_dims
    from eval.models import MissingExtraError
    from eval.video import Video, load_video
    from freelong.video_io import write_video

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    frames_n = args.frames or (TARGET_FRAMES if dev.type == "cuda" else 8)
    try:
        dims = parse_dims(args.dims)
    except ValueError as err:
        return error_exit(err)
    ctx = EvalContext(device=dev, random_init=True, batch_size=args.batch_size,
                      pair_batch=args.pair_batch or (8 if dev.type == "cuda" else 1), precision=args.precision)

    import tempfile

    full = synthetic_video(TARGET_FRAMES, args.height, args.width)
    official: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.mp4"
        write_video(path, full, fps=8)
        t0 = time.perf_counter()
        decoded = load_video(path)
        decode_s = time.perf_counter() - t0
        if args.vbench_python:
            from eval.official import run_official

            for dim in dims:  # VBench's own wall time per dimension, model loading included
                t0 = time.perf_counter()
                run_official([path], [dim], args.vbench_python, device=args.device)
                official[dim] = time.perf_counter() - t0
    video = Video(Path("bench.mp4"), decoded.frames[:frames_n], 8.0, prompt="a teddy bear walking on the street")
    warm = Video(Path("warm.mp4"), decoded.frames[: min(frames_n, 3)], 8.0, prompt=video.prompt)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rows: list[dict[str, Any]] = []
    for dim in dims:
        cls = get_dimension(dim)
        try:
            cls.check_available()
        except MissingExtraError as err:
            print(f"{dim}: skipped ({err})", file=sys.stderr)
            rows.append({"dimension": dim, "skipped": str(err)})
            continue
        scorer = cls(ctx)
        full_size_networks(dim, scorer)
        params = sum(p.numel() for m in vars(scorer).values() if isinstance(m, torch.nn.Module) for p in m.parameters())
        scorer.score(warm)
        sync()
        t0 = time.perf_counter()
        c0 = time.process_time()
        scorer.score(video if dim != "temporal_flickering" else decoded)
        sync()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        n = TARGET_FRAMES if dim == "temporal_flickering" else frames_n
        per_unit = wall / max(units(dim, n), 1)
        per_video = per_unit * units(dim, TARGET_FRAMES)
        long_video = per_unit * (2 if dim == "overall_consistency" else
                                 8 * units(dim, 16))  # eight 2 s clips; two 10 s clips for overall
        rows.append({"dimension": dim, "parameters": params, "frames_scored": n, "wall_s": wall, "cpu_s": cpu,
                     "s_per_128f_video": per_video, "frames_per_s": TARGET_FRAMES / per_video,
                     "s_per_128f_video_long": long_video, "official_s_per_video": official.get(dim)})
        print(f"{dim}: {n} frames in {wall:.2f}s -> {per_video:.1f}s per 128-frame video", file=sys.stderr,
              flush=True)
        del scorer

    scored = [r for r in rows if "wall_s" in r]
    total = sum(r["s_per_128f_video"] for r in scored)
    table1 = sum(r["s_per_128f_video"] for r in scored if r["dimension"] in
                 ("subject_consistency", "background_consistency", "motion_smoothness", "temporal_flickering",
                  "imaging_quality"))
    print(f"\n{TARGET_FRAMES}-frame {args.height}x{args.width} video, {dev} "
          f"({args.threads} thread(s)), full-size random-weight networks; {frames_n} frames scored, extrapolated\n")
    print("| dimension | params | frames scored | measured s | s / 128-frame video | frames/s | s / video (Long) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "wall_s" not in r:
            print(f"| {r['dimension']} | — | skipped: optional extra missing | | | | |")
            continue
        print(f"| {r['dimension']} | {r['parameters'] / 1e6:.1f} M | {r['frames_scored']} | {r['wall_s']:.2f} | "
              f"{r['s_per_128f_video']:.1f} | {r['frames_per_s']:.2f} | {r['s_per_128f_video_long']:.1f} |")
    print(f"| decode (once) | | {TARGET_FRAMES} | {decode_s:.2f} | {decode_s:.2f} | | |")
    if official:
        print("\n| dimension | ours s / video | vbench s / video (incl. model load) | speed-up |\n|---|---|---|---|")
        for r in scored:
            if r["dimension"] in official:
                o, ours = official[r["dimension"]], r["s_per_128f_video"]
                print(f"| {r['dimension']} | {ours:.1f} | {o:.1f} | {o / ours:.1f}x |")
    print(f"\ntotal {total + decode_s:.1f} s per video; table1 dims {table1 + decode_s:.1f} s")
    if args.json:
        from freelong.metadata import package_versions
        from freelong.video_io import atomic_write_json

        atomic_write_json(Path(args.json), {
            "command": " ".join(["python", "scripts/eval_benchmark.py", *(argv if argv is not None else sys.argv[1:])]),
            "device": str(dev), "threads": args.threads, "height": args.height, "width": args.width,
            "frames_scored": frames_n, "target_frames": TARGET_FRAMES, "decode_s": decode_s,
            "processor": platform.processor() or platform.machine(), "versions": package_versions(),
            "rows": rows, "total_s_per_video": total + decode_s, "table1_s_per_video": table1 + decode_s})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
