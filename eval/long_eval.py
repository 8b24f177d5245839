"""Running the VBench-Long protocol (:mod:`eval.long`): the evaluator, the clip-to-clip networks, the CLI and run.py.

:class:`LongEvaluator` wraps an :class:`~eval.scorer.Evaluator` (same weights, extras, networks),
decodes each video once, splits it into scenes and clips (:mod:`eval.long`) and scores every clip with
the standard dimension; :func:`run_long` is ``python -m eval --protocol long``,
:func:`long_run_scorer` is ``eval.protocol=long`` in ``run.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from freelong.errors import error_exit

from .long import (
    BACKGROUND_EXTRACTORS,
    CLIP2CLIP_DIMS,
    SCENE_EXTRA_HINT,
    SCENE_SPLIT,
    SUBJECT_EXTRACTORS,
    ClipScore,
    LongSettings,
    Unit,
    clip_frames,
    detect_scenes,
    is_static,
    long_data,
    long_json,
    scenedetect_available,
    split_clips,
    top_fraction_mean,
    unit_records,
    video_value,
)

log = logging.getLogger("freelong.eval")

# ----------------------------------------------------------------------------------------------
# Clip-to-clip feature extractors
# ----------------------------------------------------------------------------------------------
def dinov2_transform(x, size: int = 224, resize_to: int = 256):
    """VBench-Long's ``dinov2_transform``: bicubic short side → 256 (antialiased, torchvision's tensor
    default), centre crop 224, /255, ImageNet normalisation; ``x`` float ``(N, 3, H, W)`` 0..255."""
    import torch.nn.functional as F

    from .transforms import DINO_MEAN, DINO_STD, center_crop, normalize, short_side_size

    hw = short_side_size(*x.shape[-2:], resize_to)
    if tuple(x.shape[-2:]) != hw:
        x = F.interpolate(x, size=hw, mode="bicubic", align_corners=False, antialias=True)
    return normalize(center_crop(x, size) / 255.0, DINO_MEAN, DINO_STD)


def dreamsim_transform(x, size: int = 224):
    """VBench-Long's ``dreamsim_transform``: bicubic resize to 224x224 (antialiased), /255."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return x / 255.0


TINY_DINOV2 = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2,
               "patch_size": 14, "image_size": 56}


def load_dinov2(path: Path | None, random_init: bool = False, seed: int = 0):
    """DINOv2 ViT-B/14 (``facebook/dinov2-base``) through transformers; ``pooler_output`` is the
    final-LayerNorm CLS token, which is what the torch-hub model returns."""
    from transformers import Dinov2Config, Dinov2Model

    from .models import _build_seeded

    if random_init:
        cfg = Dinov2Config(**TINY_DINOV2)
        model = _build_seeded(lambda: Dinov2Model(cfg), seed)
    else:
        model = Dinov2Model.from_pretrained(str(path))
    return model.eval().requires_grad_(False)


DREAMSIM_FILES = ("dino_vitb16_pretrain.pth", "open_clip_vitb16_pretrain.pth.tar", "clip_vitb16_pretrain.pth.tar",
                  "ensemble_lora")


def load_dreamsim(cache_dir: Path, device):
    """DreamSim's ensemble (optional extra ``pip install dreamsim``; it imports torchvision) from the folder
    VBench-Long gives it (``~/.cache``, i.e. the VBench cache's parent); a missing file fails before DreamSim
    would download it."""
    from .models import MissingExtraError
    from .weights import EvalWeightsMissing

    missing = [f for f in DREAMSIM_FILES if not (cache_dir / f).exists()]
    if missing:
        fetch = f"from dreamsim import dreamsim; dreamsim(pretrained=True, cache_dir='{cache_dir}')"
        raise EvalWeightsMissing(f"DreamSim's weights are not in {cache_dir} (missing {', '.join(missing)}); "
                                 f"fetch them once with: python -c \"{fetch}\"", missing=["dreamsim"])
    try:
        from dreamsim import dreamsim
    except ImportError as err:
        raise MissingExtraError(f"long.background_extractor=dreamsim needs the dreamsim package ({err}): "
                                f"pip install dreamsim, or use long.background_extractor=clip") from err
    model, _ = dreamsim(pretrained=True, cache_dir=str(cache_dir), device=str(device))
    return model


