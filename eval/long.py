"""The VBench-Long protocol (VBench++ ``vbench2_beta_long``) for videos of 5 s or more.

VBench's FAQ sends long videos to VBench-Long, which does not score a 16 s video as one clip:

1. **Scenes.** With semantic splitting on, PySceneDetect's ``ContentDetector(threshold=35)`` cuts the
   video into scenes; without cuts (or without the optional ``scenedetect`` package, see
   :func:`detect_scenes`) the whole video is one scene.
2. **Clips.** Each scene is cut into clips of ``int(fps) * seconds`` frames, ``seconds`` per dimension
   from ``clip_lengths`` (``eval/data/vbench_long.yaml``: 2 s for the quality dimensions, 10 s for
   overall_consistency). A scene shorter than one clip is one clip; a shorter remainder becomes a last
   clip of full length that borrows frames from the clip before it (it ends at the scene's last frame).
3. **In-clip scores.** The standard dimension scores every clip. Here the video is decoded once and the
   clips are slices of the decoded frames (VBench-Long re-encodes every clip to mp4 first, which adds
   H.264 compression error; that is the one intended difference).
4. **Aggregation** per *unit* (a scene, or the video when it has one scene): the mean of its clips'
   values; the overall value is the mean over units (imaging_quality then divided by 100). Exception as
   in VBench-Long: subject_consistency's overall stays VBench's pair-weighted value over all clips when
   no unit has two clips (no clip-to-clip term exists then).
5. **Clip-to-clip ("slow-fast") term**, subject/background consistency only: the first frames of a
   unit's clips form a short video scored with the same pair formula (DINO/DINOv2 features for subject,
   CLIP/DreamSim for background); that score is mapped onto the in-clip scale with VBench-Long's
   quantile table (linear interpolation between its 0.01-spaced keys), and
   ``fused = w_inclip * inclip + w_clip2clip * mapped`` unless ``mapped == 0`` (then ``fused = inclip``).
   VBench-Long's defaults are 1.0/0.0 (and 0.5/0.5 with its ``--dev_flag``, our ``dev=True``).
6. **temporal_flickering** optionally keeps only static clips (VBench-Long's ``--static_filter_flag``:
   RAFT, top-2 % flow, see :func:`is_static`).

The JSON has VBench-Long's layout: ``{dim: [overall, clip_entries, unit_entries]}`` for the
``reorganize_clips_results`` dimensions and ``{dim: [overall, unit_entries]}`` (fused entries) for
subject and background consistency.
"""

from __future__ import annotations

import bisect
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("freelong.eval")

PROTOCOLS = ("standard", "long")
DATA_FILE = Path(__file__).with_name("data") / "vbench_long.yaml"
CLIP2CLIP_DIMS = ("subject_consistency", "background_consistency")
SUBJECT_EXTRACTORS = ("dino", "dinov2")
BACKGROUND_EXTRACTORS = ("clip", "dreamsim")
SCENE_SPLIT = ("auto", "on", "off")
SCENE_EXTRA_HINT = "pip install scenedetect opencv-python-headless"


@functools.lru_cache(maxsize=1)
def long_data() -> dict[str, Any]:
    """VBench-Long's clip-length presets, dev weights and clip-to-clip mapping tables (package data)."""
    import yaml

    return yaml.safe_load(DATA_FILE.read_text())


