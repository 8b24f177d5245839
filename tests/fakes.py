"""Tiny *real-format* weight folders for exercising the real loaders offline (no mocks of the loader)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from freelong.models.tiny import char_vocab, randomize_, tiny_text_encoder, tiny_tokenizer, tiny_vae

TINY_UNET_SD_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.2.2",
    "act_fn": "silu",
    "attention_head_dim": 1,
    "block_out_channels": [32, 32, 64, 64],
    "center_input_sample": False,
    "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 8,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "max_position_embeddings": 77}
TINY_VAE = {"block_out_channels": [8, 16, 16, 16], "layers_per_block": 1, "norm_num_groups": 8}


def write_fake_lavie_weights(root: Path, seed: int = 7, layout: str = "freelong") -> dict:
    """Write ``lavie_base.pt`` (wrapped in ``ema``) and a Stable-Diffusion-1.4-shaped folder.

    ``layout='freelong'`` uses ``<root>/lavie/lavie_base.pt``; ``'official'`` LaVie's
    ``pretrained_models/lavie_base.pt`` layout. Returns the in-memory modules for comparison.
    """
    from freelong.models.lavie.model import LAVIE_OVERRIDES, LaVieUNet

    sd = root / "stable-diffusion-v1-4"
    cfg = {k: v for k, v in TINY_UNET_SD_CONFIG.items() if not k.startswith("_")}
    cfg.update(LAVIE_OVERRIDES)
    unet = randomize_(LaVieUNet(**cfg), seed).eval()
    ckpt = root / ("lavie/lavie_base.pt" if layout == "freelong" else "lavie_base.pt")
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"ema": unet.state_dict()}, ckpt)
    (sd / "unet").mkdir(parents=True, exist_ok=True)
    (sd / "unet" / "config.json").write_text(json.dumps(TINY_UNET_SD_CONFIG))
    vae = randomize_(tiny_vae(TINY_VAE), seed + 1).eval()
    vae.save_pretrained(sd / "vae")
    tokenizer = tiny_tokenizer()
    text = randomize_(tiny_text_encoder(TINY_TEXT, len(tokenizer)), seed + 2).eval()
    text.save_pretrained(sd / "text_encoder")
    tok_dir = sd / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(char_vocab()))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    return {"unet": unet, "vae": vae, "text_encoder": text, "checkpoint": ckpt}
