"""The processor contract with tokens_per_frame = S > 1 (a DiT's frame-major tokens), against definitions."""

import pytest
import torch
from helpers import random_qkv

from baselines.window_fusion import WindowFusionProcessor, window_weights
from freelong.attention.context import TemporalAttentionContext
from freelong.attention.kernels import attention, local_attention
from freelong.attention.windows import local_window_mask, sliding_windows
from freelong.methods.freelong import SpectralBlendProcessor
from freelong.spectral import gaussian_lowpass, spectral_blend


def qkv(t, s, rows=2, heads=3, d=8, seed=0):
    return random_qkv(rows, heads, t * s, d, seed)


def ctx_for(t, h, w, rows=2):
    return TemporalAttentionContext(frame_shape=(t, h, w), batch=rows, level=0, name="blocks.0.attn1",
                                    tokens_per_frame=h * w)


@pytest.mark.parametrize("t,s,window,layout", [(13, 6, 5, "adjusted"), (12, 4, 4, "adjusted"),
                                               (11, 3, 4, "centered"), (9, 2, 7, "centered")])
def test_local_attention_over_frames_equals_token_masked_attention(t, s, window, layout):
    q, k, v = qkv(t, s)
    frame_mask = local_window_mask(t, window, layout)
    token_mask = frame_mask.repeat_interleave(s, 0).repeat_interleave(s, 1)  # frame-major tokens
    ref = attention(q, k, v, mask=token_mask)
    out = local_attention(q, k, v, None, window, layout, tokens_per_frame=s)
    assert torch.allclose(out, ref, atol=1e-5)
    # The Wan adapter hands over (B, N, heads, d) projections transposed: strided views, not copies.
    q_t, k_t, v_t = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    assert not q_t.is_contiguous()
    assert torch.allclose(local_attention(q_t, k_t, v_t, None, window, layout, tokens_per_frame=s), ref, atol=1e-5)


@pytest.mark.parametrize("t,s,window,stride,weighting", [(14, 4, 6, 2, "pyramid"), (13, 3, 5, 3, "flat"),
                                                         (17, 2, 8, 4, "pyramid")])
def test_window_fusion_over_frames_equals_per_window_definition(t, s, window, stride, weighting):
    q, k, v = qkv(t, s)
    proc = WindowFusionProcessor(window, stride, weighting)
    out = proc(q, k, v, bias=None, ctx=ctx_for(t, 1, s))
    acc = torch.zeros_like(q)
    total = torch.zeros(t)
    wts = window_weights(window, weighting).float()
    for a, b in sliding_windows(t, window, stride):
        sl = slice(a * s, b * s)
        o = attention(q[:, :, sl], k[:, :, sl], v[:, :, sl])
        acc[:, :, sl] += o * wts.repeat_interleave(s)[:, None]
        total[a:b] += wts
    ref = acc / total.repeat_interleave(s)[:, None]
    assert torch.allclose(out, ref, atol=1e-5)


def test_spectral_blend_views_dit_tokens_as_a_video():
    t, h, w = 10, 3, 4
    rows, heads, d = 2, 3, 5
    g = torch.Generator().manual_seed(1)
    glob, local = (torch.randn(rows, heads, t * h * w, d, generator=g) for _ in range(2))
    proc = SpectralBlendProcessor(window=4, local_only_levels=())
    out = proc.blend(glob, local, ctx_for(t, h, w, rows))

    def video(x):  # (B, heads, T*H*W, d) -> (B, heads, d, T, H, W)
        return x.view(rows, heads, t, h, w, d).permute(0, 1, 5, 2, 3, 4)

    ref = spectral_blend(video(glob), video(local), gaussian_lowpass((t, h, w), 0.25, 0.25))
    assert torch.allclose(video(out), ref, atol=1e-5)


def test_freelong_on_dit_tokens_is_blend_of_global_and_frame_local():
    t, h, w = 9, 2, 3
    q, k, v = qkv(t, h * w)
    proc = SpectralBlendProcessor(window=3, local_only_levels=())
    ctx = ctx_for(t, h, w)
    out = proc(q, k, v, bias=None, ctx=ctx)
    mask = local_window_mask(t, 3).repeat_interleave(h * w, 0).repeat_interleave(h * w, 1)
    ref = proc.blend(attention(q, k, v), attention(q, k, v, mask=mask), ctx)
    assert torch.allclose(out, ref, atol=1e-5)
    # window >= frames: plain global attention, whatever the token count
    wide = SpectralBlendProcessor(window=9, local_only_levels=())
    assert torch.equal(wide(q, k, v, bias=None, ctx=ctx), attention(q, k, v))


@pytest.mark.parametrize("s", [1, 4])
def test_sliding_window_local_mode_is_per_frame_window_attention(s):
    from freelong import get_method

    t, window = 15, 5
    q, k, v = qkv(t, s)
    proc = get_method("sliding_window", window=window, attention="local").processor()
    ctx = TemporalAttentionContext(frame_shape=(t, 1, s), batch=2, level=0, name="x", tokens_per_frame=s)
    mask = local_window_mask(t, window).repeat_interleave(s, 0).repeat_interleave(s, 1)
    assert torch.allclose(proc(q, k, v, bias=None, ctx=ctx), attention(q, k, v, mask=mask), atol=1e-5)
