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

This module holds the definitions (pure functions on frames and scores); :mod:`eval.long_eval` runs
them with the networks (``python -m eval --protocol long``, ``eval.protocol=long``).
"""

from __future__ import annotations

import bisect
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
