"""HunyuanVideo text-to-video through diffusers: ``HunyuanVideoTransformer3DModel``, ``AutoencoderKLHunyuanVideo``,
a Llama text encoder (prompt template, hidden states of the third-last layer) and CLIP-L (pooled).

What :class:`HunyuanVideoBackbone` changes against the SD-like UNets, each as diffusers' ``HunyuanVideoPipeline``:

- the VAE compresses 8x spatially and 4x in time, causally: ``4n+1`` frames <-> ``n+1`` latent frames; height and
  width are multiples of 16 (VAE 8 x patch 2);
- guidance is *embedded*: ``guidance_scale`` (6.0) enters the transformer as ``guidance = 1000 * w``; there is no
  unconditional pass (``true_cfg_scale = 1``, the pipeline's default), so ``uncond`` is ignored;
- flow matching with ``FlowMatchEulerDiscreteScheduler`` (``shift`` 7.0) over the pipeline's sigmas
  ``linspace(1, 0, steps + 1)[:-1]`` (:class:`PipelineSigmasFlowMatch`);
- the text is what ``HunyuanVideoPipeline.encode_prompt`` returns (diffusers' own code, called on our modules):
  Llama states ``(B, 256, 4096)`` with their attention mask, and CLIP's pooled output ``(B, 768)``;
- methods go on the joint ``[video, text]`` attention of all 20 dual- and 40 single-stream blocks
  (:mod:`freelong.models.hunyuanvideo.attention`); RIFLEx replaces ``transformer.rope``'s temporal channels.

``hunyuanvideo_tiny`` builds the same classes from small configs with random weights (a T5 unigram tokenizer and
a tiny Llama in the Llama slot, a character-level CLIP tokenizer and a tiny CLIP text model in the CLIP slot).
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
from ..dit import VideoDiTBackbone, build_settings, load_folder_parts, with_folder_scheduler
from ..tiny import randomize_, tiny_text_encoder, tiny_tokenizer
from ..wan.attention import DiTCallState
from ..wan.backbone import folder_identity, tiny_umt5_tokenizer
from .attention import HunyuanAttnSlot, HunyuanRopeEdit, hunyuan_attention_slots

if TYPE_CHECKING:
    from ...methods.base import Method

SAMPLERS = ("flow_euler",)
NATIVE_FRAMES = 129  # HunyuanVideo's released model (model card: 129 frames, 33 latent frames)


def _flow_match_class():
    from diffusers import FlowMatchEulerDiscreteScheduler

    class PipelineSigmasFlowMatch(FlowMatchEulerDiscreteScheduler):
        """diffusers' ``FlowMatchEulerDiscreteScheduler`` whose ``set_timesteps(n)`` uses HunyuanVideoPipeline's sigmas
        ``linspace(1, 0, n + 1)[:-1]`` (the pipeline passes them explicitly; our loop passes only ``n``), with the
        identity ``scale_model_input`` and unit ``init_noise_sigma`` the loop asks every scheduler for (the pipeline
        uses the noise as is)."""

        init_noise_sigma = 1.0

        def scale_model_input(self, sample, timestep=None):
            return sample

        def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, **kwargs):
            if sigmas is None and num_inference_steps is not None and kwargs.get("timesteps") is None:
                sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
            return super().set_timesteps(num_inference_steps=num_inference_steps if sigmas is None else None,
                                         device=device, sigmas=sigmas, **kwargs)

    return PipelineSigmasFlowMatch


class HunyuanVideoBackbone(VideoDiTBackbone):
    """HunyuanVideo behind the :class:`Backbone` interface; ``self.unet`` is the diffusers transformer."""

    def __init__(self, *args, text_encoder_2=None, tokenizer_2=None, max_sequence_length: int = 256,
                 temporal_compression: int = 4, prompt_template: Mapping[str, Any] | None = None, **kwargs):
        kwargs.setdefault("cfg_mode", "separate")
        super().__init__(*args, **kwargs)
        self.text_encoder_2 = text_encoder_2.eval().requires_grad_(False)
        self.tokenizer_2 = tokenizer_2
        self.max_sequence_length = int(max_sequence_length)
        self.temporal_compression = int(temporal_compression)
        self.prompt_template = dict(prompt_template) if prompt_template else None
        self.call_state = DiTCallState()

    def to(self, device=None, dtype=None) -> HunyuanVideoBackbone:
        super().to(device=device, dtype=dtype)
        kwargs = {"device": device} if device is not None else {}
        if dtype is not None and dtype != next(self.text_encoder_2.parameters()).dtype:
            kwargs["dtype"] = dtype
        self.text_encoder_2.to(**kwargs)
        return self

    @property
    def vae_scale_factor(self) -> int:
        return int(self.vae.config.spatial_compression_ratio)

    # -- text ---------------------------------------------------------------------------------------
    def diffusers_pipeline(self):
        """diffusers' ``HunyuanVideoPipeline`` over this backbone's modules (text encoding, parity checks)."""
        from diffusers import HunyuanVideoPipeline

        return HunyuanVideoPipeline(**self.components)

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{"prompt_embeds", "pooled", "mask"}`` from ``HunyuanVideoPipeline.encode_prompt`` on our encoders."""
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

        pipe = self.diffusers_pipeline()
        embeds, pooled, mask = pipe.encode_prompt(list(prompts), prompt_template=self.prompt_template or
                                                  DEFAULT_PROMPT_TEMPLATE, device=self.device,
                                                  max_sequence_length=self.max_sequence_length)
        return {"prompt_embeds": embeds, "pooled": pooled, "mask": mask}

    # -- sampling -----------------------------------------------------------------------------------
    def make_scheduler(self, sampler: str):
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)} for {self.name}, got {sampler!r}")
        cls = _flow_match_class()
        accepted = set(inspect.signature(cls.__bases__[0].__init__).parameters)
        return cls(**{k: v for k, v in self.scheduler_config.items() if k in accepted})

    def scheduler_step_kwargs(self, sampler: str, generator: torch.Generator, eta: float) -> dict[str, Any]:
        return {}  # flow-matching Euler (s_churn 0) is deterministic

    # -- installing a method (Backbone.attach calls these) -------------------------------------------
    def attention_layers(self) -> dict[str, HunyuanAttnSlot]:
        return hunyuan_attention_slots(self.unet, self.call_state)

    def install_rope_edit(self, method: Method, handle: Handle) -> None:
        native = self.method_frames(self.native_frames)
        handle.set_attr(self.unet, "rope", HunyuanRopeEdit(self.unet.rope, method.rope_frequencies, native))

    def predict_noise(self, latents, t, cond, uncond, guidance_scale: float, call: CallContext | None = None):
        """The flow prediction with embedded guidance ``1000 * guidance_scale`` (one call; ``uncond`` unused)."""
        if not isinstance(cond, Mapping) or "pooled" not in cond:
            raise ValueError(f"{self.name}: per-frame or per-block text conditioning is not supported on HunyuanVideo "
                             f"(its text is part of the joint attention)")
        self.call_state.call = call
        x = latents.to(self.dtype)
        b = x.shape[0]
        guidance = torch.tensor([guidance_scale] * b, dtype=self.dtype, device=x.device) * 1000.0
        try:
            return self.unet(hidden_states=x, timestep=t.expand(b).to(latents.dtype),
                             encoder_hidden_states=cond["prompt_embeds"].to(self.dtype),
                             encoder_attention_mask=cond["mask"].to(self.dtype),
                             pooled_projections=cond["pooled"].to(self.dtype), guidance=guidance,
                             return_dict=False)[0].float()
        finally:
            self.call_state.call = None

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_size: int | None = None) -> np.ndarray:
        """Latents ``(B, C, T', h, w)`` → uint8 ``(B, 4T'-3, H, W, 3)`` (``/ scaling_factor``, the VAE's own decode)."""
        vae_dtype = next(self.vae.parameters()).dtype
        z = latents.to(self.device, vae_dtype) / float(self.vae.config.scaling_factor)
        video = self.vae.decode(z).sample.float()
        b, _, t, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * t, 3, h, w)
        return self.to_uint8(frames).cpu().reshape(b, t, h, w, 3).numpy()

    @property
    def components(self) -> dict[str, Any]:
        """diffusers' ``HunyuanVideoPipeline`` components: ``HunyuanVideoPipeline(**components)``."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.make_scheduler("flow_euler").config)
        return {"transformer": self.unet, "vae": self.vae, "text_encoder": self.text_encoder,
                "tokenizer": self.tokenizer, "text_encoder_2": self.text_encoder_2, "tokenizer_2": self.tokenizer_2,
                "scheduler": scheduler}


def denoiser_view(transformer: torch.nn.Module, pipe: Any = None, trained_frames: int | None = None
                  ) -> HunyuanVideoBackbone:
    """A :class:`HunyuanVideoBackbone` view over a live ``HunyuanVideoTransformer3DModel`` (``freelong.enable``):
    its own :class:`DiTCallState`, the pipeline's VAE and temporal compression when a pipeline is given."""
    compression = int(getattr(pipe, "vae_scale_factor_temporal", None) or 4)
    return HunyuanVideoBackbone.over(transformer, type(transformer).__name__,
                                     native_frames=trained_frames or NATIVE_FRAMES, family="hunyuanvideo",
                                     call_state=DiTCallState(), temporal_compression=compression,
                                     vae=getattr(pipe, "vae", None))


