"""LaVie UNet port: checkpoint compatibility and the temporal attention maths, from the definitions."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from freelong.attention.context import CallContext
from freelong.attention.processor import temporal_attention_layers
from freelong.models.lavie.blocks import (
    LaVieTemporalAttention,
    RelativePositionBias,
    ResnetBlock3D,
    RotaryEmbedding,
    relative_position_bucket,
)
from freelong.models.lavie.model import (
    LAVIE_BASE_CONFIG,
    LaVieUNet,
    load_lavie_unet_weights,
)
from freelong.models.tiny import randomize_

KEYS = Path(__file__).parents[1] / "data" / "lavie_unet_keys.txt"  # the official checkpoint's keys
TINY = dict(block_out_channels=[32, 32, 64, 64], layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
            attention_head_dim=1)


def tiny_unet(seed=0):
    return randomize_(LaVieUNet(**TINY), seed).eval()


def reference_keys():
    out = {}
    for line in KEYS.read_text().strip().splitlines():
        key, shape = line.split("\t")
        out[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


def test_full_size_model_has_exactly_the_checkpoint_keys_and_shapes():
    sd_config = {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.2.2", **LAVIE_BASE_CONFIG}
    with torch.device("meta"):
        unet = LaVieUNet.from_config(sd_config)
    mine = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    ref = reference_keys()
    assert len(ref) == 830
    assert mine == ref
    n_params = sum(p.numel() for p in unet.parameters())
    n_freqs = sum(v.numel() for k, v in unet.state_dict().items() if k.endswith("rotary_emb.freqs"))
    # the reference counts 909,124,116 unique parameters, with the shared 16 rotary freqs counted once
    assert n_params + n_freqs // 16 == 909_124_116
    assert len(temporal_attention_layers(unet)) == 16


def test_unknown_or_unsupported_config_keys_are_named():
    with pytest.raises(ValueError, match="use_linear_projection"):
        LaVieUNet(**TINY, use_linear_projection=True)
    with pytest.raises(ValueError, match="bogus"):
        LaVieUNet.from_config({**TINY, "bogus": 1})
    with pytest.raises(ValueError, match="rotary_dim"):
        LaVieUNet(**{**TINY, "attention_head_dim": 2})  # head dim 16 < 32


def test_levels_follow_resolution():
    levels = {n: layer.level for n, layer in temporal_attention_layers(tiny_unet()).items()}
    assert levels["down_blocks.0.attentions.0.transformer_blocks.0.attn_temp"] == 0
    assert levels["up_blocks.3.attentions.1.transformer_blocks.0.attn_temp"] == 0
    assert levels["down_blocks.2.attentions.0.transformer_blocks.0.attn_temp"] == 2
    assert levels["mid_block.attentions.0.transformer_blocks.0.attn_temp"] == 3
    assert levels["up_blocks.1.attentions.0.transformer_blocks.0.attn_temp"] == 2


@torch.no_grad()
def test_state_dict_round_trip_is_strict_and_exact(tmp_path):
    a, b = tiny_unet(0), tiny_unet(1)
    x = torch.randn(2, 4, 12, 8, 8)
    ctx = torch.randn(2, 7, 32)
    assert not torch.allclose(a(x, 10, ctx), b(x, 10, ctx))
    path = tmp_path / "lavie_base.pt"
    torch.save({"ema": a.state_dict()}, path)
    loaded = torch.load(path, weights_only=True, mmap=True)
    load_lavie_unet_weights(b, loaded)
    assert torch.equal(a(x, 10, ctx), b(x, 10, ctx))
    # a checkpoint without the (deterministic) rotary buffers still loads strictly
    sd = {k: v for k, v in a.state_dict().items() if not k.endswith("rotary_emb.freqs")}
    c = tiny_unet(2)
    load_lavie_unet_weights(c, sd)
    assert torch.equal(a(x, 10, ctx), c(x, 10, ctx))
    # a missing real weight is still an error
    sd.pop("conv_in.weight")
    with pytest.raises(RuntimeError, match="conv_in.weight"):
        load_lavie_unet_weights(tiny_unet(3), sd)


def test_relative_bucket_golden_table():
    """rel = key - query; table from the reference-code notes (T5 buckets, 32 buckets, max distance 32)."""
    past = {0: 0, -1: 1, -7: 7, -8: 8, -9: 8, -10: 9, -11: 9, -12: 10, -13: 10, -14: 11, -15: 11,
            -16: 12, -19: 12, -20: 13, -22: 13, -23: 14, -26: 14, -27: 15, -60: 15, -127: 15}
    for rel, bucket in past.items():
        assert int(relative_position_bucket(torch.tensor(rel))) == bucket, rel
        if rel < 0:
            assert int(relative_position_bucket(torch.tensor(-rel))) == 16 + bucket, -rel


def test_rotary_rotates_interleaved_pairs_of_the_first_32_channels():
    rot = RotaryEmbedding(32)
    theta = 1.0 / 10000 ** (torch.arange(0, 32, 2).double() / 32)
    x = torch.zeros(1, 5, 40, dtype=torch.float64)
    x[..., 0::2] = 1.0  # each pair (a, b) = (1, 0)
    x[..., 32:] = 3.0
    out = rot.rotate(x.float()).double()
    for p in range(5):
        torch.testing.assert_close(out[0, p, 0:32:2], torch.cos(p * theta), atol=1e-6, rtol=0)
        torch.testing.assert_close(out[0, p, 1:32:2], torch.sin(p * theta), atol=1e-6, rtol=0)
    assert torch.equal(out[..., 32:], x[..., 32:])
    # relative: <R_i q, R_j k> depends only on i - j
    q, k = torch.randn(1, 1, 32).expand(1, 6, 32), torch.randn(1, 1, 32).expand(1, 6, 32)
    rq, rk = rot.rotate(q.contiguous()), rot.rotate(k.contiguous())
    dots = rq[0] @ rk[0].T
    torch.testing.assert_close(dots[0, 2], dots[3, 5], atol=1e-5, rtol=0)


@torch.no_grad()
def test_temporal_attention_layer_matches_definition():
    """softmax(s·rot(q)·rot(k) + B[bucket(j-i)]) v, merged heads, to_out — float64 reference."""
    torch.manual_seed(0)
    layer = randomize_(LaVieTemporalAttention(64, heads=2), 3).double()
    t, h, w = 20, 2, 3
    x = torch.randn(1 * h * w, t, 64, dtype=torch.float64)
    out = layer(x, (t, h, w))
    q = layer.to_q(x).view(-1, t, 2, 32).transpose(1, 2)
    k = layer.to_k(x).view(-1, t, 2, 32).transpose(1, 2)
    v = layer.to_v(x).view(-1, t, 2, 32).transpose(1, 2)
    pos = torch.arange(t, dtype=torch.float64)
    theta = 1.0 / 10000 ** (torch.arange(0, 32, 2).double() / 32)
    ang = (pos[:, None] * theta[None]).repeat_interleave(2, -1)

    def rot(a):
        pair = a.unflatten(-1, (-1, 2))
        half = torch.stack((-pair[..., 1], pair[..., 0]), -1).flatten(-2)
        return a * ang.cos() + half * ang.sin()

    rel = pos[None, :] - pos[:, None]
    bucket = relative_position_bucket(rel.long())
    bias = layer.time_rel_pos_bias.relative_attention_bias.weight[bucket].permute(2, 0, 1)
    logits = rot(q) @ rot(k).transpose(-1, -2) / math.sqrt(32) + bias
    ref = (torch.softmax(logits, -1) @ v).transpose(1, 2).reshape(-1, t, 64)
    ref = layer.to_out[0](ref)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)  # rotary angles are fp32, as in LaVie


def test_relative_bias_module_is_the_bucketed_embedding():
    rb = RelativePositionBias(heads=3)
    q, k = torch.arange(4, 9), torch.arange(0, 12)
    b = rb(q, k)
    assert b.shape == (3, 5, 12)
    assert torch.equal(b[:, 1, 3], rb.relative_attention_bias.weight[relative_position_bucket(torch.tensor(3 - 5))])


def test_resnet_groupnorm_pools_statistics_over_all_frames():
    torch.manual_seed(0)
    block = randomize_(ResnetBlock3D(16, 16, 8, groups=4, eps=1e-5), 0)
    x, temb = torch.randn(1, 16, 5, 4, 4), torch.randn(1, 8)
    out = block(x, temb)
    # independent reference: GroupNorm over (C/G, T, H, W) jointly, then the resnet
    g = x.view(1, 4, 4, 5, 4, 4)
    mean = g.mean(dim=(2, 3, 4, 5), keepdim=True)
    var = g.var(dim=(2, 3, 4, 5), unbiased=False, keepdim=True)
    normed = ((g - mean) / torch.sqrt(var + 1e-5)).view_as(x)
    normed = normed * block.norm1.weight[None, :, None, None, None] + block.norm1.bias[None, :, None, None, None]

    def conv(c, z):  # 2D conv on each frame
        frames = z.transpose(1, 2).reshape(5, z.shape[1], 4, 4)
        return F.conv2d(frames, c.weight, c.bias, padding=1).reshape(1, 5, -1, 4, 4).transpose(1, 2)

    hdn = conv(block.conv1, F.silu(normed)) + block.time_emb_proj(F.silu(temb))[:, :, None, None, None]
    hdn = conv(block.conv2, F.silu(block.norm2(hdn)))
    torch.testing.assert_close(out, x + hdn, atol=1e-5, rtol=1e-5)
    # and frame 0's output depends on the other frames (per-frame GroupNorm would not)
    x2 = x.clone()
    x2[:, :, 1:] *= 3
    assert not torch.allclose(block(x2, temb)[:, :, 0], out[:, :, 0])


@torch.no_grad()
def test_text_context_layouts_agree():
    unet = tiny_unet()
    x, ctx = torch.randn(1, 4, 6, 8, 8), torch.randn(1, 7, 32)
    base = unet(x, 500, ctx)
    per_frame = unet(x, 500, ctx[:, None].expand(1, 6, 7, 32))
    grouped = unet(x, 500, {"down": ctx, "mid": ctx, "up": ctx})
    torch.testing.assert_close(per_frame, base)
    torch.testing.assert_close(grouped, base)
    other = torch.randn(1, 7, 32)
    assert not torch.allclose(unet(x, 500, {"down": ctx, "mid": ctx, "up": other}), base)
    with pytest.raises(ValueError, match="per-frame"):
        unet(x, 500, ctx[:, None].expand(1, 5, 7, 32))


@torch.no_grad()
@pytest.mark.parametrize("hw", [(8, 8), (5, 7), (6, 10)])
def test_any_latent_size_and_frame_count(hw):
    unet = tiny_unet()
    x = torch.randn(2, 4, 9, *hw)
    out = unet(x, torch.tensor([3, 900]), torch.randn(2, 7, 32), call=CallContext(step_index=0))
    assert out.shape == x.shape and torch.isfinite(out).all()
