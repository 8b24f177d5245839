"""The backbone interface: one text-to-video latent diffusion model, whatever its family.

Like k-diffusion's model wrappers, a :class:`Backbone` adapts a family's UNet, VAE, text encoder
and scheduler to the few calls the pipeline needs (``encode_text``, ``make_scheduler``,
``predict_noise``, ``decode``), so neither the pipeline nor the methods know which family runs.
Families are plugins: builders are found through the ``freelong.backbones`` entry-point group (this package
declares its families, one folder each under :mod:`freelong.models`, in ``pyproject.toml``) or registered
in-process with :func:`register_family`, so this module imports no implementation. :meth:`Backbone.attach` is
the one installer of methods, for every family. ``load_backbone(name)`` reads
``conf/model/<name>.yaml``, resolves weights (failing fast when they are missing) and builds it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..attention.context import CallContext
from ..attention.processor import temporal_attention_layers
from ..handle import Handle
from ..registry import Registry

if TYPE_CHECKING:
    from ..methods.base import Method

FAMILIES: Registry[Callable[..., Backbone]] = Registry("freelong.backbones", "model family")
# diffusers denoiser class name -> ``view(model, pipe=None, trained_frames=None) -> Backbone`` (freelong.enable)
DENOISER_VIEWS: Registry[Callable[..., Backbone]] = Registry("freelong.denoisers", "diffusers denoiser class")


def per_frame_context(ctx: torch.Tensor, batch: int, frames: int, dtype: torch.dtype) -> torch.Tensor:
    """Text context for a ``(B*T, ...)`` frame batch: ``(B, L, D)`` repeated per frame, ``(B, T, L, D)`` as is.

    The second form carries one embedding per frame (multi-prompt videos); every backbone's
    cross-attention consumes the result the same way.
    """
    ctx = ctx.to(dtype)
    if ctx.ndim == 3:
        if ctx.shape[0] != batch:
            raise ValueError(f"text context batch {ctx.shape[0]} != latent batch {batch}")
        return ctx.repeat_interleave(frames, dim=0)
    if ctx.ndim == 4:
        if tuple(ctx.shape[:2]) != (batch, frames):
            raise ValueError(f"per-frame text context {tuple(ctx.shape[:2])} != (batch, frames) {(batch, frames)}")
        return ctx.reshape(batch * frames, *ctx.shape[2:])
    raise ValueError(f"text context must be (B, L, D) or (B, T, L, D), got {tuple(ctx.shape)}")


class FromConfigMixin:
    """``Model.from_config(dict)``: build from a config dict in the original code's keyword names.

    Keys starting with ``_`` (diffusers' ``_class_name`` etc.) are ignored; unknown keys are an error
    that names them, so a config for a different architecture is not silently half-applied.
    """

    @classmethod
    def from_config(cls, config: Mapping[str, Any]):
        kwargs = {k: v for k, v in dict(config).items() if not k.startswith("_")}
        valid = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(kwargs) - valid)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config key(s) {', '.join(unknown)}")
        return cls(**kwargs)

RANDOM_INIT_LABEL = "SMOKE RUN: random-init weights (not a real model; scores are meaningless)"


class Backbone:
    """A text-to-video model behind one interface. Subclasses change what differs per family."""

    #: ``{method name: {parameter: value}}``, the model config's ``methods`` block (windows in latent frames):
    #: what ``LongVideoPipeline(backbone, "freelong")`` means on this model. Empty for a view (``Backbone.over``).
    method_values: dict[str, dict[str, Any]] = {}

    # Where the frames are in the latents the denoiser (and its diffusers pipeline's ``latents=``) takes: our
    # pipeline's ``(B, C, T, H, W)`` everywhere except CogVideoX's ``(B, T, C, H, W)``.
    frames_dim: int = 2

    def __init__(
        self,
        name: str,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        scheduler_config: Mapping[str, Any],
        sampling: Mapping[str, Any],
        *,
        native_frames: int = 16,
        latent_scale: float = 0.18215,
        cfg_mode: str = "batched",
        random_init: bool = False,
        weights: Mapping[str, Any] | None = None,
        description: str = "",
    ):
        if cfg_mode not in ("batched", "separate"):
            raise ValueError(f"cfg_mode must be 'batched' or 'separate', got {cfg_mode!r}")
        self.name = name
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.sampling = dict(sampling)
        self.native_frames = native_frames
        self.latent_scale = latent_scale
        self.cfg_mode = cfg_mode
        self.random_init = random_init
        self.weights = dict(weights or {})
        self.description = description

    @classmethod
    def over(cls, denoiser: nn.Module, name: str, *, native_frames: int, **attrs: Any) -> Backbone:
        """A view of this family over a live denoiser alone, for installing methods (:func:`freelong.enable`).

        :meth:`attach` and the family's install hooks work on it exactly as on a loaded backbone (they only read
        ``unet``, ``name``, ``native_frames`` and the family attributes passed in ``attrs``); nothing is loaded or
        built, and the denoiser's train/grad state is left as it is (``__init__``, which sets eval mode, is not run).
        """
        view = cls.__new__(cls)
        view.name = name
        view.unet = denoiser
        view.native_frames = int(native_frames)
        for key, value in attrs.items():
            setattr(view, key, value)
        return view

    # -- device and precision ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Backbone:
        for module in (self.unet, self.vae, self.text_encoder):
            # pass a dtype only when it changes: diffusers warns whenever `dtype=` is given
            kwargs = {"device": device} if device is not None else {}
            if dtype is not None and dtype != next(module.parameters()).dtype:
                kwargs["dtype"] = dtype
            module.to(**kwargs)
        return self

    @property
    def latent_channels(self) -> int:
        return int(self.unet.in_channels)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def label(self) -> str:
        return RANDOM_INIT_LABEL if self.random_init else ""

    # -- family-specific rules the pipeline asks about (SD-like UNets: the identity) ---------------
    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for ``num_frames`` video frames (a video VAE that compresses time changes this)."""
        return int(num_frames)

    def initial_noise(self, method: Any, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """The method's fp32 initial latents of ``shape`` ``(B, C, T, h, w)``: its own ``init_noise`` over latent
        frames (a denoiser that patches time draws them per temporal position, see VideoDiTBackbone)."""
        return method.init_noise(shape, generator=generator, dtype=torch.float32)

    def latents_to_decode(self, latents: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The latent frames that decode to ``num_frames`` video frames (all of them unless sampling padded some)."""
        return latents

    def method_frames(self, num_frames: int) -> int:
        """The frames a method counts (windows, native length): the denoiser's temporal positions for
        ``num_frames`` video frames, the latent frames unless the denoiser patches time (see VideoDiTBackbone)."""
        return self.latent_frames(num_frames)

    def check_shape(self, num_frames: int, height: int, width: int) -> None:
        """Raise ValueError for a frame count or size this backbone cannot take (beyond the VAE factor)."""

    def scheduler_step_kwargs(self, sampler: str, generator: torch.Generator, eta: float) -> dict[str, Any]:
        """Extra keyword arguments of ``scheduler.step`` (DDIM/DDPM: the generator, DDIM's eta)."""
        return {"generator": generator, **({"eta": eta} if sampler == "ddim" else {})}

    # -- installing a method: the one installer, for every family ----------------------------------
    def attach(self, method: Method) -> Handle:
        """Install ``method`` on this backbone's denoiser; the returned handle's ``detach()`` undoes it exactly.

        Everything is found on the live model at this call (a module swapped since the backbone was built is
        the one that gets the method). The method's RoPE edit goes on the backbone's rotary positions
        (:meth:`install_rope_edit`) when it edits them, its processor on every temporal attention layer
        (:meth:`attention_layers`), and its block forward on every motion block (:meth:`temporal_blocks`) when
        it fuses blocks. A failure part-way undoes what was done and re-raises.
        """
        handle = Handle()
        try:
            if method.edits_rope:
                self.install_rope_edit(method, handle)
            processor = method.processor()
            if processor is not None:
                layers = self.attention_layers()
                if not layers:
                    raise ValueError(f"{self.name} has no temporal attention layers to attach {method.name} to")
                self.prepare_attention(handle)
                for layer in layers.values():
                    handle.set_processor(layer, processor)
                handle.layer_names = list(layers)
            if method.fuses_blocks:
                blocks = self.temporal_blocks()
                if not blocks:
                    raise ValueError(f"method {method.name} replaces motion transformer blocks, and {self.name} has "
                                     f"none (diffusers motion-module backbones have them: animatediff, modelscope)")
                for block in blocks.values():
                    handle.set_attr(block, "forward", method.block_forward(block))
        except BaseException:
            handle.detach()
            raise
        return handle

    def attention_layers(self) -> dict[str, Any]:
        """The temporal attention layers of the live denoiser by module path (``processor``/``set_processor``)."""
        return temporal_attention_layers(self.unet)

    def temporal_blocks(self) -> dict[str, nn.Module]:
        """The motion transformer blocks of the live denoiser (diffusers' video UNets list theirs), else ``{}``."""
        provider = getattr(self.unet, "temporal_blocks", None)
        return dict(provider()) if callable(provider) else {}

    def prepare_attention(self, handle: Handle) -> None:
        """Whatever the layers need before processors go on (a DiT records its token grid); undo goes to ``handle``."""

    def token_grid(self, hidden_states: torch.Tensor) -> tuple[int, int, int]:
        """``(T, H, W)`` of the denoiser's ``(B, C, T, H, W)`` input as attention sees it (a DiT: after patching)."""
        _, _, t, h, w = hidden_states.shape
        return int(t), int(h), int(w)

    def publish_call(self, call: CallContext | None) -> Callable[[], None]:
        """Make ``call`` visible to the installed processors until the returned function is called.

        :func:`freelong.enable`'s model hook calls this around every denoiser forward of a diffusers pipeline
        (:meth:`predict_noise` hands the call to the denoiser itself instead). Families whose denoiser takes the
        call as an argument (our LaVie and VideoCrafter2 ports) have no other route.
        """
        raise NotImplementedError(f"{self.name}: a per-call context can only reach this denoiser through forward()")

    def install_rope_edit(self, method: Method, handle: Handle) -> None:
        """Give every rotary embedding with a ``freq_edit`` slot (LaVie's temporal RoPE) the method's edit."""
        rotaries = [m for m in self.unet.modules() if hasattr(m, "freq_edit")]
        if not rotaries:
            raise ValueError(f"method {method.name} edits temporal RoPE frequencies; {self.name} has no rotary "
                             f"embedding it can edit")
        for m in rotaries:
            handle.set_attr(m, "freq_edit", method.rope_frequencies)

    # -- the calls the pipeline makes -------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids padded/truncated to the text encoder's context length (77 for CLIP)."""
        length = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
        return self.tokenizer(
            list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        ).input_ids

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(N, L, D)`` text conditioning (LaVie/SD: CLIP's final hidden states)."""
        ids = self.tokenize(prompts).to(self.device)
        return self.text_encoder(ids)[0]

    def make_scheduler(self, sampler: str):
        """A fresh diffusers scheduler for ``sampler`` with this backbone's noise schedule."""
        from diffusers import DDIMScheduler, DDPMScheduler

        classes = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}
        if sampler not in classes:
            raise ValueError(f"sampler must be one of {', '.join(classes)} for {self.name}, got {sampler!r}")
        cls = classes[sampler]
        accepted = set(inspect.signature(cls.__init__).parameters)
        return cls(**{k: v for k, v in self.scheduler_config.items() if k in accepted})

    def unet_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for every UNet call (e.g. VideoCrafter2's fps)."""
        return {}

    def predict_noise(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | Mapping[str, torch.Tensor],
        uncond: torch.Tensor | Mapping[str, torch.Tensor] | None,
        guidance_scale: float,
        call: CallContext | None = None,
    ) -> torch.Tensor:
        """Classifier-free-guided noise prediction ``eps_u + w (eps_c - eps_u)``.

        ``cfg_mode='batched'`` runs both halves in one UNet call (LaVie), ``'separate'`` in two
        (VideoCrafter2). Without ``uncond`` (guidance <= 1) only the conditional pass runs.
        ``t`` is one timestep (0-d) or one per latent frame (``(T,)``, FIFO-Diffusion's queue), which only
        a backbone with :attr:`per_frame_timesteps` takes (the UNet then gets ``(B, T)``).
        """
        x = latents.to(self.dtype)
        kwargs = self.unet_kwargs()
        t = self.frame_timesteps(t, x)
        if uncond is None:
            return self.unet(x, t, cond, call=call, **kwargs).float()
        uncond = _match_context(uncond, cond)
        if self.cfg_mode == "batched":
            both = _map_context(lambda u, c: torch.cat([u, c]), uncond, cond)
            t2 = torch.cat([t, t]) if t.ndim == 2 else t
            eps_u, eps_c = self.unet(torch.cat([x, x]), t2, both, call=call, **kwargs).float().chunk(2)
        else:
            eps_c = self.unet(x, t, cond, call=call, **kwargs).float()
            eps_u = self.unet(x, t, uncond, call=call, **kwargs).float()
        return eps_u + guidance_scale * (eps_c - eps_u)

    @property
    def per_frame_timesteps(self) -> bool:
        """Whether the denoiser takes one timestep per frame (the UNet class declares it)."""
        return bool(getattr(self.unet, "per_frame_timesteps", False))

    def frame_timesteps(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``t`` as the UNet takes it: 0-d as is; a per-frame ``(T,)`` vector as ``(B, T)`` (checked)."""
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            return t
        if t.ndim != 1 or t.numel() != x.shape[2]:
            raise ValueError(f"timestep must be 0-d or one per latent frame ({x.shape[2]},), got {tuple(t.shape)}")
        if not self.per_frame_timesteps:
            raise ValueError(f"{self.name} cannot take per-frame timesteps (its denoiser embeds one t per video)")
        return t[None].expand(x.shape[0], -1)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_size: int | None = 8) -> np.ndarray:
        """Latents ``(B, C, T, h, w)`` → uint8 video ``(B, T, H, W, 3)``, decoding ``chunk_size`` frames at a time.

        ``chunk_size=None`` picks it from the decoder's widest activation (:meth:`decode_chunk_size`).
        """
        b, c, t, h, w = latents.shape
        frames = latents.transpose(1, 2).reshape(b * t, c, h, w) / self.latent_scale
        vae_dtype = next(self.vae.parameters()).dtype
        if chunk_size is None:
            chunk_size = self.decode_chunk_size(b * t, h, w, vae_dtype)
        out = []
        for s in range(0, b * t, max(1, chunk_size)):
            z = frames[s : s + chunk_size].to(self.device, vae_dtype)
            img = self.vae.decode(z).sample.float()
            out.append(self.to_uint8(img).cpu())
        video = torch.cat(out).reshape(b, t, *out[0].shape[1:])
        return video.numpy()

    def decode_chunk_size(self, num_frames: int, h: int, w: int, dtype: torch.dtype,
                          budget_mb: float | None = None) -> int:
        """Frames per VAE call so one chunk's widest decoder activation stays within ``budget_mb``.

        The decoder's up block ``j`` runs with ``channels[-1 - j]`` at ``4^(j+1)`` times the latent area
        (its upsampler's conv included; the last block stays at full resolution).
        """
        from ..chunking import auto_decode_chunk

        channels = list(getattr(self.vae.config, "block_out_channels", [128]))[::-1]
        n = len(channels)
        widest = max(ch * 4 ** min(j + 1, n - 1) for j, ch in enumerate(channels))
        bytes_per_frame = widest * h * w * torch.empty((), dtype=dtype).element_size()
        return auto_decode_chunk(num_frames, bytes_per_frame, budget_mb)

    @staticmethod
    def to_uint8(img: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` images ``(N, 3, H, W)`` → uint8 ``(N, H, W, 3)`` with LaVie's rounding."""
        return ((img / 2 + 0.5) * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)

    def info(self) -> dict[str, Any]:
        """What results.jsonl records about the model."""
        return {
            "model": self.name,
            "random_init": self.random_init,
            "weights": "random-init" if self.random_init else self.weights,
            "label": self.label(),
            "description": self.description,
        }


def _map_context(fn, a, b):
    if isinstance(a, Mapping):
        return {k: fn(a[k], b[k]) for k in a}
    return fn(a, b)


def _match_context(uncond, cond):
    """Give the unconditional context the conditional one's layout (per-frame, per-group)."""
    if isinstance(cond, Mapping):
        return {k: _match_context(uncond[k] if isinstance(uncond, Mapping) else uncond, v) for k, v in cond.items()}
    if cond.ndim == 4 and uncond.ndim == 3:
        return uncond[:, None].expand(-1, cond.shape[1], -1, -1)
    return uncond


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------
def register_family(family: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator: register ``fn(model_cfg, weights_dir) -> Backbone`` as the builder of a model family."""

    def deco(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        return FAMILIES.register(family, fn)

    return deco


def denoiser_view(model: nn.Module, pipe: Any = None, trained_frames: int | None = None) -> Backbone:
    """The family view (:meth:`Backbone.over`) of a diffusers denoiser, found by its class (or a base class) name
    among the ``freelong.denoisers`` entry points; ValueError naming the class and the supported ones otherwise."""
    for klass in type(model).__mro__:
        if klass.__name__ in DENOISER_VIEWS.names():
            return DENOISER_VIEWS.get(klass.__name__)(model, pipe=pipe, trained_frames=trained_frames)
    known = ", ".join(DENOISER_VIEWS.names()) or "none (is freelong-bench installed with pip install -e .?)"
    raise ValueError(f"{type(model).__name__} is not a denoiser freelong can install methods on; supported: {known}")


def family_capabilities(family: str) -> tuple[str, ...]:
    """What a family's denoiser and samplers offer without building it (its builder's ``capabilities``):
    ``per_frame_timesteps`` (one t per frame), ``single_step_sampler`` (a stateless DDIM/DDPM step the
    window and FIFO loops can call per window and per frame). Read before any weight (methods' check_model)."""
    return tuple(getattr(FAMILIES.get(family), "capabilities", ()))


def available_families() -> list[str]:
    """Every registered model family (entry points included), e.g. ``["animatediff", "lavie", ...]``."""
    return FAMILIES.names()


def build_backbone(cfg: DictConfig | Mapping[str, Any], weights_dir: str | None = None) -> Backbone:
    """Build a backbone from a model config (``cfg.model`` of the Hydra app); it keeps the config's ``methods``
    block as :attr:`Backbone.method_values` (what a method named by a string means on this model)."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    from .spec import method_values

    backbone = FAMILIES.get(cfg.family)(cfg, weights_dir)
    backbone.method_values = method_values(cfg)
    return backbone


def load_backbone(
    name: str,
    *,
    weights_dir: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Backbone:
    """``load_backbone("lavie")`` — compose ``conf/model/<name>.yaml``, resolve weights, build.

    Raises :class:`freelong.weights.MissingWeightsError` (naming the files, where they were looked
    for and the command that fetches them) before loading anything heavy.
    """
    from .spec import load_model_config

    cfg = load_model_config(name)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.create(dict(overrides)))
    backbone = build_backbone(cfg, weights_dir)
    if device is not None or dtype is not None:
        backbone.to(device=device, dtype=dtype)
    return backbone
