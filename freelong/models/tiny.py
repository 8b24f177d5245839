"""Tiny random-weight parts for smoke runs and tests: real classes, tiny configs, no downloads.

The VAE is diffusers' ``AutoencoderKL`` and the text encoder transformers' ``CLIPTextModel``
built from small configs; the tokenizer is transformers' ``CLIPTokenizer`` over a byte-level
vocabulary with no merges (so it needs no vocabulary file). Weights are drawn from a seeded
generator so a smoke run is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

SOT, EOT = "<|startoftext|>", "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by GPT-2/CLIP byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def char_vocab() -> dict[str, int]:
    """Special tokens, then every byte symbol, then every byte symbol with the end-of-word mark."""
    vocab = {SOT: 0, EOT: 1}
    for sym in _byte_symbols():
        vocab[sym] = len(vocab)
    for sym in _byte_symbols():
        vocab[sym + "</w>"] = len(vocab)
    return vocab


def tiny_tokenizer(pad_token: str = EOT, model_max_length: int = 77):
    """A real ``CLIPTokenizer`` with a character-level vocabulary (514 tokens, no merges)."""
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(vocab=char_vocab(), merges=[], pad_token=pad_token)
    tok.model_max_length = model_max_length
    return tok


def tiny_text_encoder(cfg: Mapping[str, Any], vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    kwargs = {k: v for k, v in cfg.items() if k != "pad_token"}
    config = CLIPTextConfig(vocab_size=vocab_size, bos_token_id=0, eos_token_id=1, pad_token_id=1, **kwargs)
    return CLIPTextModel(config)


def tiny_vae(cfg: Mapping[str, Any]):
    from diffusers import AutoencoderKL

    channels = list(cfg["block_out_channels"])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=tuple(channels),
        layers_per_block=int(cfg.get("layers_per_block", 1)),
        norm_num_groups=int(cfg.get("norm_num_groups", 8)),
        latent_channels=int(cfg.get("latent_channels", 4)),
        sample_size=int(cfg.get("sample_size", 64)),
    )


@torch.no_grad()
def randomize_(module: nn.Module, seed: int, std: float = 0.05) -> nn.Module:
    """Seeded random weights for every parameter, *including* those a model zero-initialises.

    Real checkpoints overwrite everything; for random-weight smoke runs a zero-initialised output
    projection (e.g. of a temporal attention) would make every method look identical, so all
    weight matrices get ``N(0, std')`` scaled by fan-in, biases ``N(0, std)``, and norm scales 1.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
            if m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()
            continue
        for p in m.parameters(recurse=False):
            if p.device.type == "meta":
                continue
            scale = std if p.ndim == 1 else p[0].numel() ** -0.5
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return module
