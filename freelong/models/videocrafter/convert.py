"""Reading VideoCrafter2's ``model.ckpt`` and converting its VAE and text tower to diffusers/transformers.

The official checkpoint is one LatentDiffusion state dict (optionally wrapped in ``state_dict`` or
a DeepSpeed ``module`` with a ``_forward_module.`` prefix) holding:

==============================  ==============================================================
prefix                          goes to
==============================  ==============================================================
``model.diffusion_model.``      :class:`~freelong.models.videocrafter.VideoCrafterUNet`, names unchanged
``first_stage_model.``          diffusers ``AutoencoderKL`` (:func:`convert_vae`)
``cond_stage_model.model.``     transformers ``CLIPTextModel`` (:func:`convert_open_clip_text`)
top level (``betas``, ...)      the noise schedule; checked against the scheduler, not loaded
==============================  ==============================================================

VAE key conversion (LDM → diffusers; diffusers' ``convert_ldm_vae_checkpoint`` does the renaming,
this module checks that every tensor was used and that the result loads strictly):

* ``{encoder,decoder}.conv_in/conv_out``, ``quant_conv``, ``post_quant_conv``: unchanged;
  ``norm_out`` → ``conv_norm_out``.
* ``encoder.down.{i}.block.{j}.*`` → ``encoder.down_blocks.{i}.resnets.{j}.*`` (``nin_shortcut`` →
  ``conv_shortcut``); ``encoder.down.{i}.downsample.conv`` → ``encoder.down_blocks.{i}.downsamplers.0.conv``.
* ``decoder.up.{i}.*`` → ``decoder.up_blocks.{n-1-i}.*`` (LDM numbers up blocks by resolution,
  diffusers by execution order); ``upsample.conv`` → ``upsamplers.0.conv``.
* ``*.mid.block_{1,2}`` → ``*.mid_block.resnets.{0,1}``; ``*.mid.attn_1.{norm,q,k,v,proj_out}`` →
  ``*.mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}`` with the 1x1-conv weights
  ``[C, C, 1, 1]`` reshaped to linear ``[C, C]``.

Text tower (OpenCLIP ViT-H/14, FrozenOpenCLIPEmbedder with ``layer="penultimate"``): the
conditioning is the output of resblock ``L-2`` (0-based; the last block is skipped) followed by
``ln_final``. The converted ``CLIPTextModel`` therefore holds ``L-1`` layers and its
``last_hidden_state`` (which applies ``final_layer_norm``) is exactly that conditioning:

* ``token_embedding.weight`` → ``embeddings.token_embedding.weight``;
  ``positional_embedding`` → ``embeddings.position_embedding.weight``;
* ``transformer.resblocks.{i}.ln_1/ln_2`` → ``encoder.layers.{i}.layer_norm1/layer_norm2``;
* ``attn.in_proj_weight`` ``[3D, D]`` (rows q, k, v) and ``attn.in_proj_bias`` →
  ``self_attn.{q,k,v}_proj.{weight,bias}``; ``attn.out_proj`` → ``self_attn.out_proj``;
* ``mlp.c_fc`` / ``mlp.c_proj`` → ``mlp.fc1`` / ``mlp.fc2``; ``ln_final`` → ``final_layer_norm``;
* dropped: the skipped last resblock(s), ``text_projection`` and ``logit_scale`` (unused by the
  conditioning).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."
SCHEDULE_KEYS = ("betas", "alphas_cumprod", "scale_arr")
OPEN_CLIP_LAYERS = {"last": 0, "penultimate": 1}


# ----------------------------------------------------------------------------------------------
# Reading the checkpoint
# ----------------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat LatentDiffusion state dict of ``model.ckpt``, memory-mapped, loaded with ``weights_only=True``."""
    from ...weights import load_checkpoint

    try:
        obj = load_checkpoint(path)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: cannot be loaded with torch.load(weights_only=True) because it pickles objects other "
            f"than tensors ({err}). Re-save its state dict (tensors only) or as safetensors and point "
            f"model.weights.checkpoint.path at that file."
        ) from err
    return unwrap_checkpoint(obj, str(path))


