"""Any method inside the diffusers pipeline you already have: ``freelong.enable(pipe, "freelong")``.

::

    pipe = WanPipeline.from_pretrained(...)                        # or another pipeline listed below
    with freelong.enable(pipe, "freelong", window=21) as fl:       # every denoiser of the pipeline
        latents = freelong.prepare_latents(pipe, fl.method, num_frames=321, height=480, width=832,
                                           generator=torch.Generator().manual_seed(0))
        video = pipe(prompt, num_frames=321, height=480, width=832, latents=latents).frames[0]

Pipelines (their denoisers, found by class through the ``freelong.denoisers`` entry points):

- ``WanPipeline`` (Wan2.1; Wan2.2 with ``transformer_2``): two calls a step, ``cache_context`` ``"cond"`` and
  ``"uncond"`` with the step index and sigma;
- ``CogVideoXPipeline``: joint ``[text, video]`` attention, CFG as one batched ``[uncond, cond]`` call
  (``"cond_uncond"``), latents ``(B, F, C, H, W)``; the *pipeline* builds the 3D RoPE and passes it as
  ``image_rotary_emb``, so RIFLEx rewrites the temporal channels of that table in a forward pre-hook;
- ``HunyuanVideoPipeline``: joint ``[video, text]`` attention (dual- and single-stream blocks), embedded guidance
  (one ``"cond"`` call; ``"uncond"`` too with ``true_cfg_scale > 1``), RoPE from ``transformer.rope``;
- ``AnimateDiffPipeline``, ``TextToVideoSDPipeline``: UNets, batched CFG, no cache context.

How it reaches the model (one installer path): every denoiser of the pipeline (``transformer``, ``transformer_2``,
``unet``) gets its family's :class:`~freelong.models.base.Backbone` *view* (:meth:`Backbone.over`, found by the
denoiser's class through the ``freelong.denoisers`` entry points), and the view's :meth:`~Backbone.attach` installs
the method exactly as it does under :class:`~freelong.LongVideoPipeline`: processors through diffusers'
``set_processor``, the RoPE edit, block forwards, the token-grid pre-hook. On top of that, :class:`FreeLongHook`
tells the processors, before every denoiser forward, the step index (from the pipeline's ``cache_context`` when it
gives one, else the timestep's position in ``pipe.scheduler.timesteps``, else counted from timestep changes), the
number of steps, the timestep and the guidance branch (the cache context's name: ``cond``/``uncond``, or
``cond_uncond`` for CogVideoX's batched call; ``cond_uncond`` for a batched-CFG UNet pipeline). Its state resets
when the pipeline ends a call (diffusers' ``maybe_free_model_hooks`` → ``reset_state``).

torch.compile: the per-call values reach processors as tensors (the step index is a 0-dim int64 tensor) and the
hook itself runs outside any compiled graph (``torch.compiler.disable``), so a compiled denoiser compiles once per
shape and guidance branch, not once per step. Methods whose ``levels`` include ``"sampling loop"`` own the loop and
need :class:`~freelong.LongVideoPipeline`; :func:`enable` refuses them in one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .attention.context import CallContext
from .attention.processor import TemporalAttnProcessor
from .handle import Handle
from .methods import Method, get_method
from .models.base import Backbone, denoiser_view

HOOK_NAME = "freelong_bench::enable"
DENOISER_ATTRS = ("transformer", "transformer_2", "unet")


def _unwrap(module: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper (``OptimizedModule``) holds, else the module itself."""
    return getattr(module, "_orig_mod", module)


def find_denoisers(target: Any) -> dict[str, nn.Module]:
    """``{"transformer": ..., "transformer_2": ..., "unet": ...}`` of a pipeline (the ones it has), or
    ``{"model": target}`` for a bare model; compiled wrappers are unwrapped (hooks go on the module itself)."""
    if isinstance(target, nn.Module):
        return {"model": _unwrap(target)}
    found = {name: _unwrap(getattr(target, name)) for name in DENOISER_ATTRS
             if isinstance(getattr(target, name, None), nn.Module)}
    if not found:
        raise ValueError(f"{type(target).__name__} has no denoiser ({', '.join(DENOISER_ATTRS)}) to enable a method "
                         f"on; pass a diffusers pipeline or its transformer/unet")
    return found


