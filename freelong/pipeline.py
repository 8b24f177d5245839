"""LongVideoPipeline: any registered method on any backbone, at any length and resolution.

Stages (diffusers-style): 1. check inputs, 2. encode the prompt (a string, or prompt segments for a
multi-prompt video, :mod:`freelong.prompts`), 3. the method's initial noise,
4. attach the method, 5. denoise with classifier-free guidance: the method's sampling loop
(:mod:`freelong.sampling`; the standard ``for t in timesteps`` loop unless the method owns the loop, as
Gen-L-Video, FIFO-Diffusion and FreeInit do) calls a guided denoiser on the whole video or on windows, with a
scalar or per-frame timestep, and every call carries the step index (and a window's frames) to the
temporal-attention processors, 6. detach, 7. decode in frame
chunks so decoder memory does not grow with the frame count, 8. uint8 video.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .attention.context import CallContext
from .methods import Method, get_method
from .models.base import Backbone
from .prompts import MultiPrompt, PromptSchedule, encode_prompt_schedule, parse_prompt
from .sampling import LoopContext, SamplingLoop, StandardLoop

log = logging.getLogger("freelong")

StepCallback = Callable[[dict[str, Any]], None]


@dataclass
class GenerationStats:
    """Timings (seconds) of the last call."""

    encode_s: float = 0.0
    denoise_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    step_s: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        per_step = float(np.median(self.step_s)) if self.step_s else 0.0
        return {"encode_s": self.encode_s, "denoise_s": self.denoise_s, "decode_s": self.decode_s,
                "total_s": self.total_s, "median_step_s": per_step}


class LongVideoPipeline:
    """``pipe(prompt, num_frames=128, ...)`` → uint8 video ``(T, H, W, 3)``.

    Args:
        backbone: a :class:`~freelong.models.base.Backbone` (``load_backbone("lavie")``).
        method: a :class:`~freelong.methods.Method`, or a registered name (``"freelong"``);
            ``None`` means direct sampling.
        decode_chunk_size: frames decoded per VAE call (``None``: automatic, from the decoder's size).
        progress: show a progress bar over denoising steps.
    """

    def __init__(
        self,
        backbone: Backbone,
        method: Method | str | None = None,
        *,
        decode_chunk_size: int | None = None,
        progress: bool = True,
    ):
        self.backbone = backbone
        if method is None:
            method = "direct"
        if isinstance(method, str):  # a name means what the model config's methods block says it means on it
            method = get_method(method, **backbone.method_values.get(method, {}))
        # Methods count the denoiser's temporal positions: FreeLong++ is bound to the native latent length (Wan: 21).
        self.method = method.with_native_frames(backbone.method_frames(backbone.native_frames))
        self.decode_chunk_size = decode_chunk_size
        self.progress = progress
        self.stats = GenerationStats()
        self.effective_method = self.method  # the method the last call ran (see ``method_for``)

    # -- stages -------------------------------------------------------------------------------------
    def check_inputs(self, num_frames: int, height: int, width: int, steps: int) -> None:
        factor = self.backbone.vae_scale_factor
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if height % factor or width % factor or height < factor or width < factor:
            raise ValueError(f"height and width must be positive multiples of {factor}, got {height}x{width}")
        if steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {steps}")
        self.backbone.check_shape(num_frames, height, width)
        self.method.check_frames(self.backbone.method_frames(num_frames))

    def method_for(self, prompt: Any) -> Method:
        """The method a prompt runs with: ``method.for_multi_prompt()`` for a multi-segment prompt
        (FreeLong then uses ``multi_prompt_noise``, random noise as the paper), else the method itself."""
        parsed = parse_prompt(prompt)
        if isinstance(parsed, MultiPrompt) and parsed.is_multi:
            return self.method.for_multi_prompt()
        return self.method

    def encode_prompt(self, prompt: Any, num_frames: int) -> torch.Tensor | Mapping[str, torch.Tensor] | PromptSchedule:
        """Text conditioning for one video.

        A string gives ``(1, L, D)``. Prompt segments (a list of ``{prompt, frames}``, a dict
        ``{segments, transition_frames}`` or a :class:`~freelong.prompts.MultiPrompt`) give a
        :class:`~freelong.prompts.PromptSchedule` whose ``at(step, num_steps)`` is the per-frame
        ``(1, T, L, D)`` context, or a per-block-group dict under the method's motion injection.
        """
        parsed = parse_prompt(prompt)
        if isinstance(parsed, str):
            return self.backbone.encode_text([parsed])
        injection = self.method.prompt_injection() if parsed.is_multi else None
        return encode_prompt_schedule(parsed, num_frames, self.backbone.encode_text, injection)

    def prepare_latents(
        self, num_frames: int, height: int, width: int, generator: torch.Generator, method: Method | None = None,
        loop: SamplingLoop | None = None,
    ) -> torch.Tensor:
        factor = self.backbone.vae_scale_factor
        frames = self.backbone.latent_frames(num_frames)
        if loop is not None:  # FIFO draws one window of noise (its base video), not the whole length
            frames = loop.noise_frames(frames)
        shape = (1, self.backbone.latent_channels, frames, height // factor, width // factor)
        return self.backbone.initial_noise(method or self.method, shape, generator)

    def denoiser(self, cond: Any, uncond: Any, guidance: float):
        """The guided ε̂ the loops call on a window: the step's conditioning (a prompt schedule at its step), cut
        to the window's frames (``cond_index``) when it is per-frame, and the window's frame indices and
        per-frame timesteps handed to the processors through the :class:`CallContext`."""
        bb = self.backbone

        def denoise(x, t, *, step_index=None, num_steps=None, frame_index=None, cond_index=None):
            c = cond.at(step_index or 0, num_steps or 1) if isinstance(cond, PromptSchedule) else cond
            if cond_index is not None:
                c = _frames_of(c, cond_index)
            t = torch.as_tensor(t).to(bb.device)
            call = CallContext(step_index=step_index, num_steps=num_steps, frame_index=frame_index,
                               timesteps=t if t.ndim == 1 else None,
                               extra={"timestep": float(t)} if t.ndim == 0 else {})  # FreePCA's threshold
            return bb.predict_noise(x, t, c, uncond, guidance, call)

        return denoise

    # -- the call -----------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: Any,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        *,
        negative_prompt: str = "",
        sampler: str | None = None,
        eta: float | None = None,
        latents: torch.Tensor | None = None,
        callback: StepCallback | None = None,
        output_type: str = "np",
    ) -> np.ndarray | torch.Tensor:
        """Generate one video. ``output_type='latent'`` returns the final latents instead of pixels.

        ``prompt`` is a string or prompt segments (see :meth:`encode_prompt`).

        ``callback`` receives a dict per step: ``step_index``, ``timestep``, ``latents`` (before the
        step), ``noise_pred`` (guided ε̂), ``prev_latents`` and the ``scheduler``.
        """
        bb = self.backbone
        defaults = bb.sampling
        num_frames = int(num_frames or defaults["num_frames"])
        height = int(height or defaults["height"])
        width = int(width or defaults["width"])
        steps = int(num_inference_steps or defaults["num_inference_steps"])
        guidance = float(defaults["guidance_scale"] if guidance_scale is None else guidance_scale)
        sampler = sampler or defaults.get("sampler", "ddim")
        eta = float(defaults.get("eta", 0.0) if eta is None else eta)
        self.check_inputs(num_frames, height, width, steps)
        method = self.effective_method = self.method_for(prompt)
        if method is not self.method and method.params() != self.method.params():
            changed = {k: v for k, v in method.params().items() if self.method.params()[k] != v}
            log.info("multi-prompt video: %s runs with %s", self.method.name, changed)
        stats = self.stats = GenerationStats()
        t_start = time.perf_counter()

        # 2. text conditioning
        cond = self.encode_prompt(prompt, num_frames)
        uncond = bb.encode_text([negative_prompt]) if guidance > 1.0 else None
        stats.encode_s = time.perf_counter() - t_start

        # 3. noise (drawn on the CPU so a seed gives the same video on any device)
        loop = method.sampling_loop(bb.latent_frames(bb.native_frames)) or StandardLoop()
        scheduler = bb.make_scheduler(sampler)
        generator = torch.Generator("cpu").manual_seed(int(seed))
        if latents is None:
            latents = self.prepare_latents(num_frames, height, width, generator, method, loop)
        latents = (latents * scheduler.init_noise_sigma).to(bb.device, torch.float32)
        step_kwargs: dict[str, Any] = bb.scheduler_step_kwargs(sampler, generator, eta)

        # 4-6. denoise with the method attached; the loop level (freelong.sampling) owns the iteration
        t0 = time.perf_counter()
        ctx = LoopContext(
            denoise=self.denoiser(cond, uncond, guidance), make_scheduler=lambda: bb.make_scheduler(sampler),
            num_inference_steps=steps, num_frames=bb.latent_frames(num_frames), step_kwargs=step_kwargs,
            generator=generator, callback=callback,
            progress=self.progress, desc=f"{method.name} {num_frames}f", step_s=stats.step_s)
        handle = bb.attach(method.model_method())
        try:
            latents = loop.run(ctx, latents)
        finally:
            handle.detach()
        stats.denoise_s = time.perf_counter() - t0

        if output_type == "latent":
            stats.total_s = time.perf_counter() - t_start
            return latents
        # 7-8. decode
        t1 = time.perf_counter()
        video = bb.decode(bb.latents_to_decode(latents, num_frames), self.decode_chunk_size)[0]
        stats.decode_s = time.perf_counter() - t1
        stats.total_s = time.perf_counter() - t_start
        return video


def _frames_of(cond: Any, index: torch.Tensor) -> Any:
    """A per-frame ``(B, T, L, D)`` conditioning (or a dict of them) at frames ``index``; one per video as is.

    When every index is the same frame (one prompt per window) the result is that frame's ``(B, L, D)``, so
    backbones that take one context per video (ModelScope) run multi-prompt window methods too."""
    if isinstance(cond, Mapping):
        return {k: _frames_of(v, index) for k, v in cond.items()}
    if cond.ndim == 4:
        index = index.clamp(0, cond.shape[1] - 1).to(cond.device)
        if bool((index == index[0]).all()):
            return cond[:, index[0]]
        return cond[:, index]
    return cond
