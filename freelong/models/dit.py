"""What the diffusers video DiT backbones share: a transformer over patchified latents, a VAE that compresses time.

Wan, CogVideoX and HunyuanVideo take ``4n + 1`` frames (their VAEs keep the first frame and compress every
4 after it), and heights/widths that are multiples of the VAE factor times the spatial patch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .base import Backbone
from .frames import check_wan_frames, latent_frame_count


class VideoDiTBackbone(Backbone):
    """A :class:`Backbone` whose denoiser (``unet``, also ``transformer``) is a diffusers video DiT."""

    temporal_compression: int  # set by each family (4 for Wan2.1, CogVideoX, HunyuanVideo)

    @property
    def transformer(self):
        return self.unet

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    def spatial_patch(self) -> int:
        """The transformer's spatial patch size (``patch_size``: an int, or Wan's ``(t, h, w)``)."""
        patch = self.unet.config.patch_size
        return int(patch[1] if isinstance(patch, (list, tuple)) else patch)

    def latent_frames(self, num_frames: int) -> int:
        return latent_frame_count(num_frames, self.temporal_compression)

    def check_shape(self, num_frames: int, height: int, width: int) -> None:
        check_wan_frames(num_frames, self.temporal_compression)
        multiple = self.vae_scale_factor * self.spatial_patch()
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple} for {self.name}, got {height}x{width}")


def load_folder_parts(folder: Path, parts: dict[str, Any], dtype: torch.dtype | None = None,
                      keep_fp32: tuple[str, ...] = ()) -> dict[str, Any]:
    """Each ``subfolder: class`` of a diffusers-format folder through ``from_pretrained`` (local files only), in
    ``dtype`` unless it is a tokenizer or named in ``keep_fp32``; ``"scheduler"``: the scheduler's config."""
    out: dict[str, Any] = {}
    for sub, cls in parts.items():
        kw: dict[str, Any] = {"local_files_only": True}
        if dtype is not None and sub not in keep_fp32 and not sub.startswith("tokenizer"):
            kw["torch_dtype"] = dtype
        out[sub] = cls.from_pretrained(folder, subfolder=sub, **kw)
    out["scheduler"] = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return out


def build_settings(cfg: DictConfig, max_sequence_length: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A DiT model config's ``extra``, its scheduler config and the keywords every DiT backbone takes (sampling,
    native length, description, latent scale, text length, temporal compression)."""
    extra = OmegaConf.to_container(cfg.extra, resolve=True) if cfg.get("extra") else {}
    common = dict(
        sampling=OmegaConf.to_container(cfg.sampling, resolve=True),
        native_frames=cfg.native_frames,
        description=cfg.description,
        latent_scale=cfg.latent_scale,
        max_sequence_length=int(extra.get("max_sequence_length", max_sequence_length)),
        temporal_compression=int(extra.get("temporal_compression", 4)),
    )
    return extra, OmegaConf.to_container(cfg.scheduler, resolve=True), common


def with_folder_scheduler(folder_scheduler: dict[str, Any], scheduler: dict[str, Any]) -> dict[str, Any]:
    """The weights folder's scheduler config (its ``_``-keys dropped) under the model config's own values."""
    return {**{k: v for k, v in folder_scheduler.items() if not k.startswith("_")}, **scheduler}
