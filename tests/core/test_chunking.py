"""Memory-bounded paths equal the plain computation: frame-chunked UNet, whole-sequence GroupNorm
statistics, block-wise local attention, grouped window fusion, automatic VAE decode chunks, and
FreeLong's single-FFT blend."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import attach
from torch.utils._python_dispatch import TorchDispatchMode

from baselines.window_fusion import WindowFusionProcessor, window_weights
from freelong import get_method
from freelong.attention.context import TemporalAttentionContext
from freelong.attention.kernels import (
    attention,
    block_bias,
    full_bias,
    local_attention,
    local_attention_blocks,
)
from freelong.attention.windows import local_window_mask, sliding_windows
from freelong.chunking import (
    ChunkPolicy,
    chunk_frames,
    frame_chunking,
    frame_spans,
    group_norm_apply,
    group_norm_stats,
)
from freelong.models.lavie.blocks import RelativePositionBias
from freelong.models.lavie.model import LaVieUNet
from freelong.models.tiny import randomize_
from freelong.profiling import track_tensor_memory

TINY_UNET = dict(block_out_channels=[32, 32, 64, 64], layers_per_block=1, norm_num_groups=8,
                 cross_attention_dim=32, attention_head_dim=1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def unet():
    return randomize_(LaVieUNet(**TINY_UNET), seed=3).eval()


def _bias(heads: int, seed: int = 0) -> RelativePositionBias:
    bias = RelativePositionBias(heads)
    with torch.no_grad():
        bias.relative_attention_bias.weight.copy_(torch.randn(32, heads, generator=torch.Generator().manual_seed(seed)))
    return bias


class ShiftedBias:
    """A bias that is *not* translation invariant (exercises the per-block call path)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, q_idx, k_idx):
        return self.inner(q_idx, k_idx) + 0.05 * q_idx[None, :, None].float() - 0.03 * k_idx[None, None, :].float()


