"""Wan2.1 text-to-video through diffusers: ``WanTransformer3DModel``, ``AutoencoderKLWan``, UMT5.

Differences from the SD-like UNets that :class:`WanBackbone` overrides:

- the VAE compresses time 4x, causally: ``4n+1`` frames ↔ ``n+1`` latent frames
  (:meth:`~WanBackbone.latent_frames`); any other frame count fails validation naming the nearest
  valid ones (:func:`check_wan_frames`); height and width must be multiples of 16 (VAE 8 x patch 2);
- flow matching: the repo's ``UniPCMultistepScheduler`` with ``prediction_type=flow_prediction`` and
  ``flow_shift`` (3.0 for 480p per the model card), stepped without a generator;
- the denoiser is called as diffusers' ``WanPipeline`` calls it (cond and uncond as two calls,
  ``timestep`` expanded over the batch); the text context is UMT5's last hidden state, trimmed to
  each prompt's length and zero-padded to ``max_sequence_length`` (512) as ``WanPipeline`` does;
- multi-prompt videos: latent frame ``f`` cross-attends to the text of video frame ``4f``;
- methods are installed on the 3D self-attentions through diffusers' processor API
  (:mod:`freelong.models.wan.attention`); latents are de-normalised with the VAE's
  ``latents_mean``/``latents_std`` before the (frame-causal, cache-chunked) decode.

``wan_tiny`` builds the same classes from small configs with random weights and an in-process
UMT5-style unigram tokenizer (transformers' ``T5Tokenizer`` over a generated character vocabulary).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ...attention.context import CallContext
from ...handle import Handle
from ...weights import resolve_model_weights
from ..base import Backbone, register_family
from ..frames import TEMPORAL_COMPRESSION, check_wan_frames, latent_frame_count  # noqa: F401 (re-exported)
from ..tiny import randomize_
from .attention import (
    DiTCallState,
    RopeFrequencyEdit,
    WanSelfAttnSlot,
    per_frame_text,
    record_token_grid,
    wan_attention_slots,
)

if TYPE_CHECKING:
    from ...methods.base import Method

SAMPLERS = ("unipc",)


class WanBackbone(Backbone):
    """Wan2.1 (T2V) behind the :class:`Backbone` interface; ``self.unet`` is the diffusers transformer."""

    def __init__(self, *args, max_sequence_length: int = 512, temporal_compression: int = TEMPORAL_COMPRESSION,
                 **kwargs):
        kwargs.setdefault("cfg_mode", "separate")
        kwargs.setdefault("latent_scale", 1.0)
        super().__init__(*args, **kwargs)
        self.max_sequence_length = int(max_sequence_length)
        self.temporal_compression = int(temporal_compression)
        self.call_state = DiTCallState()

    def to(self, device=None, dtype=None) -> WanBackbone:
        """Transformer and text encoder to ``dtype``; the VAE stays fp32 (diffusers' Wan recommendation)."""
        super().to(device=device, dtype=dtype)
        if dtype is not None and next(self.vae.parameters()).dtype != torch.float32:
            self.vae.to(dtype=torch.float32)
        return self

    # -- shape rules ------------------------------------------------------------------------------
    @property
    def transformer(self):
        return self.unet

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def vae_scale_factor(self) -> int:
        return int(getattr(self.vae.config, "scale_factor_spatial", None) or 8)

    def latent_frames(self, num_frames: int) -> int:
        return latent_frame_count(num_frames, self.temporal_compression)

    def check_shape(self, num_frames: int, height: int, width: int) -> None:
        check_wan_frames(num_frames, self.temporal_compression)
        multiple = self.vae_scale_factor * int(self.unet.config.patch_size[1])
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple} for {self.name}, got {height}x{width}")

    # -- text ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(N, max_sequence_length, D)``: UMT5 states of each prompt's tokens, zeros after (as WanPipeline)."""
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        length = self.max_sequence_length
        tok = self.tokenizer([prompt_clean(p) for p in prompts], padding="max_length", max_length=length,
                             truncation=True, add_special_tokens=True, return_attention_mask=True,
                             return_tensors="pt")
        mask = tok.attention_mask
        states = self.text_encoder(tok.input_ids.to(self.device), mask.to(self.device)).last_hidden_state
        keep = (torch.arange(length)[None, :] < mask.gt(0).sum(dim=1)[:, None]).to(states.device)
        return states * keep[..., None].to(states.dtype)

    # -- sampling -----------------------------------------------------------------------------------
    def make_scheduler(self, sampler: str):
        from diffusers import UniPCMultistepScheduler

        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)} for {self.name}, got {sampler!r}")
        accepted = set(inspect.signature(UniPCMultistepScheduler.__init__).parameters)
        return UniPCMultistepScheduler(**{k: v for k, v in self.scheduler_config.items() if k in accepted})

    def scheduler_step_kwargs(self, sampler: str, generator: torch.Generator, eta: float) -> dict[str, Any]:
        return {}  # UniPC (flow prediction) is deterministic: no generator, no eta

    per_frame_timesteps = True  # WanTransformer3DModel takes (B, seq_len) timesteps (Wan 2.2 TI2V)

    # -- installing a method (Backbone.attach calls these) -------------------------------------------
    def attention_layers(self) -> dict[str, WanSelfAttnSlot]:
        return wan_attention_slots(self.unet, self.call_state)

    def prepare_attention(self, handle: Handle) -> None:
        handle.on_detach(record_token_grid(self.unet, self.call_state).remove)

    def install_rope_edit(self, method: Method, handle: Handle) -> None:
        native = self.latent_frames(self.native_frames)
        handle.set_attr(self.unet, "rope", RopeFrequencyEdit(self.unet.rope, method.rope_frequencies, native))

    def token_grid(self, hidden_states: torch.Tensor) -> tuple[int, int, int]:
        p_t, p_h, p_w = self.unet.config.patch_size
        _, _, t, h, w = hidden_states.shape
        return t // p_t, h // p_h, w // p_w

    def publish_call(self, call: CallContext | None):
        previous, self.call_state.call = self.call_state.call, call

        def retract() -> None:
            self.call_state.call = previous

        return retract

    def predict_noise(self, latents, t, cond, uncond, guidance_scale: float, call: CallContext | None = None):
        """``eps_u + w (eps_c - eps_u)`` of the flow prediction, with two transformer calls as WanPipeline.

        A per-frame context (multi-prompt videos: ``(B, T, L, D)`` over the *video* frames, or over the
        latent frames) gives latent frame ``f`` the context of video frame ``4f`` (the last frame it
        covers; frame 0 alone) through :func:`~freelong.models.wan.attention.per_frame_text`.
        """
        if isinstance(cond, Mapping) or cond.ndim not in (3, 4):
            raise ValueError(f"{self.name}: per-block-group text conditioning (FreeNoise motion injection) is not "
                             f"supported on a DiT")
        self.call_state.call = call
        x = latents.to(self.dtype)
        frames = x.shape[2]
        t = self.frame_timesteps(t, x)
        if t.ndim == 2:  # per-frame: WanTransformer3DModel takes one t per token (B, seq_len); frame-major tokens
            p_t, p_h, p_w = self.unet.config.patch_size
            timestep = t.repeat_interleave((x.shape[3] // p_h) * (x.shape[4] // p_w), dim=1)
        else:
            timestep = t.expand(x.shape[0])
        if cond.ndim == 4 and cond.shape[1] != frames:
            if cond.shape[1] != (frames - 1) * self.temporal_compression + 1:
                raise ValueError(f"per-frame text context for {cond.shape[1]} frames does not fit {frames} latent "
                                 f"frames")
            cond = cond[:, :: self.temporal_compression]

        def run(ctx):
            if ctx.ndim == 4:
                with per_frame_text(self.unet, self.call_state):
                    return self.unet(hidden_states=x, timestep=timestep, encoder_hidden_states=ctx.to(self.dtype),
                                     return_dict=False)[0]
            return self.unet(hidden_states=x, timestep=timestep, encoder_hidden_states=ctx.to(self.dtype),
                             return_dict=False)[0]

        try:
            eps_c = run(cond)
            if uncond is None:
                return eps_c.float()
            eps_u = run(uncond)
            return (eps_u + guidance_scale * (eps_c - eps_u)).float()
        finally:
            self.call_state.call = None

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_size: int | None = None) -> np.ndarray:
        """Latents ``(B, C, T', h, w)`` → uint8 ``(B, 4T'-3, H, W, 3)``.

        AutoencoderKLWan decodes one latent frame at a time with its causal feature cache, so decoder
        memory does not grow with the frame count; ``chunk_size`` is not needed and ignored.
        """
        vae_dtype = next(self.vae.parameters()).dtype
        z = latents.to(self.device, vae_dtype)
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(z.device, z.dtype)
        std = torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(z.device, z.dtype)
        video = self.vae.decode(z * std + mean, return_dict=False)[0].float()  # (B, 3, T, H, W)
        b, _, t, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * t, 3, h, w)
        return self.to_uint8(frames).cpu().reshape(b, t, h, w, 3).numpy()

    @property
    def components(self) -> dict[str, Any]:
        """diffusers' ``WanPipeline`` components (for parity checks): ``WanPipeline(**components)``."""
        return {"transformer": self.unet, "vae": self.vae, "text_encoder": self.text_encoder,
                "tokenizer": self.tokenizer, "scheduler": self.make_scheduler("unipc")}