# ----------------------------------------------------------------------------------------------
# The evaluator
# ----------------------------------------------------------------------------------------------
@dataclass
class LongVideoScores:
    """One video under the protocol: its units (scenes) with per-clip results, or a decoding error."""

    path: Path
    units: list[Unit] = field(default_factory=list)
    error: str | None = None
    num_frames: int | None = None
    fps: float | None = None
    scenes: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


class LongEvaluator:
    """``LongEvaluator(dims, LongSettings(...), device=..., random_init=...)`` → ``.score(path)``.

    Wraps an :class:`~eval.scorer.Evaluator` (same weights, extras and networks) and runs each dimension
    on each clip of each scene of the decoded video.
    """

    def __init__(self, dims: str | Sequence[str], settings: LongSettings | None = None, **evaluator_kwargs: Any):
        from .base import parse_dims
        from .models import MissingExtraError
        from .scorer import Evaluator
        from .weights import resolve_eval_weights

        self.settings = settings or LongSettings()
        dims = parse_dims(dims)
        if self.settings.scene_split == "on" and not scenedetect_available():
            raise MissingExtraError(f"long.scene_split=on needs PySceneDetect: {SCENE_EXTRA_HINT}")
        if self.settings.static_filter and "temporal_flickering" in dims and "dynamic_degree" not in dims:
            evaluator_dims = [*dims, "dynamic_degree"]  # its RAFT does the static filter
        else:
            evaluator_dims = list(dims)
        self.dims = dims
        s = self.settings
        random_init = bool(evaluator_kwargs.get("random_init"))
        kinds = {dim: (s.subject_extractor if dim == "subject_consistency" else s.background_extractor)
                 for dim in CLIP2CLIP_DIMS if dim in dims and s.needs_clip2clip(dim)}
        # what the clip-to-clip term needs is checked before any network is built
        dinov2_path = None
        if kinds.get("subject_consistency") == "dinov2" and not random_init:
            dinov2_path = resolve_eval_weights(["dinov2_vitb14"], evaluator_kwargs.get("weights"),
                                               evaluator_kwargs.get("cache_dir"))["dinov2_vitb14"]
        if kinds.get("background_consistency") == "dreamsim":
            import importlib.util

            if random_init or importlib.util.find_spec("dreamsim") is None:
                why = "has no random-init twin here" if random_init else "needs the extra: pip install dreamsim"
                raise MissingExtraError(f"the DreamSim clip-to-clip term {why}; or use "
                                        f"long.background_extractor=clip (--background-extractor clip)")
        self.evaluator = Evaluator(evaluator_dims, **evaluator_kwargs)
        self.extractors: dict[str, Any] = {}  # dim -> network for the clip-to-clip term
        ctx = self.evaluator.ctx
        for dim, kind in kinds.items():
            if kind in ("dino", "clip"):  # the in-clip network itself (VBench-Long without --dev_flag)
                self.extractors[dim] = self.evaluator.scorers[dim]
            elif kind == "dinov2":
                self.extractors[dim] = load_dinov2(dinov2_path, ctx.random_init, ctx.seed).to(ctx.device)
            else:  # dreamsim
                from .weights import vbench_cache_dir

                cache = vbench_cache_dir(evaluator_kwargs.get("cache_dir")).parent  # VBench-Long: ~/.cache
                self.extractors[dim] = load_dreamsim(cache, ctx.device)

    @property
    def label(self) -> str:
        return self.evaluator.label

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {**self.evaluator.describe(), "dims": list(self.dims), "protocol": "long",
                "long": {"clip_lengths": s.clip_lengths, "clip_seconds": {d: s.seconds(d) for d in self.dims},
                         "scene_split": s.scene_split, "scene_threshold": s.scene_threshold,
                         "scenedetect_installed": scenedetect_available(),
                         "weights": {d: s.weights(d) for d in CLIP2CLIP_DIMS if d in self.dims},
                         "dev": s.dev, "static_filter": s.static_filter,
                         "extractors": {d: (s.subject_extractor if d == "subject_consistency"
                                            else s.background_extractor) for d in self.extractors}}}

    # -- scoring --------------------------------------------------------------------------------
    def score(self, path: str | Path, frames: np.ndarray | None = None, fps: float | None = None,
              prompt: str | None = None) -> LongVideoScores:
        """Decode once (or use ``frames``), split, score every clip; failures are recorded, not raised."""
        from .video import BadVideoError, Video, load_video

        try:
            video = Video(Path(path), frames, fps) if frames is not None else load_video(path)
        except BadVideoError as err:  # unreadable: recorded; out of memory and bugs propagate (eval/scorer.py)
            log.warning("eval: cannot read %s: %s", path, err)
            return LongVideoScores(Path(path), error=f"{type(err).__name__}: {err}")
        if prompt is not None:
            video = replace(video, prompt=prompt)
        return self.score_video(video)

    def score_video(self, video) -> LongVideoScores:
        from .video import BadVideoError, Video

        out = LongVideoScores(video.path, num_frames=video.num_frames, fps=video.fps)
        try:
            scenes, out.scenes = detect_scenes(video.frames, video.fps, self.settings.scene_split,
                                               self.settings.scene_threshold)
        except Exception as err:
            out.error = f"scene detection: {type(err).__name__}: {err}"
            return out
        one = len(scenes) == 1
        clip_fps = float(int(video.fps)) if video.fps else None  # VBench-Long writes clips at int(fps)
        for i, (s, e) in enumerate(scenes):
            unit = Unit(video.path, -1 if one else i, s, e)
            for dim in self.dims:
                t0 = time.perf_counter()
                scorer = self.evaluator.scorers[dim]
                length = clip_frames(video.fps, self.settings.seconds(dim))
                for cs, ce in split_clips(s, e, length):
                    clip = ClipScore(cs, ce)
                    part = Video(video.path, video.frames[cs:ce], clip_fps, prompt=video.prompt)
                    try:
                        r = scorer.score(part)
                        clip.value, clip.extra = r.value, dict(r.extra)
                        if dim == "temporal_flickering" and self.settings.static_filter:
                            clip.static = self._static(part)
                    except BadVideoError as err:  # a clip this dimension cannot take
                        log.warning("eval: %s failed on %s frames %d-%d: %s", dim, video.path, cs, ce, err)
                        clip.error = f"{type(err).__name__}: {err}"
                    unit.clips.setdefault(dim, []).append(clip)
                if dim in self.extractors and len(unit.clips[dim]) >= 2:
                    try:
                        unit.clip2clip[dim] = self._clip2clip(dim, video.frames[[c.start for c in unit.clips[dim]]])
                    except Exception as err:
                        log.warning("eval: clip-to-clip %s failed on %s: %s", dim, video.path, err)
                out.seconds[dim] = out.seconds.get(dim, 0.0) + time.perf_counter() - t0
            out.units.append(unit)
        return out

    def _clip2clip(self, dim: str, first_frames: np.ndarray) -> float:
        """The pair score of the clips' first frames (VBench-Long's "first-frames video")."""
        import torch

        from .base import Dimension
        from .consistency import pair_terms
        from .transforms import to_tensor
        from .video import Video

        model = self.extractors[dim]
        with torch.no_grad():
            if isinstance(model, Dimension):  # DINO / CLIP: exactly the in-clip features
                feats = model.features(Video(Path("clip2clip"), first_frames))
            elif dim == "subject_consistency":  # DINOv2
                x = to_tensor(first_frames, self.evaluator.ctx.device)
                feats = model(pixel_values=dinov2_transform(x)).pooler_output
            else:  # DreamSim
                feats = model.embed(dreamsim_transform(to_tensor(first_frames, self.evaluator.ctx.device)))
        terms = pair_terms(feats.float())
        return sum(terms) / len(terms)

    def _static(self, clip) -> bool:
        raft = self.evaluator.scorers["dynamic_degree"]
        frames = clip.frames
        h, w = frames.shape[1:3]
        idx_a = [*range(frames.shape[0] - 1), 0, frames.shape[0] - 1]
        idx_b = [*range(1, frames.shape[0]), frames.shape[0] - 1, 0]
        scores = static_pair_scores(frames, idx_a, idx_b, raft.flow, self.evaluator.ctx.device,
                                    self.evaluator.ctx.pair_batch)
        return is_static(scores, h, w, frames.shape[0])


