"""FreeLong: SpectralBlend temporal attention (Lu et al., NeurIPS 2024).

Each temporal attention layer computes a global branch (all frames) and a local branch (each
frame attends to a ``window``-frame neighbourhood, :func:`~freelong.attention.local_window_mask`)
from the same q, k, v, then blends them with a 3D FFT over (frames, height, width): low
frequencies from the global branch (long-range consistency), high frequencies from the local
branch (detail and motion). Attention outputs are blended before the output projection; the
projection is affine per token, so this equals blending the projected outputs (and, with the
residual added on both streams, VideoCrafter2's ``combine(x + A, x + A_local)``).

``branch`` selects how the two branches are combined, for the paper's component study (Fig. 6);
see :func:`combine_branches`. ``blend`` (the default) is FreeLong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..attention.context import PositionBias, TemporalAttentionContext
from ..attention.kernels import global_attention, local_attention
from ..attention.lse import global_and_local_attention_frames, shares_key_pass
from ..attention.maps import global_attention_probs, local_attention_probs
from ..attention.processor import TemporalAttnProcessor
from ..attention.windows import WINDOW_LAYOUTS, check_window_stride
from ..layout import token_grids
from ..noise import gaussian_noise, rescheduled_noise
from ..spectral import (
    FILTERS,
    blend_with_axis_filters,
    blend_with_rfft_filter,
    cached_axis_filters,
    cached_rfft_filter,
)
from .base import Method, register_method

NOISE_KINDS = ("freenoise", "random")
BRANCHES = ("blend", "global", "local", "sum", "low_global", "high_local")
# Which branches each mode reads (the others are not computed).
BRANCH_INPUTS = {"blend": ("global", "local"), "global": ("global",), "local": ("local",),
                 "sum": ("global", "local"), "low_global": ("global",), "high_local": ("local",)}


def combine_branches(
    mode: str,
    glob: torch.Tensor | None,
    local: torch.Tensor | None,
    blend: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Combine the global and local branch outputs as ``mode`` says (FreeLong's Fig. 6 ablation).

    With ``L`` the 3D (T, H, W) low-pass of the spectral filter and ``blend(g, l) = L(g) + (1 - L)(l)``:

    * ``blend``: ``L(global) + (1 - L)(local)``, FreeLong.
    * ``global`` / ``local``: one branch unchanged.
    * ``sum``: ``(global + local) / 2``, the *mean*, not the literal sum. Each branch is a convex
      combination of value rows (row-stochastic attention), and so is their mean, so it keeps the scale
      of one attention output. The literal sum doubles what reaches the output projection and the
      residual stream, a scale error that degrades any backbone by itself and would confound what the
      paper's comparison is about (an all-frequency mix carries the global branch's degraded high
      frequencies). The mean is the all-pass counterpart of the blend: ``P = 1/2`` at every frequency.
    * ``low_global``: ``L(global)`` = ``blend(global, 0)``; ``high_local``: ``(1 - L)(local)`` =
      ``blend(0, local)``. Both go through ``blend`` so they follow whatever layout it handles, and
      ``low_global + high_local`` equals ``blend`` up to fp32 rounding (the filter is linear).
    """
    if mode == "blend":
        return blend(glob, local)
    if mode == "global":
        return glob
    if mode == "local":
        return local
    if mode == "sum":
        return ((glob.float() + local.float()) / 2).to(local.dtype)
    if mode == "low_global":
        return blend(glob, torch.zeros_like(glob))
    if mode == "high_local":
        return blend(torch.zeros_like(local), local)
    raise ValueError(f"branch mode must be one of {', '.join(BRANCHES)}, got {mode!r}")