def tiny_hunyuan_parts(cfg: DictConfig):
    """Transformer, VAE, Llama + tokenizer, CLIP + tokenizer from ``conf/model/hunyuanvideo_tiny.yaml``."""
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
    from transformers import LlamaConfig, LlamaModel

    seed = int(cfg.init_seed)
    tokenizer = tiny_umt5_tokenizer(1024)
    transformer = randomize_(HunyuanVideoTransformer3DModel(**OmegaConf.to_container(cfg.unet, resolve=True)), seed)
    vae = randomize_(AutoencoderKLHunyuanVideo(**OmegaConf.to_container(cfg.vae, resolve=True)), seed + 2)
    text_cfg = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=1, eos_token_id=1,
                           **OmegaConf.to_container(cfg.text_encoder, resolve=True))
    text_encoder = randomize_(LlamaModel(text_cfg), seed + 1)
    tokenizer_2 = tiny_tokenizer()
    text_encoder_2 = randomize_(tiny_text_encoder(OmegaConf.to_container(cfg.extra.text_encoder_2, resolve=True),
                                                  len(tokenizer_2)), seed + 3)
    return transformer, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2


def load_hunyuan_parts(folder: Path, dtype: torch.dtype | None = None):
    """A diffusers-format HunyuanVideo folder (``hunyuanvideo-community/HunyuanVideo``), local files only."""
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, LlamaModel

    p = load_folder_parts(folder, {"transformer": HunyuanVideoTransformer3DModel, "vae": AutoencoderKLHunyuanVideo,
                                   "text_encoder": LlamaModel, "tokenizer": AutoTokenizer,
                                   "text_encoder_2": CLIPTextModel, "tokenizer_2": CLIPTokenizer}, dtype)
    return (p["transformer"], p["vae"], p["text_encoder"], p["tokenizer"], p["text_encoder_2"], p["tokenizer_2"],
            p["scheduler"])


