"""The attention interface's types: what a processor is handed besides ``q, k, v``.

Every temporal attention layer of every backbone calls a processor (:mod:`freelong.attention.processor`)
as ``processor(q, k, v, bias=..., ctx=...)``. ``bias`` is a :class:`PositionBias` (LaVie's relative
position bias; None elsewhere), ``ctx`` a :class:`TemporalAttentionContext` (the video's shape, the step,
the layer), and ``ctx.positions`` a :class:`FramePositions` where the backbone's positions are additive
(diffusers' AnimateDiff). The pipeline threads per-call values through the model as a :class:`CallContext`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


class PositionBias(Protocol):
    """Additive attention-logit bias as a function of query and key frame indices."""

    def __call__(self, q_idx: torch.Tensor, k_idx: torch.Tensor) -> torch.Tensor: ...


@dataclass
class CallContext:
    """Per-call information the pipeline threads through the UNet (like diffusers' attention kwargs).

    ``step_index`` is an ``int`` from :class:`~freelong.LongVideoPipeline` and a 0-dim int64 CPU tensor under
    :func:`freelong.enable` (so a compiled model does not recompile per step): compare it, do not index with it.
    """

    step_index: int | torch.Tensor | None = None
    num_steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Set by window loops (freelong.sampling): the absolute frame index of each frame in this call
    # (a window of a longer video), and the per-frame timesteps (FIFO), both ``(T,)``; None = the whole video, one t.
    frame_index: torch.Tensor | None = None
    timesteps: torch.Tensor | None = None


@dataclass
class TemporalAttentionContext:
    """What a processor knows about the call it serves.

    ``frame_shape=(T, H, W)`` lets processors view the ``B*H*W`` rows as a video (FreeLong's 3D FFT);
    ``level`` is the UNet resolution level (0 = highest resolution; a DiT's block index); ``name`` is
    the layer's module path.

    ``tokens_per_frame`` (``S``): q/k/v hold ``T*S`` tokens per row, frame-major (all ``S`` tokens of
    frame 0, then frame 1, ...). UNet temporal attention: rows ``B*H*W``, ``S = 1``. A DiT's 3D
    self-attention: rows ``B``, ``S = H*W``. Windows and local masks are always over *frames*.

    ``positions`` (None except for diffusers' AnimateDiff, where ``S = 1``): the backbone's additive frame
    positions (:class:`FramePositions`, a sinusoidal table) for the processor to add itself, at
    absolute frames for global attention and at window-local frames for windowed branches.

    ``rope`` (None unless the processor sets ``needs_rope = True`` and the backbone's positions are RoPE, Wan):
    a :class:`FrameRope` that rotates this call's *un-rotated* q/k at chosen temporal positions per frame
    (FreeLOC re-encodes positions per key tier); the q/k handed to the processor carry the standard positions.
    ``frame_index`` / ``timesteps`` (None unless a sampling loop runs the network on a window of the
    video, :mod:`freelong.sampling`): the window's absolute frame indices and its per-frame timesteps.
    """

    frame_shape: tuple[int, int, int]
    batch: int
    level: int
    name: str
    step_index: int | None = None
    num_steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tokens_per_frame: int = 1
    positions: FramePositions | None = None
    rope: FrameRope | None = None
    frame_index: torch.Tensor | None = None
    timesteps: torch.Tensor | None = None

    def num_frames(self, q: torch.Tensor) -> int:
        """Frames in a ``(rows, heads, T*S, d)`` tensor."""
        return q.shape[-2] // self.tokens_per_frame


class FramePositions(Protocol):
    """Per-frame additive offsets of q, k, v: ``positions(idx) -> (dq, dk, dv)``, each ``(heads, len(idx), d)``.

    AnimateDiff adds a sinusoidal table ``p`` to the hidden states before the (linear) q/k/v
    projections, so ``q(h + p_f) = q(h) + W_q p_f``: the backbone hands q/k/v *without* positions and
    the processor adds the offsets of whichever frame positions its branch uses.
    """

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


class FrameRope(Protocol):
    """``q_at(p)`` / ``k_at(p)``: this call's q or k, ``(B, heads, T*S, d)``, with the backbone's RoPE applied as if
    frame ``f`` sat at temporal position ``p[f]`` (``p``: ``(T,)`` integers); spatial axes keep their positions."""

    def q_at(self, positions: torch.Tensor) -> torch.Tensor: ...

    def k_at(self, positions: torch.Tensor) -> torch.Tensor: ...


def require_frame_bias(bias: PositionBias | None, tokens_per_frame: int) -> None:
    """A relative position bias is over frames: refuse it where q/k/v hold several tokens per frame (a DiT)."""
    if bias is not None and tokens_per_frame > 1:
        raise NotImplementedError("a relative position bias with tokens_per_frame > 1 is not supported")


def require_frame_rows(tokens_per_frame: int) -> None:
    """Additive frame positions exist only where q/k/v hold one token per frame (a UNet's temporal attention)."""
    if tokens_per_frame > 1:
        raise ValueError("additive frame positions need tokens_per_frame == 1 (a UNet's temporal attention)")
