"""The dimension interface, its registry, and the shared evaluation context.

A dimension turns one decoded :class:`~eval.video.Video` into a :class:`DimResult` (the per-video
value in VBench's units, plus the fields VBench's JSON carries for it) and aggregates a list of them
into the overall number exactly as VBench does for that dimension. Models are built once, in
``setup``, from the weights the :class:`EvalContext` resolved.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .video import Video

# name → module; modules register their class on import (kept lazy: importing eval stays cheap).
DIMENSION_MODULES = {
    "subject_consistency": "eval.subject_consistency",
    "background_consistency": "eval.background_consistency",
    "motion_smoothness": "eval.motion_smoothness",
    "temporal_flickering": "eval.temporal_flickering",
    "imaging_quality": "eval.imaging_quality",
    "aesthetic_quality": "eval.aesthetic_quality",
    "dynamic_degree": "eval.dynamic_degree",
    "overall_consistency": "eval.overall_consistency",
}
ALL_DIMS = tuple(DIMENSION_MODULES)
# VBench's seven quality dimensions (eval=vbench); overall_consistency is a semantic one (needs prompts).
QUALITY_DIMS = ALL_DIMS[:7]
# The paper's Table 1 columns, in its order.
TABLE1_DIMS = ("subject_consistency", "background_consistency", "motion_smoothness", "temporal_flickering",
               "imaging_quality")
# Dimensions that need no optional extra (eval=fast).
FAST_DIMS = ("temporal_flickering", "subject_consistency", "background_consistency", "aesthetic_quality",
             "imaging_quality")
ALIASES = {
    "subject": "subject_consistency", "sub": "subject_consistency",
    "background": "background_consistency", "back": "background_consistency",
    "motion": "motion_smoothness", "flicker": "temporal_flickering", "flickering": "temporal_flickering",
    "imaging": "imaging_quality", "aesthetic": "aesthetic_quality", "dynamic": "dynamic_degree",
    "overall": "overall_consistency",
}
GROUPS = {"fast": FAST_DIMS, "vbench": QUALITY_DIMS, "all": ALL_DIMS, "table1": TABLE1_DIMS}

_REGISTRY: dict[str, type[Dimension]] = {}


def parse_dims(spec: str | Sequence[str]) -> list[str]:
    """``"fast"``, ``"sub,back"``, ``["table1", "aesthetic"]`` → canonical dimension names, in order, deduplicated."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for raw in items:
        item = str(raw).strip()
        if not item:
            continue
        names = GROUPS.get(item) or (ALIASES.get(item, item),)
        for name in names:
            if name not in DIMENSION_MODULES:
                raise ValueError(f"unknown VBench dimension {item!r}; choose from {', '.join(ALL_DIMS)}, "
                                 f"the groups {', '.join(GROUPS)} or the short names {', '.join(ALIASES)}")
            if name not in out:
                out.append(name)
    if not out:
        raise ValueError("no dimensions requested")
    return out


def register_dimension(cls: type[Dimension]) -> type[Dimension]:
    _REGISTRY[cls.name] = cls
    return cls


def get_dimension(name: str) -> type[Dimension]:
    name = ALIASES.get(name, name)
    if name not in DIMENSION_MODULES:
        raise ValueError(f"unknown VBench dimension {name!r}; choose from {', '.join(ALL_DIMS)}")
    if name not in _REGISTRY:
        importlib.import_module(DIMENSION_MODULES[name])
    return _REGISTRY[name]


def dimension_label(name: str) -> str:
    """A dimension's column header (its :attr:`Dimension.label`): the one map every table and the report use."""
    return get_dimension(name).label


@dataclass
class DimResult:
    """One video's result: ``value`` in VBench's per-video units; ``extra`` goes into VBench's JSON entry."""

    value: float | bool
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalContext:
    """What every dimension needs to build and run its networks."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    random_init: bool = False
    weights: dict[str, Path] = field(default_factory=dict)
    batch_size: int = 32
    pair_batch: int = 4
    precision: str = "vbench"  # "vbench": fp16 where VBench-on-GPU uses fp16 (CLIP); "fp32": fp32 everywhere
    imaging_mode: str = "longer"
    seed: int = 0

    def half_on_gpu(self) -> torch.dtype:
        """The dtype VBench uses on this device for networks it runs in half precision on CUDA (CLIP)."""
        return torch.float16 if self.device.type == "cuda" and self.precision == "vbench" else torch.float32


class Dimension(ABC):
    """A VBench dimension. Subclasses set ``name``, ``weights`` (``eval.weights`` names) and ``extras``."""

    name: ClassVar[str]
    label: ClassVar[str]  # column header in tables
    weights: ClassVar[tuple[str, ...]] = ()
    extras: ClassVar[tuple[str, ...]] = ()  # human-readable optional requirements (empty: none)

    def __init__(self, ctx: EvalContext):
        self.ctx = ctx
        self.setup()

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Build the networks (called once)."""

    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`~eval.models.MissingExtraError` if an optional package is missing (cheap)."""
        return None

    @abstractmethod
    def score(self, video: Video) -> DimResult:
        """The per-video result."""

    @classmethod
    def overall(cls, results: Sequence[DimResult]) -> float:
        """Plain mean over videos (most dimensions); consistency dimensions weight by frame pairs."""
        return float(np.mean([float(r.value) for r in results]))

    def weight_path(self, name: str) -> Path | None:
        return None if self.ctx.random_init else self.ctx.weights[name]

    def chunks(self, frames: np.ndarray, size: int | None = None) -> Iterator[torch.Tensor]:
        """Float ``(n, 3, H, W)`` 0..255 tensors on the device, ``batch_size`` frames at a time."""
        from .transforms import to_tensor

        step = size or self.ctx.batch_size
        for i in range(0, frames.shape[0], step):
            yield to_tensor(frames[i : i + step], self.ctx.device)
