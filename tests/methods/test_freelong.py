"""FreeLong's SpectralBlend processor and method, against references written from the paper's equations."""

import math

import numpy as np
import pytest
import torch
from helpers import random_qkv

from freelong import get_method
from freelong.attention.context import TemporalAttentionContext
from freelong.attention.windows import local_window_mask
from freelong.methods.freelong import SpectralBlendProcessor
from freelong.spectral import gaussian_lowpass


def qkv(rows=2 * 6 * 5, heads=2, t=24, d=8, seed=0, dtype=torch.float32):
    return random_qkv(rows, heads, t, d, seed, dtype)


def ctx(t=24, h=6, w=5, b=2, level=1, step=None):
    return TemporalAttentionContext(frame_shape=(t, h, w), batch=b, level=level, name="x", step_index=step)


def softmax_attn(q, k, v, mask=None):
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, -1) @ v


class ConstantFilter(SpectralBlendProcessor):
    def __init__(self, value, **kw):
        super().__init__(**kw)
        self.value = value

    def half_filter(self, shape, device):
        t, h, w = shape
        return torch.full((t, h, w // 2 + 1), self.value, device=device)


def test_all_pass_filter_gives_global_branch_and_all_stop_gives_local():
    q, k, v = qkv()
    glob = softmax_attn(q, k, v)
    local = softmax_attn(q, k, v, local_window_mask(24, 16, "adjusted"))
    torch.testing.assert_close(ConstantFilter(1.0, window=16)(q, k, v, bias=None, ctx=ctx()), glob, atol=1e-5, rtol=0)
    torch.testing.assert_close(ConstantFilter(0.0, window=16)(q, k, v, bias=None, ctx=ctx()), local, atol=1e-5, rtol=0)
    assert not torch.allclose(glob, local, atol=1e-3)


def test_window_covering_all_frames_is_plain_global_attention():
    q, k, v = qkv(t=16)
    out = SpectralBlendProcessor(window=16)(q, k, v, bias=None, ctx=ctx(t=16))
    torch.testing.assert_close(out, softmax_attn(q, k, v), atol=1e-6, rtol=0)


@pytest.mark.parametrize("layout", ["adjusted", "centered"])
@pytest.mark.parametrize("t,h,w", [(24, 6, 5), (20, 4, 8)])
def test_blend_equals_independent_float64_reference(layout, t, h, w):
    """Z' = Re IFFT3D(FFT3D(Z_global) P + FFT3D(Z_local)(1-P)) over (frames, height, width), Eq. 3-5."""
    b, heads, d = 2, 2, 8
    q, k, v = qkv(rows=b * h * w, heads=heads, t=t, d=d)
    proc = SpectralBlendProcessor(window=8, d_s=0.25, d_t=0.3, layout=layout)
    out = proc(q, k, v, bias=None, ctx=ctx(t, h, w, b))
    q64, k64, v64 = q.double(), k.double(), v.double()
    glob = softmax_attn(q64, k64, v64)
    local = softmax_attn(q64, k64, v64, local_window_mask(t, 8, layout))

    def video(z):  # rows (b, h, w) x heads x T x d -> (b, heads, d, T, h, w)
        return z.reshape(b, h, w, heads, t, d).permute(0, 3, 5, 4, 1, 2).numpy()

    p = gaussian_lowpass((t, h, w), 0.25, 0.3).double().numpy()
    ax = (-3, -2, -1)
    G = np.fft.fftshift(np.fft.fftn(video(glob), axes=ax), axes=ax)
    L = np.fft.fftshift(np.fft.fftn(video(local), axes=ax), axes=ax)
    ref = np.fft.ifftn(np.fft.ifftshift(G * p + L * (1 - p), axes=ax), axes=ax).real
    got = video(out.double())
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_local_only_levels_and_blend_steps_use_the_local_branch():
    q, k, v = qkv()
    local = softmax_attn(q, k, v, local_window_mask(24, 16, "adjusted"))
    proc = SpectralBlendProcessor(window=16, local_only_levels=(0,), blend_steps=25)
    torch.testing.assert_close(proc(q, k, v, bias=None, ctx=ctx(level=0, step=0)), local, atol=1e-5, rtol=0)
    torch.testing.assert_close(proc(q, k, v, bias=None, ctx=ctx(level=2, step=25)), local, atol=1e-5, rtol=0)
    blended = proc(q, k, v, bias=None, ctx=ctx(level=2, step=24))
    assert not torch.allclose(blended, local, atol=1e-4)
    # blend_steps=None blends at every step (the released code)
    always = SpectralBlendProcessor(window=16, local_only_levels=())
    torch.testing.assert_close(always(q, k, v, bias=None, ctx=ctx(level=0, step=49)), blended, atol=1e-6, rtol=0)


def test_relative_bias_reaches_both_branches():
    q, k, v = qkv()
    bias_table = torch.randn(2, 24, 24)

    def bias(qi, ki):
        return bias_table[:, qi][:, :, ki]

    with_bias = ConstantFilter(1.0, window=16)(q, k, v, bias=bias, ctx=ctx())
    logits = q @ k.transpose(-1, -2) / math.sqrt(8) + bias_table
    torch.testing.assert_close(with_bias, torch.softmax(logits, -1) @ v, atol=1e-5, rtol=0)


def test_method_parameters_are_validated_with_their_names():
    for kwargs, key in [({"d_s": 0.0}, "d_s"), ({"d_t": 1.5}, "d_t"), ({"filter": "tri"}, "filter"),
                        ({"window": 0}, "window"), ({"noise": "pink"}, "noise"), ({"layout": "x"}, "layout"),
                        ({"blend_steps": -1}, "blend_steps"), ({"local_only_levels": [-1]}, "local_only_levels")]:
        with pytest.raises(ValueError, match=key):
            get_method("freelong", **kwargs)
    with pytest.raises(ValueError, match="alpha"):
        get_method("freelong", alpha=8)
    with pytest.raises(ValueError, match="unknown method"):
        get_method("freelonger")
    with pytest.raises(ValueError, match="num_frames"):
        get_method("freelong", window=16).check_frames(12)


def test_noise_choice():
    fl = get_method("freelong", noise="freenoise", window=4, noise_stride=2)
    gen = torch.Generator().manual_seed(0)
    n = fl.init_noise((1, 2, 10, 3, 3), gen)
    for start in range(4, 10, 2):  # each block is a permutation of the block `window` frames earlier
        block = {tuple(n[0, :, f].flatten().tolist()) for f in range(start, min(start + 2, 10))}
        src = {tuple(n[0, :, f].flatten().tolist()) for f in range(start - 4, start - 2)}
        assert block <= src
    rnd = get_method("freelong", noise="random").init_noise((1, 2, 10, 3, 3), torch.Generator().manual_seed(0))
    assert torch.equal(rnd, torch.randn((1, 2, 10, 3, 3), generator=torch.Generator().manual_seed(0)))
