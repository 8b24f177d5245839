"""Build the LaVie backbone: official weights (``model=lavie``) or tiny random weights (``lavie_tiny``).

Official layout: ``lavie_base.pt`` (the UNet, optionally wrapped in ``{"ema": ...}``) and a Stable
Diffusion 1.4 folder, from which LaVie takes the UNet *config* (plus its overrides), the VAE, the
CLIP ViT-L/14 text encoder and the tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ...weights import identity, load_checkpoint, resolve_model_weights
from ..base import Backbone, register_family
from ..tiny import randomize_, tiny_text_encoder, tiny_tokenizer, tiny_vae
from .model import LAVIE_OVERRIDES, LaVieUNet, load_lavie_unet_weights


def lavie_unet_config(sd_folder: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """SD1.4's ``unet/config.json`` with LaVie's overrides (and the model config's own)."""
    config = json.loads((sd_folder / "unet" / "config.json").read_text())
    config.update(LAVIE_OVERRIDES)
    config.update(overrides or {})
    return config


def load_lavie_unet(config: dict[str, Any], checkpoint: Path) -> LaVieUNet:
    """Build on the meta device and assign the checkpoint's tensors (no second copy in memory)."""
    with torch.device("meta"):
        unet = LaVieUNet.from_config(config)
    load_lavie_unet_weights(unet, load_checkpoint(checkpoint), assign=True)
    return unet


@register_family("lavie")
def build_lavie(cfg: DictConfig, weights_dir: str | None = None) -> Backbone:
    common = dict(
        scheduler_config=OmegaConf.to_container(cfg.scheduler, resolve=True),
        sampling=OmegaConf.to_container(cfg.sampling, resolve=True),
        native_frames=cfg.native_frames,
        latent_scale=cfg.latent_scale,
        cfg_mode=cfg.cfg_mode,
        description=cfg.description,
    )
    if cfg.random_init:
        seed = int(cfg.init_seed)
        unet = randomize_(LaVieUNet(**OmegaConf.to_container(cfg.unet, resolve=True)), seed)
        tokenizer = tiny_tokenizer(pad_token=cfg.text_encoder.get("pad_token", "<|endoftext|>"))
        text_cfg = OmegaConf.to_container(cfg.text_encoder, resolve=True)
        text_encoder = randomize_(tiny_text_encoder(text_cfg, len(tokenizer)), seed + 1)
        vae = randomize_(tiny_vae(OmegaConf.to_container(cfg.vae, resolve=True)), seed + 2)
        return Backbone(cfg.name, unet, vae, text_encoder, tokenizer, random_init=True,
                        weights={"init_seed": seed}, **common)

    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    paths = resolve_model_weights(cfg, weights_dir)
    sd = paths["sd"]
    unet = load_lavie_unet(lavie_unet_config(sd, OmegaConf.to_container(cfg.unet, resolve=True)), paths["unet"])
    vae = AutoencoderKL.from_pretrained(sd, subfolder="vae", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(sd, subfolder="text_encoder", local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(sd, subfolder="tokenizer", local_files_only=True)
    weights = {"unet": identity(paths["unet"]), "sd": str(sd)}
    return Backbone(cfg.name, unet, vae, text_encoder, tokenizer, random_init=False, weights=weights, **common)


__all__ = ["build_lavie", "lavie_unet_config", "load_lavie_unet"]

build_lavie.capabilities = ("per_frame_timesteps", "single_step_sampler")  # models.base.family_capabilities
