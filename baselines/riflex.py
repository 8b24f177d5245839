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

Which ``k``. The official ``identify_k(b, d, N)`` takes ``N`` = *the first latent frame at which the model is
observed to repeat itself*, not the training length. The official settings show the difference: HunyuanVideo
(periods 6, 13, 25, 50, 101) runs ``k=4, N_k=50`` while its native clip is 33 latent frames, CogVideoX-5B
(periods 6, 20, 63) ``k=2, N_k=20`` for 13 native latent frames; the native-length rule would pick ``k=3`` and
``k=1``. So ``k`` and the trigger ``n_k`` are explicit parameters, and the per-family presets
(``method=riflex_wan`` / ``riflex_cogvideox`` / ``riflex_hunyuanvideo``) carry the official values (Wan, which
the official repository lists without code: ``k=6``, period 51 — identify_k with the repetition near 50 latent
frames, and the default of the widely used ComfyUI-WanVideoWrapper). ``k: null`` keeps the identify_k rule with
``repeat_after`` (null = the native latent length: Wan2.1 ``k=4``, LaVie ``k=3``), documented in docs/dits.md.

Trigger: RIFLEx edits nothing while the latent length ``L <= n_k`` (null = ``N_k``, the period of component
``k``), as the official training-free scripts (``if L_test > N_k``).

Backbones: Wan2.1/2.2 (3D RoPE; temporal part 44 of 128 channels: periods 6, 10, 15, 22, 34, 51, ...),
CogVideoX-5B (pipeline-built 3D RoPE, temporal part 16 of 64), HunyuanVideo (temporal part 16 of 128, base 256)
and LaVie (temporal rotary on 32 channels: periods 6, 11, 20, 35, ...). VideoCrafter2 and CogVideoX-2B have no
RoPE: validation rejects them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from freelong.methods import Method, register_method

ROPE_FAMILIES = {"wan": "3D RoPE (temporal part)", "lavie": "temporal rotary embedding",
                 "cogvideox": "3D RoPE built by the pipeline (temporal part)",
                 "hunyuanvideo": "3D RoPE (temporal part, base 256)"}


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
    """RIFLEx on a RoPE backbone: the intrinsic temporal frequency lowered to ``factor * 2*pi / L`` beyond ``n_k``."""

    levels = ("positions",)
    edits_rope = True

    k: int | None = None
    """1-based index of the intrinsic temporal frequency (the paper's k); null = identify_k from ``repeat_after``."""
    repeat_after: int | None = None
    """Latent frame at which the model starts repeating (identify_k's N); null = the native latent length."""
    n_k: int | None = None
    """Trigger: no edit while the latent length is <= n_k; null = N_k, the period of component k (official)."""
    factor: float = 0.9
    """The new frequency is ``factor * 2*pi / L``: one period covers L / factor frames (official 0.9)."""
    window: int | None = None
    """Accepted and ignored (so cross-method sweeps can set it)."""
    stride: int | None = None
    """Accepted and ignored (so cross-method sweeps can set it)."""

    def validate(self) -> None:
        if self.k is not None and self.k < 1:
            raise ValueError(f"method.k must be null or >= 1 (1-based frequency index), got {self.k}")
        if self.repeat_after is not None and self.repeat_after < 1:
            raise ValueError(f"method.repeat_after must be null or >= 1 latent frames, got {self.repeat_after}")
        if self.n_k is not None and self.n_k < 1:
            raise ValueError(f"method.n_k must be null or >= 1 latent frames, got {self.n_k}")
        if not (0 < self.factor <= 1):
            raise ValueError(f"method.factor must be in (0, 1], got {self.factor}")

    def check_frames(self, num_frames: int) -> None:
        """RIFLEx runs at any length."""

    def check_model(self, model_cfg: Any) -> None:
        unet = model_cfg.get("unet") or {}
        if model_cfg.get("family") not in ROPE_FAMILIES or (
            model_cfg.get("family") == "cogvideox" and unet.get("use_rotary_positional_embeddings") is False
        ):
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
        n_k = self.n_k if self.n_k is not None else rope_periods(freqs)[j]
        if num_positions <= n_k:
            return freqs
        out = freqs.clone()
        out[j] = self.factor * 2 * math.pi / num_positions
        return out



__all__ = ["ROPE_FAMILIES", "RIFLEx", "intrinsic_index", "rope_periods"]