@dataclass(frozen=True)
class BlendSchedule:
    """Where and how a blending method blends; FreeLong and FreeLong++ share this one value.

    ``blend_steps``: blend during the first ``blend_steps`` denoising steps, then the narrowest branch alone
    (None: every step); ``local_only_levels``: UNet resolution levels that run the narrowest branch alone;
    ``layout``: where local windows sit at the video's ends (:data:`~freelong.attention.windows.WINDOW_LAYOUTS`);
    ``branch``: how the branches are combined where the method blends (:func:`combine_branches`).
    """

    blend_steps: int | None = None
    local_only_levels: tuple[int, ...] = (0,)
    layout: str = "adjusted"
    branch: str = "blend"

    def __post_init__(self) -> None:
        object.__setattr__(self, "local_only_levels", tuple(int(lv) for lv in self.local_only_levels))
        if self.blend_steps is not None and self.blend_steps < 0:
            raise ValueError(f"method.blend_steps must be null or >= 0, got {self.blend_steps}")
        if any(lv < 0 for lv in self.local_only_levels):
            raise ValueError(f"method.local_only_levels must be UNet levels >= 0, got {list(self.local_only_levels)}")
        if self.layout not in WINDOW_LAYOUTS:
            raise ValueError(f"method.layout must be one of {', '.join(WINDOW_LAYOUTS)}, got {self.layout!r}")
        if self.branch not in BRANCHES:
            raise ValueError(f"method.branch must be one of {', '.join(BRANCHES)}, got {self.branch!r}")

    @classmethod
    def of(cls, method: Any) -> BlendSchedule:
        """The schedule of a method with the four fields (FreeLong, FreeLong++)."""
        return cls(method.blend_steps, tuple(method.local_only_levels), method.layout, method.branch)

    def blends(self, ctx: TemporalAttentionContext) -> bool:
        """Whether this call combines the branches (else: the narrowest branch alone)."""
        if ctx.level in self.local_only_levels:
            return False
        return self.blend_steps is None or ctx.step_index is None or ctx.step_index < self.blend_steps

    def __str__(self) -> str:
        return (f"blend_steps={self.blend_steps}, local_only_levels={list(self.local_only_levels)}, "
                f"layout={self.layout}, branch={self.branch}")


def check_noise_fields(method: Any, noise_kinds: tuple[str, ...]) -> None:
    """``method.noise`` and ``method.multi_prompt_noise`` name one of ``noise_kinds``."""
    for key in ("noise", "multi_prompt_noise"):
        if getattr(method, key) not in noise_kinds:
            raise ValueError(f"method.{key} must be one of {', '.join(noise_kinds)}, got {getattr(method, key)!r}")