@dataclass(frozen=True)
class LongSettings:
    """How to run the protocol; defaults are VBench-Long's (``eval_long.py`` without ``--dev_flag``).

    ``clip_lengths``: a preset name (``mix``, ``short``) and/or per-dimension seconds overriding it.
    ``scene_split``: ``auto`` (split if PySceneDetect is installed, else one scene), ``on`` (require it),
    ``off`` (one scene; VBench-Long without ``--use_semantic_splitting``).
    ``w_inclip``/``w_clip2clip``: fusion weights (``dev=True`` takes VBench-Long's dev values, 0.5/0.5).
    """

    clip_lengths: str = "mix"
    clip_seconds: Mapping[str, float] = field(default_factory=dict)
    scene_split: str = "auto"
    scene_threshold: float = 35.0
    w_inclip: float = 1.0
    w_clip2clip: float = 0.0
    dev: bool = False
    subject_extractor: str = "dinov2"
    background_extractor: str = "dreamsim"
    static_filter: bool = False

    def __post_init__(self) -> None:
        presets = long_data()["clip_lengths"]
        if self.clip_lengths not in presets:
            raise ValueError(f"long.clip_lengths must be one of {sorted(presets)}, got {self.clip_lengths!r}")
        for dim, sec in self.clip_seconds.items():
            if dim not in presets["mix"]:
                raise ValueError(f"long.clip_seconds: unknown dimension {dim!r}")
            if not isinstance(sec, (int, float)) or sec < 1:
                raise ValueError(f"long.clip_seconds.{dim} must be a number of seconds >= 1, got {sec!r}")
        if self.scene_split not in SCENE_SPLIT:
            raise ValueError(f"long.scene_split must be one of {SCENE_SPLIT}, got {self.scene_split!r}")
        if self.subject_extractor not in SUBJECT_EXTRACTORS:
            raise ValueError(f"long.subject_extractor must be one of {SUBJECT_EXTRACTORS}, "
                             f"got {self.subject_extractor!r}")
        if self.background_extractor not in BACKGROUND_EXTRACTORS:
            raise ValueError(f"long.background_extractor must be one of {BACKGROUND_EXTRACTORS}, "
                             f"got {self.background_extractor!r}")
        if self.scene_threshold <= 0:
            raise ValueError(f"long.scene_threshold must be > 0, got {self.scene_threshold}")

    def seconds(self, dim: str) -> float:
        return float(self.clip_seconds.get(dim, long_data()["clip_lengths"][self.clip_lengths][dim]))

    def weights(self, dim: str) -> tuple[float, float]:
        """``(w_inclip, w_clip2clip)`` for a consistency dimension (VBench-Long's dev values with ``dev``)."""
        if self.dev:
            w = long_data()["dev_weights"][dim]
            return float(w["w_inclip"]), float(w["w_clip2clip"])
        return float(self.w_inclip), float(self.w_clip2clip)

    def needs_clip2clip(self, dim: str) -> bool:
        """Whether the term can change the fused value (it cannot when the weights are exactly 1 and 0)."""
        return dim in CLIP2CLIP_DIMS and self.weights(dim) != (1.0, 0.0)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> LongSettings:
        """From ``eval.long`` (a dict); unknown keys fail naming the key."""
        cfg = dict(cfg or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown eval.long key(s) {unknown}; known: {', '.join(sorted(known))}")
        cfg["clip_seconds"] = dict(cfg.get("clip_seconds") or {})
        return cls(**cfg)


# ----------------------------------------------------------------------------------------------
# Scenes and clips
# ----------------------------------------------------------------------------------------------
def clip_frames(fps: float | None, seconds: float) -> int:
    """Frames per clip as VBench-Long counts them: ``int(fps) * int(seconds)`` (fps 8 when unknown)."""
    return max(1, int(fps or 8) * int(seconds))


def split_clips(start: int, end: int, length: int) -> list[tuple[int, int]]:
    """Clip ``[start, end)`` into ``[s, e)`` ranges of ``length`` frames, VBench-Long's way.

    Shorter than one clip: the whole range. Otherwise consecutive full clips, and if frames remain a
    last full-length clip ending at ``end`` (it overlaps the one before).
    """
    n = end - start
    if n < length:
        return [(start, end)]
    full = n // length
    out = [(start + i * length, start + (i + 1) * length) for i in range(full)]
    if n % length:
        out.append((end - length, end))
    return out


def scenes_from_cuts(cuts: Sequence[int], num_frames: int) -> list[tuple[int, int]]:
    """``[start, end)`` scenes of a video of ``num_frames`` frames, given the first frame of every new scene."""
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < num_frames), num_frames]
    return list(zip(bounds[:-1], bounds[1:]))


def scenedetect_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("scenedetect") is not None and importlib.util.find_spec("cv2") is not None


