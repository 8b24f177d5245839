"""FreeLOC (CVPR 2026; official code Westlake-AGI-Lab/FreeLOC, ``wan/modules/model_freeloc.py`` and
``wan/modules/attention.py``): two per-block treatments of Wan's 3D self-attention, chosen by a layer list.

- **VRPR** (video-based relative position re-encoding): the keys are split into five disjoint tiers by their
  distance to the query (the near window, near past/future, far past/future); each tier is attended with q and k
  rotated at re-encoded temporal RoPE positions (exact near, ``1/group_1`` resolution in the middle band,
  ``1/group_2`` far away, so relative distances stay inside the trained range), and the tiers are merged by
  log-sum-exp — one softmax over all keys whose logits use their tier's positions.
- **TSA** (tiered sparse attention): dense within ``tsa_window_1`` frames, a striped band (keys at nearby raster
  positions) up to ``tsa_window_2`` frames and the first frame's column there, plus two attention sinks (the first
  frame for later queries, the last frames for earlier ones) attended at re-encoded positions; everything else is
  skipped, so it reads fewer keys than dense attention.

The blocks in ``tsa_layers`` get TSA, the others VRPR (the release calls the list ``rope_relative_layers``, but it
selects the TSA blocks). ``official_quirks=true`` reproduces the release's geometry exactly: tier boundaries in
*tokens* rounded up to multiples of 128 (which leaves keys at distance ``window_1 - 1 .. window_1`` frames in no
tier), the first-frame sink of ``ceil(S/128)*128`` tokens, the last-frames sink hard-wired after frame 78, absolute
clipping of far query positions, and VRPR settings only for 41 and 81 latent frames. Without quirks the tiers are
frame-aligned, the sinks are whole frames, and every re-encoded relative distance stays within
``[-clip, clip]`` with its sign (the far resolution grows with the length when needed), at any length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from freelong.attention.context import PositionBias, TemporalAttentionContext
from freelong.attention.lse import Band, KeyTier, tiered_attention
from freelong.attention.processor import TemporalAttnProcessor
from freelong.methods import Method, register_method

# The release's layer list for Wan2.1-T2V-1.3B (30 blocks, 12 heads x 128): these blocks get TSA, the rest VRPR.
OFFICIAL_TSA_LAYERS_1_3B = (0, 1, 4, 6, 7, 9, 10, 11, 13, 14, 15, 16, 18, 22, 23, 24, 25)
WAN_1_3B_SHAPE = {"num_layers": 30, "num_attention_heads": 12, "attention_head_dim": 128}
# The release's VRPR settings per latent length: (window_1, window_2, group_1, group_2).
OFFICIAL_VRPR_SETTINGS = {41: (12, 20, 2, 8), 81: (10, 14, 2, 8)}
OFFICIAL_END_SINK_FRAME = 78  # the release's last-frames sink starts after token ceil(78*S/128)*128


def r128(x: float) -> int:
    """The release's ``round_to_multiple``: ``ceil(x / 128) * 128``."""
    return math.ceil(x / 128) * 128


# ----------------------------------------------------------------------------------------------
# Geometry: key tiers and the temporal positions of each tier's q and k
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TierPositions:
    """A key tier and the per-frame temporal RoPE positions of its queries and keys (None = standard)."""

    tier: KeyTier
    q_pos: tuple[int, ...] | None
    k_pos: tuple[int, ...] | None


