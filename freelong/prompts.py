"""Multi-prompt videos: prompt segments → a per-frame text-embedding schedule (+ FreeNoise's motion injection).

A multi-prompt video is a list of segments ``[{prompt, frames}, ...]`` played one after the other.
Each frame gets the text embedding of its segment; around every boundary between two segments a
*transition* of ``transition_frames`` frames interpolates linearly between the two embeddings:

* boundary ``b`` (the first frame of the next segment), transition ``n`` frames: the frames
  ``s = b - n//2, ..., s + n - 1`` get ``(1 - a) * e_k + a * e_{k+1}`` with ``a = (j + 1) / (n + 1)``
  for the ``j``-th transition frame. The frame before the transition is purely ``e_k`` (``a = 0``),
  the frame after it purely ``e_{k+1}`` (``a = 1``), so the embedding is linear in the frame index
  from ``s - 1`` to ``s + n``. ``n = 0`` switches exactly at ``b``.
* Segments without ``frames`` share the frames the others leave, equally (the earlier ones get the
  remainder), so ``[{prompt: a}, {prompt: b}]`` works at any length.
* Transitions may not overlap: every segment must hold its share of the transitions on its sides.

The embeddings reach every cross-attention of the backbone as a ``(B, T, L, D)`` context (the
backbone contract, ``freelong/models/base.py``). FreeNoise's *motion injection* (Qiu et al. 2024,
Eq. 11) additionally lets chosen UNet block groups see one fixed prompt outside a range of
denoising steps; :class:`MotionInjection` holds that schedule and :class:`PromptSchedule` turns it
into the context of each step (a dict per block group ``down``/``mid``/``up``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

DEFAULT_TRANSITION_FRAMES = 8
BLOCK_GROUPS = ("down", "mid", "up")


@dataclass(frozen=True)
class PromptSegment:
    """One prompt held for ``frames`` frames (``None``: an equal share of the frames left)."""

    prompt: str
    frames: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"a prompt segment needs a non-empty 'prompt' string, got {self.prompt!r}")
        if self.frames is not None and (isinstance(self.frames, bool) or not isinstance(self.frames, int)
                                        or self.frames < 1):
            raise ValueError(f"segment {self.prompt!r}: 'frames' must be a positive integer, got {self.frames!r}")


@dataclass(frozen=True)
class MultiPrompt:
    """Prompt segments played in order, with linear embedding transitions between them."""

    segments: tuple[PromptSegment, ...]
    transition_frames: int = DEFAULT_TRANSITION_FRAMES

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a multi-prompt needs at least one segment")
        if isinstance(self.transition_frames, bool) or not isinstance(self.transition_frames, int) \
                or self.transition_frames < 0:
            raise ValueError(f"transition_frames must be an integer >= 0, got {self.transition_frames!r}")

    @property
    def prompts(self) -> list[str]:
        return [s.prompt for s in self.segments]

    @property
    def is_multi(self) -> bool:
        """More than one segment (a one-segment list is a single prompt held for the whole video)."""
        return len(self.segments) > 1

    @property
    def label(self) -> str:
        return " | ".join(self.prompts)

    def segment_lengths(self, num_frames: int) -> list[int]:
        """Frames per segment at ``num_frames`` frames; ValueError if the segments do not fit."""
        given = [s.frames for s in self.segments]
        fixed = sum(f for f in given if f is not None)
        free = sum(f is None for f in given)
        left = num_frames - fixed
        if free == 0 and left != 0:
            raise ValueError(f"prompt segments' frames sum to {fixed} but num_frames={num_frames} "
                             f"(leave out 'frames' on a segment to give it the rest)")
        if free and left < free:
            raise ValueError(f"prompt segments: {fixed} frames are fixed, leaving {left} of num_frames={num_frames} "
                             f"for {free} segment(s) without 'frames'; each needs at least 1")
        share, extra = divmod(left, free) if free else (0, 0)
        out, k = [], 0
        for f in given:
            if f is None:
                f = share + (1 if k < extra else 0)
                k += 1
            out.append(f)
        return out

    def frame_weights(self, num_frames: int) -> torch.Tensor:
        """``(T, K)`` float64 weights of each segment's embedding in each frame (rows sum to 1)."""
        lengths = self.segment_lengths(num_frames)
        n = self.transition_frames
        left_part, right_part = n // 2, n - n // 2  # frames of a transition before / after its boundary
        for k, length in enumerate(lengths):
            need = (right_part if k > 0 else 0) + (left_part if k < len(lengths) - 1 else 0)
            if need > length:
                raise ValueError(
                    f"prompt segment {k} ({self.segments[k].prompt!r}) has {length} frames at num_frames={num_frames} "
                    f"but its transitions need {need} (transition_frames={n}); use fewer transition frames, "
                    f"more frames for the segment, or a longer video"
                )
        starts = torch.tensor([0, *lengths[:-1]]).cumsum(0)
        owner = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        weights = torch.zeros(num_frames, len(lengths), dtype=torch.float64)
        weights[torch.arange(num_frames), owner] = 1.0
        if n:
            alpha = torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
            for k in range(1, len(lengths)):
                s = int(starts[k]) - left_part
                weights[s : s + n] = 0.0
                weights[s : s + n, k - 1] = 1.0 - alpha
                weights[s : s + n, k] = alpha
        return weights

    def to_config(self) -> dict[str, Any]:
        """The canonical plain form (JSON/YAML): ``{segments: [{prompt, frames}], transition_frames}``."""
        return {
            "segments": [{"prompt": s.prompt, "frames": s.frames} for s in self.segments],
            "transition_frames": self.transition_frames,
        }


