"""Load the checkpoints VBench itself caches (torch-hub DINO, OpenAI CLIP) into the transformers models.

So an existing VBench/torch/CLIP cache works offline as is, without a Hugging Face download:

* ``dino_vitbase16_pretrain.pth`` (DINO's own ViT layout: fused ``qkv``, ``blocks.N``) → ``ViTModel``; the
  state dict is renamed to the classic transformers ViT names, which every transformers version loads
  (5.x converts them to its new names itself).
* ``ViT-B-32.pt`` / ``ViT-L-14.pt`` (OpenAI's TorchScript archives, or plain state dicts) → the image
  tower of ``CLIPVisionModelWithProjection`` (fused ``in_proj`` split into q/k/v, ``proj`` transposed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def _strip(sd: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


# The per-block parameters both towers only rename, ``(transformers name, checkpoint name)``; each has a
# ``.weight`` and a ``.bias``. The fused attention input projections are split apart by each converter.
DINO_BLOCK_NAMES = (("attention.output.dense", "attn.proj"), ("layernorm_before", "norm1"),
                    ("layernorm_after", "norm2"), ("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2"))
CLIP_BLOCK_NAMES = (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                    ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"))


def _renamed(sd: dict[str, torch.Tensor], src: str, dst: str, names: tuple[tuple[str, str], ...],
             kind: str) -> dict[str, torch.Tensor]:
    """One block's ``kind`` (``weight``/``bias``) parameters under their new names: ``dst + new`` from
    ``src + old`` for each ``(new, old)`` of ``names`` (one reader for DINO's and CLIP's tables)."""
    return {f"{dst}{new}.{kind}": sd[f"{src}{old}.{kind}"] for new, old in names}


def dino_to_hf(sd: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """DINO ViT state dict → (``ViTConfig`` kwargs, state dict with transformers' classic ViT names)."""
    if "teacher" in sd and isinstance(sd["teacher"], dict):  # full training checkpoints
        sd = sd["teacher"]
    sd = _strip(sd, ("module.", "backbone."))
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    width = sd["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    patch = sd["patch_embed.proj.weight"].shape[-1]
    grid = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
    config = {"hidden_size": width, "num_hidden_layers": depth, "num_attention_heads": width // 64,
              "intermediate_size": sd["blocks.0.mlp.fc1.weight"].shape[0], "patch_size": patch,
              "image_size": grid * patch, "layer_norm_eps": 1e-6, "qkv_bias": "blocks.0.attn.qkv.bias" in sd}
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.position_embeddings": sd["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            if f"{src}attn.qkv.{kind}" in sd:
                q, k, v = sd[f"{src}attn.qkv.{kind}"].chunk(3, dim=0)
                out[f"{dst}attention.attention.query.{kind}"] = q
                out[f"{dst}attention.attention.key.{kind}"] = k
                out[f"{dst}attention.attention.value.{kind}"] = v
            out.update(_renamed(sd, src, dst, DINO_BLOCK_NAMES, kind))
    return config, {k: v.float().contiguous() for k, v in out.items()}


def openai_clip_to_hf(sd: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """OpenAI CLIP (ViT) state dict → (``CLIPVisionConfig`` kwargs, ``CLIPVisionModelWithProjection`` state dict)."""
    v = {k[len("visual.") :]: t for k, t in sd.items() if k.startswith("visual.")}
    if "conv1.weight" not in v:
        raise ValueError("not an OpenAI CLIP ViT checkpoint (no visual.conv1.weight)")
    width, _, patch, _ = v["conv1.weight"].shape
    depth = 1 + max(int(k.split(".")[2]) for k in v if k.startswith("transformer.resblocks."))
    grid = int(round((v["positional_embedding"].shape[0] - 1) ** 0.5))
    config = {"hidden_size": width, "num_hidden_layers": depth, "num_attention_heads": width // 64,
              "intermediate_size": v["transformer.resblocks.0.mlp.c_fc.weight"].shape[0], "patch_size": patch,
              "image_size": grid * patch, "projection_dim": v["proj"].shape[1], "hidden_act": "quick_gelu",
              "layer_norm_eps": 1e-5}
    out = {
        "vision_model.embeddings.class_embedding": v["class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": v["conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": v["positional_embedding"],
        "vision_model.pre_layrnorm.weight": v["ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": v["ln_pre.bias"],
        "vision_model.post_layernorm.weight": v["ln_post.weight"],
        "vision_model.post_layernorm.bias": v["ln_post.bias"],
        "visual_projection.weight": v["proj"].t(),
    }
    for i in range(depth):
        src, dst = f"transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        q, k, vv = v[f"{src}attn.in_proj_weight"].chunk(3, dim=0)
        qb, kb, vb = v[f"{src}attn.in_proj_bias"].chunk(3, dim=0)
        out.update({f"{dst}self_attn.q_proj.weight": q, f"{dst}self_attn.k_proj.weight": k,
                    f"{dst}self_attn.v_proj.weight": vv, f"{dst}self_attn.q_proj.bias": qb,
                    f"{dst}self_attn.k_proj.bias": kb, f"{dst}self_attn.v_proj.bias": vb})
        for kind in ("weight", "bias"):
            out.update(_renamed(v, src, dst, CLIP_BLOCK_NAMES, kind))
    return config, {k: t.float().contiguous() for k, t in out.items()}


def read_openai_clip(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict of an OpenAI CLIP file: the TorchScript archive ``clip`` downloads, or a plain state dict."""
    try:
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except RuntimeError:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
        return sd.get("state_dict", sd)


def load_dino_file(path: str | Path, **kwargs: Any):
    """``ViTModel`` from DINO's ``dino_vitbase16_pretrain.pth``."""
    from transformers import ViTConfig, ViTModel

    config, sd = dino_to_hf(torch.load(str(path), map_location="cpu", weights_only=True))
    return ViTModel.from_pretrained(None, config=ViTConfig(**config), state_dict=sd, add_pooling_layer=False,
                                    **kwargs)


def load_clip_file(path: str | Path):
    """``CLIPVisionModelWithProjection`` from OpenAI's ``ViT-B-32.pt`` / ``ViT-L-14.pt``."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config, sd = openai_clip_to_hf(read_openai_clip(path))
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**config))
    model.load_state_dict(sd, strict=True)
    return model