def unwrap_checkpoint(obj: Mapping[str, Any], where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Accept a plain state dict, ``{"state_dict": ...}`` (Lightning) or ``{"module": ...}`` (DeepSpeed).

    Like the official loader, a DeepSpeed dict has its wrapper prefix removed (whatever precedes
    ``model.diffusion_model.``, e.g. ``_forward_module.``).
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected a state dict, got {type(obj).__name__}")
    for key in ("state_dict", "module"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    unet_key = next((k for k in sd if UNET_PREFIX in k), None)
    if unet_key is None:
        raise ValueError(f"{where}: no '{UNET_PREFIX}*' tensors; is this a VideoCrafter2 model.ckpt?")
    wrapper = unet_key[: unet_key.index(UNET_PREFIX)]
    if wrapper:
        sd = {k[len(wrapper):] if k.startswith(wrapper) else k: v for k, v in sd.items()}
    return sd


def split_checkpoint(sd: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"unet", "vae", "text", "schedule"}`` parts of a flat checkpoint, prefixes removed."""
    parts: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "vae": {}, "text": {}, "schedule": {}}
    prefixes = {"unet": UNET_PREFIX, "vae": VAE_PREFIX, "text": TEXT_PREFIX}
    for key, value in sd.items():
        for part, prefix in prefixes.items():
            if key.startswith(prefix):
                parts[part][key[len(prefix):]] = value
                break
        else:
            if "." not in key:
                parts["schedule"][key] = value
    for part in ("unet", "vae", "text"):
        if not parts[part]:
            raise ValueError(f"checkpoint has no '{prefixes[part]}*' tensors")
    return parts


# ----------------------------------------------------------------------------------------------
# VAE
# ----------------------------------------------------------------------------------------------
def convert_vae(ldm: Mapping[str, torch.Tensor], vae_config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """LDM ``first_stage_model`` tensors (prefix removed) → diffusers ``AutoencoderKL`` state dict."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    prefixed = {VAE_PREFIX + k: v for k, v in ldm.items()}
    converted = convert_ldm_vae_checkpoint(prefixed, dict(vae_config))
    if len(converted) != len(ldm):
        raise ValueError(f"VAE conversion used {len(converted)} of {len(ldm)} tensors; the checkpoint's "
                         f"first_stage_model does not match model.vae {dict(vae_config)}")
    return converted


# ----------------------------------------------------------------------------------------------
# OpenCLIP text tower
# ----------------------------------------------------------------------------------------------
_RESBLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_NAMES = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_TOP_NAMES = {
    "token_embedding.weight": "embeddings.token_embedding.weight",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_final.weight": "final_layer_norm.weight",
    "ln_final.bias": "final_layer_norm.bias",
}
_UNUSED = {"text_projection", "logit_scale", "attn_mask"}


def convert_open_clip_text(open_clip: Mapping[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """OpenCLIP text tensors (``cond_stage_model.model.`` removed) → ``CLIPTextModel`` names (no ``text_model.``).

    Keeps resblocks ``0 .. num_layers-1``; later resblocks, ``text_projection`` and ``logit_scale``
    are dropped. Any other key is an error naming it.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in open_clip.items():
        if key in _TOP_NAMES:
            out[_TOP_NAMES[key]] = value
            continue
        if key in _UNUSED:
            continue
        m = _RESBLOCK.match(key)
        if not m:
            unknown.append(key)
            continue
        layer, rest = int(m.group(1)), m.group(2)
        if layer >= num_layers:
            continue
        dst = f"encoder.layers.{layer}."
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]  # weight | bias
            for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0)):
                out[f"{dst}self_attn.{name}_proj.{kind}"] = part
            continue
        base, _, leaf = rest.rpartition(".")
        if base not in _BLOCK_NAMES:
            unknown.append(key)
            continue
        out[f"{dst}{_BLOCK_NAMES[base]}.{leaf}"] = value
    if unknown:
        raise ValueError(f"unexpected OpenCLIP text tensor(s): {', '.join(sorted(unknown)[:8])}")
    return out


def clip_text_config(cfg: Mapping[str, Any], *, bos_token_id: int, eos_token_id: int, pad_token_id: int):
    """A transformers ``CLIPTextConfig`` for an OpenCLIP text tower read through ``cfg['layer']``.

    ``num_hidden_layers`` in ``cfg`` is the OpenCLIP depth; with ``layer: penultimate`` the model
    gets one layer fewer (see the module docstring).
    """
    from transformers import CLIPTextConfig

    cfg = dict(cfg)
    layer = cfg.pop("layer", "penultimate")
    cfg.pop("pad_token", None)
    if layer not in OPEN_CLIP_LAYERS:
        raise ValueError(f"model.text_encoder.layer must be one of {', '.join(OPEN_CLIP_LAYERS)}, got {layer!r}")
    depth = int(cfg.pop("num_hidden_layers")) - OPEN_CLIP_LAYERS[layer]
    if depth < 1:
        raise ValueError(f"model.text_encoder.num_hidden_layers is too small for layer={layer!r}")
    return CLIPTextConfig(num_hidden_layers=depth, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                          pad_token_id=pad_token_id, **cfg)


def load_text_weights(model: nn.Module, converted: Mapping[str, torch.Tensor], assign: bool = False) -> None:
    """Load converted tensors strictly into a ``CLIPTextModel`` (adds its ``text_model.`` prefix if it has one)."""
    keys = model.state_dict().keys()
    anchor = next(k for k in keys if k.endswith("embeddings.token_embedding.weight"))
    prefix = anchor[: -len("embeddings.token_embedding.weight")]
    model.load_state_dict({prefix + k: v for k, v in converted.items()}, strict=True, assign=assign)
    materialize_position_ids(model)


def materialize_position_ids(model: nn.Module) -> None:
    """Re-create the non-persistent ``position_ids`` buffer of a model built on the meta device."""
    for module in model.modules():
        buf = getattr(module, "position_ids", None)
        if isinstance(buf, torch.Tensor) and buf.is_meta:
            n = buf.shape[-1]
            module.register_buffer("position_ids", torch.arange(n).expand(1, -1), persistent=False)
    leftover = [n for n, b in model.named_buffers() if b.is_meta]
    if leftover:
        raise RuntimeError(f"buffers left on the meta device after loading: {', '.join(leftover)}")


__all__ = [
    "SCHEDULE_KEYS",
    "TEXT_PREFIX",
    "UNET_PREFIX",
    "VAE_PREFIX",
    "clip_text_config",
    "convert_open_clip_text",
    "convert_vae",
    "load_text_weights",
    "materialize_position_ids",
    "read_checkpoint",
    "split_checkpoint",
    "unwrap_checkpoint",
]
