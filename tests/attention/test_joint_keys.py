"""Joint text keys (CogVideoX / HunyuanVideo joint attention): every kernel's video queries also attend to all text
keys in one softmax; checked against the explicit masked softmax over [video, text] keys."""

import pytest
import torch

from freelong.attention.context import TemporalAttentionContext
from freelong.attention.kernels import global_attention, joint_keys, joint_keys_active, local_attention
from freelong.attention.lse import shares_key_pass
from freelong.attention.windows import local_window_bounds
from tests.helpers import random_qkv


def masked_reference(q, k, v, kt, vt, allowed_video, text_mask=None):
    """softmax over [video keys allowed by ``allowed_video`` (Nq, Nk), text keys] in fp64, by definition."""
    logits = torch.cat([q @ k.transpose(-1, -2), q @ kt.transpose(-1, -2)], dim=-1).double() * q.shape[-1] ** -0.5
    text_ok = torch.ones(kt.shape[-2], dtype=torch.bool) if text_mask is None else text_mask[0]
    allowed = torch.cat([allowed_video, text_ok.expand(q.shape[-2], -1)], dim=-1)
    probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
    return (probs @ torch.cat([v, vt], dim=-2).double()).float()


def frame_mask(t, s, window):
    start, end = local_window_bounds(t, window, "adjusted")
    fq = torch.arange(t * s) // s
    fk = torch.arange(t * s) // s
    return (fk[None, :] >= start[fq][:, None]) & (fk[None, :] < end[fq][:, None])


@pytest.mark.parametrize("text_mask", [None, torch.tensor([[True, True, True, False, False]])])
def test_global_and_windowed_kernels_see_every_text_key(text_mask):
    t, s = 6, 4
    q, k, v = random_qkv(1, 2, t * s, 8, seed=0)
    kt, vt = random_qkv(1, 2, 5, 8, seed=1)[1:]
    with joint_keys(kt, vt, text_mask):
        assert joint_keys_active()
        glob = global_attention(q, k, v, None)
        local = local_attention(q, k, v, None, 3, tokens_per_frame=s)
    assert not joint_keys_active()
    every = torch.ones(t * s, t * s, dtype=torch.bool)
    assert torch.allclose(glob, masked_reference(q, k, v, kt, vt, every, text_mask), atol=1e-5)
    assert torch.allclose(local, masked_reference(q, k, v, kt, vt, frame_mask(t, s, 3), text_mask), atol=1e-5)
    # and the text changes the result (the keys were really appended)
    assert (local - local_attention(q, k, v, None, 3, tokens_per_frame=s)).abs().max() > 1e-3


def test_one_pass_lse_path_steps_aside_under_joint_keys():
    q = torch.zeros(1, 2, 24, 8)
    ctx = TemporalAttentionContext(frame_shape=(6, 2, 2), batch=1, level=0, name="x", tokens_per_frame=4)
    outside = shares_key_pass(q, None, ctx)
    with joint_keys(q[:, :, :3], q[:, :, :3]):
        assert shares_key_pass(q, None, ctx) is False
    assert shares_key_pass(q, None, ctx) == outside


def test_joint_keys_refuse_a_position_bias():
    q, k, v = random_qkv(1, 2, 6, 8)
    with joint_keys(k[:, :, :2], v[:, :, :2]), pytest.raises(NotImplementedError, match="position bias"):
        global_attention(q, k, v, lambda qi, ki: torch.zeros(2, len(qi), len(ki)))


def test_rows_with_different_prompt_padding_get_a_broadcast_key_mask():
    """Batch 2, different text masks: each row's video queries see only its own unpadded text keys."""
    t, s = 4, 3
    q, k, v = random_qkv(2, 2, t * s, 8, seed=2)
    kt, vt = random_qkv(2, 2, 5, 8, seed=3)[1:]
    mask = torch.tensor([[True, True, False, False, False], [True, True, True, True, False]])
    with joint_keys(kt, vt, mask):
        local = local_attention(q, k, v, None, 2, tokens_per_frame=s)
    for row in range(2):
        ref = masked_reference(q[row:row + 1], k[row:row + 1], v[row:row + 1], kt[row:row + 1], vt[row:row + 1],
                               frame_mask(t, s, 2), mask[row:row + 1])
        assert torch.allclose(local[row:row + 1], ref, atol=1e-5)
