"""Wan2.1 and Wan2.2 text-to-video through diffusers: ``WanTransformer3DModel``, ``AutoencoderKLWan``, UMT5.

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

Wan2.2 (same classes, switched on by the model config's ``extra``):

- TI2V-5B (``expand_timesteps: true``): the transformer gets one timestep per latent token, ``(B, T'*H'*W')``,
  as ``WanPipeline(expand_timesteps=True)`` builds it (text-to-video: every token carries ``t``); its VAE
  compresses 16x spatially (``scale_factor_spatial``), so height and width are multiples of 32;
- T2V-A14B (``boundary_ratio``, ``guidance_scale_2``): two experts, ``transformer`` while
  ``t >= boundary_ratio * num_train_timesteps`` and ``transformer_2`` (with guidance ``guidance_scale_2``)
  after, as ``WanPipeline`` switches them. :meth:`WanBackbone.attach` installs the method on *both* experts
  (one handle), each with its own :class:`~freelong.models.wan.attention.DiTCallState`.

``wan_tiny`` builds the same classes from small configs with random weights and an in-process
UMT5-style unigram tokenizer (transformers' ``T5Tokenizer`` over a generated character vocabulary).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ...attention.context import CallContext
from ...handle import Handle
from ...weights import resolve_model_weights
from ..base import register_family
from ..dit import VideoDiTBackbone, load_folder_parts
from ..frames import TEMPORAL_COMPRESSION, check_wan_frames, latent_frame_count  # noqa: F401 (re-exported)
from ..tiny import randomize_
from .attention import (
    DiTCallState,
    RopeFrequencyEdit,
    WanSelfAttnSlot,
    per_frame_text,
    wan_attention_slots,
)

if TYPE_CHECKING:
    from ...methods.base import Method

SAMPLERS = ("unipc",)


class WanBackbone(VideoDiTBackbone):
    """Wan2.1 (T2V) behind the :class:`Backbone` interface; ``self.unet`` is the diffusers transformer."""

    # One expert and one timestep per sample unless __init__ says otherwise (a view over one live transformer,
    # Backbone.over, keeps these: freelong.enable gives each expert of a pipeline its own view).
    transformer_2: torch.nn.Module | None = None
    boundary_ratio: float | None = None
    guidance_scale_2: float | None = None
    expand_timesteps: bool = False

    def __init__(self, *args, max_sequence_length: int = 512, temporal_compression: int = TEMPORAL_COMPRESSION,
                 transformer_2: torch.nn.Module | None = None, boundary_ratio: float | None = None,
                 guidance_scale_2: float | None = None, expand_timesteps: bool = False, **kwargs):
        kwargs.setdefault("cfg_mode", "separate")
        kwargs.setdefault("latent_scale", 1.0)
        super().__init__(*args, **kwargs)
        self.max_sequence_length = int(max_sequence_length)
        self.temporal_compression = int(temporal_compression)
        self.call_state = DiTCallState()
        check_experts(transformer_2, boundary_ratio, guidance_scale_2)
        self.transformer_2 = transformer_2.eval().requires_grad_(False) if transformer_2 is not None else None
        self.call_state_2 = DiTCallState()
        self.boundary_ratio = None if boundary_ratio is None else float(boundary_ratio)
        self.guidance_scale_2 = None if guidance_scale_2 is None else float(guidance_scale_2)
        self.expand_timesteps = bool(expand_timesteps)

    def to(self, device=None, dtype=None) -> WanBackbone:
        """Transformer and text encoder to ``dtype``; the VAE stays fp32 (diffusers' Wan recommendation)."""
        super().to(device=device, dtype=dtype)
        if self.transformer_2 is not None:
            kwargs = {"device": device} if device is not None else {}
            if dtype is not None and dtype != next(self.transformer_2.parameters()).dtype:
                kwargs["dtype"] = dtype
            self.transformer_2.to(**kwargs)
        if dtype is not None and next(self.vae.parameters()).dtype != torch.float32:
            self.vae.to(dtype=torch.float32)
        return self

    # -- shape rules ------------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        return int(getattr(self.vae.config, "scale_factor_spatial", None) or 8)

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
    def experts(self) -> list[tuple[str, torch.nn.Module, DiTCallState]]:
        """``(name prefix, transformer, its call state)`` of every expert: Wan2.1/TI2V one, A14B two."""
        out = [("", self.unet, self.call_state)]
        if self.transformer_2 is not None:
            out.append(("transformer_2.", self.transformer_2, self.call_state_2))
        return out

    def attention_layers(self) -> dict[str, WanSelfAttnSlot]:
        """Every expert's self-attentions (A14B: ``blocks.i.attn1`` and ``transformer_2.blocks.i.attn1``)."""
        layers: dict[str, WanSelfAttnSlot] = {}
        for prefix, model, state in self.experts():
            layers.update({prefix + name: slot for name, slot in wan_attention_slots(model, state).items()})
        return layers

    def install_rope_edit(self, method: Method, handle: Handle) -> None:
        native = self.method_frames(self.native_frames)
        for _, model, _ in self.experts():
            handle.set_attr(model, "rope", RopeFrequencyEdit(model.rope, method.rope_frequencies, native))

    def expert_for(self, t: torch.Tensor, guidance_scale: float) -> tuple[torch.nn.Module, DiTCallState, float]:
        """The expert ``WanPipeline`` runs at timestep ``t`` and its guidance scale (A14B: switched at the boundary)."""
        if self.transformer_2 is None or self.boundary_ratio is None or t.device.type == "meta":
            return self.unet, self.call_state, guidance_scale  # meta (estimates): no value, the first expert
        boundary = self.boundary_ratio * float(self.scheduler_config.get("num_train_timesteps", 1000))
        if float(t) >= boundary:
            return self.unet, self.call_state, guidance_scale
        scale_2 = guidance_scale if self.guidance_scale_2 is None else self.guidance_scale_2
        return self.transformer_2, self.call_state_2, scale_2

    def model_timestep(self, t: torch.Tensor, x: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
        """``t`` per sample, or per latent token ``(B, T'*H'*W')`` with ``expand_timesteps`` (TI2V-5B, T2V mode)."""
        if not self.expand_timesteps:
            return t.expand(x.shape[0])
        p_t, p_h, p_w = model.config.patch_size
        b, _, frames, h, w = x.shape
        tokens = (frames // p_t) * (h // p_h) * (w // p_w)
        return t.reshape(1, 1).to(torch.float32).expand(b, tokens)

    def predict_noise(self, latents, t, cond, uncond, guidance_scale: float, call: CallContext | None = None):
        """``eps_u + w (eps_c - eps_u)`` of the flow prediction, with two transformer calls as WanPipeline.

        A per-frame context (multi-prompt videos: ``(B, T, L, D)`` over the *video* frames, or over the
        latent frames) gives latent frame ``f`` the context of video frame ``4f`` (the last frame it
        covers; frame 0 alone) through :func:`~freelong.models.wan.attention.per_frame_text`.
        """
        if isinstance(cond, Mapping) or cond.ndim not in (3, 4):
            raise ValueError(f"{self.name}: per-block-group text conditioning (FreeNoise motion injection) is not "
                             f"supported on a DiT")
        model, state, guidance_scale = self.expert_for(t, guidance_scale)
        state.call = call
        x = latents.to(self.dtype)
        frames = x.shape[2]
        t = self.frame_timesteps(t, x)
        if t.ndim == 2:  # per-frame: WanTransformer3DModel takes one t per token (B, seq_len); frame-major tokens
            p_t, p_h, p_w = model.config.patch_size
            timestep = t.repeat_interleave((x.shape[3] // p_h) * (x.shape[4] // p_w), dim=1)
        else:
            timestep = self.model_timestep(t, x, model)
        if cond.ndim == 4 and cond.shape[1] != frames:
            if cond.shape[1] != (frames - 1) * self.temporal_compression + 1:
                raise ValueError(f"per-frame text context for {cond.shape[1]} frames does not fit {frames} latent "
                                 f"frames")
            cond = cond[:, :: self.temporal_compression]

        def run(ctx):
            if ctx.ndim == 4:
                with per_frame_text(model, state):
                    return model(hidden_states=x, timestep=timestep, encoder_hidden_states=ctx.to(self.dtype),
                                 return_dict=False)[0]
            return model(hidden_states=x, timestep=timestep, encoder_hidden_states=ctx.to(self.dtype),
                         return_dict=False)[0]

        try:
            eps_c = run(cond)
            if uncond is None:
                return eps_c.float()
            eps_u = run(uncond)
            return (eps_u + guidance_scale * (eps_c - eps_u)).float()
        finally:
            state.call = None

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
        """diffusers' ``WanPipeline`` components (for parity checks): ``WanPipeline(**components)``.

        Wan2.2 adds ``transformer_2`` and ``boundary_ratio`` (A14B) or ``expand_timesteps`` (TI2V-5B).
        """
        out = {"transformer": self.unet, "vae": self.vae, "text_encoder": self.text_encoder,
               "tokenizer": self.tokenizer, "scheduler": self.make_scheduler("unipc")}
        if self.transformer_2 is not None:
            out.update(transformer_2=self.transformer_2, boundary_ratio=self.boundary_ratio)
        if self.expand_timesteps:
            out["expand_timesteps"] = True
        return out


def check_experts(transformer_2, boundary_ratio: float | None, guidance_scale_2: float | None) -> None:
    """Wan2.2 A14B's expert settings: both experts and a boundary in (0, 1), or neither (one line naming the key)."""
    if boundary_ratio is not None and not 0 < float(boundary_ratio) < 1:
        raise ValueError(f"model.extra.boundary_ratio must be in (0, 1), got {boundary_ratio}")
    if (transformer_2 is None) != (boundary_ratio is None):
        raise ValueError("model.extra.boundary_ratio needs a second expert (transformer_2) and vice versa")
    if guidance_scale_2 is not None and boundary_ratio is None:
        raise ValueError("model.extra.guidance_scale_2 is only used with two experts (model.extra.boundary_ratio)")


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


def tiny_t5_dit_parts(cfg: DictConfig, transformer_cls: type, vae_cls: type, text_config_cls: type,
                      text_model_cls: type, max_sequence_length: int) -> tuple[Any, Any, Any, Any]:
    """A T5-family-text DiT's transformer, VAE, text encoder and tokenizer from a ``*_tiny`` model config's small
    configs, with seeded random weights (transformer ``init_seed``, text encoder ``+1``, VAE ``+2``)."""
    seed = int(cfg.init_seed)
    tokenizer = tiny_umt5_tokenizer(int(cfg.extra.get("max_sequence_length", max_sequence_length)))
    transformer = randomize_(transformer_cls(**OmegaConf.to_container(cfg.unet, resolve=True)), seed)
    vae = randomize_(vae_cls(**OmegaConf.to_container(cfg.vae, resolve=True)), seed + 2)
    text_cfg = text_config_cls(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                               **OmegaConf.to_container(cfg.text_encoder, resolve=True))
    text_encoder = randomize_(text_model_cls(text_cfg), seed + 1)
    return transformer, vae, text_encoder, tokenizer


def tiny_wan_parts(cfg: DictConfig) -> tuple[Any, Any, Any, Any]:
    """Transformer, VAE, UMT5 encoder and tokenizer from the small configs of ``conf/model/wan_tiny.yaml``."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    return tiny_t5_dit_parts(cfg, WanTransformer3DModel, AutoencoderKLWan, UMT5Config, UMT5EncoderModel, 512)


def tiny_second_expert(cfg: DictConfig):
    """Wan2.2 A14B's low-noise expert at tiny widths: the same config, its own random weights (``init_seed + 3``)."""
    from diffusers import WanTransformer3DModel

    return randomize_(WanTransformer3DModel(**OmegaConf.to_container(cfg.unet, resolve=True)), int(cfg.init_seed) + 3)


# ----------------------------------------------------------------------------------------------
# The family
# ----------------------------------------------------------------------------------------------
def load_wan_parts(folder: Path, dtype: torch.dtype | None = None) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """A diffusers-format Wan folder (``Wan-AI/Wan2.1-T2V-*-Diffusers``), local files only; the VAE stays fp32."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    p = load_folder_parts(folder, {"transformer": WanTransformer3DModel, "vae": AutoencoderKLWan,
                                   "text_encoder": UMT5EncoderModel, "tokenizer": AutoTokenizer}, dtype, ("vae",))
    return p["transformer"], p["vae"], p["text_encoder"], p["tokenizer"], p["scheduler"]


@register_family("wan")
def build_wan(cfg: DictConfig, weights_dir: str | None = None) -> WanBackbone:
    """``model=wan2_1_t2v_1_3b`` / ``wan2_1_t2v_14b`` / ``wan2_2_ti2v_5b`` / ``wan2_2_t2v_a14b`` (weights folder
    ``wan``) or their ``*_tiny`` variants (random)."""
    extra = OmegaConf.to_container(cfg.extra, resolve=True) if cfg.get("extra") else {}
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True)
    two_experts = extra.get("boundary_ratio") is not None
    common = dict(
        sampling=OmegaConf.to_container(cfg.sampling, resolve=True),
        native_frames=cfg.native_frames,
        description=cfg.description,
        max_sequence_length=int(extra.get("max_sequence_length", 512)),
        temporal_compression=int(extra.get("temporal_compression", TEMPORAL_COMPRESSION)),
        boundary_ratio=extra.get("boundary_ratio"),
        guidance_scale_2=extra.get("guidance_scale_2"),
        expand_timesteps=bool(extra.get("expand_timesteps", False)),
    )
    check_experts(True if two_experts else None, common["boundary_ratio"], common["guidance_scale_2"])
    if cfg.random_init:
        transformer, vae, text_encoder, tokenizer = tiny_wan_parts(cfg)
        transformer_2 = tiny_second_expert(cfg) if two_experts else None
        return WanBackbone(cfg.name, transformer, vae, text_encoder, tokenizer, scheduler_config=scheduler,
                           random_init=True, weights={"init_seed": int(cfg.init_seed)}, transformer_2=transformer_2,
                           **common)
    paths = resolve_model_weights(cfg, weights_dir)
    folder = Path(paths["wan"])
    transformer, vae, text_encoder, tokenizer, folder_scheduler = load_wan_parts(folder)
    transformer_2 = load_second_expert(folder) if two_experts else None
    # the folder's scheduler config, with the model config's entries (e.g. flow_shift) on top
    scheduler = {**{k: v for k, v in folder_scheduler.items() if not k.startswith("_")}, **scheduler}
    return WanBackbone(cfg.name, transformer, vae, text_encoder, tokenizer, scheduler_config=scheduler,
                       random_init=False, weights={"wan": folder_identity(folder)}, transformer_2=transformer_2,
                       **common)


def load_second_expert(folder: Path, dtype: torch.dtype | None = None):
    """Wan2.2 A14B's low-noise expert, ``transformer_2/`` of a diffusers-format folder (local files only)."""
    from diffusers import WanTransformer3DModel

    kw: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kw["torch_dtype"] = dtype
    return WanTransformer3DModel.from_pretrained(folder, subfolder="transformer_2", **kw)


def folder_identity(folder: Path) -> dict[str, Any]:
    """Path and file sizes of a diffusers folder (hashing tens of GB per run would cost minutes)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in {".safetensors", ".json", ".model"})
    return {"path": str(folder), "files": {str(p.relative_to(folder)): p.stat().st_size for p in files}}


__all__ = ["NATIVE_FRAMES", "WanBackbone", "build_wan", "check_experts", "check_wan_frames", "denoiser_view",
           "latent_frame_count", "load_second_expert", "load_wan_parts", "tiny_second_expert", "tiny_umt5_tokenizer",
           "tiny_wan_parts"]

# models.base.family_capabilities; UniPC multistep only: no single-step sampler for window/FIFO loops
build_wan.capabilities = ("per_frame_timesteps",)