def detect_cuts(frames: np.ndarray, fps: float | None, threshold: float = 35.0) -> list[int]:
    """Frame indices where PySceneDetect's ``ContentDetector`` starts a new scene, on decoded RGB frames.

    The frames are fed to the detector directly (BGR, as its OpenCV reader gives them, downscaled the way
    its ``SceneManager`` does by default: factor ``width / 256`` when wider, linear interpolation), so the
    video is not decoded a second time.
    """
    import cv2
    from scenedetect import FrameTimecode
    from scenedetect.detectors import ContentDetector
    from scenedetect.scene_manager import compute_downscale_factor

    detector = ContentDetector(threshold=threshold)
    rate = float(fps or 8.0)
    h, w = frames.shape[1:3]
    factor = compute_downscale_factor(w)
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    cuts: list[int] = []
    for i in range(frames.shape[0]):
        bgr = np.ascontiguousarray(frames[i, :, :, ::-1])
        if factor > 1:
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)
        cuts.extend(int(c.get_frames()) for c in detector.process_frame(FrameTimecode(i, rate), bgr))
    cuts.extend(int(c.get_frames()) for c in detector.post_process(FrameTimecode(frames.shape[0] - 1, rate)))
    return cuts


def detect_scenes(frames: np.ndarray, fps: float | None, mode: str = "auto",
                  threshold: float = 35.0) -> tuple[list[tuple[int, int]], str]:
    """``(scenes, how)``: the scene ranges and how they were found (``scenedetect``, ``off``, ``unavailable``).

    ``auto`` falls back to one scene when PySceneDetect is not installed (documented; logged once).
    """
    n = int(frames.shape[0])
    if mode == "off":
        return [(0, n)], "off"
    if not scenedetect_available():
        if mode == "on":
            from .models import MissingExtraError

            raise MissingExtraError(f"long.scene_split=on needs PySceneDetect: {SCENE_EXTRA_HINT}")
        _warn_no_scenedetect()
        return [(0, n)], "unavailable"
    return scenes_from_cuts(detect_cuts(frames, fps, threshold), n), "scenedetect"


@functools.lru_cache(maxsize=1)
def _warn_no_scenedetect() -> None:
    log.warning("eval: PySceneDetect is not installed; every video is one scene (%s)", SCENE_EXTRA_HINT)


# ----------------------------------------------------------------------------------------------
# Fusion and aggregation (VBench-Long's reorganize_clips_results / fuse_inclip_clip2clip)
# ----------------------------------------------------------------------------------------------
def map_clip2clip(score: float, table: Mapping[float, float]) -> float:
    """A clip-to-clip score on the in-clip scale: linear between the table's neighbouring keys, clamped."""
    keys = sorted(table)
    idx = bisect.bisect_left(keys, score)
    if idx == 0:
        return float(table[keys[0]])
    if idx == len(keys):
        return float(table[keys[-1]])
    k0, k1 = keys[idx - 1], keys[idx]
    return float(table[k0] + (table[k1] - table[k0]) * (score - k0) / (k1 - k0))


def fuse(inclip: float, mapped: float, w_inclip: float, w_clip2clip: float) -> float:
    """VBench-Long's fused consistency: ``w_in·inclip + w_c2c·mapped``, or ``inclip`` when ``mapped`` is 0."""
    return inclip * w_inclip + mapped * w_clip2clip if mapped != 0.0 else inclip


@dataclass
class ClipScore:
    """One clip of one unit for one dimension: its frame range and the standard dimension's result."""

    start: int
    end: int
    value: float | bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    static: bool | None = None  # temporal_flickering with the static filter


@dataclass
class Unit:
    """A scene of a video (or the whole video): its frame range, its clips per dimension, clip-to-clip scores."""

    video: Path
    scene: int
    start: int
    end: int
    clips: dict[str, list[ClipScore]] = field(default_factory=dict)
    clip2clip: dict[str, float | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.video) if self.scene < 0 else f"{self.video}#scene{self.scene}"

    def scored(self, dim: str) -> list[ClipScore]:
        """Clips with a value (and, under the static filter, only static ones)."""
        return [c for c in self.clips.get(dim, []) if c.value is not None and c.static is not False]


def unit_value(unit: Unit, dim: str) -> float | None:
    """The mean of a unit's clip values (bools count as 0/1; imaging stays on 0-100), None if none."""
    clips = unit.scored(dim)
    return sum(float(c.value) for c in clips) / len(clips) if clips else None


