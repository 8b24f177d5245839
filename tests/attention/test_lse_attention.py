"""FreeLong's shared-work branches on a DiT (freelong/attention/lse.py), against the definitions."""

import math

import pytest
import torch

from freelong.attention import lse as lse_attention
from freelong.attention.context import TemporalAttentionContext
from freelong.attention.lse import (
    fused_lse_ok,
    global_and_local_attention_frames,
    math_attention_with_lse,
    merge_partial_attention,
    nested_window_attention_frames,
    query_block_frames,
    window_tiles,
)
from freelong.attention.windows import local_window_bounds, local_window_mask
from freelong.methods.freelong import SpectralBlendProcessor
from freelong.spectral import gaussian_lowpass, spectral_blend


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def softmax_attention_f64(q, k, v, mask=None):
    """Softmax attention and its log-sum-exp, written out in float64 (no SDPA, no torch.logsumexp)."""
    q, k, v = q.double(), k.double(), v.double()
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    peak = logits.amax(dim=-1, keepdim=True)
    e = torch.exp(logits - peak)
    z = e.sum(dim=-1, keepdim=True)
    return e @ v / z, (peak + torch.log(z)).squeeze(-1)


def test_math_attention_with_lse_is_the_definition():
    q, k, v = rand(2, 3, 10, 8, seed=1), rand(2, 3, 14, 8, seed=2), rand(2, 3, 14, 8, seed=3)
    mask = rand(10, 14, seed=4) > 0
    mask[:, 3] = True
    out, lse = math_attention_with_lse(q, k, v, mask)
    ref_out, ref_lse = softmax_attention_f64(q, k, v, mask)
    assert torch.allclose(out.double(), ref_out, atol=1e-5)
    assert torch.allclose(lse.double(), ref_lse, atol=1e-5)


def test_the_cpu_fused_kernel_passes_its_check_in_fp32():
    assert fused_lse_ok(torch.device("cpu"), torch.float32)


def test_merging_attention_over_disjoint_key_sets_is_attention_over_their_union():
    q, k, v = rand(1, 2, 6, 8, seed=5), rand(1, 2, 20, 8, seed=6), rand(1, 2, 20, 8, seed=7)
    parts = [math_attention_with_lse(q, k[:, :, a:b], v[:, :, a:b]) for a, b in ((0, 7), (7, 8), (8, 20))]
    ref, _ = softmax_attention_f64(q, k, v)
    assert torch.allclose(merge_partial_attention(parts).double(), ref, atol=1e-5)
    # a part without keys for some rows (lse = -inf there) contributes nothing to them
    empty = (torch.zeros_like(parts[0][0]), torch.full_like(parts[0][1], float("-inf")))
    assert torch.allclose(merge_partial_attention([*parts, empty]).double(), ref, atol=1e-5)


def frame_token_mask(t, s, window, layout):
    return local_window_mask(t, window, layout).repeat_interleave(s, 0).repeat_interleave(s, 1)


@pytest.mark.parametrize(
    "t,s,window,layout,block",
    [
        (23, 3, 7, "adjusted", 3),  # blocks with window edges on both sides
        (23, 3, 7, "centered", 3),  # truncated edge windows
        (17, 2, 9, "adjusted", 4),  # last block shorter than the others
        (12, 5, 5, "centered", 1),  # one frame per block: core and outside tiles only
        (20, 4, 8, "adjusted", None),  # the default block (window // 2 = 4 frames)
    ],
)
@pytest.mark.parametrize("transposed", [False, True])
def test_shared_branches_equal_global_and_window_attention(t, s, window, layout, block, transposed):
    rows, heads, d = 2, 3, 16
    if transposed:  # the Wan adapter's (B, N, heads, d) projections, transposed views
        q, k, v = (rand(rows, t * s, heads, d, seed=i).transpose(1, 2) for i in range(3))
    else:
        q, k, v = (rand(rows, heads, t * s, d, seed=i) for i in range(3))
    glob, local = global_and_local_attention_frames(q, k, v, window, layout, s, block)
    ref_glob, _ = softmax_attention_f64(q, k, v)
    ref_local, _ = softmax_attention_f64(q, k, v, frame_token_mask(t, s, window, layout))
    assert torch.allclose(glob.double(), ref_glob, atol=1e-5)
    assert torch.allclose(local.double(), ref_local, atol=1e-5)


def test_query_blocks_reach_the_kernel_tile_and_keep_a_core_of_half_a_window():
    assert query_block_frames(1560, 21) == 1  # Wan2.1 at 832x480: one frame is already 1,560 tokens
    assert query_block_frames(112, 21) == 10  # ceil(1024 / 112) = 10 = window // 2
    assert query_block_frames(4, 21) == 10  # capped at window // 2
    assert query_block_frames(300, 21) == 4