NATIVE_FRAMES = 81  # Wan2.1 / Wan2.2 A14B T2V: 81 frames (21 latent frames)


def denoiser_view(transformer, pipe=None, trained_frames: int | None = None) -> WanBackbone:
    """A :class:`WanBackbone` view over a live ``WanTransformer3DModel`` (``freelong.enable``): its own
    :class:`DiTCallState`, the pipeline's VAE and temporal compression when a pipeline is given."""
    compression = int(getattr(pipe, "vae_scale_factor_temporal", None) or TEMPORAL_COMPRESSION)
    return WanBackbone.over(transformer, type(transformer).__name__, native_frames=trained_frames or NATIVE_FRAMES,
                            family="wan", call_state=DiTCallState(), temporal_compression=compression,
                            vae=getattr(pipe, "vae", None))


# ----------------------------------------------------------------------------------------------
# Tiny random-weight parts
# ----------------------------------------------------------------------------------------------
def tiny_umt5_tokenizer(model_max_length: int = 512):
    """transformers' ``T5Tokenizer`` (a Unigram model) over a generated character vocabulary.

    Ids: ``<pad>=0, </s>=1, <unk>=2`` (T5's layout), then "▁" and the printable ASCII characters with
    and without the word-start mark; no file, no download.
    """
    from transformers import T5Tokenizer

    chars = [chr(c) for c in range(33, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + c, -3.0) for c in chars] + [(c, -4.0) for c in chars]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    tok.model_max_length = model_max_length
    return tok