def long_aggregate(dim: str, units: Sequence[Unit], settings: LongSettings) -> tuple[float | None, list[dict]]:
    """``(overall, unit_entries)`` for one dimension, as VBench-Long aggregates it.

    Unit entries are ``{video_path, scene, start_frame, end_frame, video_results}``, plus ``inclip_score``,
    ``clip2clip_score``, ``mapped_clip2clip_score`` for the fused consistency dimensions.
    """
    entries: list[dict[str, Any]] = []
    fused_dim = dim in CLIP2CLIP_DIMS and any(len(u.scored(dim)) >= 2 for u in units)
    w_in, w_c2c = settings.weights(dim) if dim in CLIP2CLIP_DIMS else (1.0, 0.0)
    table = long_data()["mapping"].get(dim) if dim in CLIP2CLIP_DIMS else None
    for u in units:
        inclip = unit_value(u, dim)
        if inclip is None:
            continue
        entry: dict[str, Any] = {"video_path": str(u.video), "scene": u.scene, "start_frame": u.start,
                                 "end_frame": u.end}
        if fused_dim and settings.needs_clip2clip(dim):
            raw = u.clip2clip.get(dim)  # None: one clip, or the term failed; VBench-Long then scores it 0
            mapped = map_clip2clip(raw if raw is not None else 0.0, table)
            entry.update({"inclip_score": inclip, "clip2clip_score": raw, "mapped_clip2clip_score": mapped,
                          "video_results": fuse(inclip, mapped, w_in, w_c2c)})
        elif fused_dim:  # weights 1/0: the fused value is the in-clip value whatever the term is
            entry.update({"inclip_score": inclip, "clip2clip_score": None, "mapped_clip2clip_score": None,
                          "video_results": inclip})
        else:
            entry["video_results"] = inclip
        entries.append(entry)
    if not entries:
        return None, entries
    if dim == "subject_consistency" and not fused_dim:
        clips = [c for u in units for c in u.scored(dim)]
        overall = sum(c.extra["video_sim"] for c in clips) / sum(c.extra["cnt_per_video"] for c in clips)
    else:
        overall = sum(e["video_results"] for e in entries) / len(entries)
    if dim == "imaging_quality":
        overall /= 100.0
    return float(overall), entries


def clip_entries(dim: str, units: Sequence[Unit]) -> list[dict[str, Any]]:
    """VBench's per-clip ``detailed_results``: one entry per clip (failed clips carry their error)."""
    out = []
    for u in units:
        for k, c in enumerate(u.clips.get(dim, [])):
            entry: dict[str, Any] = {"video_path": str(u.video), "scene": u.scene, "clip": k,
                                     "start_frame": c.start, "end_frame": c.end, "video_results": c.value}
            entry.update(c.extra)
            if c.static is not None:
                entry["static"] = c.static
            if c.error:
                entry["error"] = c.error
            out.append(entry)
    return out


def long_json(dims: Sequence[str], units: Sequence[Unit], settings: LongSettings) -> dict[str, list]:
    """VBench-Long's results layout for all dimensions."""
    out: dict[str, list] = {}
    for dim in dims:
        overall, entries = long_aggregate(dim, units, settings)
        if dim in CLIP2CLIP_DIMS and any(len(u.scored(dim)) >= 2 for u in units):
            out[dim] = [overall, entries]
        else:
            if dim == "temporal_flickering":
                entries = [*entries, {"long_video_cnt": len(entries)}]
            out[dim] = [overall, clip_entries(dim, units), entries]
    return out


# ----------------------------------------------------------------------------------------------
# Static filter (temporal_flickering, VBench-Long's --static_filter_flag)
# ----------------------------------------------------------------------------------------------
def top_fraction_mean(flow: np.ndarray, fraction: float) -> float:
    """Mean of the largest ``fraction`` of flow magnitudes of one flow field ``(2, H, W)``."""
    rad = np.sqrt(np.square(flow[0]) + np.square(flow[1]))
    cut = int(rad.size * fraction)
    return float(np.mean(np.abs(np.sort(-rad.flatten()))[:cut]))


