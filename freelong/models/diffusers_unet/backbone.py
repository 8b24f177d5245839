"""diffusers' own video UNets as backbones: AnimateDiff (``UNetMotionModel``) and ModelScope/ZeroScope
(``UNet3DConditionModel``), with their VAE, CLIP text encoder, tokenizer and scheduler.

No model code is ported: the UNet, VAE and text encoder are diffusers'/transformers' classes loaded
with ``from_pretrained(local_folder, local_files_only=True)`` (real weights) or built from small
configs of the same classes with seeded random weights (``animatediff_tiny``, ``modelscope_tiny``).
:class:`DiffusersVideoUNet` gives them our UNet calling convention and lists their temporal
self-attentions for the methods (:mod:`.diffusers_attention`); ``backbone.components`` and
``backbone.diffusers_pipeline()`` give diffusers' own pipeline over the very same modules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ...attention.context import CallContext
from ...weights import identity, resolve_model_weights
from ..base import Backbone, per_frame_context, register_family
from ..tiny import randomize_, tiny_text_encoder, tiny_tokenizer, tiny_vae
from .attention import _CALL, block_level, calling, find_temporal_slots


class DiffusersVideoUNet(nn.Module):
    """``forward(sample (B, C, T, h, w), timestep, text (B, L, D) | (B, T, L, D), call=None)`` → noise prediction.

    ``per_frame_text``: ``UNetMotionModel`` takes one text context per frame (``(B*T, L, D)``, as
    ``AnimateDiffPipeline`` repeats it); ``UNet3DConditionModel`` repeats a ``(B, L, D)`` context itself.
    ``frame_chunk_size`` (set by the runner): ``0`` off, ``None`` automatic, ``n``: the motion and
    spatial feed-forwards run in chunks (diffusers' ``set_chunk_feed_forward``) so their 4-8x wide
    hidden states stay bounded at long lengths.
    """

    # timestep may be per-frame (B, T) (FIFO-Diffusion; freelong.sampling); Backbone.per_frame_timesteps reads it
    per_frame_timesteps = True

    def __init__(self, model: nn.Module, per_frame_text: bool, native_frames: int = 16):
        super().__init__()
        self.model = model
        self.per_frame_text = per_frame_text
        self.native_frames = native_frames
        self.frame_chunk_size: int | None = None
        self.chunk_budget_mb: float | None = None
        self._slots, self._blocks = find_temporal_slots(model, len(model.config.block_out_channels))

    @property
    def config(self):
        return self.model.config

    @property
    def in_channels(self) -> int:
        return int(self.model.config.in_channels)

    def temporal_layers(self) -> dict[str, Any]:
        """The temporal self-attentions (attn1/attn2 of every motion block) of the live model as attachable slots."""
        self._refresh_slots()
        return self._slots

    def temporal_blocks(self) -> dict[str, nn.Module]:
        """The live motion-module ``BasicTransformerBlock``s (for block-level fusion, ``method.fusion=block``)."""
        self._refresh_slots()
        return self._blocks

    def _refresh_slots(self) -> None:
        """Find the slots again when a motion block was swapped since they were found.

        diffusers' ``enable_free_noise()``/``disable_free_noise()`` replace the motion blocks with new modules; slots
        of the old ones would install methods where nothing runs. Unchanged blocks keep their slots (and the state
        the slots share, such as a block's set-aside ``pos_embed``).
        """
        live = dict(self.model.named_modules())
        if all(live.get(name) is block for name, block in self._blocks.items()) and all(
                live.get(name) is slot.attn for name, slot in self._slots.items()):
            return
        self._slots, self._blocks = find_temporal_slots(self.model, len(self.model.config.block_out_channels))

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor,
                call: CallContext | None = None) -> torch.Tensor:
        b, _, t = sample.shape[:3]
        ctx = encoder_hidden_states
        if isinstance(ctx, Mapping):
            raise ValueError(f"{type(self.model).__name__} takes one text context for all its blocks; per-block-group "
                             f"contexts (FreeNoise's method.motion_injection=true) need a LaVie or VideoCrafter2 UNet")
        if self.per_frame_text:
            ctx = per_frame_context(ctx, b, t, sample.dtype)
        elif ctx.ndim != 3:
            raise ValueError(f"{type(self.model).__name__} takes one text context per video (B, L, D); "
                             f"per-frame contexts (multi-prompt videos) need a per-frame backbone such as animatediff")
        chunked = self._set_ff_chunks(sample)
        try:
            with calling(call), self._per_frame_time(timestep, b, t) as model_t:
                return self.model(sample, model_t, encoder_hidden_states=ctx.to(sample.dtype), return_dict=False)[0]
        finally:
            if chunked:  # leave diffusers' modules as we found them (their pipeline may run them next)
                for _, block in self._ff_blocks():
                    block.set_chunk_feed_forward(None, 0)

    @contextmanager
    def _per_frame_time(self, timestep: Any, b: int, t: int):
        """A per-frame ``(B, T)`` timestep through diffusers' UNet, which embeds one t per video and repeats it
        over frames (``emb.repeat_interleave(num_frames)``): the model gets ``timestep[:, 0]`` and every
        ResNet's ``temb`` (the only consumers of the time embedding) is swapped for the per-frame embedding
        ``time_embedding(time_proj(t_bf))`` in the model's ``(B*T)`` frame order. A scalar/``(B,)`` passes as is."""
        steps = torch.as_tensor(timestep)
        if steps.ndim != 2:
            yield timestep
            return
        if tuple(steps.shape) != (b, t):
            raise ValueError(f"per-frame timesteps must be (B, T) = {(b, t)}, got {tuple(steps.shape)}")
        model = self.model
        if getattr(model, "class_embedding", None) is not None or getattr(model, "add_embedding", None) is not None:
            raise ValueError(f"{type(model).__name__} with class/added embeddings cannot take per-frame timesteps")
        device = next(model.parameters()).device
        t_emb = model.time_proj(steps.reshape(-1).to(device)).to(model.dtype)
        emb = model.time_embedding(t_emb)

        def swap(module, args, kwargs):
            if "temb" in kwargs:
                return args, {**kwargs, "temb": emb}
            return (args[0], emb, *args[2:]), kwargs

        hooks = [m.register_forward_pre_hook(swap, with_kwargs=True) for m in model.modules()
                 if type(m).__name__ == "ResnetBlock2D" and getattr(m, "time_emb_proj", None) is not None]
        try:
            yield steps[:, 0].to(device)
        finally:
            for h in hooks:
                h.remove()

    def _set_ff_chunks(self, sample: torch.Tensor) -> bool:
        """Feed-forward row chunks for this call's shape (none at or below the native length, or when off).

        A block's feed-forward sees ``(rows, seq, C)`` with ``rows = B*T`` frames (spatial blocks) or
        ``B*h*w`` pixels (motion blocks); chunks hold as many rows as keep the widest hidden state
        within the chunking budget (``frame_chunk_size=n`` caps spatial chunks at ``n`` frames) and
        divide ``rows`` exactly, as diffusers' chunked feed-forward requires.
        """
        from ...chunking import ChunkPolicy

        b, _, t, h, w = sample.shape
        size = self.frame_chunk_size
        if size == 0 or (size is None and t <= self.native_frames):
            return False
        budget = ChunkPolicy(None, self.chunk_budget_mb)
        levels = len(self.model.config.block_out_channels)
        any_chunk = False
        for name, block in self._ff_blocks():
            hl, wl = _level_size(h, block_level(name, levels)), _level_size(w, block_level(name, levels))
            temporal = _is_temporal(name)
            rows, seq = (b * hl * wl, t) if temporal else (b * t, hl * wl)
            width = max(m.out_features for m in block.ff.modules() if isinstance(m, nn.Linear))
            limit = budget.frames(rows, seq * width * sample.element_size())
            if size and not temporal:
                limit = min(limit, size)
            chunk = _divisor_at_most(rows, limit)
            chunk = chunk if chunk < rows else None
            block.set_chunk_feed_forward(chunk, 0)
            any_chunk = any_chunk or chunk is not None
        return any_chunk

    def _ff_blocks(self) -> list[tuple[str, nn.Module]]:
        if not hasattr(self, "_ff_cache"):
            self._ff_cache = [(n, m) for n, m in self.model.named_modules()
                              if hasattr(m, "set_chunk_feed_forward") and isinstance(getattr(m, "ff", None), nn.Module)]
        return self._ff_cache


def _is_temporal(name: str) -> bool:
    return ".motion_modules." in name or ".temp_attentions." in name or name.startswith("transformer_in")


def _level_size(n: int, level: int) -> int:
    for _ in range(level):
        n = (n + 1) // 2
    return n


def _divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is ``<= limit`` (diffusers' FF chunks must tile the rows)."""
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            return d
    return 1


class DiffusersBackbone(Backbone):
    """A diffusers video model behind the common interface; ``components`` rebuild diffusers' pipeline."""

    def __init__(self, *args: Any, pipeline_class: str = "AnimateDiffPipeline",
                 motion_adapter_config: Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pipeline_class = pipeline_class
        self.motion_adapter_config = dict(motion_adapter_config) if motion_adapter_config else None

    @property
    def components(self) -> dict[str, Any]:
        """diffusers' pipeline components: the same modules this backbone runs (not copies).

        AnimateDiff's also hold ``motion_adapter``: a module of the adapter's config with
        *uninitialised* weights (``to_empty``; the trained ones already live in the ``UNetMotionModel``,
        and diffusers' pipeline only reads the adapter's config, e.g. ``motion_max_seq_length``).
        """
        parts = {"unet": self.unet.model, "vae": self.vae, "text_encoder": self.text_encoder,
                 "tokenizer": self.tokenizer, "scheduler": self.make_scheduler("ddim")}
        if self.pipeline_class == "AnimateDiffPipeline":
            parts["motion_adapter"] = self._config_only_adapter()
        return parts

    def _config_only_adapter(self):
        cached = getattr(self, "_adapter_shell", None)
        if cached is None or cached.device != self.device:
            from diffusers import MotionAdapter

            with torch.device("meta"):
                shell = MotionAdapter.from_config(self.motion_adapter_config or {})
            shell = shell.to_empty(device=self.device).requires_grad_(False)
            if self.dtype != next(shell.parameters()).dtype:  # diffusers warns on every dtype= cast
                shell = shell.to(dtype=self.dtype)
            cached = self._adapter_shell = shell
        return cached

    def diffusers_pipeline(self, **replace: Any):
        """``AnimateDiffPipeline`` / ``TextToVideoSDPipeline`` over :attr:`components` (for parity checks);
        ``replace`` swaps components (e.g. a copy of the UNet for diffusers' own FreeNoise)."""
        import diffusers

        pipe = getattr(diffusers, self.pipeline_class)(**{**self.components, **replace})
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def info(self) -> dict[str, Any]:
        return {**super().info(), "diffusers_pipeline": self.pipeline_class}

    def publish_call(self, call: CallContext | None):
        token = _CALL.set(call)
        return lambda: _CALL.reset(token)


# diffusers' UNet class -> (family, pipeline, per-frame text, native frames of the released models)
UNET_FAMILIES = {"UNetMotionModel": ("animatediff", "AnimateDiffPipeline", True, 16),
                 "UNet3DConditionModel": ("modelscope", "TextToVideoSDPipeline", False, 16)}


def denoiser_view(unet: nn.Module, pipe: Any = None, trained_frames: int | None = None) -> DiffusersBackbone:
    """A :class:`DiffusersBackbone` view over a live ``UNetMotionModel`` / ``UNet3DConditionModel``
    (``freelong.enable``): the UNet wrapped as :class:`DiffusersVideoUNet` (which finds its temporal slots)."""
    family, pipeline_class, per_frame, native = UNET_FAMILIES[type(unet).__name__]
    native = trained_frames or native
    return DiffusersBackbone.over(DiffusersVideoUNet(unet, per_frame, native), type(unet).__name__,
                                  native_frames=native, family=family, pipeline_class=pipeline_class,
                                  vae=getattr(pipe, "vae", None))


# ----------------------------------------------------------------------------------------------
# Checks that run on configs only (before any weight is read)
# ----------------------------------------------------------------------------------------------
def _per_block(value: Any, n: int) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def check_motion_adapter(unet_config: Mapping[str, Any], adapter_config: Mapping[str, Any], where: str) -> None:
    """The adapter must fit the base UNet: same number of blocks, channels and layers per block."""
    blocks = list(unet_config.get("down_block_types", []))
    n = len(blocks)
    a_channels = list(adapter_config.get("block_out_channels", []))
    problems = []
    if len(a_channels) != n:
        problems.append(f"{len(a_channels)} blocks vs the UNet's {n}")
    elif a_channels != list(unet_config.get("block_out_channels", [])):
        problems.append(f"block_out_channels {a_channels} vs the UNet's {list(unet_config.get('block_out_channels'))}")
    layers = _per_block(unet_config.get("layers_per_block", 2), n)
    a_layers = _per_block(adapter_config.get("motion_layers_per_block", 2), len(a_channels) or n)
    if not problems and a_layers != layers:
        problems.append(f"motion_layers_per_block {a_layers} vs the UNet's layers_per_block {layers}")
    if problems:
        raise ValueError(f"{where}: the motion adapter does not match the base UNet ({'; '.join(problems)}); "
                         f"use an adapter made for this base model")


def _container(node: Any) -> dict[str, Any]:
    return dict(OmegaConf.to_container(node, resolve=True)) if isinstance(node, DictConfig) else dict(node or {})


def _common(cfg: DictConfig) -> dict[str, Any]:
    return dict(
        sampling=_container(cfg.sampling),
        native_frames=cfg.native_frames,
        cfg_mode=cfg.cfg_mode,
        description=cfg.description,
    )


def _join_motion_unet(unet2d: nn.Module, adapter: nn.Module) -> nn.Module:
    """``UNetMotionModel.from_unet2d`` without diffusers' notice about a dtype cast it makes itself."""
    from diffusers import UNetMotionModel
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        return UNetMotionModel.from_unet2d(unet2d, adapter)
    finally:
        dlog.set_verbosity(level)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _tiny_text(cfg: DictConfig, seed: int):
    text_cfg = _container(cfg.text_encoder)
    tokenizer = tiny_tokenizer(pad_token=text_cfg.pop("pad_token", "<|endoftext|>"))
    return tokenizer, randomize_(tiny_text_encoder(text_cfg, len(tokenizer)), seed)


def _sd_parts(folder: Path):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    return vae, text_encoder, tokenizer


@register_family("animatediff")
def build_animatediff(cfg: DictConfig, weights_dir: str | None = None) -> Backbone:
    """SD1.5 (VAE, CLIP text encoder, tokenizer, UNet) + a motion adapter → ``UNetMotionModel.from_unet2d``."""
    from diffusers import MotionAdapter, UNet2DConditionModel

    common = _common(cfg)
    scheduler_config = _container(cfg.scheduler)
    if cfg.random_init:
        seed = int(cfg.init_seed)
        unet_cfg, adapter_cfg = _container(cfg.unet), _container(cfg.extra.get("motion_adapter", {}))
        check_motion_adapter(unet_cfg, adapter_cfg, "model.extra.motion_adapter")
        adapter = MotionAdapter(**adapter_cfg)
        unet = _join_motion_unet(UNet2DConditionModel(**unet_cfg), adapter)
        randomize_(unet, seed)
        tokenizer, text_encoder = _tiny_text(cfg, seed + 1)
        vae = randomize_(tiny_vae(_container(cfg.vae)), seed + 2)
        return DiffusersBackbone(cfg.name, DiffusersVideoUNet(unet, True, cfg.native_frames), vae, text_encoder,
                                 tokenizer, scheduler_config, latent_scale=cfg.latent_scale, random_init=True,
                                 weights={"init_seed": seed}, pipeline_class="AnimateDiffPipeline",
                                 motion_adapter_config=dict(adapter.config), **common)

    paths = resolve_model_weights(cfg, weights_dir)  # fails fast, naming every missing file
    sd, adapter_dir = paths["sd"], paths["motion_adapter"]
    check_motion_adapter(_read_json(sd / "unet" / "config.json"), _read_json(adapter_dir / "config.json"),
                         f"model.weights.motion_adapter ({adapter_dir})")
    unet2d = UNet2DConditionModel.from_pretrained(sd, subfolder="unet", local_files_only=True)
    adapter = MotionAdapter.from_pretrained(adapter_dir, local_files_only=True)
    unet = _join_motion_unet(unet2d, adapter)
    adapter_config = dict(adapter.config)
    del unet2d, adapter
    vae, text_encoder, tokenizer = _sd_parts(sd)
    weights = {"sd": str(sd), "motion_adapter": identity(adapter_dir)}
    return DiffusersBackbone(cfg.name, DiffusersVideoUNet(unet, True, cfg.native_frames), vae, text_encoder,
                             tokenizer, scheduler_config, latent_scale=float(vae.config.scaling_factor),
                             random_init=False, weights=weights, pipeline_class="AnimateDiffPipeline",
                             motion_adapter_config=adapter_config, **common)


@register_family("modelscope")
def build_modelscope(cfg: DictConfig, weights_dir: str | None = None) -> Backbone:
    """ModelScope T2V / ZeroScope: ``UNet3DConditionModel`` + VAE, text encoder, tokenizer, scheduler of one folder."""
    from diffusers import DDIMScheduler, UNet3DConditionModel

    common = _common(cfg)
    if cfg.random_init:
        seed = int(cfg.init_seed)
        unet = randomize_(UNet3DConditionModel(**_container(cfg.unet)), seed)
        tokenizer, text_encoder = _tiny_text(cfg, seed + 1)
        vae = randomize_(tiny_vae(_container(cfg.vae)), seed + 2)
        return DiffusersBackbone(cfg.name, DiffusersVideoUNet(unet, False, cfg.native_frames), vae, text_encoder,
                                 tokenizer, _container(cfg.scheduler), latent_scale=cfg.latent_scale,
                                 random_init=True, weights={"init_seed": seed}, pipeline_class="TextToVideoSDPipeline",
                                 **common)

    paths = resolve_model_weights(cfg, weights_dir)
    folder = paths["model"]
    scheduler_config = {**dict(DDIMScheduler.load_config(folder, subfolder="scheduler", local_files_only=True)),
                        **_container(cfg.scheduler)}
    unet = UNet3DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    vae, text_encoder, tokenizer = _sd_parts(folder)
    return DiffusersBackbone(cfg.name, DiffusersVideoUNet(unet, False, cfg.native_frames), vae, text_encoder,
                             tokenizer, scheduler_config, latent_scale=float(vae.config.scaling_factor),
                             random_init=False, weights={"model": identity(folder)},
                             pipeline_class="TextToVideoSDPipeline", **common)


__all__ = ["UNET_FAMILIES", "DiffusersBackbone", "DiffusersVideoUNet", "denoiser_view",
           "build_animatediff", "build_modelscope", "check_motion_adapter"]

build_animatediff.capabilities = ("per_frame_timesteps", "single_step_sampler")  # models.base.family_capabilities

build_modelscope.capabilities = ("per_frame_timesteps", "single_step_sampler")  # models.base.family_capabilities