def static_pair_scores(frames: np.ndarray, idx_a: Sequence[int], idx_b: Sequence[int], flow_fn, device,
                       pair_batch: int = 1) -> list[float]:
    """Top-2 % flow magnitude of each pair ``(frames[a], frames[b])``, padded to a multiple of 8 as RAFT needs."""
    import torch
    import torch.nn.functional as F

    from .motion_smoothness import pad_amounts

    pads = pad_amounts(frames.shape[1], frames.shape[2], 8)
    imgs = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float()
    imgs = F.pad(imgs, pads, mode="replicate")
    out: list[float] = []
    for i in range(0, len(idx_a), pair_batch):
        a, b = list(idx_a[i : i + pair_batch]), list(idx_b[i : i + pair_batch])
        with torch.no_grad():
            flow = flow_fn(imgs[a], imgs[b]).float().cpu().numpy()
        out.extend(top_fraction_mean(f, 0.02) for f in flow)
    return out


def clip_rows(scores: Sequence[LongVideoScores], dims: Sequence[str], label: str) -> list[dict[str, Any]]:
    """The long CSV: one row per (video, scene, dimension, clip); a video that failed has one error row."""
    rows: list[dict[str, Any]] = []
    for s in scores:
        base = {"video_path": str(s.path), "num_frames": s.num_frames, "fps": s.fps}
        if s.error:
            rows.append({**base, "scene": None, "dimension": None, "clip": None, "start_frame": None,
                         "end_frame": None, "value": None, "static": None, "error": s.error, "label": label})
            continue
        for u in s.units:
            for dim in dims:
                for k, c in enumerate(u.clips.get(dim, [])):
                    value = float(c.value) if c.value is not None else None
                    rows.append({**base, "scene": u.scene, "dimension": dim, "clip": k, "start_frame": c.start,
                                 "end_frame": c.end, "value": value, "static": c.static, "error": c.error or "",
                                 "label": label})
    return rows