def is_static(pair_scores: Sequence[float], height: int, width: int, num_frames: int) -> bool:
    """VBench's static test: ``pair_scores`` are the consecutive pairs then first→last and last→first.

    ``thres = 3·min(H, W)/256``, ``count_num = round(2·N/16)``: static unless more than ``count_num``
    consecutive pairs exceed ``thres`` or a first↔last score exceeds ``thres·count_num·2``.
    """
    thres = 3.0 * (min(height, width) / 256.0)
    count_num = round(2 * (num_frames / 16.0))
    if sum(s > thres for s in pair_scores[:-2]) > count_num:
        return False
    return all(s <= thres * count_num * 2 for s in pair_scores[-2:])


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
                                 f"fetch them once with: python -c \"{fetch}\"")
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
        from .video import Video, load_video

        try:
            video = Video(Path(path), frames, fps) if frames is not None else load_video(path)
        except Exception as err:
            log.warning("eval: cannot read %s: %s", path, err)
            return LongVideoScores(Path(path), error=f"{type(err).__name__}: {err}")
        if prompt is not None:
            video = replace(video, prompt=prompt)
        return self.score_video(video)

    def score_video(self, video) -> LongVideoScores:
        from .video import Video

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
                    except Exception as err:
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


# ----------------------------------------------------------------------------------------------
# Per-video records (run.py) and their re-aggregation (make_tables.py)
# ----------------------------------------------------------------------------------------------
def unit_records(dim: str, units: Sequence[Unit], settings: LongSettings) -> list[dict[str, Any]]:
    """What a run record keeps per unit so that tables re-aggregate exactly: value, clip count, pair sums."""
    _, entries = long_aggregate(dim, units, settings)
    by_scene = {(str(u.video), u.scene): u for u in units}
    out = []
    for e in entries:
        clips = by_scene[(e["video_path"], e["scene"])].scored(dim)
        rec: dict[str, Any] = {"scene": e["scene"], "value": e["video_results"], "clips": len(clips)}
        if dim in CLIP2CLIP_DIMS:
            rec["sim"] = sum(c.extra["video_sim"] for c in clips)
            rec["pairs"] = sum(c.extra["cnt_per_video"] for c in clips)
        out.append(rec)
    return out


def overall_from_units(dim: str, units: Sequence[Mapping[str, Any]]) -> float | None:
    """VBench-Long's overall value from :func:`unit_records` of many videos (None if there are none)."""
    units = [u for u in units if u.get("value") is not None]
    if not units:
        return None
    if dim == "subject_consistency" and not any(u["clips"] >= 2 for u in units):
        return float(sum(u["sim"] for u in units) / sum(u["pairs"] for u in units))
    overall = sum(float(u["value"]) for u in units) / len(units)
    return float(overall / 100.0 if dim == "imaging_quality" else overall)


def video_value(dim: str, units: Sequence[Mapping[str, Any]]) -> float | None:
    """One number per video for a run record: the mean of its units' values (VBench-Long's per-video value
    when the video is one scene); imaging_quality stays on 0-100 like VBench's per-video entries."""
    values = [float(u["value"]) for u in units if u.get("value") is not None]
    return sum(values) / len(values) if values else None


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
        print(f"error: {err}", file=sys.stderr)
        return 2, {}, [], {}
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


def build_long_run_evaluator(cfg, device, random_init: bool):
    """``eval.protocol=long`` in run.py: the per-video scorer storing VBench-Long values and unit records."""
    from omegaconf import OmegaConf

    from .models import MissingExtraError

    def config_error(msg: str) -> Exception:
        from freelong.runner import ConfigError

        return ConfigError(msg)

    from .hook import eval_dims

    dims = eval_dims(cfg)
    if cfg.get("backend", "native") != "native":
        raise config_error("eval.protocol=long runs with eval.backend=native only")
    raw = OmegaConf.to_container(cfg.get("long") or {}, resolve=True) or {}
    try:
        settings = LongSettings.from_mapping(raw)
    except (TypeError, ValueError) as err:
        raise config_error(f"eval.long: {err}") from err
    weights = {k: v for k, v in (OmegaConf.to_container(cfg.get("weights") or {}, resolve=True) or {}).items() if v}
    source = cfg.get("source", "file")
    try:
        ev = LongEvaluator(dims, settings, device=cfg.get("device") or device, random_init=random_init,
                           weights=weights, cache_dir=cfg.get("cache_dir"), batch_size=cfg.get("batch_size", 32),
                           precision=cfg.get("precision", "vbench"), imaging_mode=cfg.get("imaging_mode", "longer"),
                           seed=cfg.get("seed", 0))
    except MissingExtraError as err:
        raise config_error(f"eval={cfg.name} eval.protocol=long: {err}") from err
    except ValueError as err:
        raise config_error(f"eval: {err}") from err
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
