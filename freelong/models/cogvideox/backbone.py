"""CogVideoX-5B text-to-video through diffusers: ``CogVideoXTransformer3DModel``, ``AutoencoderKLCogVideoX``, T5.

What :class:`CogVideoXBackbone` changes against the SD-like UNets, each as diffusers' ``CogVideoXPipeline`` does:

- the VAE compresses time 4x causally: ``4n+1`` frames <-> ``n+1`` latent frames; any other count fails naming
  the nearest valid ones; height and width are multiples of 16 (VAE 8 x patch 2);
- the transformer takes latents ``(B, F, C, H, W)`` (ours are ``(B, C, F, H, W)``: transposed per call),
  ``v_prediction`` with ``CogVideoXDDIMScheduler`` (zero-terminal-SNR betas, trailing timesteps); cond and uncond
  in one batched call (``[uncond, cond]``); the T5 text is 226 tokens padded with the pad id (no mask);
- 3D RoPE is computed by the pipeline, not by the model (``_prepare_rotary_positional_embeddings``): here
  :meth:`CogVideoXBackbone.rotary_embedding` with diffusers' own ``get_3d_rotary_pos_embed``; a method that edits
  RoPE frequencies (RIFLEx) changes its temporal channels (the first ``head_dim / 4``). Under
  :func:`freelong.enable` the *pipeline* builds the table, so the view's RoPE edit rewrites those channels of the
  ``image_rotary_emb`` the transformer is handed (:meth:`CogVideoXBackbone.rewrite_passed_rope`);
- methods go on every block's joint ``[text, video]`` self-attention (:mod:`freelong.models.cogvideox.attention`);
- latents are divided by the VAE's ``scaling_factor`` (0.7 for 5B) before decoding.

CogVideoX 1.5 (``model=cogvideox1_5_5b``) is the same classes with ``patch_size_t=2``, sampled as the pipeline samples
it: the latent frames padded to an even count (81 frames -> 21 -> 22; :meth:`VideoDiTBackbone.latent_frames`) and the
padding dropped from the front before decoding (:meth:`VideoDiTBackbone.latents_to_decode`), RoPE over the "slice"
grid of temporal positions; each attention token spans two latent frames, so a method's windows and native length
count those positions (:meth:`VideoDiTBackbone.method_frames`: 81 frames are 11) and its initial noise is drawn per
position (:meth:`VideoDiTBackbone.initial_noise`). A folder of the other version than the model config names is
refused before any weight is read (:func:`check_transformer_folder`). CogVideoX-2B has no RoPE (sin-cos positions):
not wired here. ``cogvideox_5b_tiny`` and ``cogvideox1_5_5b_tiny`` build the same classes from small configs with
random weights.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig

from ...attention.context import CallContext
from ...handle import Handle
from ...weights import resolve_model_weights
from ..base import register_family
from ..dit import VideoDiTBackbone, build_settings, load_folder_parts, with_folder_scheduler
from ..wan.attention import DiTCallState
from ..wan.backbone import folder_identity, tiny_t5_dit_parts
from .attention import CogVideoXAttnSlot, cogvideox_attention_slots

if TYPE_CHECKING:
    from ...methods.base import Method

SAMPLERS = ("ddim",)
NATIVE_FRAMES = 49  # CogVideoX-5B (1.5: 81); a view reads the transformer's config.sample_frames first
ROPE_ARG = 5  # CogVideoXTransformer3DModel.forward(hidden_states, encoder_hidden_states, timestep, timestep_cond,
#               ofs, image_rotary_emb, ...): the RoPE table's position (diffusers' pipelines pass it by keyword)


def temporal_rope_table(freqs: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin`` ``(T, 2*len(freqs))`` of positions x frequencies in fp32, pairs repeated (diffusers' layout)."""
    angles = torch.outer(positions.float(), freqs.float())
    return angles.cos().repeat_interleave(2, dim=1), angles.sin().repeat_interleave(2, dim=1)


