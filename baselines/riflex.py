"""RIFLEx (Zhao et al., "RIFLEx: A Free Lunch for Length Extrapolation in Video Diffusion Transformers",
ICML 2025; official code thu-ml/RIFLEx, ``riflex_utils.py``): one RoPE frequency changed, nothing else.

RoPE's temporal axis rotates position ``p`` by ``p * theta_j`` with ``theta_j = b^(-2(j-1)/d)``,
``j = 1..d/2`` (``b`` the base, 10000 for Wan; ``d`` the temporal head-dim share, 44 for Wan's 128).
Component ``j`` has period ``N_j = round(2*pi / theta_j)`` positions (latent frames). The *intrinsic*
component is the one whose period is closest to the length ``N`` at which the model starts to repeat
itself (about its training length): ``k = argmin_j |N_j - N|`` (the official ``identify_k``, their Eq. 7).
When the test length ``L`` (latent frames) exceeds ``N_k``, RIFLEx lowers that one frequency so a single
period covers the new length, with the official code's 0.9 safety factor (their Eq. 8):

    theta_k  <-  0.9 * 2*pi / L

All other frequencies and the spatial axes are unchanged, and so is every attention: the method's
processor is plain global attention. Up to ``N_k`` latent frames nothing changes (as the official
scripts, which edit RoPE only when ``L > N_k``).

Backbones: Wan (3D RoPE; temporal part 44 of 128 channels: periods 6, 10, 15, 22, ... so ``k = 4`` for
21 native latent frames) and LaVie (temporal rotary on 32 channels: periods 6, 11, 20, 35, ... so
``k = 3`` for 16 frames). VideoCrafter2 has no temporal position encoding: validation rejects it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from freelong.methods import Method, register_method

ROPE_FAMILIES = {"wan": "3D RoPE (temporal part)", "lavie": "temporal rotary embedding"}


def rope_periods(freqs: torch.Tensor) -> list[int]:
    """``N_j = round(2*pi / theta_j)`` per frequency component (positions per full turn)."""
    return [round(2 * math.pi / float(f)) for f in freqs]


def intrinsic_index(freqs: torch.Tensor, repeat_after: int) -> int:
    """0-based index of the component whose period is closest to ``repeat_after`` (first on ties)."""
    periods = rope_periods(freqs)
    diffs = [abs(p - repeat_after) for p in periods]
    return diffs.index(min(diffs))


@register_method("riflex")
@dataclass
class RIFLEx(Method):
    """RIFLEx on a RoPE backbone (Wan's 3D RoPE, LaVie's temporal rotary): one temporal frequency lowered."""

    levels = ("positions",)
    edits_rope = True

    k: int | None = None
    """1-based index (as the paper) of the temporal RoPE frequency to lower; `null`: the one whose period is
    closest to `repeat_after` (the official `identify_k`)."""
    repeat_after: int | None = None
    """Length in latent frames at which the model starts to repeat itself; `null`: the backbone's native latent
    length (21 for Wan2.1, so k = 4)."""
    factor: float = 0.9
    """Safety factor in (0, 1]: θ_k = factor · 2π / L for L latent frames (official: 0.9)."""
    window: int | None = None
    """Accepted and ignored (for cross-method sweeps)."""
    stride: int | None = None
    """Accepted and ignored (for cross-method sweeps)."""

    def validate(self) -> None:
        if self.k is not None and self.k < 1:
            raise ValueError(f"method.k must be null or >= 1 (1-based frequency index), got {self.k}")
        if self.repeat_after is not None and self.repeat_after < 1:
            raise ValueError(f"method.repeat_after must be null or >= 1 latent frames, got {self.repeat_after}")
        if not (0 < self.factor <= 1):
            raise ValueError(f"method.factor must be in (0, 1], got {self.factor}")

    def check_frames(self, num_frames: int) -> None:
        """RIFLEx runs at any length."""

    def check_model(self, model_cfg: Any) -> None:
        if model_cfg.get("family") not in ROPE_FAMILIES:
            raise ValueError(
                f"method=riflex edits temporal RoPE frequencies, and model {model_cfg.get('name')} has no RoPE it "
                f"can edit (supported families: {', '.join(sorted(ROPE_FAMILIES))})"
            )

    def rope_frequencies(
        self, freqs: torch.Tensor, *, axis: str, num_positions: int, native_positions: int
    ) -> torch.Tensor:
        if axis != "t":
            return freqs
        j = self.k - 1 if self.k is not None else intrinsic_index(freqs, self.repeat_after or native_positions)
        if j >= len(freqs):
            raise ValueError(f"method.k={j + 1} exceeds the {len(freqs)} temporal RoPE frequencies")
        if num_positions <= rope_periods(freqs)[j]:
            return freqs
        out = freqs.clone()
        out[j] = self.factor * 2 * math.pi / num_positions
        return out



__all__ = ["ROPE_FAMILIES", "RIFLEx", "intrinsic_index", "rope_periods"]
