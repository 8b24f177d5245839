"""Build the VideoCrafter2 backbone: official weights (``model=videocrafter2``) or tiny random ones
(``model=videocrafter2_tiny``).

Official layout: one ``model.ckpt`` (UNet, VAE and OpenCLIP ViT-H text tower, see
:mod:`.videocrafter_convert`) plus a CLIP BPE tokenizer folder (OpenCLIP's vocabulary; padded with
``"!"`` = id 0 like OpenCLIP's zero padding, the Stable Diffusion 2 convention).

Sampling follows the official ``scripts/evaluation`` code: DDIM with ``eta`` (1.0 in
``run_text2video.sh``), the x0 rescale of ``use_scale`` (:class:`VideoCrafterDDIMScheduler`),
classifier-free guidance with the empty prompt as two separate UNet calls, and the fps
condition (28) on every UNet call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ...weights import identity, resolve_model_weights
from ..base import Backbone, register_family
from ..tiny import randomize_, tiny_tokenizer, tiny_vae
from .convert import (
    clip_text_config,
    convert_open_clip_text,
    convert_vae,
    load_text_weights,
    read_checkpoint,
    split_checkpoint,
)
from .model import VideoCrafterUNet, load_videocrafter_unet_weights

log = logging.getLogger("freelong")


# ----------------------------------------------------------------------------------------------
# Scheduler
# ----------------------------------------------------------------------------------------------
def lvdm_scale_arr(num_train_timesteps: int = 1000, scale_a: float = 1.0, scale_b: float = 0.7,
                   mid_step: int = 400, fix_scale_bug: bool = False) -> torch.Tensor:
    """lvdm's ``scale_arr``: ``linspace(scale_a, scale_b, mid_step)`` then ``scale_b`` (float32).

    Without ``fix_scale_bug`` the tail has ``num_train_timesteps`` entries (length 1400 for VC2);
    only indices ``< num_train_timesteps`` are ever read, so the bug does not change sampling.
    """
    tail = num_train_timesteps - mid_step if fix_scale_bug else num_train_timesteps
    arr = np.concatenate([np.linspace(scale_a, scale_b, mid_step), np.full(tail, scale_b)])
    return torch.tensor(arr, dtype=torch.float32)


class VideoCrafterDDIMScheduler(DDIMScheduler):
    """diffusers' DDIM with lvdm's ``use_scale`` x0 rescale (VideoCrafter2's sampler).

    With ``r = scale_arr``, ``a = alphas_cumprod`` and the step ``t → t_prev``::

        x0      = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) / r_t
        sigma   = eta sqrt((1 - a_prev) / (1 - a_t) (1 - a_t / a_prev))
        x_prev  = sqrt(a_prev) r_prev x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z

    At the last step ``a_prev = a[0]`` and ``r_prev = r[0] = 1`` (lvdm's ``alphas_prev`` and
    ``ddim_scale_arr_prev``). ``alphas_cumprod`` is computed as lvdm does (float64 cumulative
    product of ``1 - linspace(sqrt(beta_start), sqrt(beta_end))^2``, stored as float32).
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        trained_betas: Any = None,
        clip_sample: bool = False,
        set_alpha_to_one: bool = False,
        steps_offset: int = 1,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "leading",
        use_scale: bool = True,
        scale_a: float = 1.0,
        scale_b: float = 0.7,
        mid_step: int = 400,
        fix_scale_bug: bool = False,
    ):
        if prediction_type != "epsilon":
            raise ValueError(f"VideoCrafterDDIMScheduler supports prediction_type='epsilon' only, got "
                             f"{prediction_type!r}")
        if clip_sample:
            raise ValueError("VideoCrafterDDIMScheduler: clip_sample=True is not part of lvdm's DDIM sampler")
        super().__init__(num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                         beta_schedule=beta_schedule, trained_betas=trained_betas, clip_sample=False,
                         set_alpha_to_one=set_alpha_to_one, steps_offset=steps_offset,
                         prediction_type=prediction_type, timestep_spacing=timestep_spacing)
        if trained_betas is None and beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
            self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).float()
            self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.scale_arr = (lvdm_scale_arr(num_train_timesteps, scale_a, scale_b, mid_step, fix_scale_bug)
                          if use_scale else torch.ones(num_train_timesteps))

    def _prev_timestep(self, timestep: int) -> int | None:
        steps = [int(s) for s in self.timesteps]
        if timestep not in steps:
            raise ValueError(f"timestep {timestep} is not one of this scheduler's timesteps; call set_timesteps first")
        i = steps.index(timestep)
        return steps[i + 1] if i + 1 < len(steps) else None

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> DDIMSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps before step")
        t = int(timestep)
        prev = self._prev_timestep(t)
        a_t = self.alphas_cumprod[t].item()
        a_prev = (self.alphas_cumprod[prev] if prev is not None else self.final_alpha_cumprod).item()
        r_t = self.scale_arr[t].item()
        r_prev = self.scale_arr[prev if prev is not None else 0].item()
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5

        x0 = (sample - (1 - a_t) ** 0.5 * model_output) / a_t**0.5 / r_t
        direction = max(1 - a_prev - sigma**2, 0.0) ** 0.5 * model_output
        prev_sample = a_prev**0.5 * r_prev * x0 + direction
        if eta > 0:
            if variance_noise is None:
                variance_noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                              dtype=model_output.dtype)
            prev_sample = prev_sample + sigma * variance_noise
        if not return_dict:
            return prev_sample, x0
        return DDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)