def test_freelong_on_a_dit_blends_the_shared_branches_like_the_separate_ones():
    t, h, w = 19, 2, 3
    s = h * w
    q, k, v = (rand(1, 2, t * s, 8, seed=10 + i) for i in range(3))
    proc = SpectralBlendProcessor(window=7, local_only_levels=())
    ctx = TemporalAttentionContext(frame_shape=(t, h, w), batch=1, level=0, name="blocks.0.attn1",
                                   tokens_per_frame=s)
    ref_glob, _ = softmax_attention_f64(q, k, v)
    ref_local, _ = softmax_attention_f64(q, k, v, frame_token_mask(t, s, 7, "adjusted"))
    ref = proc.blend(ref_glob.float(), ref_local.float(), ctx)
    assert torch.allclose(proc(q, k, v, bias=None, ctx=ctx), ref, atol=1e-5)


@pytest.mark.parametrize("t,windows,layout,rows", [
    (81, [21], "adjusted", (0, 10)), (81, [21], "adjusted", (40, 50)), (23, [7], "centered", (0, 23)),
    (30, [9], "adjusted", (25, 30)), (81, [21, 42], "adjusted", (30, 40)), (40, [5, 12], "centered", (0, 9)),
])
def test_window_tiles_cover_the_rows_once_each_inside_or_outside_every_window(t, windows, layout, rows):
    r0, r1 = rows
    bounds = [tuple(b.tolist() for b in local_window_bounds(t, w, layout)) for w in windows]
    masks = [local_window_mask(t, w, layout)[r0:r1] for w in windows]
    covered = torch.zeros(r1 - r0, t, dtype=torch.long)
    for a0, a1, k0, k1, inside in window_tiles(bounds, r0, r1, 0, t):
        covered[a0 - r0 : a1 - r0, k0:k1] += 1
        for mask, within in zip(masks, inside, strict=True):
            tile = mask[a0 - r0 : a1 - r0, k0:k1]
            assert bool(tile.all() if within else not tile.any())
    assert bool((covered == 1).all())


@pytest.mark.parametrize("windows,layout", [([5, 11, None], "adjusted"), ([3, 8], "centered"), ([4, None], "centered")])
@pytest.mark.parametrize("transposed", [False, True])
def test_nested_windows_equal_each_window_attention(windows, layout, transposed):
    t, s, heads, d = 29, 3, 2, 8
    if transposed:
        q, k, v = (rand(1, t * s, heads, d, seed=40 + i).transpose(1, 2) for i in range(3))
    else:
        q, k, v = (rand(1, heads, t * s, d, seed=40 + i) for i in range(3))
    outs = nested_window_attention_frames(q, k, v, windows, layout, s)
    assert len(outs) == len(windows)
    for out, w in zip(outs, windows):
        ref, _ = softmax_attention_f64(q, k, v, None if w is None else frame_token_mask(t, s, w, layout))
        assert torch.allclose(out.double(), ref, atol=1e-5), w


@pytest.mark.parametrize("windows", [[9, None], [5, 9], [4, 9, None]])
def test_shared_branches_attend_each_query_key_pair_in_a_window_exactly_once(monkeypatch, windows):
    t, s = 31, 3
    q, k, v = (rand(1, 2, t * s, 8, seed=20 + i) for i in range(3))
    pairs = []
    kernel = lse_attention._fused_call

    def counting(qb, kb, vb):  # (the kernel takes no mask: every tile is inside or outside the windows)
        pairs.append(qb.shape[-2] * kb.shape[-2])
        return kernel(qb, kb, vb)

    monkeypatch.setattr(lse_attention, "_fused_call", counting)
    nested_window_attention_frames(q, k, v, windows, "adjusted", s)  # blocks of 2-4 frames: edges on both sides
    widest = windows[-1]
    needed = (t * s) ** 2 if widest is None else int(frame_token_mask(t, s, widest, "adjusted").sum())
    assert sum(pairs) == needed  # the widest window holds the narrower ones


@pytest.mark.parametrize("transposed", [False, True])
def test_freelong_dit_blend_by_axis_matrices_matches_the_fft_blend_of_the_definitions(transposed):
    t, h, w, heads, d = 19, 2, 4, 2, 8  # one odd axis: the Gaussian factorises (the per-axis matrix path)
    s = h * w
    if transposed:
        q, k, v = (rand(1, t * s, heads, d, seed=30 + i).transpose(1, 2) for i in range(3))
    else:
        q, k, v = (rand(1, heads, t * s, d, seed=30 + i) for i in range(3))
    proc = SpectralBlendProcessor(window=7, local_only_levels=())
    ctx = TemporalAttentionContext(frame_shape=(t, h, w), batch=1, level=0, name="blocks.0.attn1",
                                   tokens_per_frame=s)
    assert proc.axis_filters((t, h, w), q.device) is not None
    ref_glob, _ = softmax_attention_f64(q, k, v)
    ref_local, _ = softmax_attention_f64(q, k, v, frame_token_mask(t, s, 7, "adjusted"))
    as_video = lambda x: x.float().reshape(1, heads, t, h, w, d).permute(0, 1, 5, 2, 3, 4)  # (..., T, H, W)
    ref = spectral_blend(as_video(ref_glob), as_video(ref_local), gaussian_lowpass((t, h, w), 0.25, 0.25))
    out = proc(q, k, v, bias=None, ctx=ctx)
    assert out.shape == (1, heads, t * s, d)
    assert torch.allclose(as_video(out), ref, atol=1e-5)