# ----------------------------------------------------------------------------------------------
# Chunk policy and GroupNorm statistics
# ----------------------------------------------------------------------------------------------
def test_policy_sizes():
    assert ChunkPolicy(size=0).frames(512, 10**9) == 512  # off
    assert ChunkPolicy(size=7).frames(512, 1) == 7
    assert ChunkPolicy(size=7).frames(5, 1) == 5
    # auto: 512 frames x 1 MiB with a 100 MiB budget -> 6 equal chunks of <= 86 frames
    assert ChunkPolicy(budget_mb=100).frames(512, 2**20) == math.ceil(512 / 6)
    assert ChunkPolicy(budget_mb=100).frames(64, 2**20) == 64  # fits: no chunking
    assert frame_spans(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_frames(100, 10**12) == 100  # outside frame_chunking nothing is chunked
    with frame_chunking(3):
        assert chunk_frames(100, 1) == 3
    with pytest.raises(ValueError, match="frame_chunk_size"):
        ChunkPolicy(size=-1)


@pytest.mark.parametrize("spans", [[(0, 9)], [(0, 1), (1, 5), (5, 9)], [(s, s + 1) for s in range(9)]])
def test_group_norm_stats_equal_whole_sequence_groupnorm(spans):
    gen = torch.Generator().manual_seed(0)
    # a large offset that drifts over frames: a naive sum-of-squares merge would lose precision here
    a = torch.randn(2, 6, 9, 5, 4, generator=gen) * 3 + 100 + torch.arange(9.0)[None, None, :, None, None]
    b = torch.randn(2, 10, 9, 5, 4, generator=gen)
    norm = torch.nn.GroupNorm(4, 16, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_(generator=gen)
        norm.bias.normal_(generator=gen)
    x = torch.cat([a, b], dim=1)
    ref = norm(x)
    mean, rstd = group_norm_stats((a, b), 4, norm.eps, spans)
    out = torch.cat([group_norm_apply(x[:, :, s:e], mean, rstd, norm) for s, e in spans], dim=2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grouped = x.reshape(2, 4, -1).double()
    torch.testing.assert_close(mean.double(), grouped.mean(-1), rtol=1e-6, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# The whole UNet, chunked vs not
# ----------------------------------------------------------------------------------------------
def _run(unet, x, ctx, chunk, budget=None, method=None):
    unet.frame_chunk_size, unet.chunk_budget_mb = chunk, budget
    try:
        with torch.no_grad():
            if method is None:
                return unet(x, 700, ctx)
            with attach(method, unet):
                return unet(x, 700, ctx)
    finally:
        unet.frame_chunk_size, unet.chunk_budget_mb = None, None


@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_unet_chunked_equals_unchunked(unet, chunk):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 9, 8, 12, generator=gen)  # B=2 as with CFG; 9 frames: 3 and 4 do not divide it
    ctx = torch.randn(2, 5, 32, generator=gen)
    ref = _run(unet, x, ctx, 0)
    out = _run(unet, x, ctx, chunk)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_unet_auto_chunking_per_frame_text_odd_sizes_and_freelong(unet):
    """Automatic chunks (tiny budget), per-frame prompts (each chunk must see its own frames' text),
    odd latent sizes (upsampling to the skip's size) and FreeLong blending at every level."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 11, 7, 9, generator=gen)
    ctx = torch.randn(1, 11, 5, 32, generator=gen)  # (B, T, L, D): a different text per frame
    method = get_method("freelong", window=4, local_only_levels=[], noise="random")
    ref = _run(unet, x, ctx, 0, method=method)
    out = _run(unet, x, ctx, None, budget=0.02, method=method)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    # and the run really was chunked: at this budget a 32-channel 7x9 layer takes 3 of the 11 frames at a time
    with frame_chunking(None, 0.02):
        assert chunk_frames(11, 32 * 7 * 9 * 4) == 3


def test_chunking_lowers_peak_activation_memory(unet):
    x = torch.randn(1, 4, 24, 16, 16)
    ctx = torch.randn(1, 5, 32)
    peaks = {}
    for chunk in (0, 2):
        unet.frame_chunk_size = chunk
        with torch.no_grad(), track_tensor_memory() as tracker:
            unet(x, 700, ctx)
        peaks[chunk] = tracker.peak
    unet.frame_chunk_size = None
    assert peaks[2] < 0.75 * peaks[0], peaks


# ----------------------------------------------------------------------------------------------
# Block-wise local attention
# ----------------------------------------------------------------------------------------------
def _naive_local(q, k, v, bias, window, layout):
    """Softmax over each query's window, in float64, bounds written out from the definition."""
    t = q.shape[-2]
    out = torch.empty(q.shape, dtype=torch.float64)
    half = window // 2
    for i in range(t):
        start, end = max(0, i - half), min(t, i + half + 1)
        if layout == "adjusted" and end - start < window:
            if start == 0:
                end = min(t, window)
            else:
                start = max(0, end - window)
        scores = q[:, :, i : i + 1].double() @ k[:, :, start:end].double().transpose(-1, -2) / math.sqrt(q.shape[-1])
        if bias is not None:
            scores = scores + bias(torch.tensor([i]), torch.arange(start, end)).double()
        out[:, :, i : i + 1] = scores.softmax(-1) @ v[:, :, start:end].double()
    return out


@pytest.mark.parametrize("layout", ["adjusted", "centered"])
@pytest.mark.parametrize("window", [3, 5, 8])
@pytest.mark.parametrize("bias_kind", [None, "relative", "shifted"])
def test_blockwise_local_attention_equals_dense_mask(layout, window, bias_kind):
    t, heads = 29, 2
    gen = torch.Generator().manual_seed(window)
    q, k, v = (torch.randn(3, heads, t, 8, generator=gen) for _ in range(3))
    bias = {None: None, "relative": _bias(heads), "shifted": ShiftedBias(_bias(heads))}[bias_kind]
    dense = attention(q, k, v, bias=full_bias(bias, t, q.device), mask=local_window_mask(t, window, layout))
    for block in (1, 4, 7, 29):
        out = local_attention_blocks(q, k, v, bias, window, layout, block)
        torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5)
    auto = local_attention(q, k, v, bias, window, layout)
    torch.testing.assert_close(auto, dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense.double(), _naive_local(q, k, v, bias, window, layout), rtol=1e-5, atol=1e-5)


def test_local_attention_auto_uses_blocks_for_long_videos(monkeypatch):
    """Long videos take the block path, which never builds a T x T mask."""
    import freelong.attention.kernels as att

    def no_dense_mask(*args, **kwargs):
        raise AssertionError("dense T x T mask built")

    t = 200
    q, k, v = (torch.randn(1, 1, t, 4) for _ in range(3))
    ref = att.attention(q, k, v, mask=local_window_mask(t, 16))
    monkeypatch.setattr(att, "local_window_mask", no_dense_mask)
    torch.testing.assert_close(att.local_attention(q, k, v, None, 16), ref, rtol=1e-5, atol=1e-5)


def test_block_bias_translation_invariant_equals_per_block_calls():
    bias = _bias(3, seed=4)
    q_idx = torch.stack([torch.arange(s, s + 5) for s in (0, 5, 12)])
    k_idx = torch.stack([torch.arange(s, s + 9) for s in (0, 1, 10)])
    fast = block_bias(bias, q_idx, k_idx)
    slow = block_bias(ShiftedBias(bias), q_idx, k_idx) - torch.stack(
        [0.05 * qi[None, :, None].float() - 0.03 * ki[None, None, :].float() for qi, ki in zip(q_idx, k_idx)], dim=1
    )
    torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Window fusion (sliding window, FreeNoise)
# ----------------------------------------------------------------------------------------------
def _naive_fusion(q, k, v, bias, window, stride, weighting):
    t = q.shape[-2]
    out = torch.zeros(q.shape, dtype=torch.float64)
    total = torch.zeros(t, dtype=torch.float64)
    w = window_weights(window, weighting)
    for s, e in sliding_windows(t, window, stride):
        idx = torch.arange(s, e)
        scores = q[:, :, s:e].double() @ k[:, :, s:e].double().transpose(-1, -2) / math.sqrt(q.shape[-1])
        if bias is not None:
            scores = scores + bias(idx, idx).double()
        out[:, :, s:e] += (scores.softmax(-1) @ v[:, :, s:e].double()) * w[:, None]
        total[s:e] += w
    return out / total[:, None]


@pytest.mark.parametrize("t,window,stride", [(37, 8, 3), (20, 5, 5), (64, 16, 4)])
@pytest.mark.parametrize("weighting", ["flat", "pyramid"])
def test_window_fusion_equals_per_window_loop(t, window, stride, weighting):
    gen = torch.Generator().manual_seed(t)
    q, k, v = (torch.randn(2, 2, t, 8, generator=gen) for _ in range(3))
    ctx = TemporalAttentionContext(frame_shape=(t, 1, 2), batch=1, level=0, name="test")
    for bias in (None, _bias(2), ShiftedBias(_bias(2))):
        ref = _naive_fusion(q, k, v, bias, window, stride, weighting)
        for group in (None, 1, 2, 7):
            out = WindowFusionProcessor(window, stride, weighting, windows_per_call=group)(q, k, v, bias=bias, ctx=ctx)
            torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# FreeLong's blend: one rfft + one irfft per layer call, filter cached per shape
# ----------------------------------------------------------------------------------------------
class _CountFFT(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name.startswith("_fft"):
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def test_freelong_blend_uses_one_forward_and_one_inverse_fft_and_caches_the_filter():
    from freelong.spectral import cached_rfft_filter, spectral_blend

    proc = get_method("freelong", window=4, local_only_levels=[]).processor()
    t, h, w, heads, d = 12, 3, 5, 2, 8
    q, k, v = (torch.randn(2 * h * w, heads, t, d) for _ in range(3))
    ctx = TemporalAttentionContext(frame_shape=(t, h, w), batch=2, level=1, name="x")
    cached_rfft_filter.cache_clear()
    with _CountFFT() as counter:
        out = proc(q, k, v, bias=None, ctx=ctx)
        proc(q, k, v, bias=None, ctx=ctx)
    assert counter.counts == {"_fft_r2c": 2, "_fft_c2r": 2}
    info = cached_rfft_filter.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    # and it is the SpectralBlend of the two branches (reference: the full complex 3D FFT definition)
    glob = attention(q, k, v)
    local = attention(q, k, v, mask=local_window_mask(t, 4))
    to_video = lambda x: x.reshape(2, h, w, heads, t, d).permute(0, 3, 5, 4, 1, 2)  # (..., T, H, W)
    from freelong.spectral import gaussian_lowpass

    ref = spectral_blend(to_video(glob), to_video(local), gaussian_lowpass((t, h, w), 0.25, 0.25))
    torch.testing.assert_close(to_video(out), ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# VAE decoding in automatic chunks
# ----------------------------------------------------------------------------------------------
def test_decode_auto_chunk_equals_frame_by_frame(lavie_tiny):
    latents = torch.randn(1, 4, 5, 4, 6, generator=torch.Generator().manual_seed(0))
    auto = lavie_tiny.decode(latents, None)
    one = lavie_tiny.decode(latents, 1)
    assert auto.shape == (1, 5, 32, 48, 3)
    assert abs(auto.astype(int) - one.astype(int)).max() <= 1
    # the automatic size bounds memory: SD's VAE at 320x512 in fp16 gets a few frames per call
    assert 1 <= lavie_tiny.decode_chunk_size(512, 40, 64, torch.float16, budget_mb=512) <= 512


def test_local_attention_block_plan_has_no_full_mask_size():
    from freelong.attention.windows import local_block_plan

    q_idx, k_idx, allowed = local_block_plan(512, 16, "adjusted", 32)
    assert q_idx.shape == (16, 32) and k_idx.shape[1] <= 32 + 16 + 1
    assert allowed.numel() < 512 * 512 // 8
    # every query's whole window is inside its block's key span
    mask = local_window_mask(512, 16)
    for qi, ki, ok in zip(q_idx, k_idx, allowed):
        assert torch.equal(mask[qi][:, ki], ok)
        assert mask[qi].sum() == ok.sum()


def test_sdpa_masks_get_the_query_rank():
    """A 3D (heads, L, L) bias must reach SDPA as 4D, or the CPU kernel falls back to the quadratic maths."""
    seen = []
    orig = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append(None if attn_mask is None else attn_mask.ndim)
        return orig(q, k, v, attn_mask=attn_mask, **kw)

    q = torch.randn(4, 2, 6, 8)
    F.scaled_dot_product_attention = spy
    try:
        attention(q, q, q, bias=torch.zeros(2, 6, 6))
        attention(q, q, q, mask=torch.ones(6, 6, dtype=torch.bool))
    finally:
        F.scaled_dot_product_attention = orig
    assert seen == [4, 4]
