"""FreeLong's two branches on a DiT for the price of one: attention over key partitions, merged by log-sum-exp.

On a DiT the local window of a query frame is a contiguous token range *inside* the keys the global
branch reads. Softmax attention over a union of disjoint key sets is the merge of the attention over
each set, weighted by their log-sum-exps:

    attn(q, K1 ∪ K2) = w1 * attn(q, K1) + w2 * attn(q, K2),  w_i = exp(lse_i - logaddexp(lse_1, lse_2)),

with ``lse_i = log Σ_{k in K_i} exp(q·k * scale)`` (the identity behind flash attention's online softmax
and ring attention). So the keys can be cut into tiles, each attended once, and every branch merges
the tiles it needs. For a block of query frames, :func:`window_tiles` cuts the keys into rectangles that
lie inside every query frame's window or outside it: the keys every frame of the block has in its window
(the core), the keys none has, and the staircase at the windows' edges cut again with the query frames
halved. The local branch merges the inside tiles, the global branch that result and the outside tiles.
Every query-key pair is attended exactly once, by unmasked kernel calls, so FreeLong costs one full
attention plus the merges instead of ``1 + window / T`` (:func:`global_and_local_attention_frames`;
``docs/performance.md`` §9).

Every call uses the SDPA kernel that also returns the log-sum-exp (the CPU flash kernel; on CUDA the
flash kernel in half precision, the memory-efficient one in fp32, as PyTorch's context-parallel
attention calls them). A kernel is used only after it reproduced the explicit definition on a small
problem on that device and dtype (:func:`fused_lse_ok`); otherwise callers fall back to computing the
branches separately.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from .context import TemporalAttentionContext
from .kernels import joint_keys_active
from .windows import frames_of_tokens, local_window_bounds

# Query tokens per kernel call: the CPU flash kernel tiles queries by 256 from 768 on, and shorter
# blocks (one 112-token frame: tiles of 32) run up to 1.7x slower per FLOP; query frames are grouped to reach it.
QUERY_BLOCK_TOKENS = 1024

_CHECKED: dict[tuple[str, int | None, torch.dtype], bool] = {}


def math_attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(softmax(q kᵀ / sqrt(d) + log mask) v, logsumexp)`` explicitly in fp32 (the definition).

    ``mask`` is boolean, True where attending is allowed; every query row needs at least one key.
    Quadratic memory: for short key ranges and checks.
    """
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(logits, dim=-1)
    out = torch.matmul(torch.exp(logits - lse[..., None]), v.float())
    return out.to(v.dtype), lse


def _fused_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, lse)`` of unmasked attention from the device's fused SDPA kernel."""
    if q.device.type in ("cpu", "meta"):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False)[:2]
        return out, lse
    if q.device.type == "cuda":
        if q.dtype in (torch.float16, torch.bfloat16):
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False)[:2]
        else:  # fp32: the memory-efficient kernel
            out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True)[:2]
        return out, lse[..., : q.shape[-2]]  # the efficient kernel pads the query axis to a multiple of 32
    raise NotImplementedError(f"no fused log-sum-exp attention kernel on {q.device.type}")