def run_long(dims: Sequence[str], videos: Sequence[Path], settings: LongSettings,
             prompts: Mapping[Path, str] | None = None, progress: bool = True,
             **evaluator_kwargs: Any) -> tuple[dict[str, list], list[dict[str, Any]], dict[str, Any]]:
    """Score files under the protocol: ``(VBench-Long JSON, clip CSV rows, meta)`` (``--protocol long``)."""
    from tqdm.auto import tqdm

    from freelong.metadata import package_versions

    ev = LongEvaluator(dims, settings, **evaluator_kwargs)
    prompts = prompts or {}
    scores = [ev.score(p, prompt=prompts.get(Path(p))) for p in tqdm(list(videos), desc="eval (long)", unit="video",
                                                                      disable=not progress)]
    units = [u for s in scores for u in s.units]
    results = long_json(ev.dims, units, settings)
    rows = clip_rows(scores, ev.dims, ev.label)
    meta = {**ev.describe(), "backend": "native", "versions": package_versions(),
            "seconds_per_dim": {d: sum(s.seconds.get(d, 0.0) for s in scores) for d in ev.dims},
            "scenes": {str(s.path): [[u.start, u.end] for u in s.units] for s in scores if not s.error},
            "scene_detection": sorted({s.scenes for s in scores if s.scenes})}
    return results, rows, meta


def add_long_arguments(parser) -> None:
    """The ``--protocol long`` options of ``python -m eval``."""
    g = parser.add_argument_group("VBench-Long protocol (--protocol long)")
    g.add_argument("--clip-lengths", default="mix", choices=sorted(long_data()["clip_lengths"]),
                   help="clip-length preset: mix (2 s quality dims, 10 s overall_consistency; default) or short (2 s)")
    g.add_argument("--clip-seconds", action="append", default=[], metavar="DIM=SECONDS",
                   help="override one dimension's clip length (repeatable)")
    g.add_argument("--scene-split", default="auto", choices=SCENE_SPLIT,
                   help="auto: PySceneDetect if installed, else one scene (default); on: require it; off: one scene")
    g.add_argument("--scene-threshold", type=float, default=35.0, help="ContentDetector threshold (default 35)")
    g.add_argument("--w-inclip", type=float, default=1.0, help="in-clip weight (default 1.0)")
    g.add_argument("--w-clip2clip", type=float, default=0.0, help="clip-to-clip weight (default 0.0)")
    g.add_argument("--long-dev", action="store_true",
                   help="VBench-Long's --dev_flag: weights 0.5/0.5 from its slow_fast_params")
    g.add_argument("--subject-extractor", default="dinov2", choices=SUBJECT_EXTRACTORS,
                   help="clip-to-clip features for subject_consistency (default dinov2)")
    g.add_argument("--background-extractor", default="dreamsim", choices=BACKGROUND_EXTRACTORS,
                   help="clip-to-clip features for background_consistency (default dreamsim, optional extra)")
    g.add_argument("--static-filter", action="store_true",
                   help="temporal_flickering on static clips only (RAFT; needs the vbench extra and raft_things)")


