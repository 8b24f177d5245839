"""VBench's own DINO / OpenAI CLIP checkpoint files loaded into the transformers models, checked against
forward passes written from the original layouts (fused qkv / in_proj, QuickGELU, ln_pre, proj)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eval.models import load_clip, load_dino


def _attention(x, w_qkv, b_qkv, w_out, b_out, heads):
    b, n, c = x.shape
    q, k, v = F.linear(x, w_qkv, b_qkv).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    att = ((q @ k.transpose(-1, -2)) * (c // heads) ** -0.5).softmax(-1)
    return F.linear((att @ v).transpose(1, 2).reshape(b, n, c), w_out, b_out)


def _dino_state(width=128, depth=2, patch=16, grid=14, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.05):
        return torch.randn(*shape, generator=g) * s

    sd = {"cls_token": r(1, 1, width, s=1), "pos_embed": r(1, grid * grid + 1, width, s=1),
          "patch_embed.proj.weight": r(width, 3, patch, patch), "patch_embed.proj.bias": r(width),
          "norm.weight": 1 + r(width), "norm.bias": r(width)}
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": 1 + r(width), p + "norm1.bias": r(width),
                   p + "attn.qkv.weight": r(3 * width, width), p + "attn.qkv.bias": r(3 * width),
                   p + "attn.proj.weight": r(width, width), p + "attn.proj.bias": r(width),
                   p + "norm2.weight": 1 + r(width), p + "norm2.bias": r(width),
                   p + "mlp.fc1.weight": r(4 * width, width), p + "mlp.fc1.bias": r(4 * width),
                   p + "mlp.fc2.weight": r(width, 4 * width), p + "mlp.fc2.bias": r(width)})
    return sd


def _dino_reference(sd, x, depth=2, heads=2):
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16).flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), t], 1) + sd["pos_embed"]
    c = t.shape[-1]
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(t, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        t = t + _attention(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"], sd[p + "attn.proj.weight"],
                           sd[p + "attn.proj.bias"], heads)
        h = F.layer_norm(t, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        t = t + F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                         sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return F.layer_norm(t, (c,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)[:, 0]


def test_torch_hub_dino_checkpoint_gives_dinos_cls_features(tmp_path):
    sd = _dino_state()
    torch.save(sd, tmp_path / "dino_vitbase16_pretrain.pth")
    enc = load_dino(tmp_path / "dino_vitbase16_pretrain.pth")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(enc(x), _dino_reference(sd, x), rtol=1e-4, atol=1e-5)
    assert enc.vit.config.layer_norm_eps == 1e-6 and enc.vit.config.num_attention_heads == 2


def _clip_state(width=128, depth=2, patch=32, grid=7, proj=64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.05):
        return torch.randn(*shape, generator=g) * s

    v = {"class_embedding": r(width, s=1), "positional_embedding": r(grid * grid + 1, width, s=1),
         "proj": r(width, proj, s=0.1), "conv1.weight": r(width, 3, patch, patch),
         "ln_pre.weight": 1 + r(width), "ln_pre.bias": r(width), "ln_post.weight": 1 + r(width),
         "ln_post.bias": r(width)}
    for i in range(depth):
        p = f"transformer.resblocks.{i}."
        v.update({p + "attn.in_proj_weight": r(3 * width, width), p + "attn.in_proj_bias": r(3 * width),
                  p + "attn.out_proj.weight": r(width, width), p + "attn.out_proj.bias": r(width),
                  p + "ln_1.weight": 1 + r(width), p + "ln_1.bias": r(width), p + "ln_2.weight": 1 + r(width),
                  p + "ln_2.bias": r(width), p + "mlp.c_fc.weight": r(4 * width, width),
                  p + "mlp.c_fc.bias": r(4 * width), p + "mlp.c_proj.weight": r(width, 4 * width),
                  p + "mlp.c_proj.bias": r(width)})
    return {f"visual.{k}": t for k, t in v.items()} | {"text_projection": r(width, proj)}


def _clip_reference(sd, x, depth=2, heads=2):
    v = {k[7:]: t for k, t in sd.items() if k.startswith("visual.")}
    t = F.conv2d(x, v["conv1.weight"], stride=32).flatten(2).transpose(1, 2)
    t = torch.cat([v["class_embedding"].expand(x.shape[0], 1, -1), t], 1) + v["positional_embedding"]
    c = t.shape[-1]
    t = F.layer_norm(t, (c,), v["ln_pre.weight"], v["ln_pre.bias"])
    for i in range(depth):
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(t, (c,), v[p + "ln_1.weight"], v[p + "ln_1.bias"])
        t = t + _attention(h, v[p + "attn.in_proj_weight"], v[p + "attn.in_proj_bias"], v[p + "attn.out_proj.weight"],
                           v[p + "attn.out_proj.bias"], heads)
        h = F.linear(F.layer_norm(t, (c,), v[p + "ln_2.weight"], v[p + "ln_2.bias"]), v[p + "mlp.c_fc.weight"],
                     v[p + "mlp.c_fc.bias"])
        t = t + F.linear(h * torch.sigmoid(1.702 * h), v[p + "mlp.c_proj.weight"], v[p + "mlp.c_proj.bias"])
    return F.layer_norm(t[:, 0], (c,), v["ln_post.weight"], v["ln_post.bias"]) @ v["proj"]


class _Holder(nn.Module):
    """A module tree whose state dict has OpenAI CLIP's names, saved as TorchScript like clip's .pt files."""

    def __init__(self, sd):
        super().__init__()
        for name, tensor in sd.items():
            *path, leaf = name.split(".")
            mod = self
            for part in path:
                if not hasattr(mod, part):
                    mod.add_module(part, nn.Module())
                mod = getattr(mod, part)
            mod.register_parameter(leaf, nn.Parameter(tensor.half(), requires_grad=False))

    def forward(self, x):
        return x * 2


def test_openai_clip_files_plain_and_torchscript_give_clip_image_features(tmp_path):
    sd = _clip_state()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    torch.save(sd, tmp_path / "plain.pt")
    torch.jit.trace(_Holder(sd), torch.zeros(1)).save(str(tmp_path / "ViT-B-32.pt"))
    with torch.no_grad():
        ref = _clip_reference(sd, x)
        torch.testing.assert_close(load_clip(tmp_path / "plain.pt")(x), ref, rtol=1e-4, atol=1e-5)
        # OpenAI ships fp16 tensors; the fp32 model holds exactly those values
        half = {k: t.half().float() for k, t in sd.items()}
        torch.testing.assert_close(load_clip(tmp_path / "ViT-B-32.pt")(x), _clip_reference(half, x),
                                   rtol=1e-4, atol=1e-5)
