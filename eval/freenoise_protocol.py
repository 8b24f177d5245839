"""FreeNoise's evaluation protocol (``python -m eval --protocol freenoise --reference REF GEN...``).

FreeNoise (ICLR 2024, Table 1) scores long videos against a reference set of *direct 16-frame samples* of the
same base model: every generated video is cut into consecutive 16-frame segments (a 64-frame video gives
four; a remainder shorter than 16 frames is dropped), each segment and each reference video gives one I3D
feature (:mod:`eval.i3d`), and the two feature sets give FVD and KVD (:mod:`eval.fvd`). CLIP-SIM
(:mod:`eval.clip_sim`) is the mean over videos of the adjacent-frame CLIP similarity of the whole video.

The reference is a folder of videos (its features are cached next to them, ``freenoise_reference.<extractor>.npz``,
and reused while the same files and network are used) or such a statistics file itself. FVD needs many videos:
a set with fewer segments than the feature dimension + 1 (401 for I3D) is refused with one error line.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from freelong.errors import error_exit

from .fvd import FeatureStats, TooFewVideosError, check_enough, fvd_kvd, load_stats, min_samples, save_stats

log = logging.getLogger("freelong.eval")

SEGMENT_FRAMES = 16
CACHE_NAME = "freenoise_reference.{extractor}.npz"


def cut_segments(frames: np.ndarray, length: int = SEGMENT_FRAMES) -> np.ndarray:
    """Consecutive non-overlapping ``length``-frame segments ``(S, length, H, W, 3)``; the remainder is dropped."""
    n = len(frames) // length
    if n == 0:
        raise ValueError(f"a video of {len(frames)} frames has no {length}-frame segment")
    return np.asarray(frames[: n * length]).reshape(n, length, *frames.shape[1:])


@dataclass
class VideoResult:
    path: Path
    features: np.ndarray | None = None  # (segments, D)
    clip_sim: float | None = None
    num_frames: int | None = None
    error: str | None = None
    seconds: float = 0.0


class FreeNoiseEvaluator:
    """The I3D and CLIP networks of the protocol, built once; weights resolved before anything is scored."""

    def __init__(self, device: str | None = None, random_init: bool = False, weights: Mapping[str, str] | None = None,
                 cache_dir: str | None = None, batch_size: int = 8, seed: int = 0, clip_sim: bool = True,
                 segment_frames: int = SEGMENT_FRAMES):
        import torch

        from .clip_sim import ClipSim
        from .i3d import load_i3d

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.random_init, self.batch_size, self.segment_frames = random_init, batch_size, segment_frames
        names = ["i3d_400"] + (["clip_vit_b32"] if clip_sim else [])
        paths: dict[str, Path | None] = {n: None for n in names}
        self.digests: dict[str, Any] = {n: "random-init" for n in names}
        if not random_init:
            from freelong.weights import identity

            from .weights import resolve_eval_weights

            paths = resolve_eval_weights(names, weights, cache_dir)
            ids = {n: identity(p) for n, p in paths.items()}  # hashes each file once
            self.digests = {n: i.get("sha256") or i.get("files") for n, i in ids.items()}
        self.paths = paths
        self.i3d = load_i3d(paths["i3d_400"], random_init, seed).to(self.device)
        self.clip = ClipSim(paths["clip_vit_b32"], random_init, seed, self.device) if clip_sim else None
        tag = "random" if random_init else str(self.digests["i3d_400"])[:12]
        self.extractor = f"i3d{self.i3d.num_classes}-{tag}"

    @property
    def label(self) -> str:
        return "random-init" if self.random_init else "real"

    def segment_features(self, frames: np.ndarray) -> np.ndarray:
        from .i3d import i3d_features

        return i3d_features(self.i3d, cut_segments(frames, self.segment_frames), self.batch_size, self.device)

    def score(self, path: str | Path, frames: np.ndarray | None = None, with_clip: bool = True) -> VideoResult:
        from .video import BadVideoError, load_video

        t0 = time.perf_counter()
        out = VideoResult(Path(path))
        try:
            frames = load_video(path).frames if frames is None else frames
            out.num_frames = len(frames)
            out.features = self.segment_features(frames)
            if with_clip and self.clip is not None:
                out.clip_sim = self.clip.score(frames)
        except (BadVideoError, ValueError) as err:
            log.warning("eval: %s: %s", path, err)
            out.error = f"{type(err).__name__}: {err}"
        out.seconds = time.perf_counter() - t0
        return out

    def describe(self) -> dict[str, Any]:
        return {"protocol": "freenoise", "extractor": self.extractor, "segment_frames": self.segment_frames,
                "device": str(self.device), "label": self.label, "random_init": self.random_init,
                "weights": {n: {"path": str(p) if p else None, "sha256": self.digests[n]}
                            for n, p in self.paths.items()}}


def _fingerprint(videos: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for v in videos:
        st = v.stat()
        h.update(f"{v.name}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


def reference_stats(reference: str | Path, ev: FreeNoiseEvaluator, progress: bool = True,
                    cache: bool = True) -> FeatureStats:
    """The reference features: a statistics ``.npz`` as is, or a folder of videos (cached beside them)."""
    from tqdm.auto import tqdm

    from .video import find_videos

    ref = Path(reference)
    if ref.is_file() and ref.suffix == ".npz":
        stats = load_stats(ref)
        if stats.extractor != ev.extractor:
            raise ValueError(f"--reference {ref} holds {stats.extractor} features, this evaluation uses "
                             f"{ev.extractor}: rebuild it from the reference videos")
        return stats
    if not ref.is_dir():
        raise ValueError(f"--reference {ref}: not a folder of videos or a statistics .npz file")
    videos = find_videos([ref])
    if not videos:
        raise ValueError(f"--reference {ref}: no .mp4/.gif videos found")
    fingerprint = _fingerprint(videos)
    cached = ref / CACHE_NAME.format(extractor=ev.extractor)
    if cache and cached.is_file():
        stats = load_stats(cached)
        if stats.info.get("fingerprint") == fingerprint and stats.extractor == ev.extractor:
            log.info("eval: reference statistics from %s (%d segments)", cached, stats.num)
            return stats
    feats, used, bad = [], 0, []
    for v in tqdm(videos, desc="reference (I3D)", unit="video", disable=not progress):
        r = ev.score(v, with_clip=False)
        if r.error:
            bad.append(f"{v}: {r.error}")
            continue
        feats.append(r.features)
        used += 1
    if not feats:
        raise ValueError(f"--reference {ref}: no video could be read ({bad[0] if bad else ''})")
    stats = FeatureStats(np.concatenate(feats), extractor=ev.extractor,
                         info={"videos": used, "unreadable": len(bad), "fingerprint": fingerprint,
                               "source": str(ref), "segment_frames": ev.segment_frames})
    if cache:
        save_stats(cached, stats)
        log.info("eval: reference statistics cached in %s", cached)
    return stats


def load_reference(reference: str | Path, random_init: bool = False, progress: bool = True) -> FeatureStats:
    """The reference statistics of a table (make_tables, the report): a statistics ``.npz`` as it is, or a folder of
    videos scored (and cached) with the real or the random-init I3D. Any problem is a ``ValueError`` of one line."""
    from .models import MissingExtraError

    ref = Path(reference)
    try:
        if ref.suffix == ".npz":
            if not ref.is_file():
                raise ValueError(f"--reference {ref}: no such statistics file")
            return load_stats(ref)
        return reference_stats(ref, FreeNoiseEvaluator(random_init=random_init, clip_sim=False), progress)
    except (FileNotFoundError, MissingExtraError) as err:  # the I3D weights (or an extra) are not installed
        raise ValueError(str(err).strip().splitlines()[0]) from err


def table_title(reference: FeatureStats | None, random_init: bool = False) -> str:
    """The FreeNoise table's title: what FVD/KVD were measured against (or that they need a reference)."""
    what = (f"FVD/KVD vs {reference.num} reference segments ({reference.extractor}), CLIP-SIM" if reference is not None
            else "CLIP-SIM (FVD/KVD need --reference)")
    title = f"FreeNoise Table 1 — {what}"
    return f"RANDOM-INIT {title} (smoke test: scores are meaningless)" if random_init else title