def _segment(item: Any, index: int) -> PromptSegment:
    if isinstance(item, PromptSegment):
        return item
    if isinstance(item, str):
        return PromptSegment(item)
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"prompt", "frames"})
        if unknown or "prompt" not in item:
            raise ValueError(
                f"prompt segment {index}: expected keys 'prompt' and optional 'frames', got {sorted(item)}"
            )
        return PromptSegment(item["prompt"], item.get("frames"))
    if isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str):
        return PromptSegment(item[0], item[1])
    raise ValueError(f"prompt segment {index}: expected a string, {{prompt, frames}} or [prompt, frames], got {item!r}")


def parse_prompt(item: Any, transition_frames: int = DEFAULT_TRANSITION_FRAMES) -> str | MultiPrompt:
    """A prompt as given in a config, a JSON file or the Python API → ``str`` or :class:`MultiPrompt`.

    Accepted: a string; a list of segments (strings, ``{prompt, frames}`` dicts or ``[prompt, frames]``);
    a dict ``{segments: [...], transition_frames: n}`` (``transition_frames`` overrides the default).
    """
    if isinstance(item, MultiPrompt):
        return item
    if isinstance(item, str):
        if not item.strip():
            raise ValueError("empty prompt")
        return item
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"segments", "transition_frames"})
        if unknown or "segments" not in item:
            raise ValueError(
                f"a multi-prompt dict needs 'segments' (and optional 'transition_frames'), got {sorted(item)}"
            )
        transition_frames = item.get("transition_frames", transition_frames)
        item = item["segments"]
    if isinstance(item, Sequence) and not isinstance(item, (str, bytes)):
        return MultiPrompt(tuple(_segment(s, i) for i, s in enumerate(item)), transition_frames)
    raise ValueError(f"a prompt must be a string or a list of segments [{{prompt, frames}}, ...], got {item!r}")


def normalize_prompt(item: Any, transition_frames: int = DEFAULT_TRANSITION_FRAMES) -> str | dict[str, Any]:
    """The plain, JSON-able canonical form of a prompt (what run records store and hash)."""
    parsed = parse_prompt(item, transition_frames)
    return parsed if isinstance(parsed, str) else parsed.to_config()


def prompt_label(item: Any) -> str:
    """Human-readable one-line label: the prompt, or the segment prompts joined by `` | ``."""
    parsed = parse_prompt(item)
    return parsed if isinstance(parsed, str) else parsed.label


