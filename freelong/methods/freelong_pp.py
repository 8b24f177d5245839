"""FreeLong++ (Lu & Yang, arXiv 2507.00162), RECONSTRUCTED from public descriptions — no official code exists.

What is verified (the abstract): several attention branches with windows "from global to local",
fused band by band in the frequency domain ("multi-band SpectralFusion"), and "SpecMix" noise.
Everything else — the window scales, the Nyquist band edges, the sparse-key global branch, the
SpecMix formula — comes from secondary notes (marked unverified; docs/methods.md, FreeLong++)
and every choice the public text leaves open is a parameter (:data:`OPEN_CHOICES`).

Each temporal attention layer computes, from one shared q/k/v, one branch per window: windows
shorter than the video are block-sparse local attention (:func:`freelong.attention.local_attention`),
the widest branch is global attention, over a uniformly spaced subset of key frames when
``sparse_global_keys < 1``. The branches are fused by :func:`freelong.spectral.fuse_branches`:
the widest branch gives the lowest band, the narrowest the highest. Branches whose window already
covers the video are redundant: the first one that covers it is the global branch and any wider
ones (with their bands) are dropped, so at the native length the method is plain attention and
with two branches it is FreeLong.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..attention.context import FramePositions, PositionBias, TemporalAttentionContext
from ..attention.kernels import global_attention, local_attention, sparse_global_attention
from ..attention.lse import nested_window_attention_frames, shares_key_pass
from ..attention.maps import global_attention_probs, local_attention_probs, sparse_global_attention_probs
from ..attention.processor import TemporalAttnProcessor
from ..layout import from_video_view, token_grids, video_view
from ..noise import gaussian_noise, rescheduled_noise
from ..specmix import specmix_noise
from ..spectral import BAND_FILTERS, fuse_branches, fuse_by_axis_filters, lowpass_axis_matrices, lowpass_half
from .base import Method, register_method
from .freelong import BRANCH_INPUTS, BlendSchedule, check_noise_fields, combine_branches

NOISE_KINDS = ("specmix", "freenoise", "random")
# Component-study modes: FreeLong's method.branch (BRANCHES), global = the widest branch, local = the narrowest.
RECONSTRUCTION = ("FreeLong++ reconstructed from public descriptions (arXiv 2507.00162 abstract + secondary notes); "
                  "no official code; open choices are parameters (docs/methods.md, FreeLong++)")
# Choices the public text leaves open, each a parameter of FreeLongPP (recorded with every run).
OPEN_CHOICES = {
    "scales": "window multiples of the native length (notes: {1,2,4} at 4x, {1,2,4,8} at 8x)",
    "bands": "band edges (notes: Nyquist rule, window a*T_native keeps up to 1/(2a))",
    "spatial_bands": "whether the spatial cut-offs follow the temporal ones (default: the same, as FreeLong)",
    "filter": "band transition shape (notes name a Gaussian D0=0.25 in an unclear context)",
    "sparse_global_keys": "fraction and spacing of the global branch's key frames (notes: 50%, uniform)",
    "global_widest": "whether the widest branch attends to every frame",
    "noise_stride": "FreeNoise shuffle block of SpecMix's base noise",
    "specmix_cutoff": "which frequencies SpecMix mixes (notes: 'per frame, in the frequency domain')",
    "blend_steps": "steps with fusion (FreeLong: paper 25 of 50, code all)",
    "local_only_levels": "UNet levels without fusion (FreeLong's code: the highest resolution)",
    "layout": "local window placement at the video's ends",
}






@dataclass(frozen=True)
class BranchPlan:
    """The branches one call runs: ``windows`` narrowest first (``None`` = global) and the edges between them."""

    windows: tuple[int | None, ...]
    edges_t: tuple[float, ...]
    edges_s: tuple[float, ...]


class MultiBandProcessor(TemporalAttnProcessor):
    """Multi-scale attention decoupling + multi-band spectral fusion (one processor serves every layer).

    ``windows``: branch windows in frames, increasing; ``edges_t``/``edges_s``: the boundary between
    branch ``i`` and ``i + 1`` (so decreasing), one per consecutive pair.
    """

    def __init__(
        self,
        windows: tuple[int, ...],
        edges_t: tuple[float, ...],
        edges_s: tuple[float, ...],
        filter: str = "gaussian",
        sparse_global_keys: float = 0.5,
        global_widest: bool = True,
        schedule: BlendSchedule | None = None,
        **schedule_fields: Any,
    ):
        """``schedule`` or its fields as keywords (``branch="sum"``, ``local_only_levels=()``, ...)."""
        self.schedule = schedule or BlendSchedule(**schedule_fields)
        if len(edges_t) != len(windows) - 1 or len(edges_s) != len(windows) - 1:
            raise ValueError(f"{len(windows)} branches need {len(windows) - 1} band edges")
        self.windows = tuple(int(w) for w in windows)
        self.edges_t = tuple(float(e) for e in edges_t)
        self.edges_s = tuple(float(e) for e in edges_s)
        self.filter = filter
        self.sparse_global_keys = float(sparse_global_keys)
        self.global_widest = global_widest

    def plan(self, num_frames: int) -> BranchPlan:
        """Branches up to the first that covers the video (global); with ``global_widest`` the widest is global."""
        windows: list[int | None] = []
        for i, w in enumerate(self.windows):
            if w >= num_frames or (self.global_widest and i == len(self.windows) - 1):
                windows.append(None)
                break
            windows.append(w)
        c = len(windows) - 1
        return BranchPlan(tuple(windows), self.edges_t[:c], self.edges_s[:c])

    def branch(self, q, k, v, bias, window: int | None, sparse: bool, tokens: int = 1,
               positions: FramePositions | None = None) -> torch.Tensor:
        """One branch: local attention over ``window`` frames, or global (on sparse key frames if asked).

        ``positions`` (AnimateDiff): window-local positions for local branches, absolute for global."""
        if window is not None:
            return local_attention(q, k, v, bias, window, self.schedule.layout, tokens_per_frame=tokens,
                                   positions=positions)
        if sparse and self.sparse_global_keys < 1.0:
            return sparse_global_attention(q, k, v, bias, self.sparse_global_keys, tokens, positions)
        return global_attention(q, k, v, bias, positions)

    def runs(self, plan: BranchPlan, ctx: TemporalAttentionContext) -> tuple[list[int], bool]:
        """Which branches of ``plan`` this call computes (indices, narrowest first) and whether it combines them.

        One branch, or a call without fusion: the narrowest alone. Otherwise the branches the mode reads,
        as FreeLong's :data:`~freelong.methods.freelong.BRANCH_INPUTS` with ``local`` = the narrowest and
        ``global`` = the widest; ``blend`` and ``sum`` also read the branches between them.
        """
        last = len(plan.windows) - 1
        if last == 0 or not self.schedule.blends(ctx):
            return [0], False
        needs = BRANCH_INPUTS[self.schedule.branch]
        every = self.schedule.branch in ("blend", "sum")
        idx = [i for i in range(last + 1)
               if every or (i == 0 and "local" in needs) or (i == last and "global" in needs)]
        return idx, True

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, bias: PositionBias | None,
                 ctx: TemporalAttentionContext) -> torch.Tensor:
        tokens = ctx.tokens_per_frame  # S tokens per frame, frame-major (1: UNet temporal attention)
        plan = self.plan(q.shape[-2] // tokens)
        idx, combined = self.runs(plan, ctx)
        if not combined:
            return self.branch(q, k, v, bias, plan.windows[0], sparse=False, tokens=tokens, positions=ctx.positions)
        outs: list[torch.Tensor | None] = [None] * len(plan.windows)
        for i, out in self.shared_branches(q, k, v, bias, plan, idx, ctx).items():
            outs[i] = out
        for i in idx:
            if outs[i] is None:
                outs[i] = self.branch(q, k, v, bias, plan.windows[i], sparse=True, tokens=tokens,
                                      positions=ctx.positions)
        return self.combine(outs, plan, ctx)

    def shared_branches(self, q, k, v, bias, plan: BranchPlan, idx: list[int],
                        ctx: TemporalAttentionContext) -> dict[int, torch.Tensor]:
        """On a DiT, the dense branches of ``idx`` (every local one, the global one unless its keys are sparse)
        in one pass over the keys (:func:`~freelong.attention.lse.nested_window_attention_frames`); ``{}``
        where that does not apply (UNet temporal attention, position biases, no fused kernel)."""
        dense = [i for i in idx if plan.windows[i] is not None or self.sparse_global_keys >= 1.0]
        if len(dense) < 2 or not shares_key_pass(q, bias, ctx):
            return {}
        outs = nested_window_attention_frames(q, k, v, [plan.windows[i] for i in dense], self.schedule.layout,
                                              ctx.tokens_per_frame)
        return dict(zip(dense, outs))

    def combine(self, outs: list[torch.Tensor | None], plan: BranchPlan, ctx: TemporalAttentionContext) -> torch.Tensor:
        """The call's output from its branch outputs (narrowest first, None = not computed), per ``branch``.

        FreeLong's :func:`~freelong.methods.freelong.combine_branches` with global = the widest branch, local =
        the narrowest and ``blend(g, l)`` = the multi-band fusion of ``[l, middle..., g]``; ``low_global`` /
        ``high_local`` fuse with every other branch zero (the widest's lowest band / the narrowest's highest
        band). ``sum`` is the mean of *every* branch (with two, FreeLong's mean of two).
        """
        if self.schedule.branch == "sum":
            return torch.stack([o.float() for o in outs]).mean(0).to(outs[0].dtype)

        def blend(g: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
            middle = [m if m is not None else torch.zeros_like(g) for m in outs[1:-1]]
            return self.fuse([lo, *middle, g], plan, ctx)

        return combine_branches(self.schedule.branch, outs[-1], outs[0], blend)

    def attention_probs(
        self, q: torch.Tensor, k: torch.Tensor, bias: PositionBias | None, ctx: TemporalAttentionContext
    ) -> dict[str, torch.Tensor]:
        """The ``(rows, heads, T*S, T*S)`` attention matrices of the branches this call runs.

        Keys: ``window<w>`` for local branches, ``global`` for the global one (zero outside its key frames
        when they are sparse). With ``S = tokens_per_frame > 1`` (a DiT) the frame masks hold for every
        token pair of their frames. The fusion mixes branch *outputs* across frequencies, so a fusing call
        has one map per branch and no single matrix. With ``ctx.positions`` each map adds the offsets its
        branch sees (window-local for local branches, absolute for the global one).
        """
        tokens = ctx.tokens_per_frame
        num_frames = q.shape[-2] // tokens
        plan = self.plan(num_frames)
        idx, sparse = self.runs(plan, ctx)
        pos = ctx.positions
        out = {}
        for i in idx:
            w = plan.windows[i]
            if w is not None:
                out[f"window{w}"] = local_attention_probs(q, k, bias, w, self.schedule.layout, tokens, pos)
            elif sparse and self.sparse_global_keys < 1.0:
                out["global"] = sparse_global_attention_probs(q, k, bias, self.sparse_global_keys, tokens, pos)
            else:
                out["global"] = global_attention_probs(q, k, bias, tokens, pos)
        return out

    def fuse(self, outs: list[torch.Tensor], plan: BranchPlan, ctx: TemporalAttentionContext) -> torch.Tensor:
        """Fuse ``(rows, heads, T*S, d)`` branch outputs (narrowest first) over the video's (T, H, W) axes."""
        shape = ctx.frame_shape
        tokens = ctx.tokens_per_frame
        if tokens > 1:  # a DiT: factorising band filters as per-axis matrix products (spectral.fuse_by_axis_filters)
            mats = [lowpass_axis_matrices(self.filter, shape, et, es, outs[0].device)
                    for et, es in zip(plan.edges_t, plan.edges_s)]
            if mats and all(m is not None for m in mats):
                grids, back = token_grids(outs, shape)
                return back(fuse_by_axis_filters(grids, mats))
        lows = [lowpass_half(self.filter, shape, et, es, outs[0].device) for et, es in zip(plan.edges_t, plan.edges_s)]
        fused = fuse_branches([video_view(o, shape, tokens) for o in outs], lows)
        return from_video_view(fused, tokens)

    def __repr__(self) -> str:
        return (f"MultiBandProcessor(windows={list(self.windows)}, edges_t={list(self.edges_t)}, "
                f"edges_s={list(self.edges_s)}, filter={self.filter}, sparse_global_keys={self.sparse_global_keys}, "
                f"global_widest={self.global_widest}, {self.schedule})")


@register_method("freelong_pp")
@dataclass
class FreeLongPP(Method):
    """FreeLong++, reconstructed (see the module docstring and the FreeLong++ section of docs/methods.md).

    Every choice the public text leaves open is a field (:data:`OPEN_CHOICES`); `branch` runs FreeLong's
    component-study modes (:meth:`MultiBandProcessor.combine`) with global = the widest branch and local = the
    narrowest.
    """

    levels = ("attention", "initial noise")

    scales: list[float] | None = field(default_factory=lambda: [1.0, 2.0, 4.0])
    """Branch windows as multiples of the backbone's native length (`native_frames`), increasing; the widest is
    global. `null` (and no `windows`): powers of two up to the video length (the notes' {1, 2, 4} at 4x,
    {1, 2, 4, 8} at 8x)."""
    windows: list[int] | None = None
    """Branch windows in frames, increasing (replaces `scales` when set)."""
    bands: list[float] | None = None
    """Increasing band edges in normalised frequency (1 = Nyquist), one per pair of neighbouring branches,
    widest pair first. `null`: the notes' Nyquist rule, window a × native keeps up to 1/(2a) (`[0.125, 0.25]` for
    scales `[1, 2, 4]`)."""
    spatial_bands: list[float] | None = None
    """Spatial cut-offs of the same edges (`null`: equal to `bands`, an isotropic filter like FreeLong's)."""
    filter: str = "gaussian"
    """Band transitions: `gaussian`, `butterworth` (order 4) or `ideal`; the band weights sum to one in every
    frequency bin (the notes name a "Gaussian, D0 = 0.25" in an unclear context)."""
    sparse_global_keys: float = 0.5
    """Fraction of frames, uniformly spaced with the first and last included, kept as keys of the global branch
    (notes: 50 %); `1.0` is dense. Only with more than one branch."""
    global_widest: bool = True
    """The widest branch attends to every frame (its window must then cover the video); `false`: it is local
    too."""
    noise: str = "specmix"
    """Initial noise: `specmix` (a FreeNoise base with window `native_frames` and stride `noise_stride`, mixed
    with fresh noise towards the ends), `freenoise` (window = the native length) or `random`."""
    noise_stride: int = 4
    """FreeNoise shuffle block of SpecMix's base noise, in [1, native_frames]."""
    specmix_cutoff: float | None = None
    """SpecMix mixes every frequency (`null`), or only spatial frequencies ≥ this radius in (0, 1] (lower ones
    keep the base)."""
    blend_steps: int | None = None
    """As FreeLong's: `null` fuses at every step; `n` fuses during the first n steps, then the narrowest branch
    runs alone."""
    local_only_levels: list[int] = field(default_factory=lambda: [0])
    """As FreeLong's: UNet levels (0 = highest resolution) that run the narrowest branch alone; use `[]` on a
    DiT."""
    layout: str = "adjusted"
    """As FreeLong's: local windows at the video's ends, `adjusted` (LaVie code) or `centered` (VideoCrafter2
    code)."""
    multi_prompt_noise: str = "random"
    """Noise used instead of `noise` for multi-prompt videos."""
    branch: str = "blend"
    """Component study: `blend` fuses the bands; `global` / `local` run the widest / narrowest branch alone;
    `sum` is the plain mean of all branches; `low_global` / `high_local` keep only the widest branch's lowest
    band / the narrowest branch's highest band. One branch (the native length) runs alone in every mode."""
    native_frames: int | None = None
    """The backbone's native length (latent frames on a DiT); `null` is filled in from the model
    (`Method.with_native_frames`)."""

    # -- parameters ---------------------------------------------------------------------------
    def validate(self) -> None:
        if self.native_frames is not None and self.native_frames < 1:
            raise ValueError(f"method.native_frames must be null (the backbone's) or >= 1, got {self.native_frames}")
        if self.windows is not None:
            ws = list(self.windows)
            if not ws or any(int(w) != w or w < 1 for w in ws):
                raise ValueError(f"method.windows must be a non-empty list of frame counts >= 1, got {ws}")
            _increasing("method.windows", ws)
        elif self.scales is not None:
            sc = list(self.scales)
            if not sc or any(s <= 0 for s in sc):
                raise ValueError(f"method.scales must be a non-empty list of positive multiples, got {sc}")
            _increasing("method.scales", sc)
        count = self._branch_count()
        for key in ("bands", "spatial_bands"):
            edges = getattr(self, key)
            if edges is None:
                continue
            edges = list(edges)
            if count is not None and len(edges) != count - 1:
                raise ValueError(f"method.{key} needs {count - 1} edge(s) for {count} branches, got {edges}")
            if any(not (0 < e <= 1) for e in edges):
                raise ValueError(f"method.{key} edges must be in (0, 1] (1 = Nyquist), got {edges}")
            _increasing(f"method.{key}", edges, strict=key == "bands")
        if count is None and self.bands is not None:
            raise ValueError("method.bands must be null (the Nyquist rule) with scales=null, whose branch count "
                             "depends on the video length; list the scales to set bands")
        if self.bands is None and self.spatial_bands is not None:
            raise ValueError("method.spatial_bands needs explicit method.bands (the temporal edges)")
        if self.filter not in BAND_FILTERS:
            raise ValueError(f"method.filter must be one of {', '.join(BAND_FILTERS)}, got {self.filter!r}")
        if not (0 < self.sparse_global_keys <= 1):
            raise ValueError(f"method.sparse_global_keys must be in (0, 1], got {self.sparse_global_keys}")
        if self.noise_stride < 1 or (self.native_frames is not None and self.noise_stride > self.native_frames):
            raise ValueError(f"method.noise_stride must be in [1, native_frames={self.native_frames}], "
                             f"got {self.noise_stride}")
        if self.specmix_cutoff is not None and not (0 < self.specmix_cutoff <= 1):
            raise ValueError(f"method.specmix_cutoff must be null or in (0, 1], got {self.specmix_cutoff}")
        BlendSchedule.of(self)
        check_noise_fields(self, NOISE_KINDS)
        if self.native_frames is not None and self.scales is not None and self.windows is None:
            self._windows_from_scales(list(self.scales))  # distinct whole-frame windows

    def _branch_count(self) -> int | None:
        if self.windows is not None:
            return len(self.windows)
        return None if self.scales is None else len(self.scales)

    def _windows_from_scales(self, scales: list[float]) -> list[int]:
        native = self._native()
        windows = [max(1, round(s * native)) for s in scales]
        if any(b <= a for a, b in zip(windows, windows[1:])) or min(s * native for s in scales) < 1:
            raise ValueError(
                f"method.scales={scales} x native {native} frames gives windows {windows}: more branches than the "
                f"frame count allows (each branch needs a distinct window of at least one frame)")
        return windows

    def _native(self) -> int:
        if self.native_frames is None:
            raise ValueError("freelong_pp needs the backbone's native length: run it through LongVideoPipeline "
                             "(which fills it in) or set method.native_frames")
        return int(self.native_frames)

    def with_native_frames(self, native_frames: int | None) -> FreeLongPP:
        if self.native_frames is not None or native_frames is None:
            return self
        return dataclasses.replace(self, native_frames=int(native_frames))

    def resolved_windows(self, num_frames: int) -> list[int]:
        """Branch windows in frames at a video length (``scales: null``: 1, 2, 4, ... x native until it covers)."""
        if self.windows is not None:
            return [int(w) for w in self.windows]
        if self.scales is not None:
            return self._windows_from_scales(list(self.scales))
        native = self._native()
        n = max(0, math.ceil(math.log2(max(num_frames, 1) / native) - 1e-9))
        return [native * 2**i for i in range(n + 1)]

    def resolved_scales(self, windows: list[int]) -> list[float]:
        return [w / self._native() for w in windows]

    def resolved_edges(self, windows: list[int]) -> tuple[list[float], list[float]]:
        """Edges between neighbouring branches, narrowest pair first (i.e. decreasing)."""
        if self.bands is not None:
            edges_t = list(reversed([float(e) for e in self.bands]))
            edges_s = list(reversed([float(e) for e in (self.spatial_bands or self.bands)]))
        else:  # Nyquist rule: the boundary between branches i and i+1 is where branch i+1's band ends
            edges_t = [min(1.0, 1 / (2 * a)) for a in self.resolved_scales(windows)[1:]]
            edges_s = list(edges_t)
        return edges_t, edges_s

    def check_frames(self, num_frames: int) -> None:
        if self.native_frames is None and self.windows is None:
            return  # checked again once the backbone's native length is known (the pipeline binds it)
        windows = self.resolved_windows(num_frames)
        if self.global_widest and windows[-1] < num_frames:
            key = "method.windows" if self.windows is not None else "method.scales"
            raise ValueError(
                f"{key}: the widest branch ({windows[-1]} frames) is meant to be global but the video has "
                f"{num_frames} frames; add a wider branch, set scales=null (powers of two up to the length), "
                f"or global_widest=false")

    def params(self) -> dict[str, Any]:
        return {**super().params(), "reconstruction": RECONSTRUCTION, "open_choices": sorted(OPEN_CHOICES)}

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in super().params().items())
        return f"{self.name}({args}) [reconstruction]"

    # -- behaviour ----------------------------------------------------------------------------
    def processor(self, num_frames: int | None = None) -> MultiBandProcessor:
        """The processor; windows resolved for ``num_frames`` (needed only for ``scales: null``)."""
        if self.windows is None and self.scales is None and num_frames is None:
            num_frames = 2**20  # every power of two a video could need; plan() drops those beyond it
        windows = self.resolved_windows(num_frames or 0)
        edges_t, edges_s = self.resolved_edges(windows)
        return MultiBandProcessor(
            windows=tuple(windows),
            edges_t=tuple(edges_t),
            edges_s=tuple(edges_s),
            filter=self.filter,
            sparse_global_keys=self.sparse_global_keys,
            global_widest=self.global_widest,
            schedule=BlendSchedule.of(self),
        )

    def for_multi_prompt(self) -> FreeLongPP:
        return dataclasses.replace(self, noise=self.multi_prompt_noise)

    def init_noise(self, shape, generator=None, dtype=torch.float32):
        if self.noise == "random":
            return gaussian_noise(shape, generator=generator, dtype=dtype)
        window = self._native()
        if self.noise == "freenoise":
            return rescheduled_noise(shape, window=window, stride=self.noise_stride, generator=generator, dtype=dtype)
        return specmix_noise(shape, window=window, stride=self.noise_stride, generator=generator, dtype=dtype,
                             cutoff=self.specmix_cutoff)


def _increasing(key: str, values: list[float], strict: bool = True) -> None:
    bad = any((b <= a) if strict else (b < a) for a, b in zip(values, values[1:]))
    if bad:
        raise ValueError(f"{key} must be {'strictly increasing' if strict else 'non-decreasing'}, got {values}")


__all__ = ["OPEN_CHOICES", "FreeLongPP", "MultiBandProcessor"]