def set_scores(reference: FeatureStats, results: Sequence[VideoResult], extractor: str,
               min_segments: int | None = None) -> dict[str, Any]:
    """FVD/KVD/CLIP-SIM of the scored videos against the reference, with the counts; refuses too small sets."""
    good = [r for r in results if not r.error and r.features is not None]
    if not good:
        raise TooFewVideosError("no generated video could be scored")
    gen = FeatureStats(np.concatenate([r.features for r in good]), extractor=extractor)
    dist = fvd_kvd(reference, gen, min_segments)
    sims = [r.clip_sim for r in good if r.clip_sim is not None]
    return {**dist, "clip_sim": float(np.mean(sims)) if sims else None, "num_videos": len(good),
            "num_segments": gen.num, "reference_videos": reference.info.get("videos"),
            "reference_segments": reference.num}


def run_freenoise(reference: str | Path, videos: Sequence[Path], ev: FreeNoiseEvaluator, progress: bool = True,
                  min_segments: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """``(results, per-video rows, meta)``; raises :class:`~eval.fvd.TooFewVideosError` / ``ValueError``."""
    from tqdm.auto import tqdm

    ref = reference_stats(reference, ev, progress)
    check_enough(ref, f"the reference set ({reference})", min_segments)
    results = [ev.score(v) for v in tqdm(list(videos), desc="eval (freenoise)", unit="video", disable=not progress)]
    scores = set_scores(ref, results, ev.extractor, min_segments)
    rows = [{"video_path": str(r.path), "num_frames": r.num_frames,
             "segments": None if r.features is None else len(r.features), "clip_sim": r.clip_sim,
             "error": r.error or "", "label": ev.label} for r in results]
    meta = {**ev.describe(), "reference": {"path": str(reference), "segments": ref.num, **ref.info},
            "min_segments": min_segments if min_segments is not None else min_samples(ref.dim),
            "seconds": sum(r.seconds for r in results)}
    return scores, rows, meta


def add_freenoise_arguments(parser) -> None:
    g = parser.add_argument_group("FreeNoise protocol (--protocol freenoise)")
    g.add_argument("--reference", default=None,
                   help="folder of direct 16-frame reference videos (experiment=freenoise_reference), or the "
                        "statistics .npz cached from one")
    g.add_argument("--min-segments", type=int, default=None,
                   help="smallest set FVD is computed for (default: feature dimension + 1 = 401 for I3D)")
    g.add_argument("--no-clip-sim", action="store_true", help="FVD/KVD only")


def run_freenoise_cli(args, videos: Sequence[Path], weights: Mapping[str, str]) -> tuple[int, dict, list, dict]:
    """``python -m eval --protocol freenoise``: ``(exit code, results, rows, meta)``; problems are one error line."""
    import sys

    from .models import MissingExtraError
    from .weights import EvalWeightsMissing, WeightChecksumError

    if not args.reference:
        print("error: --protocol freenoise needs --reference REF_DIR_OR_STATS (direct 16-frame samples: "
              "python run.py experiment=freenoise_reference)", file=sys.stderr)
        return 2, {}, [], {}
    try:
        ev = FreeNoiseEvaluator(device=args.device, random_init=args.random_init, weights=dict(weights),
                                cache_dir=args.cache_dir, batch_size=min(args.batch_size, 8),
                                clip_sim=not args.no_clip_sim)
        results, rows, meta = run_freenoise(args.reference, videos, ev, progress=not args.no_progress,
                                            min_segments=args.min_segments)
    except (EvalWeightsMissing, MissingExtraError, WeightChecksumError, ValueError) as err:
        return error_exit(err), {}, [], {}
    if args.random_init:
        log.warning("RANDOM-INIT evaluation networks: the scores below are meaningless (smoke test)")
    return 0, results, rows, meta


# ----------------------------------------------------------------------------------------------
# Per-video features kept beside a run's videos (score later, tabulate later)
# ----------------------------------------------------------------------------------------------
FEATURES_SUFFIX = ".freenoise.npz"


def save_video_features(path: Path, features: np.ndarray) -> Path:
    """One video's segment features ``(S, D)`` float32, written atomically."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    with open(tmp, "wb") as f:
        np.savez(f, features=np.asarray(features, np.float32))
    os.replace(tmp, path)
    return path


def load_video_features(path: Path) -> np.ndarray:
    with np.load(path) as z:
        return z["features"]


def record_scores(ev: FreeNoiseEvaluator, result: VideoResult, features_file: str | None) -> dict[str, Any]:
    """What a video's record holds under this protocol: CLIP-SIM and where its segment features are."""
    scores: dict[str, Any] = {}
    if result.clip_sim is not None:
        scores["clip_sim"] = result.clip_sim
    scores["meta"] = {"protocol": "freenoise", "label": ev.label, "random_init": ev.random_init,
                      "backend": "native", "extractor": ev.extractor, "features": features_file,
                      "segments": None if result.features is None else int(len(result.features)),
                      "segment_frames": ev.segment_frames, "frames": result.num_frames,
                      "weights": {n: (d if isinstance(d, str) or d is None else None) for n, d in ev.digests.items()},
                      "errors": {"video": result.error} if result.error else {}, "seconds": result.seconds}
    return scores


# ----------------------------------------------------------------------------------------------
# The table (scripts/make_tables.py --protocol freenoise)
# ----------------------------------------------------------------------------------------------
# FreeNoise Table 1 (VideoCrafter v1, 64 frames, 256x256, A100): FVD, KVD, CLIP-SIM, seconds per video.
PAPER_TABLE1 = {
    "direct": (737.61, 359.11, 0.9104, 21.97),
    "sliding_window": (224.55, 44.09, 0.9438, 36.76),
    "gen_l_video": (177.63, 21.06, 0.9370, 77.89),
    "freenoise": (85.83, 7.06, 0.9732, 25.75),
}
PAPER_NOTE = ("paper: FreeNoise Table 1 (ICLR 2024), VideoCrafter (v1) 256x256, 64 frames, A100; "
              "FreeNoise +17 % time vs direct, Gen-L-Video +255 %")
METHOD_ORDER = ("direct", "sliding_window", "gen_l_video", "freenoise", "freelong", "freelong_vc2", "freelong_pp")


def freenoise_table(records: Sequence[Mapping[str, Any]], reference: FeatureStats | None,
                    min_segments: int | None = None, compare: bool = True):
    """One row per (model, method variant, frames, size): FVD, KVD, CLIP-SIM, videos, segments, seconds per video
    and its ratio to direct (same model, frames and size), beside the paper's values. ``records`` carry ``run_dir``
    (``freelong.app.records.read_results``). Variants of one method (a swept parameter) are rows of their own,
    labelled by what differs (``freelong (window=8)``); without a ``reference`` FVD and KVD stay empty."""
    import json

    import pandas as pd

    from .tables import _variant_labels

    rows: dict[tuple, dict[str, Any]] = {}
    expected = None if reference is None else reference.extractor
    for rec in records:
        meta = ((rec.get("scores") or {}).get("meta")) or {}
        if meta.get("protocol") != "freenoise" or not meta.get("features"):
            continue
        expected = expected or meta.get("extractor")
        if meta.get("extractor") != expected:
            holder = "the reference holds" if reference is not None else "other videos here hold"
            raise ValueError(f"{rec.get('run_dir')}: features from {meta.get('extractor')}, {holder} {expected}")
        key = (str(rec.get("model", "?")), str(rec.get("method", "?")),
               json.dumps(rec.get("method_params") or {}, sort_keys=True, default=str), rec.get("num_frames"),
               f"{rec.get('height')}x{rec.get('width')}")
        row = rows.setdefault(key, {"features": [], "clip": [], "time": []})
        row["features"].append(load_video_features(Path(rec["run_dir"]) / "videos" / meta["features"]))
        if isinstance((rec.get("scores") or {}).get("clip_sim"), (int, float)):
            row["clip"].append(float(rec["scores"]["clip_sim"]))
        if isinstance(rec.get("wall_time_s"), (int, float)):
            row["time"].append(float(rec["wall_time_s"]))
    labels = _variant_labels(sorted({(k[1], k[2]) for k in rows}))
    out = []
    for (model, method, params, frames, size), row in rows.items():
        gen = FeatureStats(np.concatenate(row["features"]), extractor=expected or "")
        dist = {"fvd": np.nan, "kvd": np.nan}
        if reference is not None:
            try:
                dist = fvd_kvd(reference, gen, min_segments)
            except TooFewVideosError as err:
                log.warning("%s: %s", labels[(method, params)], err)
        out.append({"method": labels[(method, params)], "_method": method, "model": model, "frames": frames,
                    "size": size, "videos": len(row["features"]), "segments": gen.num, "FVD": dist["fvd"],
                    "KVD": dist["kvd"], "CLIP-SIM": float(np.mean(row["clip"])) if row["clip"] else np.nan,
                    "Time (s/video)": float(np.mean(row["time"])) if row["time"] else np.nan})
    if compare:  # the paper's rows we did not run (e.g. Gen-L-Video) still show its numbers
        ran = {row["_method"] for row in out}
        out += [{"method": m, "_method": m, "model": "", "frames": 64, "size": "256x256", "videos": 0, "segments": 0,
                 "FVD": np.nan, "KVD": np.nan, "CLIP-SIM": np.nan, "Time (s/video)": np.nan}
                for m in PAPER_TABLE1 if m not in ran]
    table = pd.DataFrame(out)
    if table.empty:
        return table
    table["_order"] = table["_method"].map(lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER))
    table["_paper_only"] = table["videos"] == 0  # ours first, then the paper's rows we did not run
    table = table.sort_values(["_paper_only", "model", "frames", "size", "_order"], kind="stable")
    table = table.reset_index(drop=True)
    setting = list(zip(table["model"], table["frames"], table["size"]))
    direct = dict(zip((s for s, m in zip(setting, table["_method"]) if m == "direct"),
                      table.loc[table["_method"] == "direct", "Time (s/video)"]))
    table["Time vs direct"] = [t / direct[s] - 1.0 if s in direct else np.nan
                               for s, t in zip(setting, table["Time (s/video)"])]
    if compare:
        for i, col in enumerate(("FVD", "KVD", "CLIP-SIM", "Time (s/video)")):
            table[f"paper {col}"] = table["_method"].map(lambda m, i=i: PAPER_TABLE1.get(m, (np.nan,) * 4)[i])
        table["paper Time vs direct"] = table["paper Time (s/video)"] / PAPER_TABLE1["direct"][3] - 1.0
    return table.drop(columns=["_order", "_method", "_paper_only"])
