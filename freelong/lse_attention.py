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
``docs/benchmarks.md`` §9).

Every call uses the SDPA kernel that also returns the log-sum-exp (the CPU flash kernel; on CUDA the
flash kernel in half precision, the memory-efficient one in fp32, as PyTorch's context-parallel
attention calls them). A kernel is used only after it reproduced the explicit definition on a small
problem on that device and dtype (:func:`fused_lse_ok`); otherwise callers fall back to computing the
branches separately.
"""

from __future__ import annotations

import math
import warnings

import torch

from .attention import frames_of_tokens, local_window_bounds

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


def merge_partial_attention(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Attention over the union of disjoint key sets from each set's ``(out, lse)``, in fp32.

    A part with ``lse = -inf`` on a row (no key of that set for that query) contributes nothing there.
    """
    lse = torch.stack([p[1].float() for p in parts])  # (n, ..., Lq)
    total = torch.logsumexp(lse, dim=0)
    out = None
    for (o, _), part_lse in zip(parts, lse):
        term = o.float() * torch.exp(part_lse - total)[..., None]
        out = term if out is None else out + term
    return out.to(parts[0][0].dtype)


def query_block_frames(tokens_per_frame: int, window: int) -> int:
    """Query frames per block: enough for :data:`QUERY_BLOCK_TOKENS`, at most ``window // 2``.

    The cap keeps the block's windows overlapping in a core of at least half a window, so most of the
    block's keys sit in a few large tiles (:func:`window_tiles`).
    """
    return max(1, min(math.ceil(QUERY_BLOCK_TOKENS / tokens_per_frame), window // 2))


Tile = tuple[int, int, int, int, bool]  # (row0, row1, key0, key1, inside the rows' windows), in frames


def window_tiles(starts: list[int], ends: list[int], r0: int, r1: int, a: int, b: int) -> list[Tile]:
    """Cut rows ``[r0, r1)`` x key frames ``[a, b)`` into rectangles each inside or outside every row's window.

    Row ``j`` attends key frames ``[starts[j], ends[j])``. The keys in every row's window (the rows' common
    core) form one tile, those in no row's window up to two more; the keys in some rows' windows but not
    others (the staircase at the windows' edges) are cut again with the rows halved, down to single rows.
    The tiles cover the rectangle exactly once, so attending each tile unmasked reads every key once.
    """
    tiles: list[Tile] = []
    lo_min, lo_max = min(starts[r0:r1]), max(starts[r0:r1])
    hi_min, hi_max = min(ends[r0:r1]), max(ends[r0:r1])
    u0, u1 = max(a, lo_min), min(b, hi_max)  # outside [u0, u1): no row's window
    if u1 <= u0:
        return [(r0, r1, a, b, False)]
    tiles += [(r0, r1, x, y, False) for x, y in ((a, u0), (u1, b)) if y > x]
    c0, c1 = max(a, lo_max), min(b, hi_min)  # inside [c0, c1): every row's window
    if c1 > c0:
        tiles.append((r0, r1, c0, c1, True))
        mixed = [(u0, c0), (c1, u1)]
    else:
        mixed = [(u0, u1)]
    mid = (r0 + r1) // 2
    for x, y in mixed:
        if y > x:  # only with two or more rows (a single row's window is its own core)
            tiles += window_tiles(starts, ends, r0, mid, x, y) + window_tiles(starts, ends, mid, r1, x, y)
    return tiles


def global_and_local_attention_frames(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    layout: str = "adjusted",
    tokens_per_frame: int = 1,
    block_frames: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global and local attention of ``(rows, heads, T*S, d)`` frame-major tokens, every key read once.

    Equal (up to float rounding) to ``global_attention(q, k, v)`` and ``local_attention_frames(q, k, v,
    None, window, layout, S)``. Per block of query frames, :func:`window_tiles` cuts the key frames into
    rectangles inside or outside the windows; each is one unmasked fused-kernel call. The local branch
    merges the inside tiles, the global branch merges the local result with the outside tiles.
    Requires :func:`fused_lse_ok`.
    """
    s = tokens_per_frame
    num_frames = frames_of_tokens(q.shape[-2], s)
    block = block_frames or query_block_frames(s, window)
    start, end = (b.tolist() for b in local_window_bounds(num_frames, window, layout))
    glob, local = _empty_out(q, v), _empty_out(q, v)
    for i0 in range(0, num_frames, block):
        i1 = min(num_frames, i0 + block)
        inside, outside = [], []
        for r0, r1, a, b, within in window_tiles(start, end, i0, i1, 0, num_frames):
            part = _fused_call(q[:, :, r0 * s : r1 * s], k[:, :, a * s : b * s], v[:, :, a * s : b * s])
            (inside if within else outside).append(((r0 - i0) * s, (r1 - i0) * s, *part))
        loc, loc_lse = _merge_row_parts(inside, (i1 - i0) * s)
        local[:, :, i0 * s : i1 * s] = loc
        if outside:
            glob[:, :, i0 * s : i1 * s] = _merge_row_parts([(0, (i1 - i0) * s, loc, loc_lse), *outside],
                                                           (i1 - i0) * s)[0]
        else:
            glob[:, :, i0 * s : i1 * s] = loc
    return glob, local


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
    "fused_lse_ok",
    "global_and_local_attention_frames",
    "math_attention_with_lse",
    "merge_partial_attention",
    "query_block_frames",
    "window_tiles",
]