def _resolve(method: Method | str, params: dict[str, Any]) -> Method:
    if isinstance(method, str):
        return get_method(method, **params)
    if params:
        return dataclasses.replace(method, **params)
    return method


def _check_method(method: Method) -> None:
    if "sampling loop" in type(method).levels:
        raise ValueError(f"method {method.name} runs its own sampling loop; it needs freelong.LongVideoPipeline "
                         f"(freelong.enable installs attention, position and noise methods only)")


# ----------------------------------------------------------------------------------------------
# The model hook
# ----------------------------------------------------------------------------------------------
class _CallRecord:
    """StateManager payload: nothing per context name (the hook only reads the context itself)."""

    def reset(self) -> None:
        pass


def _make_hook_class():
    from diffusers.hooks.hooks import ModelHook, StateManager

    class FreeLongHook(ModelHook):
        """Receives diffusers' ``cache_context`` (name, step index, steps) and the end-of-call reset.

        The work is done by a plain torch forward pre-hook (:meth:`observe`, registered by :func:`enable`) and a
        forward hook (:meth:`finish`) that survive anything replacing ``forward`` (accelerate's offload hooks
        re-install theirs at the end of every pipeline call); this registry hook only keeps a ``StateManager`` so
        that the pipeline's ``cache_context`` and ``reset_state`` reach it.
        """

        _is_stateful = True

        def __init__(self, view: Backbone, method: Method, pipe: Any):
            super().__init__()
            self.context = StateManager(_CallRecord)
            self.view = view
            self.method = method
            self.pipe = pipe
            self._retract: list[Callable[[], None]] = []
            self.reset_state(None)

        def reset_state(self, module):
            self.step: int | None = None
            self.last_t: float | None = None
            self.checked_frames: int | None = None
            return module

        # -- per forward (eager: never traced) --------------------------------------------------
        @torch.compiler.disable
        def observe(self, module, args, kwargs) -> None:
            x = kwargs["hidden_states"] if "hidden_states" in kwargs else (
                kwargs["sample"] if "sample" in kwargs else args[0])
            t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
            frames = self.view.token_grid(x)[0]
            if frames != self.checked_frames:  # window > frames etc.: one line, before the method runs
                self.method.check_frames(frames)
                self.checked_frames = frames
            cache = self.context._context
            step, num_steps = self._step(cache, t)
            extra: dict[str, Any] = {"branch": self._branch(cache)}
            if t is not None:
                extra["timestep"] = torch.as_tensor(t)
            if cache is not None and cache.sigma is not None:
                extra["sigma"] = torch.as_tensor(float(cache.sigma))
            call = CallContext(step_index=None if step is None else torch.tensor(step), num_steps=num_steps,
                               extra=extra)
            self._retract.append(self.view.publish_call(call))

        @torch.compiler.disable
        def finish(self, module, args, kwargs, output):
            if self._retract:
                self._retract.pop()()
            return output

        def _step(self, cache, timestep: Any) -> tuple[int | None, int | None]:
            if cache is not None and cache.step_index is not None:
                return int(cache.step_index), cache.num_inference_steps
            # the UNet pipelines give no context: the timestep's place in the schedule (a device sync on a GPU)
            t = float(torch.as_tensor(timestep).max()) if timestep is not None else None
            timesteps = getattr(getattr(self.pipe, "scheduler", None), "timesteps", None)
            if t is not None and isinstance(timesteps, torch.Tensor):
                hits = (timesteps.float().cpu() == t).nonzero()
                if len(hits):
                    return int(hits[0, 0]), len(timesteps)
            if t is None:
                return None, None
            if self.last_t is None or t > self.last_t:  # a rising timestep starts a new call
                self.step = 0
            elif t < self.last_t:
                self.step = (self.step or 0) + 1
            self.last_t = t
            return self.step, None

        def _branch(self, cache) -> str | None:
            if cache is not None:
                return cache.name
            cfg = getattr(self.pipe, "do_classifier_free_guidance", None)
            return None if cfg is None else ("cond_uncond" if cfg else "cond")

    return FreeLongHook