def _shifted(frames: int, group: int, offset: float, cap: int | None = None) -> tuple[int, ...]:
    """``trunc(f // group + offset)`` per frame (the release adds a float and truncates), optionally capped."""
    out = [int(f // group + offset) for f in range(frames)]
    return tuple(min(p, cap) for p in out) if cap is not None else tuple(out)


def vrpr_tiers(frames: int, tokens: int, window_1: int, window_2: int, group_1: int, group_2: int, clip: int,
               quirks: bool) -> list[TierPositions]:
    """VRPR's five tiers (near window, near past, near future, far past, far future) with their positions."""
    c1 = window_1 - window_1 / group_1
    c3 = window_2 - window_2 // group_2 - (window_2 - window_1) // group_1
    near_q = _shifted(frames, group_1, c1)
    near_k = _shifted(frames, group_1, 0)
    if quirks:
        diag, w1, w2 = (window_1 - 1) * tokens, r128(tokens * window_1), r128(tokens * window_2)
        bands = [Band(-diag, diag), Band(w1, w2 - 1), Band(-(w2 - 1), -w1), Band(w2, None), Band(None, -w2)]
        far_q, far_k = _shifted(frames, group_2, c3, cap=clip), _shifted(frames, group_2, 0)
    else:
        u = tokens
        bands = [Band(-(window_1 - 1), window_1 - 1, u), Band(window_1, window_2 - 1, u),
                 Band(-(window_2 - 1), -window_1, u), Band(window_2, None, u), Band(None, -window_2, u)]
        g2 = max(group_2, math.ceil((frames - 1) / (clip - c3)))  # farthest key at <= clip, no absolute cap
        far_q, far_k = _shifted(frames, g2, c3), _shifted(frames, g2, 0)
    names = ["diag", "near_past", "near_future", "far_past", "far_future"]
    pos = [(None, None), (near_q, near_k), (near_k, near_q), (far_q, far_k), (far_k, far_q)]
    return [TierPositions(KeyTier(n, (b,)), qp, kp) for n, b, (qp, kp) in zip(names, bands, pos)]


def tsa_tiers(frames: int, tokens: int, window_1: int, window_2: int, sink_group: int, sink_window: int,
              sink_frames: int, end_sink_frames: int, clip: int, quirks: bool) -> list[TierPositions]:
    """TSA's tiers: standard positions (dense window, first-frame column, stripe), first and last-frames sinks."""
    band = (window_2 - window_1) // (window_1 / 2)
    stripe = (band / (window_2 - window_1) * tokens) // 2  # the release's mask_width (tokens of raster distance)
    c = sink_window - sink_window / sink_group
    if quirks:
        d1, d2, sink = r128(tokens * window_1), r128(tokens * window_2), r128(tokens * sink_frames)
        end = r128(tokens * OFFICIAL_END_SINK_FRAME) + 1
        dense = (Band(-d1, d1),)
        column = (Band(d1 + 1, d2, key_hi=sink), Band(-d2, -d1 - 1, key_hi=sink))
        striped = (Band(d1 + 1, d2, key_lo=sink, stripe=stripe), Band(-d2, -d1 - 1, key_lo=sink, stripe=stripe))
        first, last = (Band(d2 + 1, None, key_hi=sink),), (Band(None, -d2 - 1, key_lo=end),)
        first_pos = (_shifted(frames, sink_group, c), _shifted(frames, sink_group, 0))
        last_pos = (_shifted(frames, sink_group, 0), _shifted(frames, sink_group, c))
    else:
        u, n_tok = tokens, frames * tokens
        end = max(0, frames - end_sink_frames) * tokens
        sink = sink_frames * tokens
        dense = (Band(-window_1, window_1, u),)
        column = (Band(window_1 + 1, window_2, u, key_hi=sink), Band(-window_2, -window_1 - 1, u, key_hi=sink))
        striped = (Band(window_1 + 1, window_2, u, key_lo=sink, stripe=stripe),
                   Band(-window_2, -window_1 - 1, u, key_lo=sink, stripe=stripe))
        first = (Band(window_2 + 1, None, u, key_hi=sink_frames * tokens),)
        last = (Band(None, -window_2 - 1, u, key_lo=end, key_hi=n_tok),)
        # sinks: the relative distance grows with the query's distance to the sink at 1/sink_group, capped at clip
        first_pos = (tuple(min(f // sink_group + int(c), clip) for f in range(frames)), (0,) * frames)
        last_pos = (tuple(clip - min((frames - 1 - f) // sink_group + int(c), clip) for f in range(frames)),
                    (clip,) * frames)
    # the standard-position tier (dense window | first-frame column | stripe) as three disjoint parts, so the dense
    # window and the column need no mask
    return [TierPositions(KeyTier("diag", dense), None, None),
            TierPositions(KeyTier("diag_column", column), None, None),
            TierPositions(KeyTier("diag_stripe", striped), None, None),
            TierPositions(KeyTier("sink_first", first), *first_pos),
            TierPositions(KeyTier("sink_last", last), *last_pos)]


@lru_cache(maxsize=32)
def _cached_tiers(kind: str, frames: int, tokens: int, params: tuple) -> tuple[TierPositions, ...]:
    fn = vrpr_tiers if kind == "vrpr" else tsa_tiers
    return tuple(fn(frames, tokens, *params))


# ----------------------------------------------------------------------------------------------
# The processor
# ----------------------------------------------------------------------------------------------
class FreeLOCProcessor(TemporalAttnProcessor):
    """Routes each Wan block to TSA (blocks in ``tsa_layers``) or VRPR; needs the backbone's :class:`FrameRope`."""

    needs_rope = True

    def __init__(self, method: FreeLOC):
        self.method = method

    def kind(self, level: int, q: torch.Tensor) -> str:
        layers = self.method.tsa_layers
        if layers is None:
            heads, d = q.shape[1], q.shape[-1]
            if (heads, d) != (WAN_1_3B_SHAPE["num_attention_heads"], WAN_1_3B_SHAPE["attention_head_dim"]):
                raise ValueError(f"method.tsa_layers must be given: FreeLOC published a layer list only for "
                                 f"Wan2.1-T2V-1.3B (12 heads x 128), this model has {heads} heads x {d}")
            layers = OFFICIAL_TSA_LAYERS_1_3B
        return "tsa" if level in layers else "vrpr"

    def tiers(self, kind: str, frames: int, tokens: int) -> tuple[TierPositions, ...]:
        m = self.method
        if kind == "vrpr":
            params = (*m.vrpr_setting(frames), m.clip, m.official_quirks)
        else:
            params = (m.tsa_window_1, m.tsa_window_2, m.sink_group, m.sink_window, m.sink_frames,
                      m.end_sink_frames, m.clip, m.official_quirks)
        return _cached_tiers(kind, frames, tokens, params)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, bias: PositionBias | None,
                 ctx: TemporalAttentionContext) -> torch.Tensor:
        if ctx.rope is None or bias is not None:
            raise ValueError("method=freeloc re-encodes RoPE positions: it needs a RoPE DiT backbone (Wan)")
        frames, tokens = ctx.frame_shape[0], ctx.tokens_per_frame
        tiers = self.tiers(self.kind(ctx.level, q), frames, tokens)
        qk: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for tp in tiers:
            if tp.q_pos is None:
                qk[tp.tier.name] = (q, k)
            else:
                qp, kp = torch.tensor(tp.q_pos), torch.tensor(tp.k_pos)
                qk[tp.tier.name] = (ctx.rope.q_at(qp).to(q.dtype), ctx.rope.k_at(kp).to(k.dtype))
        merge = torch.bfloat16 if self.method.official_quirks and q.dtype != torch.float32 else None
        return tiered_attention(qk, v, [tp.tier for tp in tiers], tokens, merge_dtype=merge)

    def __repr__(self) -> str:
        return f"FreeLOCProcessor({self.method.describe()})"


# ----------------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------------
@register_method("freeloc")
@dataclass
class FreeLOC(Method):
    """FreeLOC on Wan2.1: VRPR or TSA per block of the transformer."""

    levels = ("attention", "positions")

    tsa_layers: list[int] | None = None
    """Blocks that get TSA (the others get VRPR); null = the release's list for Wan2.1-T2V-1.3B (required otherwise)."""
    vrpr_window_1: int | None = None
    """VRPR: keys within ``vrpr_window_1 - 1`` frames keep their positions; null = the release's value for the
    length (10 at 81 latent frames, 12 at 41)."""
    vrpr_window_2: int | None = None
    """VRPR: the middle band ends at ``vrpr_window_2`` frames (null: 14 at 81, 20 at 41)."""
    vrpr_group_1: int | None = None
    """VRPR: positions in the middle band advance once every ``vrpr_group_1`` frames (null: 2)."""
    vrpr_group_2: int | None = None
    """VRPR: positions in the far band advance once every ``vrpr_group_2`` frames (null: 8)."""
    clip: int = 20
    """Largest re-encoded relative distance, in latent frames (the release's ``vrpr_clip_max``: 21 trained frames)."""
    tsa_window_1: int = 8
    """TSA: dense attention within this many frames (the release's ``window_size_1``)."""
    tsa_window_2: int = 24
    """TSA: striped band and first-frame column up to this many frames (``window_size_2``)."""
    sink_group: int = 8
    """TSA sinks: the re-encoded distance advances once every ``sink_group`` frames (``rope_shift.group_size``)."""
    sink_window: int = 12
    """TSA sinks: offset ``sink_window - sink_window / sink_group`` on the distance (``rope_shift.window_size``)."""
    sink_frames: int = 1
    """TSA: frames at the start that act as the first sink."""
    end_sink_frames: int = 3
    """TSA: frames at the end that act as the last sink (the release: from frame 78, i.e. 3 of 81)."""
    official_quirks: bool = False
    """Reproduce the release exactly: token-level 128-rounded tier bounds (with their gap), token sinks, the sink
    fixed after frame 78, absolute clipping, VRPR settings only for 41/81 latent frames, bf16 merge weights."""
    window: int | None = field(default=None, repr=False)
    """Accepted and ignored (cross-method sweeps vary ``method.window``)."""
    stride: int | None = field(default=None, repr=False)
    """Accepted and ignored."""

    def validate(self) -> None:
        if self.tsa_layers is not None:
            layers = list(self.tsa_layers)
            if any((not isinstance(i, int)) or i < 0 for i in layers) or len(set(layers)) != len(layers):
                raise ValueError(f"method.tsa_layers must be distinct block indices >= 0, got {layers}")
        for key in ("vrpr_window_1", "vrpr_window_2", "vrpr_group_1", "vrpr_group_2"):
            val = getattr(self, key)
            if val is not None and val < 1:
                raise ValueError(f"method.{key} must be null or >= 1, got {val}")
        given = [getattr(self, k) for k in ("vrpr_window_1", "vrpr_window_2", "vrpr_group_1", "vrpr_group_2")]
        if any(g is not None for g in given) and any(g is None for g in given):
            raise ValueError("method.vrpr_window_1/vrpr_window_2/vrpr_group_1/vrpr_group_2: give all four or none")
        if self.vrpr_window_1 is not None:
            self._check_vrpr(self.vrpr_window_1, self.vrpr_window_2, self.vrpr_group_1, self.vrpr_group_2)
        if not 1 <= self.tsa_window_1 < self.tsa_window_2:
            raise ValueError(f"method.tsa_window_1={self.tsa_window_1} must be >= 1 and < method.tsa_window_2="
                             f"{self.tsa_window_2} (windows out of order)")
        if self.tsa_window_1 < 2:
            raise ValueError(f"method.tsa_window_1 must be >= 2 (the stripe width divides by window_1/2), "
                             f"got {self.tsa_window_1}")
        for key in ("sink_group", "sink_window", "sink_frames", "end_sink_frames", "clip"):
            if getattr(self, key) < 1:
                raise ValueError(f"method.{key} must be >= 1, got {getattr(self, key)}")
        if int(self.sink_window - self.sink_window / self.sink_group) > self.clip:
            raise ValueError(f"method.sink_window offset exceeds method.clip={self.clip}")

    def _check_vrpr(self, w1: int, w2: int, g1: int, g2: int) -> None:
        if not 1 <= w1 < w2:
            raise ValueError(f"method.vrpr_window_1={w1} must be >= 1 and < method.vrpr_window_2={w2} "
                             f"(windows out of order)")
        c3 = w2 - w2 // g2 - (w2 - w1) // g1
        if not 0 <= c3 < self.clip:
            raise ValueError(f"method.clip={self.clip} must exceed the far-band offset {c3} of vrpr windows "
                             f"({w1}, {w2}) and groups ({g1}, {g2})")
        if w1 - 1 > self.clip:
            raise ValueError(f"method.vrpr_window_1={w1} keeps distances up to {w1 - 1} > method.clip={self.clip}")

    def vrpr_setting(self, frames: int) -> tuple[int, int, int, int]:
        """``(window_1, window_2, group_1, group_2)`` for ``frames`` latent frames."""
        if self.vrpr_window_1 is not None:
            return self.vrpr_window_1, self.vrpr_window_2, self.vrpr_group_1, self.vrpr_group_2
        if self.official_quirks and frames not in OFFICIAL_VRPR_SETTINGS:
            raise ValueError(f"method.official_quirks=true: the release has VRPR settings only for "
                             f"{sorted(OFFICIAL_VRPR_SETTINGS)} latent frames, got {frames}; give method.vrpr_window_1"
                             f"/vrpr_window_2/vrpr_group_1/vrpr_group_2")
        return OFFICIAL_VRPR_SETTINGS[41 if frames <= 61 else 81]

    def check_frames(self, num_frames: int) -> None:
        """``num_frames``: latent frames. Any length, except the release's two under ``official_quirks``."""
        w1, w2, g1, g2 = self.vrpr_setting(num_frames)
        self._check_vrpr(w1, w2, g1, g2)

    def check_model(self, model_cfg: Any) -> None:
        family, name = model_cfg.get("family"), model_cfg.get("name")
        if family != "wan":
            raise ValueError(f"method=freeloc runs on Wan's 3D self-attention with RoPE (family wan); model {name} "
                             f"is family {family}")
        unet = model_cfg.get("unet") or {}
        blocks = unet.get("num_layers")
        if self.tsa_layers is None:
            shape = {k: unet.get(k) for k in WAN_1_3B_SHAPE}
            if unet and shape != WAN_1_3B_SHAPE:
                raise ValueError(f"method.tsa_layers must be given for model {name} ({blocks} blocks, "
                                 f"{shape['num_attention_heads']} heads x {shape['attention_head_dim']}): FreeLOC "
                                 f"published a layer list only for Wan2.1-T2V-1.3B")
        elif blocks is not None and self.tsa_layers and max(self.tsa_layers) >= int(blocks):
            raise ValueError(f"method.tsa_layers names block {max(self.tsa_layers)}, but model {name} has {blocks} "
                             f"blocks (0..{int(blocks) - 1})")

    def processor(self) -> FreeLOCProcessor:
        return FreeLOCProcessor(self)


__all__ = ["FreeLOC", "FreeLOCProcessor", "OFFICIAL_TSA_LAYERS_1_3B", "OFFICIAL_VRPR_SETTINGS", "TierPositions",
           "r128", "tsa_tiers", "vrpr_tiers"]