class CogVideoXBackbone(VideoDiTBackbone):
    """CogVideoX-5B behind the :class:`Backbone` interface; ``self.unet`` is the diffusers transformer."""

    frames_dim = 1  # the transformer (and CogVideoXPipeline's latents=) take (B, F, C, H, W)
    rope_edit: Callable[..., torch.Tensor] | None = None  # a method's rope_frequencies while attached (RIFLEx)
    # Whether the caller of the transformer builds the RoPE table (CogVideoXPipeline, under freelong.enable): the
    # edit then rewrites the table handed in; our predict_noise builds the edited table itself.
    rope_from_caller: bool = False

    def __init__(self, *args, max_sequence_length: int = 226, temporal_compression: int = 4, **kwargs):
        kwargs.setdefault("cfg_mode", "batched")
        super().__init__(*args, **kwargs)
        self.max_sequence_length = int(max_sequence_length)
        self.temporal_compression = int(temporal_compression)
        self.call_state = DiTCallState()

    # -- text ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(N, max_sequence_length, D)``: T5's last hidden states of the padded prompt (as CogVideoXPipeline)."""
        tok = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_sequence_length,
                             truncation=True, add_special_tokens=True, return_tensors="pt")
        return self.text_encoder(tok.input_ids.to(self.device))[0]

    # -- sampling -----------------------------------------------------------------------------------
    def make_scheduler(self, sampler: str):
        from diffusers import CogVideoXDDIMScheduler

        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)} for {self.name}, got {sampler!r}")
        accepted = set(inspect.signature(CogVideoXDDIMScheduler.__init__).parameters)
        return CogVideoXDDIMScheduler(**{k: v for k, v in self.scheduler_config.items() if k in accepted})

    def rotary_embedding(self, frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` ``(T'*H'*W', head_dim)`` for ``frames`` latent frames of ``height x width`` latent pixels
        (before patching), as ``CogVideoXPipeline._prepare_rotary_positional_embeddings`` builds them.

        With a RoPE edit attached, the temporal channels (the first ``head_dim // 4``) are rebuilt from the edited
        frequencies at the same temporal positions, in fp32 as diffusers' ``get_1d_rotary_pos_embed``.
        """
        from diffusers.models.embeddings import get_3d_rotary_pos_embed
        from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

        cfg = self.unet.config
        p = int(cfg.patch_size)
        grid_h, grid_w = height // p, width // p
        if cfg.patch_size_t is None:  # CogVideoX 1.0: the "linspace" grid over the resize-crop region
            crops = get_resize_crop_region_for_grid((grid_h, grid_w), cfg.sample_width // p, cfg.sample_height // p)
            cos, sin = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=crops,
                                               grid_size=(grid_h, grid_w), temporal_size=frames, device=self.device)
            return self.edit_rotary(cos, sin, frames)
        positions = -(-frames // int(cfg.patch_size_t))  # CogVideoX 1.5: the "slice" grid of temporal positions
        cos, sin = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=None,
                                           grid_size=(grid_h, grid_w), temporal_size=positions, grid_type="slice",
                                           max_size=(cfg.sample_height // p, cfg.sample_width // p), device=self.device)
        return self.edit_rotary(cos, sin, positions)

    def edit_rotary(self, cos: torch.Tensor, sin: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``(T*S, head_dim)`` RoPE table of ``frames`` temporal positions with the temporal channels (the
        first ``head_dim // 4``) rebuilt from the attached edit's frequencies, in fp32 as diffusers'
        ``get_1d_rotary_pos_embed``; the table itself while no edit is attached or the edit changes nothing."""
        if self.rope_edit is None:
            return cos, sin
        cfg = self.unet.config
        dim_t = cfg.attention_head_dim // 4
        theta = 10000.0
        base = 1.0 / (theta ** (torch.arange(0, dim_t, 2)[: dim_t // 2].float() / dim_t))
        native = self.method_frames(self.native_frames)
        freqs = self.rope_edit(base.clone(), axis="t", num_positions=frames, native_positions=native)
        if torch.equal(freqs, base):
            return cos, sin
        if cfg.patch_size_t is None:  # get_3d_rotary_pos_embed's "linspace" grid: 0..T-1 up to float rounding
            positions = torch.linspace(0, frames * (frames - 1) / frames, frames, dtype=torch.float32)
        else:  # CogVideoX 1.5's "slice" grid
            positions = torch.arange(frames, dtype=torch.float32)
        t_cos, t_sin = temporal_rope_table(freqs.float(), positions)
        cos, sin = cos.clone(), sin.clone()
        cos.view(frames, -1, cos.shape[-1])[..., :dim_t] = t_cos[:, None].to(cos)
        sin.view(frames, -1, sin.shape[-1])[..., :dim_t] = t_sin[:, None].to(sin)
        return cos, sin

    @torch.compiler.disable
    def rewrite_passed_rope(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]):
        """Forward pre-hook: the attached edit on the ``image_rotary_emb`` the caller hands the transformer
        (CogVideoXPipeline builds it in ``_prepare_rotary_positional_embeddings``), at the call's temporal positions
        (its latent frames over ``patch_size_t``). A call without RoPE passes unchanged."""
        if len(args) > ROPE_ARG:
            raise ValueError(f"{self.name}: pass image_rotary_emb to the transformer as a keyword (RoPE edit)")
        rope = kwargs.get("image_rotary_emb")
        if rope is None:
            return None
        frames = self.token_grid(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])[0]
        return args, {**kwargs, "image_rotary_emb": self.edit_rotary(*rope, frames)}

    # -- installing a method (Backbone.attach calls these) -------------------------------------------
    def attention_layers(self) -> dict[str, CogVideoXAttnSlot]:
        return cogvideox_attention_slots(self.unet, self.call_state)

    def install_rope_edit(self, method: Method, handle: Handle) -> None:
        if not self.unet.config.use_rotary_positional_embeddings:
            raise ValueError(f"method {method.name} edits RoPE frequencies; {self.name} has no RoPE")
        handle.set_attr(self, "rope_edit", method.rope_frequencies)
        if self.rope_from_caller:
            hook = self.unet.register_forward_pre_hook(self.rewrite_passed_rope, with_kwargs=True)
            handle.on_detach(hook.remove)

    def predict_noise(self, latents, t, cond, uncond, guidance_scale: float, call: CallContext | None = None):
        """``eps_u + w (eps_c - eps_u)`` (v-prediction): one batched call ``[uncond, cond]`` (CogVideoXPipeline)."""
        if isinstance(cond, Mapping) or cond.ndim != 3:
            raise ValueError(f"{self.name}: per-frame or per-block text conditioning is not supported on CogVideoX "
                             f"(its text is part of the joint attention)")
        self.call_state.call = call
        x = latents.to(self.dtype).transpose(1, 2)  # (B, F, C, H, W)
        _, frames, _, h, w = x.shape
        rope = None
        if self.unet.config.use_rotary_positional_embeddings:
            rope = self.rotary_embedding(frames, h, w)
        ctx = cond if uncond is None else torch.cat([uncond, cond])
        x_in = x if uncond is None else torch.cat([x, x])
        try:
            out = self.unet(hidden_states=x_in, encoder_hidden_states=ctx.to(self.dtype),
                            timestep=t.expand(x_in.shape[0]), image_rotary_emb=rope, return_dict=False)[0].float()
        finally:
            self.call_state.call = None
        if uncond is not None:
            eps_u, eps_c = out.chunk(2)
            out = eps_u + guidance_scale * (eps_c - eps_u)
        return out.transpose(1, 2)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_size: int | None = None) -> np.ndarray:
        """Latents ``(B, C, T', h, w)`` → uint8 ``(B, 4T'-3, H, W, 3)`` (``/ scaling_factor``, the VAE's own decode)."""
        vae_dtype = next(self.vae.parameters()).dtype
        z = latents.to(self.device, vae_dtype) / float(self.vae.config.scaling_factor)
        video = self.vae.decode(z).sample.float()  # (B, 3, T, H, W)
        b, _, t, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * t, 3, h, w)
        return self.to_uint8(frames).cpu().reshape(b, t, h, w, 3).numpy()

    @property
    def components(self) -> dict[str, Any]:
        """diffusers' ``CogVideoXPipeline`` components (for parity checks): ``CogVideoXPipeline(**components)``."""
        return {"transformer": self.unet, "vae": self.vae, "text_encoder": self.text_encoder,
                "tokenizer": self.tokenizer, "scheduler": self.make_scheduler("ddim")}


def denoiser_view(transformer: torch.nn.Module, pipe: Any = None, trained_frames: int | None = None
                  ) -> CogVideoXBackbone:
    """A :class:`CogVideoXBackbone` view over a live ``CogVideoXTransformer3DModel`` (``freelong.enable``): its own
    :class:`DiTCallState`, the pipeline's VAE and temporal compression when a pipeline is given, and the RoPE edit
    on the table the caller passes (``CogVideoXPipeline`` builds RoPE itself). The native length is the
    transformer's ``sample_frames`` (49 for 5B, 81 for 1.5) unless ``trained_frames`` says otherwise."""
    compression = int(getattr(pipe, "vae_scale_factor_temporal", None) or 4)
    native = trained_frames or getattr(transformer.config, "sample_frames", None) or NATIVE_FRAMES
    return CogVideoXBackbone.over(transformer, type(transformer).__name__, native_frames=native, family="cogvideox",
                                  call_state=DiTCallState(), temporal_compression=compression,
                                  vae=getattr(pipe, "vae", None), rope_from_caller=True)


def tiny_cogvideox_parts(cfg: DictConfig) -> tuple[Any, Any, Any, Any]:
    """Transformer, VAE, T5 encoder and tokenizer from the small configs of ``conf/model/cogvideox_5b_tiny.yaml``."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    return tiny_t5_dit_parts(cfg, CogVideoXTransformer3DModel, AutoencoderKLCogVideoX, T5Config, T5EncoderModel, 226)


def check_transformer_folder(folder: Path, model_name: str, patch_size_t: int | None) -> None:
    """Refuse, before any weight is read, a folder of the other CogVideoX version than the model config names
    (1.0: ``patch_size_t`` null; 1.5: 2): its sampling differs (padding, RoPE grid, what a method's frame is).
    One ValueError line naming the key, the folder and the model config to use."""
    config_file = folder / "transformer" / "config.json"
    found = json.loads(config_file.read_text()).get("patch_size_t")
    if found != patch_size_t:
        other = "cogvideox1_5_5b (CogVideoX 1.5)" if found else "cogvideox_5b (CogVideoX 1.0)"
        raise ValueError(f"{model_name}: {config_file} has patch_size_t={found}, the model config "
                         f"unet.patch_size_t={patch_size_t}; this folder is model={other}")


def load_cogvideox_parts(folder: Path, dtype: torch.dtype | None = None):
    """A diffusers-format CogVideoX folder (``THUDM/CogVideoX-5b``), local files only."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import AutoTokenizer, T5EncoderModel

    p = load_folder_parts(folder, {"transformer": CogVideoXTransformer3DModel, "vae": AutoencoderKLCogVideoX,
                                   "text_encoder": T5EncoderModel, "tokenizer": AutoTokenizer}, dtype)
    return p["transformer"], p["vae"], p["text_encoder"], p["tokenizer"], p["scheduler"]


@register_family("cogvideox")
def build_cogvideox(cfg: DictConfig, weights_dir: str | None = None) -> CogVideoXBackbone:
    """``model=cogvideox_5b`` (weights folder ``cogvideox``) or ``cogvideox_5b_tiny`` (random)."""
    extra, scheduler, common = build_settings(cfg, max_sequence_length=226)
    if cfg.random_init:
        transformer, vae, text_encoder, tokenizer = tiny_cogvideox_parts(cfg)
        return CogVideoXBackbone(cfg.name, transformer, vae, text_encoder, tokenizer, scheduler_config=scheduler,
                                 random_init=True, weights={"init_seed": int(cfg.init_seed)}, **common)
    folder = Path(resolve_model_weights(cfg, weights_dir)["cogvideox"])
    check_transformer_folder(folder, cfg.name, (cfg.get("unet") or {}).get("patch_size_t"))
    transformer, vae, text_encoder, tokenizer, folder_scheduler = load_cogvideox_parts(folder)
    scheduler = with_folder_scheduler(folder_scheduler, scheduler)
    return CogVideoXBackbone(cfg.name, transformer, vae, text_encoder, tokenizer, scheduler_config=scheduler,
                             random_init=False, weights={"cogvideox": folder_identity(folder)}, **common)


__all__ = ["CogVideoXBackbone", "NATIVE_FRAMES", "build_cogvideox", "check_transformer_folder", "denoiser_view",
           "load_cogvideox_parts", "temporal_rope_table", "tiny_cogvideox_parts"]