# ----------------------------------------------------------------------------------------------
# The handle
# ----------------------------------------------------------------------------------------------
class Enabled(Handle):
    """What :func:`enable` installed: a :class:`~freelong.handle.Handle` (``disable()`` = ``detach()``, a context
    manager) that also knows the method (``.method``, bound to the model's native length) and the denoisers."""

    def __init__(self, method: Method, pipe: Any):
        super().__init__()
        self.method = method
        self.pipe = pipe
        self.denoisers: dict[str, nn.Module] = {}
        self.views: dict[str, Backbone] = {}

    def disable(self) -> None:
        """Put back the very processor objects, modules and forwards the pipeline had."""
        self.detach()

    def prepare_latents(self, **kwargs: Any) -> torch.Tensor:
        """:func:`prepare_latents` for this pipeline and method."""
        return prepare_latents(self.pipe, self.method, **kwargs)

    def __repr__(self) -> str:
        state = "enabled" if self.attached else "disabled"
        return f"Enabled({self.method.describe()} on {', '.join(self.denoisers)}; {state})"


def _our_layers(view: Backbone) -> bool:
    """Whether one of our processors already runs in the denoiser (Backbone.attach or enable)."""
    for layer in view.attention_layers().values():
        proc = getattr(getattr(layer, "attn", layer), "processor", None)
        if isinstance(getattr(proc, "processor", None), TemporalAttnProcessor):
            return True
    return False


def _register_hook(model: nn.Module, hook: Any, handle: Handle) -> None:
    """Register ``hook`` in the model's diffusers ``HookRegistry`` and record its exact undo."""
    from diffusers.hooks import HookRegistry

    had_registry = "_diffusers_hook" in model.__dict__
    had_forward = "forward" in model.__dict__
    registry = HookRegistry.check_if_exists_or_initialize(model)
    registry.register_hook(hook, HOOK_NAME)
    wrapper = model.__dict__["forward"]

    def undo() -> None:
        last = registry._hook_order and registry._hook_order[-1] == HOOK_NAME
        if last and model.__dict__.get("forward") is not wrapper:
            # Something outside the registry replaced forward after us (accelerate's offload hooks): splicing would
            # drop it, so leave forward alone and forget the hook (its wrapper, if still in a chain, passes through).
            index = registry._hook_order.index(HOOK_NAME)
            del registry.hooks[HOOK_NAME]
            registry._hook_order.pop(index)
            registry._fn_refs.pop(index)
        else:
            registry.remove_hook(HOOK_NAME, recurse=False)
        if not registry.hooks and model.__dict__.get("forward") is not wrapper:
            if not had_forward and getattr(model.__dict__.get("forward"), "__func__", None) is type(model).forward:
                del model.__dict__["forward"]  # the bound method remove_hook put back: let the class's show again
            if not had_registry:
                del model.__dict__["_diffusers_hook"]
        if "_diffusers_hook" in model.__dict__:
            registry.invalidate_child_registries_cache()

    handle.on_detach(undo)