def tiny_wan_parts(cfg: DictConfig) -> tuple[Any, Any, Any, Any]:
    """Transformer, VAE, UMT5 encoder and tokenizer from the small configs of ``conf/model/wan_tiny.yaml``."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    seed = int(cfg.init_seed)
    tokenizer = tiny_umt5_tokenizer(int(cfg.extra.get("max_sequence_length", 512)))
    transformer = randomize_(WanTransformer3DModel(**OmegaConf.to_container(cfg.unet, resolve=True)), seed)
    vae = randomize_(AutoencoderKLWan(**OmegaConf.to_container(cfg.vae, resolve=True)), seed + 2)
    text_cfg = UMT5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                          **OmegaConf.to_container(cfg.text_encoder, resolve=True))
    text_encoder = randomize_(UMT5EncoderModel(text_cfg), seed + 1)
    return transformer, vae, text_encoder, tokenizer


# ----------------------------------------------------------------------------------------------
# The family
# ----------------------------------------------------------------------------------------------
def load_wan_parts(folder: Path, dtype: torch.dtype | None = None) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """A diffusers-format Wan folder (``Wan-AI/Wan2.1-T2V-*-Diffusers``), local files only."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    kw: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kw["torch_dtype"] = dtype
    transformer = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer", **kw)
    vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", local_files_only=True)  # fp32, as the model card
    text_encoder = UMT5EncoderModel.from_pretrained(folder, subfolder="text_encoder", **kw)
    tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return transformer, vae, text_encoder, tokenizer, scheduler


@register_family("wan")
def build_wan(cfg: DictConfig, weights_dir: str | None = None) -> WanBackbone:
    """``model=wan2_1_t2v_1_3b`` / ``wan2_1_t2v_14b`` (weights folder ``wan``) or ``wan_tiny`` (random)."""
    extra = OmegaConf.to_container(cfg.extra, resolve=True) if cfg.get("extra") else {}
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True)
    common = dict(
        sampling=OmegaConf.to_container(cfg.sampling, resolve=True),
        native_frames=cfg.native_frames,
        description=cfg.description,
        max_sequence_length=int(extra.get("max_sequence_length", 512)),
        temporal_compression=int(extra.get("temporal_compression", TEMPORAL_COMPRESSION)),
    )
    if cfg.random_init:
        transformer, vae, text_encoder, tokenizer = tiny_wan_parts(cfg)
        return WanBackbone(cfg.name, transformer, vae, text_encoder, tokenizer, scheduler_config=scheduler,
                           random_init=True, weights={"init_seed": int(cfg.init_seed)}, **common)
    paths = resolve_model_weights(cfg, weights_dir)
    folder = Path(paths["wan"])
    transformer, vae, text_encoder, tokenizer, folder_scheduler = load_wan_parts(folder)
    # the folder's scheduler config, with the model config's entries (e.g. flow_shift) on top
    scheduler = {**{k: v for k, v in folder_scheduler.items() if not k.startswith("_")}, **scheduler}
    return WanBackbone(cfg.name, transformer, vae, text_encoder, tokenizer, scheduler_config=scheduler,
                       random_init=False, weights={"wan": folder_identity(folder)}, **common)


def folder_identity(folder: Path) -> dict[str, Any]:
    """Path and file sizes of a diffusers folder (hashing tens of GB per run would cost minutes)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in {".safetensors", ".json", ".model"})
    return {"path": str(folder), "files": {str(p.relative_to(folder)): p.stat().st_size for p in files}}


__all__ = ["NATIVE_FRAMES", "WanBackbone", "build_wan", "denoiser_view",
           "check_wan_frames", "latent_frame_count", "load_wan_parts",
           "tiny_umt5_tokenizer", "tiny_wan_parts"]

# models.base.family_capabilities; UniPC multistep only: no single-step sampler for window/FIFO loops
build_wan.capabilities = ("per_frame_timesteps",)
