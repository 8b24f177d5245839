"""What the diffusers video DiT backbones share: a transformer over patchified latents, a VAE that compresses time.

Wan, CogVideoX and HunyuanVideo take ``4n + 1`` frames (their VAEs keep the first frame and compress every
4 after it), and heights/widths that are multiples of the VAE factor times the spatial patch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..attention.context import CallContext
from ..handle import Handle
from .base import Backbone
from .frames import check_wan_frames, latent_frame_count

if TYPE_CHECKING:
    from .wan.attention import DiTCallState


class VideoDiTBackbone(Backbone):
    """A :class:`Backbone` whose denoiser (``unet``, also ``transformer``) is a diffusers video DiT.

    Every DiT family's attention adapters read the token grid and the per-call context from one
    :class:`~freelong.models.wan.attention.DiTCallState` per transformer (``call_state``): this base records the
    grid before each forward (:meth:`prepare_attention`) and publishes the call there (:meth:`publish_call`).
    """

    temporal_compression: int  # set by each family (4 for Wan2.1, CogVideoX, HunyuanVideo)
    call_state: DiTCallState  # set by each family's __init__ (and by its denoiser_view)

    @property
    def transformer(self):
        return self.unet

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    def patch_sizes(self) -> tuple[int, int, int]:
        """``(p_t, p_h, p_w)`` of the transformer's patch embedding: Wan's ``patch_size`` triple, or an int
        ``patch_size`` with ``patch_size_t`` (HunyuanVideo 1; CogVideoX 1.5 2, 1.0 None = 1)."""
        cfg = self.unet.config
        patch = cfg.patch_size
        if isinstance(patch, (list, tuple)):
            return int(patch[0]), int(patch[1]), int(patch[2])
        return int(getattr(cfg, "patch_size_t", None) or 1), int(patch), int(patch)

    def spatial_patch(self) -> int:
        """The transformer's spatial patch size."""
        return self.patch_sizes()[1]

    def token_grid(self, hidden_states: torch.Tensor) -> tuple[int, int, int]:
        """``(T', H', W')`` video tokens of the transformer's latent input (frames in dim :attr:`frames_dim`)."""
        p_t, p_h, p_w = self.patch_sizes()
        frames, (h, w) = hidden_states.shape[self.frames_dim], hidden_states.shape[-2:]
        return int(frames) // p_t, int(h) // p_h, int(w) // p_w

    def experts(self) -> list[tuple[str, torch.nn.Module, DiTCallState]]:
        """``(layer-name prefix, transformer, its call state)`` of every transformer this backbone runs (one;
        Wan2.2 A14B two)."""
        return [("", self.unet, self.call_state)]

    def prepare_attention(self, handle: Handle) -> None:
        """A forward pre-hook on every transformer writing each call's token grid into its call state."""
        for _, model, state in self.experts():
            handle.on_detach(model.register_forward_pre_hook(self._grid_recorder(state), with_kwargs=True).remove)

    def _grid_recorder(self, state: DiTCallState) -> Callable[..., None]:
        def record(module, args, kwargs) -> None:
            state.grid = self.token_grid(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

        return record

    def publish_call(self, call: CallContext | None) -> Callable[[], None]:
        """The adapters read the call from :attr:`call_state` (``freelong.enable``'s model hook sets it per forward)."""
        previous, self.call_state.call = self.call_state.call, call

        def retract() -> None:
            self.call_state.call = previous

        return retract

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames sampled for ``num_frames`` video frames: the VAE's count, padded to a multiple of the
        temporal patch as diffusers' pipelines pad it (CogVideoX 1.5: 81 frames -> 21 -> 22)."""
        p_t = self.patch_sizes()[0]
        return -(-latent_frame_count(num_frames, self.temporal_compression) // p_t) * p_t

    def method_frames(self, num_frames: int) -> int:
        """Temporal token positions: the sampled latent frames over the temporal patch (CogVideoX 1.5: two latent
        frames a position; every other DiT here: the latent frames)."""
        return self.latent_frames(num_frames) // self.patch_sizes()[0]

    def initial_noise(self, method: Any, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """With a temporal patch ``p_t > 1`` a method's noise is drawn over temporal positions, as its windows count
        them: ``init_noise`` of ``(B, C*p_t, T/p_t, h, w)`` (each position's ``p_t`` latent frames as channels), then
        unfolded to ``(B, C, T, h, w)`` with latent frame ``p_t*i + j`` from position ``i``. ``p_t = 1``: as is."""
        p_t = self.patch_sizes()[0]
        if p_t == 1:
            return super().initial_noise(method, shape, generator)
        b, c, t, h, w = shape
        noise = method.init_noise((b, c * p_t, t // p_t, h, w), generator=generator, dtype=torch.float32)
        return noise.view(b, c, p_t, t // p_t, h, w).transpose(2, 3).reshape(b, c, t, h, w)

    def latents_to_decode(self, latents: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Without the frames padded to the temporal patch, dropped from the front as CogVideoXPipeline does."""
        padded = self.latent_frames(num_frames) - latent_frame_count(num_frames, self.temporal_compression)
        return latents[:, :, padded:]

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