class SpectralBlendProcessor(TemporalAttnProcessor):
    """Global/local attention decoupling + spectral blending (one processor serves every layer)."""

    def __init__(self, window: int = 16, d_s: float = 0.25, d_t: float = 0.25, filter: str = "gaussian",
                 schedule: BlendSchedule | None = None, **schedule_fields: Any):
        """``schedule`` or its fields as keywords (``branch="sum"``, ``local_only_levels=()``, ...)."""
        self.schedule = schedule or BlendSchedule(**schedule_fields)
        self.window = window
        self.d_s = d_s
        self.d_t = d_t
        self.filter = filter

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, bias: PositionBias | None,
                 ctx: TemporalAttentionContext) -> torch.Tensor:
        num_frames = q.shape[-2] // ctx.tokens_per_frame
        pos = ctx.positions  # additive frame positions (AnimateDiff); None elsewhere
        if self.window >= num_frames:  # the local window already covers every frame
            glob = global_attention(q, k, v, bias, pos)
            plain = self.schedule.branch in ("blend", "global", "local", "sum")
            return glob if plain else self.combine(glob, glob, ctx)
        if not self.schedule.blends(ctx):
            return local_attention(q, k, v, bias, self.window, self.schedule.layout,
                                   tokens_per_frame=ctx.tokens_per_frame, positions=pos)
        needs = BRANCH_INPUTS[self.schedule.branch]
        if len(needs) == 2 and shares_key_pass(q, bias, ctx):  # a DiT: one pass over the keys serves both branches
            glob, local = global_and_local_attention_frames(q, k, v, self.window, self.schedule.layout,
                                                            ctx.tokens_per_frame)
            return self.combine(glob, local, ctx)
        glob = global_attention(q, k, v, bias, pos) if "global" in needs else None
        local = (local_attention(q, k, v, bias, self.window, self.schedule.layout,
                                 tokens_per_frame=ctx.tokens_per_frame, positions=pos) if "local" in needs else None)
        return self.combine(glob, local, ctx)

    def combine(self, glob: torch.Tensor | None, local: torch.Tensor | None,
                ctx: TemporalAttentionContext) -> torch.Tensor:
        """The call's output from its branch outputs, per the schedule's ``branch`` (:func:`combine_branches`)."""
        return combine_branches(self.schedule.branch, glob, local, lambda g, lo: self.blend(g, lo, ctx))

    def attention_probs(
        self, q: torch.Tensor, k: torch.Tensor, bias: PositionBias | None, ctx: TemporalAttentionContext
    ) -> dict[str, torch.Tensor]:
        """The branch maps this call uses: ``global`` (all frames) and/or ``local`` (the window softmax).

        The spectral blend mixes the branches' *outputs* across space and time, so a blending call has
        no single attention matrix; it reports the maps its mode reads (both for ``blend``). A call that
        runs local-only reports ``local`` only; with ``window >= T`` both branches are global attention.
        With ``ctx.positions`` the maps add the offsets each branch sees (absolute / window-local).
        """
        s, pos = ctx.tokens_per_frame, ctx.positions
        if self.window >= q.shape[-2] // s:
            glob = global_attention_probs(q, k, bias, s, pos)
            return {"global": glob, "local": glob}
        needs = BRANCH_INPUTS[self.schedule.branch] if self.schedule.blends(ctx) else ("local",)
        out = {}
        if "global" in needs:
            out["global"] = global_attention_probs(q, k, bias, s, pos)
        if "local" in needs:
            out["local"] = local_attention_probs(q, k, bias, self.window, self.schedule.layout, s, pos)
        return out

    def blend(self, glob: torch.Tensor, local: torch.Tensor, ctx: TemporalAttentionContext) -> torch.Tensor:
        """Blend ``(B*H*W, heads, T, d)`` branch outputs over the video's (T, H, W) axes.

        With ``tokens_per_frame = H*W`` (a DiT: ``(B, heads, T*H*W, d)``, frame-major) the same video
        is the view ``(B, heads, T, H, W, d)``.
        """
        t, h, w = ctx.frame_shape
        if ctx.tokens_per_frame > 1:
            if ctx.tokens_per_frame != h * w:
                raise ValueError(f"tokens_per_frame={ctx.tokens_per_frame} != H*W of frame_shape {ctx.frame_shape}")
            b, heads, _, d = glob.shape
            mats = self.axis_filters((t, h, w), glob.device)
            if mats is not None:  # a factorising filter: three small matmuls instead of the 3D FFT pair
                (grid_glob, grid_local), back = token_grids([glob, local], (t, h, w))
                return back(blend_with_axis_filters(grid_glob, grid_local, mats))
            half = self.half_filter((t, h, w), glob.device)[None, None, :, :, :, None]  # (1,1,T,H,W',1)
            out = blend_with_rfft_filter(
                glob.view(b, heads, t, h, w, d), local.view(b, heads, t, h, w, d), half, dims=(2, 3, 4)
            )
            return out.view(b, heads, t * h * w, d)
        rows, heads, _, d = glob.shape
        b = rows // (h * w)
        half = self.half_filter((t, h, w), glob.device).permute(1, 2, 0)[None, :, :, None, :, None]  # (1,H,W',1,T,1)
        out = blend_with_rfft_filter(
            glob.reshape(b, h, w, heads, t, d), local.reshape(b, h, w, heads, t, d), half, dims=(4, 1, 2)
        )
        return out.reshape(rows, heads, t, d)

    def half_filter(self, shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        """The rfft-domain low-pass ``(T, H, W//2+1)`` for a video shape (built once per shape and device)."""
        return cached_rfft_filter(self.filter, shape, self.d_s, self.d_t, str(device))

    def axis_filters(self, shape: tuple[int, int, int], device: torch.device):
        """The low-pass as per-axis matrices when it factorises, else ``None`` (:func:`axis_filter_matrices`)."""
        return cached_axis_filters(self.filter, shape, self.d_s, self.d_t, str(device))

    def __repr__(self) -> str:
        return (
            f"SpectralBlendProcessor(window={self.window}, d_s={self.d_s}, d_t={self.d_t}, filter={self.filter}, "
            f"{self.schedule})"
        )


@register_method("freelong")
@dataclass
class FreeLong(Method):
    """FreeLong with the official (released) code's defaults: SpectralBlend of a global and a local branch.

    ``branch`` (the Fig. 6 ablation, :func:`combine_branches`) changes the combination wherever FreeLong
    blends; the calls it runs local-only (``local_only_levels``, steps after ``blend_steps``) stay local in
    every mode, so the variants differ only in how the branches are combined.
    """

    levels = ("attention", "initial noise")

    window: int = 16
    """Local attention window in frames (latent frames on a DiT): each frame attends to a `window`-frame
    neighbourhood in the local branch."""
    d_s: float = 0.25
    """Spatial cut-off of the low-pass filter, in (0, 1] (a fraction of Nyquist)."""
    d_t: float = 0.25
    """Temporal cut-off of the low-pass filter, in (0, 1] (a fraction of Nyquist)."""
    filter: str = "gaussian"
    """Low-pass shape: `gaussian` exp(-½[(t/d_t)² + (h/d_s)² + (w/d_s)²]), `butterworth` 1/(1 + r^8),
    `ideal` (r ≤ 1) or `box` (|t| ≤ d_t, |h|, |w| ≤ d_s)."""
    blend_steps: int | None = None
    """`null`: blend at every denoising step (released code); `n`: blend during the first n steps, then the
    local branch only (the paper: τ = 25 of 50)."""
    local_only_levels: list[int] = field(default_factory=lambda: [0])
    """UNet resolution levels (0 = highest; block indices on a DiT) that run the local branch only and skip the
    global one (released code: `[0]`); `[]` blends everywhere."""
    noise: str = "freenoise"
    """Initial noise: `freenoise` (FreeNoise's shuffled noise with window `window` and stride `noise_stride`;
    the paper, single prompt) or `random` (i.i.d.)."""
    noise_stride: int = 4
    """FreeNoise shuffle block size of the initial noise, in [1, window]."""
    layout: str = "adjusted"
    """Local window at the video's ends: `adjusted` keeps exactly `window` frames (official LaVie code),
    `centered` truncates it, |i − j| ≤ window/2 (official VideoCrafter2 code; `method=freelong_vc2`)."""
    multi_prompt_noise: str = "random"
    """Noise used instead of `noise` for multi-prompt videos (the paper: `random`; `freenoise` keeps the
    shuffle)."""
    branch: str = "blend"
    """How the branches are combined: `blend` (FreeLong) or a Fig. 6 ablation variant: `global`, `local`,
    `sum` (their mean), `low_global` (low frequencies of the global branch), `high_local` (high frequencies of
    the local branch)."""

    def validate(self) -> None:
        check_window_stride(self.window, self.noise_stride, "noise_stride")
        for key in ("d_s", "d_t"):
            val = getattr(self, key)
            if not (0 < val <= 1):
                raise ValueError(f"method.{key} must be in (0, 1], got {val}")
        if self.filter not in FILTERS:
            raise ValueError(f"method.filter must be one of {', '.join(FILTERS)}, got {self.filter!r}")
        BlendSchedule.of(self)
        check_noise_fields(self, NOISE_KINDS)

    def processor(self) -> SpectralBlendProcessor:
        return SpectralBlendProcessor(self.window, self.d_s, self.d_t, self.filter, BlendSchedule.of(self))

    def for_multi_prompt(self) -> FreeLong:
        """Multi-prompt videos use ``multi_prompt_noise`` (random noise, as the paper) instead of ``noise``."""
        return dataclasses.replace(self, noise=self.multi_prompt_noise)

    def init_noise(self, shape, generator=None, dtype=torch.float32):
        if self.noise == "freenoise":
            return rescheduled_noise(
                shape, window=self.window, stride=self.noise_stride, generator=generator, dtype=dtype
            )
        return gaussian_noise(shape, generator=generator, dtype=dtype)