def run_long_cli(args, dims: Sequence[str], videos: Sequence[Path], prompts: Mapping[Path, str],
                 weights: Mapping[str, str]) -> tuple[int, dict, list, dict]:
    """``python -m eval --protocol long``: ``(exit code, results, rows, meta)``; a bad setting is one error line."""
    import sys

    from .models import MissingExtraError
    from .weights import EvalWeightsMissing, WeightChecksumError

    if args.backend != "native":
        print("error: --protocol long runs with --backend native only", file=sys.stderr)
        return 2, {}, [], {}
    try:
        settings = settings_from_args(args)
        results, rows, meta = run_long(dims, videos, settings, prompts, progress=not args.no_progress,
                                       device=args.device, random_init=args.random_init, weights=dict(weights),
                                       cache_dir=args.cache_dir, batch_size=args.batch_size,
                                       precision=args.precision, imaging_mode=args.imaging_mode)
    except (EvalWeightsMissing, MissingExtraError, WeightChecksumError, ValueError) as err:
        return error_exit(err), {}, [], {}
    if args.random_init:
        log.warning("RANDOM-INIT evaluation networks: the scores below are meaningless (smoke test)")
    return 0, results, rows, meta


def settings_from_args(args) -> LongSettings:
    from .base import ALIASES

    seconds = {}
    for item in args.clip_seconds:
        dim, sep, sec = item.partition("=")
        try:
            seconds[ALIASES.get(dim.strip(), dim.strip())] = float(sec)
        except ValueError:
            raise ValueError(f"--clip-seconds expects DIM=SECONDS, got {item!r}") from None
        if not sep:
            raise ValueError(f"--clip-seconds expects DIM=SECONDS, got {item!r}")
    return LongSettings(clip_lengths=args.clip_lengths, clip_seconds=seconds, scene_split=args.scene_split,
                        scene_threshold=args.scene_threshold, w_inclip=args.w_inclip, w_clip2clip=args.w_clip2clip,
                        dev=args.long_dev, subject_extractor=args.subject_extractor,
                        background_extractor=args.background_extractor, static_filter=args.static_filter)


def long_run_scorer(dims: Sequence[str], settings: LongSettings, *, source: str = "file", random_init: bool = False,
                    **evaluator_kwargs: Any):
    """``eval.protocol=long`` in run.py (built by :mod:`freelong.app.eval_hook`): the per-video scorer storing
    VBench-Long values and unit records. Raises like :class:`LongEvaluator` (before any video is scored)."""
    ev = LongEvaluator(dims, settings, random_init=random_init, **evaluator_kwargs)
    described = ev.describe()
    weight_ids = {name: info.get("sha256") for name, info in described["weights"].items()}

    def evaluate(video_path: Path, frames: np.ndarray, prompt: str | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        s = ev.score(video_path, frames=frames if source == "frames" else None, prompt=prompt)
        scores: dict[str, Any] = {}
        units: dict[str, list] = {}
        errors: dict[str, str] = {"video": s.error} if s.error else {}
        for dim in ev.dims:
            units[dim] = unit_records(dim, s.units, settings)
            value = video_value(dim, units[dim])
            if value is not None:
                scores[dim] = value
            elif not s.error:
                errs = [c.error for u in s.units for c in u.clips.get(dim, []) if c.error]
                errors[dim] = errs[0] if errs else "no clip scored"
        scores["meta"] = {"label": ev.label, "random_init": random_init, "backend": "native", "protocol": "long",
                          "source": source, "frames": s.num_frames, "device": str(ev.evaluator.ctx.device),
                          "precision": ev.evaluator.ctx.precision, "imaging_mode": ev.evaluator.ctx.imaging_mode,
                          "weights": weight_ids, "long": {**described["long"], "units": units,
                                                           "scenes": [[u.start, u.end] for u in s.units]},
                          "errors": errors, "seconds": time.perf_counter() - t0}
        return scores

    return evaluate