def enable(pipe_or_model: Any, method: Method | str, *, trained_frames: int | None = None, **params: Any) -> Enabled:
    """Install ``method`` (a name and its parameters, or a :class:`~freelong.methods.Method`) on every denoiser of a
    diffusers pipeline (or on one diffusers denoiser) and return the handle; ``pipe(...)`` then runs with it.

    ``trained_frames``: the video frames the model was trained on (default: the family's released models, Wan 81,
    CogVideoX the transformer's ``sample_frames`` (49; 1.5: 81), HunyuanVideo 129, AnimateDiff and ModelScope 16);
    FreeLong++ and RIFLEx size themselves by it. Raises ValueError, before anything
    is installed, for a loop-level method, a method the model's family cannot run, a denoiser freelong does not
    know, or a pipeline that already has a method enabled.
    """
    method = _resolve(method, params)
    _check_method(method)
    pipe = None if isinstance(pipe_or_model, nn.Module) else pipe_or_model
    denoisers = find_denoisers(pipe_or_model)
    views = {name: denoiser_view(model, pipe=pipe, trained_frames=trained_frames) for name, model in denoisers.items()}
    for name, model in denoisers.items():
        view = views[name]
        method.check_model({"family": view.family, "name": type(model).__name__})
        registry = getattr(model, "_diffusers_hook", None)
        if (registry is not None and registry.get_hook(HOOK_NAME) is not None) or _our_layers(view):
            raise ValueError(f"a freelong method is already installed on {name} ({type(model).__name__}); "
                             f"disable() it (or detach the backbone's handle) first")
    first = next(iter(views.values()))
    method = method.with_native_frames(first.method_frames(first.native_frames))
    hook_class = _make_hook_class()
    handle = Enabled(method, pipe)
    try:
        for name, model in denoisers.items():
            view = views[name]
            hook = hook_class(view, method, pipe)
            _register_hook(model, hook, handle)
            # plain torch hooks do the work: they survive anything that replaces forward (offload hooks)
            pre = model.register_forward_pre_hook(hook.observe, with_kwargs=True, prepend=True)
            post = model.register_forward_hook(hook.finish, with_kwargs=True, always_call=True)
            handle.on_detach(pre.remove)
            handle.on_detach(post.remove)
            handle.on_detach(view.attach(method).detach)
            handle.denoisers[name] = model
            handle.views[name] = view
    except BaseException:
        handle.detach()
        raise
    return handle


def prepare_latents(
    pipe: Any,
    method: Method | str,
    *,
    num_frames: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    batch_size: int = 1,
    dtype: torch.dtype | None = None,
    trained_frames: int | None = None,
) -> torch.Tensor:
    """The method's initial latents for ``pipe(..., latents=...)`` (FreeNoise rescheduling, FreeLong's and
    FreeLong++'s noise; i.i.d. Gaussian for methods that leave the noise alone), shaped as the pipeline's own
    ``prepare_latents``: ``(batch_size, C, latent frames, height/s, width/s)`` (CogVideoX: frames before channels,
    ``(batch_size, latent frames, C, height/s, width/s)``), on the generator's device.

    The noise is drawn in fp32 (equal to :meth:`freelong.LongVideoPipeline.prepare_latents` over the same modules
    and generator) and returned in ``dtype`` (default: the denoiser's; AnimateDiff's pipeline does not cast
    ``latents=`` itself).
    """
    method = get_method(method) if isinstance(method, str) else method
    _check_method(method)
    model = next(iter(find_denoisers(pipe).values()))
    view = denoiser_view(model, pipe=pipe, trained_frames=trained_frames)
    method = method.with_native_frames(view.method_frames(view.native_frames))
    frames = view.latent_frames(int(num_frames))
    factor = view.vae_scale_factor if getattr(view, "vae", None) is not None else 8
    if height % factor or width % factor:
        raise ValueError(f"height and width must be multiples of {factor}, got {height}x{width}")
    shape = (int(batch_size), view.latent_channels, frames, height // factor, width // factor)
    noise = view.initial_noise(method, shape, generator)
    if dtype is None:
        dtype = next(model.parameters()).dtype
    return noise.movedim(2, view.frames_dim).contiguous().to(dtype)  # CogVideoXPipeline: (B, F, C, H, W)


__all__ = ["DENOISER_ATTRS", "Enabled", "HOOK_NAME", "enable", "find_denoisers", "prepare_latents"]
