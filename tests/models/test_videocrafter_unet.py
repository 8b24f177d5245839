"""VideoCrafter2 UNet: the full-size key layout, strict checkpoint round trips, and the temporal parts
against references written here from lvdm's definitions (reference_code.md §2.2)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from freelong.attention.processor import TemporalAttention, TemporalAttnProcessor, temporal_attention_layers
from freelong.models.spec import load_model_config
from freelong.models.tiny import randomize_
from freelong.models.videocrafter.blocks import ResBlock, SpatialTransformer, TemporalTransformer
from freelong.models.videocrafter.convert import read_checkpoint
from freelong.models.videocrafter.model import (
    VC2_UNET_CONFIG,
    VideoCrafterUNet,
    count_parameters,
    load_videocrafter_unet_weights,
    timestep_embedding,
)

KEY_LIST = Path(__file__).parents[1] / "data" / "vc2_ckpt_keys_unet_vae.txt"
TINY = dict(model_channels=32, channel_mult=[1, 2, 2], attention_resolutions=[2, 1], num_res_blocks=1,
            num_head_channels=16, context_dim=24)

pytestmark = pytest.mark.usefixtures("one_thread")



def tiny_unet(seed: int = 0) -> VideoCrafterUNet:
    return randomize_(VideoCrafterUNet(**TINY), seed).eval()


def run(unet, x, ctx, fps=28, t=500):
    with torch.no_grad():
        return unet(x, t, ctx, fps=fps)


# ----------------------------------------------------------------------------------------------
# Full-size layout
# ----------------------------------------------------------------------------------------------
def test_full_size_unet_has_exactly_the_checkpoint_keys():
    prefix = "model.diffusion_model."
    expected = {}
    for line in KEY_LIST.read_text().splitlines():
        key, shape = line.split("\t")
        if key.startswith(prefix):
            expected[key[len(prefix):]] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    unet_cfg = OmegaConf.to_container(load_model_config("videocrafter2").unet)
    assert unet_cfg == VC2_UNET_CONFIG
    with torch.device("meta"):
        unet = VideoCrafterUNet.from_config(unet_cfg)
    assert {k: tuple(v.shape) for k, v in unet.state_dict().items()} == expected  # 1484 keys
    assert count_parameters(unet) == 1_413_284_420

    layers = temporal_attention_layers(unet)
    assert len(layers) == 34 and all(type(m) is TemporalAttention for m in layers.values())
    assert all(m.to_q.bias is None and m.to_out[0].bias is not None for m in layers.values())
    assert Counter(m.level for m in layers.values()) == {0: 12, 1: 10, 2: 10, 3: 2}
    assert layers["init_attn.0.transformer_blocks.0.attn1"].level == 0
    assert layers["init_attn.0.transformer_blocks.0.attn2"].heads == 8
    assert layers["middle_block.2.transformer_blocks.0.attn2"].level == 3
    assert layers["output_blocks.3.2.transformer_blocks.0.attn1"].level == 2
    assert all(m.layer_name == n for n, m in layers.items())


def test_unsupported_config_values_fail_with_their_name():
    with pytest.raises(ValueError, match="use_relative_position"):
        VideoCrafterUNet(**TINY, use_relative_position=True)
    with pytest.raises(ValueError, match="unknown config key.*bogus"):
        VideoCrafterUNet.from_config({**TINY, "bogus": 1})
    with pytest.raises(ValueError, match="multiple of 32"):
        VideoCrafterUNet(**{**TINY, "model_channels": 16})


# ----------------------------------------------------------------------------------------------
# Checkpoint round trip
# ----------------------------------------------------------------------------------------------
def test_strict_round_trip_of_a_saved_state_dict(tmp_path):
    unet = tiny_unet(1)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}}, path)
    with torch.device("meta"):
        fresh = VideoCrafterUNet(**TINY)
    load_videocrafter_unet_weights(fresh, read_checkpoint(path), assign=True)  # mmap + weights_only + strict
    x, ctx = torch.randn(1, 4, 5, 8, 8), torch.randn(1, 7, 24)
    assert torch.equal(run(fresh.eval(), x, ctx), run(unet, x, ctx))

    sd = {k: v for k, v in unet.state_dict().items()}
    sd.pop("init_attn.0.proj_in.weight")
    with pytest.raises(RuntimeError, match="init_attn.0.proj_in.weight"):
        load_videocrafter_unet_weights(VideoCrafterUNet(**TINY), sd)
    sd = {**unet.state_dict(), "input_blocks.1.0.extra": torch.zeros(1)}
    with pytest.raises(RuntimeError, match="input_blocks.1.0.extra"):
        load_videocrafter_unet_weights(VideoCrafterUNet(**TINY), sd)


# ----------------------------------------------------------------------------------------------
# Definitions
# ----------------------------------------------------------------------------------------------
def test_timestep_embedding_is_lvdm_cos_sin():
    t = torch.tensor([0.0, 1.0, 28.0, 981.0])
    half = 8
    freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=-1)
    torch.testing.assert_close(timestep_embedding(t, 16), expected)


def _ref_temporal_transformer(tt: TemporalTransformer, x: torch.Tensor, b: int) -> torch.Tensor:
    """lvdm TemporalTransformer on (B*T, C, H, W) frames: GroupNorm(32, eps 1e-6) with statistics over
    (C/32, T, H, W) of each sample, rows (b h w), proj_in, 2x[LN, self-attention over frames], LN+GEGLU, proj_out."""
    bt, c, h, w = x.shape
    t = bt // b
    v = x.view(b, t, 32, c // 32, h, w)
    mean = v.mean(dim=(1, 3, 4, 5), keepdim=True)
    var = v.var(dim=(1, 3, 4, 5), keepdim=True, unbiased=False)
    n = ((v - mean) / torch.sqrt(var + 1e-6)).view(b, t, c, h, w)
    n = n * tt.norm.weight[:, None, None] + tt.norm.bias[:, None, None]
    rows = n.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, c)

    def lin(layer, y):
        wgt = layer.weight[..., 0] if layer.weight.ndim == 3 else layer.weight
        return y @ wgt.T + layer.bias

    def attn(a, y):
        q, k, vv = (lin_nb(p, y).view(y.shape[0], t, a.heads, -1).transpose(1, 2) for p in (a.to_q, a.to_k, a.to_v))
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        o = (p @ vv).transpose(1, 2).reshape(y.shape[0], t, -1)
        return lin(a.to_out[0], o)

    def lin_nb(layer, y):
        return y @ layer.weight.T

    def ln(layer, y):
        return F.layer_norm(y, y.shape[-1:], layer.weight, layer.bias, 1e-5)

    y = lin(tt.proj_in, rows)
    blk = tt.transformer_blocks[0]
    y = attn(blk.attn1, ln(blk.norm1, y)) + y
    y = attn(blk.attn2, ln(blk.norm2, y)) + y
    hid, gate = lin(blk.ff.net[0].proj, ln(blk.norm3, y)).chunk(2, dim=-1)
    y = lin(blk.ff.net[2], hid * F.gelu(gate)) + y
    y = lin(tt.proj_out, y).view(b, h, w, t, c).permute(0, 3, 4, 1, 2).reshape(bt, c, h, w)
    return y + x


@pytest.mark.parametrize("use_linear", [True, False])  # False: init_attn's Conv1d projections
def test_temporal_transformer_matches_the_definition(use_linear):
    tt = randomize_(TemporalTransformer(64, 8 if not use_linear else 4, 16, use_linear=use_linear), 3).eval()
    x = torch.randn(2 * 6, 64, 3, 5) * 2 + 1
    with torch.no_grad():
        torch.testing.assert_close(tt(x, batch=2), _ref_temporal_transformer(tt, x, 2), atol=2e-5, rtol=1e-4)


def test_temporal_attention_rows_are_batch_height_width_ordered():
    """Processors that view rows as a video (FreeLong's 3D FFT) rely on rows ordered (b, h, w) and frame_shape."""
    tt = randomize_(TemporalTransformer(32, 2, 16), 4).eval()
    seen = {}

    class Probe(TemporalAttnProcessor):
        def __call__(self, q, k, v, *, bias, ctx):
            seen.setdefault("q", q)
            seen.setdefault("ctx", ctx)
            return super().__call__(q, k, v, bias=bias, ctx=ctx)

    for layer in temporal_attention_layers(tt).values():
        layer.set_processor(Probe())
    b, t, h, w = 2, 5, 3, 4
    x = torch.randn(b * t, 32, h, w)
    with torch.no_grad():
        tt(x, batch=b)
        normed = tt.norm(x.view(b, t, 32, h, w).transpose(1, 2))  # (B, C, T, H, W), stats over all frames
        blk = tt.transformer_blocks[0]
        q_ref = blk.norm1(tt.proj_in(normed.permute(0, 3, 4, 2, 1))) @ blk.attn1.to_q.weight.T  # (B, H, W, T, C)
    ctx = seen["ctx"]
    assert ctx.frame_shape == (t, h, w) and ctx.batch == b
    q = seen["q"].view(b, h, w, 2, t, 16).transpose(3, 4).reshape(b, h, w, t, 32)
    torch.testing.assert_close(q, q_ref, atol=1e-5, rtol=1e-4)


def test_resblock_norms_are_per_frame_and_temporal_conv_norms_pool_frames():
    rb = randomize_(ResBlock(32, 64, 64), 5).eval()
    b, t = 2, 4
    x = torch.randn(b * t, 32, 3, 3) * 3 + 2
    emb = torch.randn(b * t, 64)
    with torch.no_grad():
        out = rb(x, emb, b)
        # reference: 2D part frame by frame (GroupNorm32 in fp32, eps 1e-5), then the temporal conv on (B, C, T, H, W)
        frames = []
        for i in range(b * t):
            f = x[i : i + 1]
            h = F.conv2d(F.silu(F.group_norm(f, 32, rb.in_layers[0].weight, rb.in_layers[0].bias, 1e-5)),
                         rb.in_layers[2].weight, rb.in_layers[2].bias, padding=1)
            h = h + (F.silu(emb[i : i + 1]) @ rb.emb_layers[1].weight.T + rb.emb_layers[1].bias)[:, :, None, None]
            h = F.conv2d(F.silu(F.group_norm(h, 32, rb.out_layers[0].weight, rb.out_layers[0].bias, 1e-5)),
                         rb.out_layers[3].weight, rb.out_layers[3].bias, padding=1)
            frames.append(F.conv2d(f, rb.skip_connection.weight, rb.skip_connection.bias) + h)
        video = torch.cat(frames).view(b, t, 64, 3, 3).transpose(1, 2)
        y = video
        for stage in (rb.temopral_conv.conv1, rb.temopral_conv.conv2, rb.temopral_conv.conv3, rb.temopral_conv.conv4):
            gn, conv = stage[0], stage[-1]
            y = F.conv3d(F.silu(F.group_norm(y, 32, gn.weight, gn.bias, 1e-5)), conv.weight, conv.bias,
                         padding=(1, 0, 0))
        ref = (video + y).transpose(1, 2).reshape(b * t, 64, 3, 3)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Whole-model invariants
# ----------------------------------------------------------------------------------------------
def test_batch_items_are_independent_and_fps_conditions():
    unet = tiny_unet(2)
    x, ctx = torch.randn(2, 4, 6, 8, 8), torch.randn(2, 7, 24)
    both = run(unet, x, ctx, fps=torch.tensor([28, 8]))
    torch.testing.assert_close(both[:1], run(unet, x[:1], ctx[:1], fps=28), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both[1:], run(unet, x[1:], ctx[1:], fps=8), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(both[1:], run(unet, x[1:], ctx[1:], fps=28), atol=1e-3)


def test_frame_chunking_changes_nothing():
    unet = tiny_unet(3)
    x, ctx = torch.randn(1, 4, 7, 8, 8), torch.randn(1, 7, 24)
    unet.set_frame_chunk_size(0)  # off
    full = run(unet, x, ctx)
    for size in (3, 1, None):  # fixed sizes, and automatic with a budget small enough to split 7 frames
        unet.set_frame_chunk_size(size)
        unet.chunk_budget_mb = 1e-3 if size is None else None
        assert unet._chunk_rows(1, 7, 8, 8) is not None
        torch.testing.assert_close(run(unet, x, ctx), full, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="frame_chunk_size"):
        unet.set_frame_chunk_size(-1)


def test_text_context_forms_and_block_groups():
    unet = tiny_unet(4)
    x = torch.randn(1, 4, 3, 8, 8)
    c1, c2 = torch.randn(1, 7, 24), torch.randn(1, 7, 24)
    plain = run(unet, x, c1)
    torch.testing.assert_close(run(unet, x, c1[:, None].expand(1, 3, 7, 24)), plain)
    torch.testing.assert_close(run(unet, x, {"down": c1, "mid": c1, "up": c1}), plain)

    seen = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, n=n: seen.__setitem__(n, args[1]))
             for n, m in unet.named_modules() if isinstance(m, SpatialTransformer)]
    run(unet, x, {"down": c1, "mid": c2, "up": c1 + c2})
    for h in hooks:
        h.remove()
    expect = {"input_blocks": c1, "middle_block": c2, "output_blocks": c1 + c2}
    for name, ctx in seen.items():
        torch.testing.assert_close(ctx, expect[name.split(".")[0]].repeat_interleave(3, dim=0))
    with pytest.raises(ValueError, match="per-frame text context"):
        run(unet, x, c1[:, None].expand(1, 4, 7, 24))


def test_odd_latent_sizes_upsample_to_the_skip_size():
    unet = tiny_unet(5)
    out = run(unet, torch.randn(1, 4, 3, 5, 7), torch.randn(1, 7, 24))
    assert out.shape == (1, 4, 3, 5, 7) and torch.isfinite(out).all()
