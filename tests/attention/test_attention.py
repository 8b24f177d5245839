"""Local windows, sliding windows and the attention primitive, checked against their definitions."""

import math

import pytest
import torch

from freelong.attention.kernels import attention
from freelong.attention.windows import local_window_mask, sliding_windows


def test_adjusted_mask_matches_official_lavie_layout_at_128_frames():
    m = local_window_mask(128, 16, "adjusted")
    for i in range(128):
        keys = m[i].nonzero().flatten().tolist()
        if i < 8:
            assert keys == list(range(0, 16))
        elif i < 120:
            assert keys == list(range(i - 8, i + 9))
        else:
            assert keys == list(range(112, 128))
    counts = m.sum(1)
    assert int((counts == 17).sum()) == 112 and int((counts == 16).sum()) == 16


@pytest.mark.parametrize("t,window", [(40, 16), (24, 8), (33, 7), (10, 9)])
def test_centered_mask_is_distance_threshold(t, window):
    i = torch.arange(t)
    expected = (i[:, None] - i[None, :]).abs() <= window // 2
    assert torch.equal(local_window_mask(t, window, "centered"), expected)


@pytest.mark.parametrize("t,window", [(40, 16), (24, 8), (33, 7)])
def test_adjusted_mask_is_contiguous_contains_self_and_has_full_edge_windows(t, window):
    m = local_window_mask(t, window, "adjusted")
    for i in range(t):
        keys = m[i].nonzero().flatten()
        assert m[i, i]
        assert keys.max() - keys.min() + 1 == len(keys)  # contiguous
        assert len(keys) >= min(t, window)


def test_window_covering_everything_gives_full_mask():
    assert local_window_mask(16, 16, "adjusted").all()
    assert local_window_mask(12, 40, "centered").all()


def test_bad_layout_and_window():
    with pytest.raises(ValueError, match="layout"):
        local_window_mask(8, 4, "diagonal")
    with pytest.raises(ValueError, match="window"):
        local_window_mask(8, 0)


@pytest.mark.parametrize("t,w,s", [(64, 16, 4), (26, 16, 4), (18, 16, 4), (16, 16, 4), (10, 16, 4), (40, 8, 3)])
def test_sliding_windows_cover_every_frame(t, w, s):
    wins = sliding_windows(t, w, s)
    covered = torch.zeros(t, dtype=torch.bool)
    for a, b in wins:
        assert b - a == min(w, t) and 0 <= a < b <= t
        covered[a:b] = True
    assert covered.all()
    starts = [a for a, _ in wins]
    assert starts == sorted(set(starts))


def test_sliding_windows_golden():
    assert sliding_windows(26, 16, 4) == [(0, 16), (4, 20), (8, 24), (10, 26)]
    assert sliding_windows(64, 16, 4)[-1] == (48, 64) and len(sliding_windows(64, 16, 4)) == 13


def test_attention_with_bias_and_mask_matches_softmax_definition():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(3, 2, 7, 5, generator=gen, dtype=torch.float64) for _ in range(3))
    bias = torch.randn(2, 7, 7, generator=gen, dtype=torch.float64)
    mask = local_window_mask(7, 4, "centered")
    out = attention(q, k, v, bias=bias, mask=mask)
    logits = q @ k.transpose(-1, -2) / math.sqrt(5) + bias
    logits = logits.masked_fill(~mask, float("-inf"))
    ref = torch.softmax(logits, -1) @ v
    torch.testing.assert_close(out, ref)
    # mask without bias takes the boolean path
    out2 = attention(q, k, v, mask=mask)
    ref2 = torch.softmax((q @ k.transpose(-1, -2) / math.sqrt(5)).masked_fill(~mask, float("-inf")), -1) @ v
    torch.testing.assert_close(out2, ref2)
