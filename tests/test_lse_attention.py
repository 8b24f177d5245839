"""FreeLong's shared-work branches on a DiT (freelong/lse_attention.py), against the definitions."""

import math

import pytest
import torch

from freelong.attention import TemporalAttentionContext, local_window_mask
from freelong.freelong_method import SpectralBlendProcessor
from freelong.lse_attention import (
    fused_lse_ok,
    global_and_local_attention_frames,
    math_attention_with_lse,
    merge_partial_attention,
    query_block_frames,
)


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
        (23, 3, 7, "adjusted", 3),  # blocks with fringes on both sides
        (23, 3, 7, "centered", 3),  # truncated edge windows
        (17, 2, 9, "adjusted", 4),  # last block shorter than the others
        (12, 5, 5, "centered", 1),  # one frame per block: no fringes
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


def test_query_blocks_reach_the_kernel_tile_and_keep_fringes_short():
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