def per_frame_context(weights: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """``(T, K)`` weights and ``(K, L, D)`` prompt embeddings → ``(1, T, L, D)`` per-frame context."""
    if weights.shape[1] != embeddings.shape[0]:
        raise ValueError(f"{weights.shape[1]} segment weights for {embeddings.shape[0]} prompt embeddings")
    ctx = torch.einsum("tk,kld->tld", weights.to(torch.float64), embeddings.to(torch.float64))
    return ctx.to(embeddings.dtype)[None]


@dataclass(frozen=True)
class MotionInjection:
    """FreeNoise's motion injection: which prompt each block group sees at each denoising step.

    Outside the step range ``steps = [lo, hi]`` (fractions of the trajectory, inclusive: step ``i`` of
    ``N`` is inside when ``lo*N <= i <= hi*N``) the block groups in ``groups`` see the prompt of
    segment ``prompt`` on every frame; the other groups, and every group inside the range, see the
    per-frame schedule. Defaults = the official FreeNoise code (DDIM steps 5..15 of 50 use the
    schedule everywhere, encoder and middle block see the *second* (last) prompt otherwise; the
    decoder always sees the schedule). The paper's Eq. 11 uses the first prompt instead (``prompt=0``).
    """

    prompt: int = -1
    groups: tuple[str, ...] = ("down", "mid")
    steps: tuple[float, float] = (0.1, 0.3)

    def __post_init__(self) -> None:
        bad = sorted(set(self.groups) - set(BLOCK_GROUPS))
        if bad:
            raise ValueError(f"motion injection groups must be among {', '.join(BLOCK_GROUPS)}, got {bad}")
        if len(self.steps) != 2 or not (0.0 <= self.steps[0] <= self.steps[1] <= 1.0):
            raise ValueError(f"motion injection steps must be [lo, hi] with 0 <= lo <= hi <= 1, got {list(self.steps)}")

    def injects(self, step_index: int, num_steps: int) -> bool:
        """Whether the groups see the fixed prompt at this step (i.e. the step is outside the range)."""
        lo, hi = self.steps
        eps = 1e-9
        return not (lo * num_steps - eps <= step_index <= hi * num_steps + eps)

    def segment_index(self, num_segments: int) -> int:
        if not (-num_segments <= self.prompt < num_segments):
            raise ValueError(f"motion injection prompt index {self.prompt} is out of range for {num_segments} segments")
        return self.prompt % num_segments


@dataclass
class PromptSchedule:
    """Step-dependent text conditioning: ``at(step, num_steps)`` → the UNet's context for that step.

    ``per_frame`` is ``(1, T, L, D)``; ``injected`` (``(1, L, D)``) and ``injection`` are set for
    FreeNoise's motion injection.
    """

    per_frame: torch.Tensor
    injected: torch.Tensor | None = None
    injection: MotionInjection | None = None
    prompt: MultiPrompt | None = field(default=None, repr=False)

    def at(self, step_index: int | None, num_steps: int | None) -> torch.Tensor | dict[str, torch.Tensor]:
        if self.injection is None or self.injected is None or step_index is None or num_steps is None:
            return self.per_frame
        if not self.injection.injects(step_index, num_steps):
            return self.per_frame
        return {g: self.injected if g in self.injection.groups else self.per_frame for g in BLOCK_GROUPS}


def encode_prompt_schedule(
    prompt: MultiPrompt,
    num_frames: int,
    encode_text,
    injection: MotionInjection | None = None,
) -> PromptSchedule:
    """Encode each segment once with ``encode_text(list[str]) -> (K, L, D)`` and build the schedule."""
    weights = prompt.frame_weights(num_frames)
    embeddings = encode_text(prompt.prompts)
    per_frame = per_frame_context(weights.to(embeddings.device), embeddings)
    injected = None
    if injection is not None:
        injected = embeddings[injection.segment_index(len(prompt.segments))][None]
    return PromptSchedule(per_frame, injected, injection, prompt)


__all__ = [
    "BLOCK_GROUPS",
    "DEFAULT_TRANSITION_FRAMES",
    "MotionInjection",
    "MultiPrompt",
    "PromptSchedule",
    "PromptSegment",
    "encode_prompt_schedule",
    "normalize_prompt",
    "parse_prompt",
    "per_frame_context",
    "prompt_label",
]