# ----------------------------------------------------------------------------------------------
# Backbone
# ----------------------------------------------------------------------------------------------
class VideoCrafterBackbone(Backbone):
    """VideoCrafter2 behind the common interface: fps condition, its DDIM, official uint8 conversion."""

    def __init__(self, *args: Any, fps_condition: int = 28, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fps_condition = int(fps_condition)

    def unet_kwargs(self) -> dict[str, Any]:
        return {"fps": self.fps_condition}

    def make_scheduler(self, sampler: str):
        if sampler != "ddim":
            raise ValueError(f"{self.name} samples with DDIM only (the official sampler with its x0 rescale); "
                             f"got sampler={sampler!r}")
        return VideoCrafterDDIMScheduler(**self.scheduler_config)

    @staticmethod
    def to_uint8(img: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` → uint8 as the official ``save_videos``: clamp, ``(x + 1) / 2 * 255``, truncate."""
        return ((img.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(0, 2, 3, 1)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "fps_condition": self.fps_condition}


def _container(node: Any) -> dict[str, Any]:
    return dict(OmegaConf.to_container(node, resolve=True)) if isinstance(node, DictConfig) else dict(node or {})


def build_text_encoder(text_cfg: Mapping[str, Any], tokenizer) -> nn.Module:
    """A ``CLIPTextModel`` for ``model.text_encoder`` (vocabulary size defaults to the tokenizer's)."""
    from transformers import CLIPTextModel

    text_cfg = {"vocab_size": len(tokenizer), **text_cfg}
    if len(tokenizer) > text_cfg["vocab_size"]:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but model.text_encoder.vocab_size is "
                         f"{text_cfg['vocab_size']}")
    config = clip_text_config(text_cfg, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(config)


def _uniform_dtype(module: nn.Module) -> nn.Module:
    dtypes = {p.dtype for p in module.parameters()}
    return module.to(next(module.parameters()).dtype) if len(dtypes) > 1 else module


def check_schedule(schedule: Mapping[str, torch.Tensor], scheduler: VideoCrafterDDIMScheduler, where: str) -> None:
    """The checkpoint's stored ``alphas_cumprod``/``scale_arr`` must equal the configured scheduler's."""
    ours = {"alphas_cumprod": scheduler.alphas_cumprod, "scale_arr": scheduler.scale_arr}
    for key, value in ours.items():
        if key not in schedule:
            continue
        stored = schedule[key].float()
        n = min(len(stored), len(value), scheduler.config.num_train_timesteps)
        diff = (stored[:n] - value[:n]).abs().max().item()
        if diff > 1e-5:
            raise ValueError(f"{where}: the checkpoint's {key} differs from model.scheduler's by {diff:.2e}; "
                             f"fix model.scheduler to match the checkpoint")


@register_family("videocrafter2")
def build_videocrafter2(cfg: DictConfig, weights_dir: str | None = None) -> Backbone:
    common = dict(
        scheduler_config=_container(cfg.scheduler),
        sampling=_container(cfg.sampling),
        native_frames=cfg.native_frames,
        latent_scale=cfg.latent_scale,
        cfg_mode=cfg.cfg_mode,
        description=cfg.description,
        fps_condition=int(cfg.extra.get("fps_condition", 28)),
    )
    unet_cfg, vae_cfg, text_cfg = _container(cfg.unet), _container(cfg.vae), _container(cfg.text_encoder)
    pad_token = text_cfg.get("pad_token", "!")
    if cfg.random_init:
        seed = int(cfg.init_seed)
        unet = randomize_(VideoCrafterUNet.from_config(unet_cfg), seed)
        tokenizer = tiny_tokenizer(pad_token=pad_token)
        text_encoder = randomize_(build_text_encoder(text_cfg, tokenizer), seed + 1)
        vae = randomize_(tiny_vae(vae_cfg), seed + 2)
        return VideoCrafterBackbone(cfg.name, unet, vae, text_encoder, tokenizer, random_init=True,
                                    weights={"init_seed": seed}, **common)

    from transformers import CLIPTokenizer

    paths = resolve_model_weights(cfg, weights_dir)  # fails fast, naming every missing file
    tokenizer = CLIPTokenizer.from_pretrained(paths["tokenizer"], pad_token=pad_token, local_files_only=True)
    tokenizer.model_max_length = int(text_cfg.get("max_position_embeddings", 77))
    parts = split_checkpoint(read_checkpoint(paths["checkpoint"]))
    check_schedule(parts["schedule"], VideoCrafterDDIMScheduler(**common["scheduler_config"]), str(paths["checkpoint"]))
    with torch.device("meta"):
        unet = VideoCrafterUNet.from_config(unet_cfg)
        vae = tiny_vae(vae_cfg)
        text_encoder = build_text_encoder(text_cfg, tokenizer)
    load_videocrafter_unet_weights(unet, parts["unet"], assign=True)
    vae.load_state_dict(convert_vae(parts["vae"], vae.config), strict=True, assign=True)
    load_text_weights(text_encoder, convert_open_clip_text(parts["text"], text_encoder.config.num_hidden_layers),
                      assign=True)
    weights = {"checkpoint": identity(paths["checkpoint"]), "tokenizer": str(paths["tokenizer"])}
    return VideoCrafterBackbone(cfg.name, _uniform_dtype(unet), _uniform_dtype(vae), _uniform_dtype(text_encoder),
                                tokenizer, random_init=False, weights=weights, **common)


__all__ = [
    "VideoCrafterBackbone",
    "VideoCrafterDDIMScheduler",
    "build_text_encoder",
    "build_videocrafter2",
    "check_schedule",
    "lvdm_scale_arr",
]

build_videocrafter2.capabilities = ("per_frame_timesteps", "single_step_sampler")  # models.base.family_capabilities