@register_family("hunyuanvideo")
def build_hunyuanvideo(cfg: DictConfig, weights_dir: str | None = None) -> HunyuanVideoBackbone:
    """``model=hunyuanvideo`` (weights folder ``hunyuanvideo``) or ``hunyuanvideo_tiny`` (random)."""
    extra, scheduler, common = build_settings(cfg, max_sequence_length=256)
    common["prompt_template"] = extra.get("prompt_template")
    if cfg.random_init:
        transformer, vae, te, tok, te2, tok2 = tiny_hunyuan_parts(cfg)
        return HunyuanVideoBackbone(cfg.name, transformer, vae, te, tok, scheduler_config=scheduler, random_init=True,
                                    weights={"init_seed": int(cfg.init_seed)}, text_encoder_2=te2, tokenizer_2=tok2,
                                    **common)
    folder = Path(resolve_model_weights(cfg, weights_dir)["hunyuanvideo"])
    transformer, vae, te, tok, te2, tok2, folder_scheduler = load_hunyuan_parts(folder)
    scheduler = with_folder_scheduler(folder_scheduler, scheduler)
    return HunyuanVideoBackbone(cfg.name, transformer, vae, te, tok, scheduler_config=scheduler, random_init=False,
                                weights={"hunyuanvideo": folder_identity(folder)}, text_encoder_2=te2,
                                tokenizer_2=tok2, **common)


__all__ = ["HunyuanVideoBackbone", "NATIVE_FRAMES", "build_hunyuanvideo", "denoiser_view", "load_hunyuan_parts",
           "tiny_hunyuan_parts"]