def fused_lse_ok(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the fused kernel reproduces :func:`math_attention_with_lse` here (checked once, cached).

    ``meta`` (memory estimates, nothing computed) is taken as available.
    """
    device = torch.device(device)
    if device.type == "meta":
        return True
    key = (device.type, device.index, dtype)
    if key not in _CHECKED:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(2, 3, 40, 64, generator=g).to(device=device, dtype=dtype) for _ in range(3))
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        try:
            out, lse = _fused_call(q, k[:, :, :33], v[:, :, :33])  # unequal query and key lengths
            ref_out, ref_lse = math_attention_with_lse(q, k[:, :, :33], v[:, :, :33])
            ok = (tuple(lse.shape) == tuple(ref_lse.shape)
                  and torch.allclose(lse.float(), ref_lse, atol=tol, rtol=tol)
                  and torch.allclose(out.float(), ref_out.float(), atol=tol, rtol=tol))
        except (RuntimeError, NotImplementedError, TypeError):
            ok = False
        if not ok:
            warnings.warn(f"no fused log-sum-exp attention on {device} in {dtype}: FreeLong computes its global and "
                          "local branches separately (same result, about window/T more attention work)", stacklevel=2)
        _CHECKED[key] = ok
    return _CHECKED[key]


def shares_key_pass(q: torch.Tensor, bias, ctx: TemporalAttentionContext) -> bool:
    """Whether a call's window branches can come from one pass over the keys: a DiT's frame-major tokens
    (``ctx.tokens_per_frame > 1``), no position bias or offsets, no joint text keys (the branches then go through
    :mod:`freelong.attention.kernels`, which append them), and a fused kernel that passed its check here."""
    return (ctx.tokens_per_frame > 1 and bias is None and ctx.positions is None and not joint_keys_active()
            and fused_lse_ok(q.device, q.dtype))


def merge_partial_attention(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Attention over the union of disjoint key sets from each set's ``(out, lse)``, in fp32.

    A part with ``lse = -inf`` on a row (no key of that set for that query) contributes nothing there.
    """
    rows = parts[0][0].shape[-2]
    return _merge_row_parts([(0, rows, out, lse) for out, lse in parts], rows)[0].to(parts[0][0].dtype)


def query_block_frames(tokens_per_frame: int, window: int) -> int:
    """Query frames per block: enough for :data:`QUERY_BLOCK_TOKENS`, at most ``window // 2``.

    The cap keeps the block's windows overlapping in a core of at least half a window, so most of the
    block's keys sit in a few large tiles (:func:`window_tiles`).
    """
    return max(1, min(math.ceil(QUERY_BLOCK_TOKENS / tokens_per_frame), window // 2))


Bounds = tuple[list[int], list[int]]  # per query frame j: its window is key frames [starts[j], ends[j])
Tile = tuple[int, int, int, int, tuple[bool, ...]]  # (row0, row1, key0, key1, inside each window), in frames


def window_tiles(windows: list[Bounds], r0: int, r1: int, a: int, b: int) -> list[Tile]:
    """Cut rows ``[r0, r1)`` x key frames ``[a, b)`` into rectangles each inside or outside every row's window.

    ``windows`` holds one ``(starts, ends)`` per branch. For each, the keys in every row's window (the rows'
    common core) and the keys in no row's window need no further cut; the keys in some rows' windows but not
    others (the staircase at the windows' edges) are cut again with the rows halved, down to single rows.
    The tiles cover the rectangle exactly once and each says, per branch, whether it lies in the windows, so
    attending each tile unmasked reads every key once for all branches.
    """
    cuts, spans = {a, b}, []
    for starts, ends in windows:
        lo_min, lo_max = min(starts[r0:r1]), max(starts[r0:r1])
        hi_min, hi_max = min(ends[r0:r1]), max(ends[r0:r1])
        spans.append((lo_max, hi_min, lo_min, hi_max))  # core [lo_max, hi_min), hull [lo_min, hi_max)
        cuts.update(x for x in (lo_min, lo_max, hi_min, hi_max) if a < x < b)
    tiles: list[Tile] = []
    mixed: list[list[int]] = []
    edges = sorted(cuts)
    for x, y in zip(edges, edges[1:]):
        labels = tuple(True if c0 <= x and y <= c1 else False if y <= u0 or x >= u1 else None
                       for c0, c1, u0, u1 in spans)
        if None in labels:  # some rows' windows hold these keys, others' do not
            if mixed and mixed[-1][1] == x:
                mixed[-1][1] = y
            else:
                mixed.append([x, y])
        elif tiles and tiles[-1][4] == labels and tiles[-1][3] == x:
            tiles[-1] = (r0, r1, tiles[-1][2], y, labels)
        else:
            tiles.append((r0, r1, x, y, labels))
    mid = (r0 + r1) // 2  # mixed keys exist only with two or more rows (one row's window is its own core)
    for x, y in mixed:
        tiles += window_tiles(windows, r0, mid, x, y) + window_tiles(windows, mid, r1, x, y)
    return tiles


def nested_window_attention_frames(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    windows: list[int | None],
    layout: str = "adjusted",
    tokens_per_frame: int = 1,
    block_frames: int | None = None,
) -> list[torch.Tensor]:
    """Frame-window attention of ``(rows, heads, T*S, d)`` frame-major tokens for several windows at once.

    ``windows`` are in frames, narrowest first; ``None`` is every frame (global attention). Returns one output
    per window, each equal (up to float rounding) to ``local_attention_frames(q, k, v, None, w, layout, S)``
    (``global_attention`` for ``None``), while every query-key pair inside some window is attended once (and
    no other): per block of query frames, :func:`window_tiles` cuts the keys into rectangles inside or outside
    each window, each one unmasked fused-kernel call, and each window's output merges the tiles inside it (a
    wider window starts from the narrower one's result when the windows nest). Requires :func:`fused_lse_ok`.
    """
    s = tokens_per_frame
    num_frames = frames_of_tokens(q.shape[-2], s)
    narrowest = min((w for w in windows if w is not None), default=num_frames)
    block = block_frames or query_block_frames(s, narrowest)
    everything = ([0] * num_frames, [num_frames] * num_frames)
    bounds = [everything if w is None else tuple(x.tolist() for x in local_window_bounds(num_frames, w, layout))
              for w in windows]
    outs = [_empty_out(q, v) for _ in windows]
    for i0 in range(0, num_frames, block):
        i1 = min(num_frames, i0 + block)
        rows = (i1 - i0) * s
        parts = []
        for r0, r1, a, b, inside in window_tiles(bounds, i0, i1, 0, num_frames):
            if not any(inside):  # keys no window of these rows holds (only without a global window)
                continue
            out, lse = _fused_call(q[:, :, r0 * s : r1 * s], k[:, :, a * s : b * s], v[:, :, a * s : b * s])
            parts.append(((r0 - i0) * s, (r1 - i0) * s, out, lse, inside))
        prev = None
        for n, buf in enumerate(outs):
            nested = prev is not None and all(p[4][n] for p in parts if p[4][n - 1])
            own = [p[:4] for p in parts if p[4][n] and not (nested and p[4][n - 1])]
            merged = _merge_row_parts([(0, rows, *prev), *own] if nested else own, rows)
            buf[:, :, i0 * s : i1 * s] = merged[0]
            prev = merged
    return outs


def global_and_local_attention_frames(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    layout: str = "adjusted",
    tokens_per_frame: int = 1,
    block_frames: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FreeLong's ``(global, local)`` branches of ``(rows, heads, T*S, d)`` frame-major tokens, every key read once.

    Equal (up to float rounding) to ``global_attention(q, k, v)`` and ``local_attention_frames(q, k, v,
    None, window, layout, S)``: :func:`nested_window_attention_frames` with windows ``[window, None]`` (the
    local branch merges the tiles inside the windows, the global branch that result and the tiles outside).
    """
    local, glob = nested_window_attention_frames(q, k, v, [window, None], layout, tokens_per_frame, block_frames)
    return glob, local


# ----------------------------------------------------------------------------------------------
# Tiered attention: disjoint key sets, each attended with its own (re-encoded) q and k, merged by log-sum-exp
# ----------------------------------------------------------------------------------------------
_UNBOUNDED = 1 << 62


@dataclass(frozen=True)
class Band:
    """One clause of a key tier over frame-major tokens: query ``i`` may attend key ``j`` when

    ``lo <= i // unit - j // unit <= hi`` (offsets in tokens for ``unit=1``, in frames for ``unit = S``),
    ``key_lo <= j < key_hi`` and, with ``stripe``, ``|i % S - j % S| < stripe`` (the same raster neighbourhood of
    the two frames). ``None`` bounds are unbounded.
    """

    lo: int | None = None
    hi: int | None = None
    unit: int = 1
    key_lo: int = 0
    key_hi: int | None = None
    stripe: float | None = None

    def allowed(self, qi: torch.Tensor, kj: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
        delta = qi[:, None] // self.unit - kj[None, :] // self.unit
        ok = torch.ones_like(delta, dtype=torch.bool)
        if self.lo is not None:
            ok &= delta >= self.lo
        if self.hi is not None:
            ok &= delta <= self.hi
        if self.key_lo > 0:
            ok &= (kj >= self.key_lo)[None, :]
        if self.key_hi is not None:
            ok &= (kj < self.key_hi)[None, :]
        if self.stripe is not None:
            ok &= (qi[:, None] % tokens_per_frame - kj[None, :] % tokens_per_frame).abs() < self.stripe
        return ok

    def holds_everywhere(self, r0: int, r1: int, a: int, b: int) -> bool:
        """Whether every query in ``[r0, r1)`` may attend every key in ``[a, b)`` (no mask needed there)."""
        if self.stripe is not None or a < self.key_lo or (self.key_hi is not None and b > self.key_hi):
            return False
        u = self.unit
        lo_delta, hi_delta = r0 // u - (b - 1) // u, (r1 - 1) // u - a // u
        return (self.lo is None or lo_delta >= self.lo) and (self.hi is None or hi_delta <= self.hi)

    def key_span(self, r0: int, r1: int, num_tokens: int) -> tuple[int, int]:
        """The key tokens ``[a, b)`` this clause can reach from query tokens ``[r0, r1)`` (empty: ``a >= b``)."""
        u = self.unit
        lo = -_UNBOUNDED if self.lo is None else self.lo
        hi = _UNBOUNDED if self.hi is None else self.hi
        a = max(0, self.key_lo, (r0 // u - hi) * u)
        b = min(num_tokens, self.key_hi if self.key_hi is not None else num_tokens, ((r1 - 1) // u - lo + 1) * u)
        return a, b


@dataclass(frozen=True)
class KeyTier:
    """A set of keys (the union of its :class:`Band` clauses) and the name of the q/k rotation it uses."""

    name: str
    bands: tuple[Band, ...]

    @property
    def striped(self) -> bool:
        return all(band.stripe is not None for band in self.bands)

    def key_span(self, r0: int, r1: int, num_tokens: int) -> tuple[int, int]:
        spans = [band.key_span(r0, r1, num_tokens) for band in self.bands]
        spans = [(a, b) for a, b in spans if a < b]
        if not spans:
            return 0, 0
        return min(a for a, _ in spans), max(b for _, b in spans)

    def mask(self, r0: int, r1: int, a: int, b: int, tokens_per_frame: int, device=None) -> torch.Tensor | None:
        """``(r1 - r0, b - a)`` bool: which of the span's keys each query may attend; None when all of them."""
        if any(band.holds_everywhere(r0, r1, a, b) for band in self.bands):
            return None
        qi = torch.arange(r0, r1, device=device, dtype=torch.int32)
        kj = torch.arange(a, b, device=device, dtype=torch.int32)
        out = torch.zeros(r1 - r0, b - a, dtype=torch.bool, device=device)
        for band in self.bands:
            out |= band.allowed(qi, kj, tokens_per_frame)
        return out


def masked_attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, lse)`` of attention restricted to ``mask`` (``(Lq, Lk)`` bool, True = allowed); a query row with no
    allowed key gets ``lse = -inf`` and a zero output (it then contributes nothing to a merge).

    CPU: the flash kernel with an additive mask; CUDA: the memory-efficient kernel with the same bias; on ``meta``
    (FLOP and memory estimates) the mask is not needed (the kernel's cost does not depend on it)."""
    if q.device.type == "meta":
        return _fused_call(q, k, v)
    if mask is None:
        return _fused_call(q, k, v)
    bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask.to(q.device), float("-inf"))
    bias = bias.expand(q.shape[0], q.shape[1], *mask.shape)
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias)[:2]
    elif q.device.type == "cuda" and fused_lse_ok(q.device, q.dtype):
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, True)[:2]
        lse = lse[..., : q.shape[-2]]
    else:
        out, lse = math_attention_with_lse(q, k, v, mask)
    empty = ~mask.any(dim=-1).to(q.device)
    if bool(empty.any()):
        lse = lse.masked_fill(empty, float("-inf"))
        out = out.masked_fill(empty[:, None], 0.0)
    return out, lse


def tiered_attention(
    qk: dict[str, tuple[torch.Tensor, torch.Tensor]],
    v: torch.Tensor,
    tiers: list[KeyTier],
    tokens_per_frame: int,
    block_frames: int | None = None,
    merge_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Softmax attention over the union of disjoint key tiers, each with its own ``(q, k)`` (``qk[tier.name]``,
    ``(B, heads, N, d)`` frame-major tokens), merged by log-sum-exp.

    Equal to one softmax over all allowed keys in which a (query, key) pair's logit uses its tier's rotated q and k.
    Queries go in blocks of ``block_frames`` frames (default: one frame from 256 tokens per frame); per block each
    tier attends only the key span its clauses can reach (:meth:`KeyTier.key_span`), masked inside the span, so the
    cost follows the tiers' extent, not ``N^2``; a striped tier at one-frame blocks reads only the keys near each
    chunk of query raster positions (:func:`_striped_attention`).
    ``merge_dtype``: the dtype the merge weights are rounded to before weighting (FreeLOC's release: bfloat16).
    """
    n = v.shape[-2]
    s = tokens_per_frame
    # one frame per block from 256 tokens per frame: frame-aligned tiers then hold their whole span (no mask)
    block = (block_frames or (1 if s >= 256 else math.ceil(QUERY_BLOCK_TOKENS / s))) * s
    out = _empty_out(next(iter(qk.values()))[0], v)
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        parts = []
        for tier in tiers:
            a, b = tier.key_span(r0, r1, n)
            if a >= b:
                continue
            q_t, k_t = qk[tier.name]
            if tier.striped and r1 - r0 == s > 1:  # one query frame against a stripe: gather its raster neighbourhood
                part = _striped_attention(q_t, k_t, v, tier, r0, r1, a, b, s)
                if part is not None:
                    parts.append(part)
                continue
            mask = None if v.device.type == "meta" else tier.mask(r0, r1, a, b, s, v.device)  # None: all keys
            if mask is not None and not bool(mask.any()):
                continue
            parts.append(masked_attention_with_lse(q_t[:, :, r0:r1], k_t[:, :, a:b], v[:, :, a:b], mask))
        out[:, :, r0:r1] = _merge_lse(parts, merge_dtype)
    return out


def _striped_attention(q, k, v, tier: KeyTier, r0: int, r1: int, a: int, b: int, s: int):
    """``(out, lse)`` of one query frame ``[r0, r1)`` against a striped tier (every clause keeps only keys within
    ``stripe`` raster positions of the query's): per chunk of ``stripe`` query raster positions, the span's keys whose
    raster position can qualify (about three stripe widths per frame instead of ``S``) are gathered and masked
    exactly. None when no query has a key."""
    width = math.ceil(max(band.stripe for band in tier.bands))
    chunk = max(width, 16)
    on = torch.device("cpu") if v.device.type == "meta" else v.device  # index arithmetic needs data
    keys = torch.arange(a, b, device=on, dtype=torch.int32)
    raster = keys % s
    outs, lses, any_key = [], [], False
    for c0 in range(0, r1 - r0, chunk):
        c1 = min(r1 - r0, c0 + chunk)
        kj = keys[(raster >= c0 - width) & (raster <= c1 - 1 + width)]
        rows = q[:, :, r0 + c0 : r0 + c1]
        mask = None  # on meta (FLOP and memory estimates) the gathered keys are attended unmasked: same cost
        if v.device.type != "meta":
            qi = torch.arange(r0 + c0, r0 + c1, device=on, dtype=torch.int32)
            mask = torch.zeros(c1 - c0, kj.numel(), dtype=torch.bool, device=on)
            for band in tier.bands:
                mask |= band.allowed(qi, kj, s)
        if kj.numel() == 0 or (mask is not None and not bool(mask.any())):
            outs.append(rows.new_zeros(rows.shape[:-1] + (v.shape[-1],)))
            lses.append(torch.full(rows.shape[:-1], float("-inf"), device=q.device))
            continue
        any_key = True
        idx = kj.to(device=v.device, dtype=torch.long)
        out, lse = masked_attention_with_lse(rows, k.index_select(2, idx), v.index_select(2, idx), mask)
        outs.append(out)
        lses.append(lse.float())
    if not any_key:
        return None
    return torch.cat(outs, dim=2), torch.cat(lses, dim=-1)


def _merge_lse(parts: list[tuple[torch.Tensor, torch.Tensor]], weight_dtype: torch.dtype | None) -> torch.Tensor:
    """``sum_t softmax_t(lse_t) * out_t`` in fp32 (weights rounded to ``weight_dtype`` first when given)."""
    if weight_dtype is None:
        return merge_partial_attention(parts)
    lse = torch.stack([p[1].float() for p in parts])
    w = torch.softmax(lse, dim=0).to(weight_dtype)
    outs = torch.stack([p[0].to(weight_dtype) for p in parts])
    return (outs * w[..., None]).sum(dim=0).to(parts[0][0].dtype)


def _merge_row_parts(parts: list, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`merge_partial_attention` of parts ``(row0, row1, out, lse)`` that each cover some query rows.

    Every one of the ``rows`` query rows must be covered by at least one part. Returns ``(out, lse)`` in fp32,
    the output laid out like the kernels' outputs (tokens outside heads when theirs are).
    """
    if len(parts) == 1:
        return parts[0][2].float(), parts[0][3].float()
    ref = parts[0][2]
    b, heads, _, d = ref.shape
    lse = ref.new_full((b, heads, rows), float("-inf"), dtype=torch.float32)
    for r0, r1, _, part_lse in parts:
        lse[..., r0:r1] = torch.logaddexp(lse[..., r0:r1], part_lse.float())
    if ref.stride(1) < ref.stride(2):  # (B, L, heads, d) in memory, as the CPU flash kernel writes it
        out = ref.new_zeros((b, rows, heads, d), dtype=torch.float32).transpose(1, 2)
    else:
        out = ref.new_zeros((b, heads, rows, d), dtype=torch.float32)
    for r0, r1, part_out, part_lse in parts:
        out[:, :, r0:r1].addcmul_(part_out, torch.exp(part_lse.float() - lse[..., r0:r1])[..., None])
    return out, lse


def _empty_out(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """An output buffer laid out like ``q`` (a DiT hands over ``(B, N, heads, d)`` transposed; the kernels'
    outputs come in that layout too, so copying them in stays a contiguous copy)."""
    if v.shape[-1] == q.shape[-1]:
        return torch.empty_like(q)
    return q.new_empty(q.shape[:-1] + (v.shape[-1],))


__all__ = [
    "QUERY_BLOCK_TOKENS",
    "Band",
    "KeyTier",
    "masked_attention_with_lse",
    "tiered_attention",
    "fused_lse_ok",
    "global_and_local_attention_frames",
    "math_attention_with_lse",
    "merge_partial_attention",
    "nested_window_attention_frames",
    "query_block_frames",
    "shares_key_pass",
    "window_tiles",
]
