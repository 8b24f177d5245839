"""Baselines: FreeNoise's noise rescheduling and window fusion against the paper's definitions."""

import math

import pytest
import torch

from baselines import WindowFusionProcessor, rescheduled_noise, window_weights
from freelong import get_method
from freelong.attention.context import TemporalAttentionContext
from freelong.attention.windows import sliding_windows


def frames_as_set(n, lo, hi):
    return [tuple(n[0, :, f].flatten().tolist()) for f in range(lo, hi)]


@pytest.mark.parametrize("t,w,s", [(64, 16, 4), (30, 16, 4), (40, 8, 8), (16, 16, 4), (10, 16, 4)])
def test_rescheduled_noise_repeats_shuffled_blocks(t, w, s):
    n = rescheduled_noise((2, 3, t, 2, 2), window=w, stride=s, generator=torch.Generator().manual_seed(0))
    assert n.shape == (2, 3, t, 2, 2)
    base = frames_as_set(n, 0, min(t, w))
    assert len(set(base)) == len(base)  # the first window's frames are distinct i.i.d. draws
    for start in range(w, t, s):
        block = frames_as_set(n, start, min(start + s, t))
        source = frames_as_set(n, start - w, start - w + s)
        assert set(block) <= set(source) and len(set(block)) == len(block)
    # every full window of w consecutive frames holds exactly the first window's noises
    for a in range(0, t - w + 1, s):
        assert sorted(frames_as_set(n, a, a + w)) == sorted(base)


def test_rescheduled_noise_is_seeded_and_shuffles():
    shape = (1, 4, 48, 3, 3)
    a = rescheduled_noise(shape, generator=torch.Generator().manual_seed(3))
    b = rescheduled_noise(shape, generator=torch.Generator().manual_seed(3))
    c = rescheduled_noise(shape, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[:, :, 16:32], a[:, :, 0:16])  # shuffled, not tiled
    with pytest.raises(ValueError, match="stride"):
        rescheduled_noise(shape, window=4, stride=8)


def test_pyramid_weights_follow_freenoise_eq9():
    assert window_weights(16, "pyramid").tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 8, 7, 6, 5, 4, 3, 2, 1]
    for u in (5, 7, 12):
        c = (u - 1) / 2
        assert window_weights(u, "pyramid").tolist() == [u / 2 - math.floor(abs(i - c)) for i in range(u)]
    assert window_weights(6, "flat").tolist() == [1.0] * 6
    with pytest.raises(ValueError, match="weighting"):
        window_weights(4, "gauss")


def reference_fusion(q, k, v, window, stride, weights, bias_table=None):
    """Per-window softmax attention, each frame = weighted mean over the windows containing it (float64)."""
    t = q.shape[-2]
    num = torch.zeros_like(v, dtype=torch.float64)
    den = torch.zeros(t, dtype=torch.float64)
    for a, b in sliding_windows(t, window, stride):
        logits = q[:, :, a:b].double() @ k[:, :, a:b].double().transpose(-1, -2) / math.sqrt(q.shape[-1])
        if bias_table is not None:
            logits = logits + bias_table[:, a:b, a:b].double()
        out = torch.softmax(logits, -1) @ v[:, :, a:b].double()
        num[:, :, a:b] += out * weights[:, None].double()
        den[a:b] += weights.double()
    assert (den > 0).all()
    return num / den[:, None]


@pytest.mark.parametrize("t,window,stride,weighting", [(40, 16, 4, "pyramid"), (26, 16, 4, "pyramid"),
                                                       (33, 8, 3, "flat"), (30, 7, 2, "pyramid")])
def test_window_fusion_equals_reference(t, window, stride, weighting):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 2, t, 8, generator=g) for _ in range(3))
    bias_table = torch.randn(2, t, t, generator=g)
    ctx = TemporalAttentionContext(frame_shape=(t, 2, 3), batch=1, level=0, name="x")
    out = WindowFusionProcessor(window, stride, weighting)(
        q, k, v, bias=lambda qi, ki: bias_table[:, qi][:, :, ki], ctx=ctx)
    ref = reference_fusion(q, k, v, window, stride, window_weights(window, weighting), bias_table)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)


def test_trailing_frames_are_covered():
    """(T - window) % stride != 0: the reference FreeNoise code leaves the last frames without attention."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 1, 26, 4, generator=g) for _ in range(3))
    ctx = TemporalAttentionContext(frame_shape=(26, 1, 1), batch=1, level=0, name="x")
    out = WindowFusionProcessor(16, 4, "pyramid")(q, k, v, bias=None, ctx=ctx)
    last = torch.softmax(q[0, 0, 25] @ k[0, 0, 10:26].T / 2.0, -1) @ v[0, 0, 10:26]
    torch.testing.assert_close(out[0, 0, 25], last, atol=1e-6, rtol=0)  # only window (10, 26) holds frame 25


def test_method_configs():
    params = get_method("freenoise").params()
    assert (params["window"], params["stride"], params["weighting"]) == (16, 4, "pyramid")
    assert params["motion_injection"] is False
    assert get_method("sliding_window").processor().weighting == "flat"
    with pytest.raises(ValueError, match="stride"):
        get_method("sliding_window", window=8, stride=9)
    n = get_method("freenoise", window=4, stride=2).init_noise((1, 1, 8, 1, 1), torch.Generator().manual_seed(0))
    assert sorted(n[0, 0, 4:8, 0, 0].tolist()) == sorted(n[0, 0, 0:4, 0, 0].tolist())
    get_method("direct", window=64).check_frames(16)  # direct ignores the window
    d = get_method("direct").init_noise((1, 1, 8, 1, 1), torch.Generator().manual_seed(0))
    assert torch.equal(d, torch.randn((1, 1, 8, 1, 1), generator=torch.Generator().manual_seed(0)))
