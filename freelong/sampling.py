"""The sampling-loop level: who iterates over timesteps, on which frames, with which timestep per frame.

:class:`~freelong.pipeline.LongVideoPipeline` runs one :class:`SamplingLoop` per video (the method's
:meth:`~freelong.methods.Method.sampling_loop`, else :class:`StandardLoop`). A loop gets a
:class:`LoopContext`: a guided denoiser that takes any window of the latent video and a scalar *or per-frame*
timestep (:meth:`~freelong.models.base.Backbone.predict_noise`), a factory of fresh schedulers, the step
count, the scheduler's step keyword arguments and the run's generator. Strategies:

- :class:`StandardLoop`: ``for t in timesteps`` over the whole video (what every attention-level method runs).
- :class:`WindowLoop`: Gen-L-Video's temporal co-denoising: the whole network on windows of the video inside
  every step; each frame's ``x_{t-1}`` is the weighted mean of the windows' ``x_{t-1}`` that hold it.
- :class:`FifoLoop`: FIFO-Diffusion's queue of frames at increasing noise levels, one timestep per frame
  (diagonal denoising, latent partitioning, lookahead denoising); memory does not grow with the length.
- :class:`RoundsLoop`: FreeInit's rounds around any inner loop that returns a full-length clean latent.

Per-frame steps are :class:`FrameDDIM` (DDIM with a vector of noise levels, stateless); a multistep solver
(UniPC, DPM-Solver, PNDM) keeps history across calls and cannot be stepped per window or per frame:
:func:`check_single_step` refuses it with one line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .attention.windows import sliding_windows
from .spectral import spectral_blend

SINGLE_STEP_SCHEDULERS = ("DDIMScheduler", "DDPMScheduler")


class Denoise(Protocol):
    """Guided ε̂ for a window ``x (B, C, F, h, w)`` at ``t`` (0-d, or ``(F,)`` one per frame)."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, *, step_index: int | None = None,
                 num_steps: int | None = None, frame_index: torch.Tensor | None = None,
                 cond_index: torch.Tensor | None = None) -> torch.Tensor: ...


@dataclass
class LoopContext:
    """What a loop may use. ``make_scheduler()`` gives a fresh scheduler (timesteps not set)."""

    denoise: Denoise
    make_scheduler: Callable[[], Any]
    num_inference_steps: int
    num_frames: int | None = None  # latent frames of the video (FIFO: the output length; None: latents' length)
    step_kwargs: dict[str, Any] = field(default_factory=dict)
    generator: torch.Generator | None = None
    callback: Callable[[dict[str, Any]], None] | None = None
    progress: bool = False
    desc: str = ""
    step_s: list[float] = field(default_factory=list)

    def randn(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """Standard normal drawn on the generator's device (CPU: the same numbers on any device), then moved."""
        device = self.generator.device if self.generator is not None else "cpu"
        return torch.randn(tuple(shape), generator=self.generator, device=device).to(like.device, like.dtype)


class SamplingLoop:
    """Base class: ``run(ctx, latents) -> final latents``; ``latents`` is ``x_T`` (already scaled)."""

    def noise_frames(self, num_frames: int) -> int:
        """Latent frames of initial noise the pipeline draws for a ``num_frames`` video (FIFO: one window)."""
        return num_frames

    def run(self, ctx: LoopContext, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def check_single_step(scheduler: Any, where: str) -> None:
    """Refuse a scheduler that keeps state across ``step`` calls (multistep solvers): one line naming it."""
    names = [c.__name__ for c in type(scheduler).__mro__]
    if not any(n in SINGLE_STEP_SCHEDULERS for n in names):
        raise ValueError(f"{where} steps windows/frames separately and needs a single-step sampler (DDIM or DDPM); "
                         f"{type(scheduler).__name__} is a multistep solver whose history cannot be split "
                         f"(use sampler=ddim)")


def _timed(ctx: LoopContext, t0: float, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    ctx.step_s.append(time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------
# The standard loop
# ----------------------------------------------------------------------------------------------
class StandardLoop(SamplingLoop):
    """``for t in timesteps``: the whole video, one timestep (today's loop; every attention-level method)."""

    def run(self, ctx: LoopContext, latents: torch.Tensor) -> torch.Tensor:
        scheduler = ctx.make_scheduler()
        scheduler.set_timesteps(ctx.num_inference_steps)
        timesteps = scheduler.timesteps
        n = len(timesteps)
        for i, t in enumerate(tqdm(timesteps, desc=ctx.desc, disable=not ctx.progress, leave=False)):
            t0 = time.perf_counter()
            eps = ctx.denoise(scheduler.scale_model_input(latents, t), t, step_index=i, num_steps=n)
            prev = scheduler.step(eps, t, latents, **ctx.step_kwargs).prev_sample
            if ctx.callback is not None:
                ctx.callback({"step_index": i, "timestep": int(t), "latents": latents, "noise_pred": eps,
                              "prev_latents": prev, "scheduler": scheduler})
            latents = prev
            _timed(ctx, t0, latents.device)
        return latents


# ----------------------------------------------------------------------------------------------
# Gen-L-Video: window co-denoising
# ----------------------------------------------------------------------------------------------
def covering_windows(num_frames: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Gen-L-Video's views ``[k*stride, k*stride + window)``, plus ``[T - window, T)`` when they leave a tail.

    The official ``get_views`` stops at ``(T - window) // stride`` and leaves the last ``(T - window) % stride``
    frames uncovered (set to zero every step); the extra last window covers them, as MultiDiffusion and
    FreeNoise place theirs.
    """
    if window > num_frames:
        raise ValueError(f"method.window={window} is larger than the {num_frames} latent frames")
    return sliding_windows(num_frames, window, stride)


class WindowLoop(SamplingLoop):
    """Every step: the whole network on each window, the scheduler's step per window, and each frame's
    ``x_{t-1}`` = the ``weights``-weighted mean of the windows' ``x_{t-1}`` that hold it (Gen-L-Video).

    ``prompt_per_window``: with a per-frame (multi-prompt) conditioning every window takes the prompt of its
    centre frame (one prompt per window, as Gen-L-Video's one embedding per view); otherwise each frame keeps its own.
    """

    def __init__(self, window: int, stride: int, weights: torch.Tensor | None = None, prompt_per_window: bool = True):
        self.window = window
        self.stride = stride
        self.weights = torch.ones(window, dtype=torch.float64) if weights is None else weights.to(torch.float64)
        self.prompt_per_window = prompt_per_window

    def run(self, ctx: LoopContext, latents: torch.Tensor) -> torch.Tensor:
        scheduler = ctx.make_scheduler()
        check_single_step(scheduler, "method gen_l_video")
        scheduler.set_timesteps(ctx.num_inference_steps)
        timesteps = scheduler.timesteps
        n, frames = len(timesteps), latents.shape[2]
        views = covering_windows(frames, self.window, self.stride)
        count = torch.zeros(frames, dtype=torch.float64)
        for a, b in views:
            count[a:b] += self.weights
        w = self.weights.to(latents.device, torch.float32)[:, None, None]
        inv = (1.0 / count).to(latents.device, torch.float32)[:, None, None]
        for i, t in enumerate(tqdm(timesteps, desc=ctx.desc, disable=not ctx.progress, leave=False)):
            t0 = time.perf_counter()
            if len(views) == 1:  # the native length: exactly the standard step
                eps = ctx.denoise(scheduler.scale_model_input(latents, t), t, step_index=i, num_steps=n,
                                  frame_index=torch.arange(frames))
                latents = scheduler.step(eps, t, latents, **ctx.step_kwargs).prev_sample
                _timed(ctx, t0, latents.device)
                continue
            value = torch.zeros_like(latents)
            for a, b in views:
                x = latents[:, :, a:b]
                idx = torch.arange(a, b)
                cond_idx = torch.full_like(idx, (a + b - 1) // 2) if self.prompt_per_window else idx
                eps = ctx.denoise(scheduler.scale_model_input(x, t), t, step_index=i, num_steps=n,
                                  frame_index=idx, cond_index=cond_idx)
                value[:, :, a:b] += w * scheduler.step(eps, t, x, **ctx.step_kwargs).prev_sample
            latents = value * inv
            if ctx.callback is not None:
                ctx.callback({"step_index": i, "timestep": int(t), "prev_latents": latents, "scheduler": scheduler})
            _timed(ctx, t0, latents.device)
        return latents


# ----------------------------------------------------------------------------------------------
# Per-frame DDIM and FIFO-Diffusion
# ----------------------------------------------------------------------------------------------
def fifo_timesteps(num_train_timesteps: int, steps: int) -> np.ndarray:
    """FIFO-Diffusion's DDIM grid: ``round(linspace(0, T_train - 1, steps))`` (no +1 offset, exactly ``steps``)."""
    return np.linspace(0, num_train_timesteps - 1, steps).round().astype(np.int64)


class FrameDDIM:
    """DDIM with one noise level per frame (lvdm's ``make_ddim_sampling_parameters`` on a timestep grid).

    For grid index ``k``: ``a_k = ᾱ(τ_k)``, ``a_prev_k = ᾱ(τ_{k-1})`` (``ᾱ(0)`` for ``k = 0``) and
    ``σ_k = η √((1 - a_prev)/(1 - a) · (1 - a/a_prev))``; ``step`` is the DDIM update per frame.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, timesteps: np.ndarray, eta: float = 0.0):
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        tau = torch.as_tensor(timesteps, dtype=torch.long)
        self.timesteps = tau
        self.alphas = ac[tau]
        self.alphas_prev = torch.cat([ac[:1], ac[tau[:-1]]])
        a, a_prev = self.alphas, self.alphas_prev
        self.sigmas = eta * torch.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        self.eta = eta

    def step(self, x: torch.Tensor, eps: torch.Tensor, index: torch.Tensor,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        """``x, eps (B, C, F, h, w)``, ``index (F,)`` grid indices → ``x_prev``; ``noise`` needed when η > 0."""
        shape = (1, 1, -1, 1, 1)
        a = self.alphas[index].float().to(x.device).view(shape)
        a_prev = self.alphas_prev[index].float().to(x.device).view(shape)
        sigma = self.sigmas[index].float().to(x.device).view(shape)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        out = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).sqrt() * eps
        if noise is not None:
            out = out + sigma * noise
        return out


def frame_ddim_for(scheduler: Any, timesteps: np.ndarray, eta: float, where: str) -> FrameDDIM:
    """A :class:`FrameDDIM` on ``scheduler``'s ᾱ; refuses schedulers that are not ε-prediction VP schedules."""
    check_single_step(scheduler, where)
    pred = getattr(scheduler.config, "prediction_type", "epsilon")
    if pred != "epsilon":
        raise ValueError(f"{where} steps frames with DDIM on epsilon predictions; this scheduler predicts {pred!r}")
    return FrameDDIM(scheduler.alphas_cumprod, timesteps, eta)


class FifoLoop(SamplingLoop):
    """FIFO-Diffusion: a queue of ``f·n`` latent frames whose position ``k`` sits at noise level ``τ_k``.

    Each iteration denoises every window of ``f`` (the backbone's native length) frames by one level with
    per-frame timesteps (windows tail→head, so each reads only positions not yet written this iteration;
    with lookahead, ``2n`` half-overlapping windows write back only their second halves after a prefix of
    ``f/2`` clean frames), emits the head frame, shifts the queue and appends fresh noise at the tail.
    ``num_frames + f·n - f`` iterations; the last ``num_frames`` emitted frames are the video (the first
    ``f·n - f`` are the initial queue's copies of base frame 0, dropped as the official code does).

    The initial queue: every position is a one-frame forward diffusion of a *base* clean video ``v`` of ``f``
    frames (position ``k`` from ``v[max(0, k - (S - f))]``), drawn per position in queue order. ``v`` is a short
    direct sample from the pipeline's initial noise (the same prompt and seed), ``base`` when given, or the
    whole queue is ``queue`` when given.
    """

    def __init__(self, window: int, num_partitions: int = 4, lookahead: bool = True, eta: float = 1.0,
                 base: torch.Tensor | None = None, queue: torch.Tensor | None = None, num_frames: int | None = None):
        if lookahead and window % 2:
            raise ValueError(f"method.lookahead needs an even window (the backbone's native length), got {window}")
        self.f = window
        self.n = num_partitions
        self.lookahead = lookahead
        self.eta = eta
        self.base = base
        self.queue = queue
        self.num_frames = num_frames

    @property
    def steps(self) -> int:
        return self.f * self.n

    @property
    def prefix(self) -> int:
        return self.f // 2 if self.lookahead else 0

    def noise_frames(self, num_frames: int) -> int:
        return self.f

    def windows(self) -> list[tuple[int, int]]:
        """Window spans in processing order (tail first)."""
        r = 2 * self.n if self.lookahead else self.n
        step = self.f // 2 if self.lookahead else self.f
        return [(k * step, k * step + self.f) for k in reversed(range(r))]

    def stepper(self, scheduler: Any) -> FrameDDIM:
        grid = fifo_timesteps(int(scheduler.config.num_train_timesteps), self.steps)
        return frame_ddim_for(scheduler, grid, self.eta, "method fifo")

    def base_sample(self, ctx: LoopContext, ddim: FrameDDIM, noise: torch.Tensor) -> torch.Tensor:
        """The base video: ``f`` frames from ``noise`` by DDIM on the FIFO grid (``f·n`` steps, η), one t for all."""
        x = noise
        n = self.steps
        for k in reversed(range(n)):
            t = ddim.timesteps[k].to(x.device)
            eps = ctx.denoise(x, t, step_index=n - 1 - k, num_steps=n, frame_index=torch.arange(self.f))
            z = ctx.randn(x.shape, x) if ddim.eta > 0 else None
            x = ddim.step(x, eps, torch.full((self.f,), k), z)
        return x

    def initial_queue(self, ctx: LoopContext, ddim: FrameDDIM, base: torch.Tensor) -> torch.Tensor:
        s, f = self.steps, self.f
        b, c, _, h, w = base.shape
        slots = [(0, 0)] * self.prefix + [(k, max(0, k - (s - f))) for k in range(s)]
        a = ddim.alphas.float().to(base.device)
        frames = []
        for level, j in slots:
            eps = ctx.randn((b, c, 1, h, w), base)
            frames.append(a[level].sqrt() * base[:, :, j : j + 1] + (1 - a[level]).sqrt() * eps)
        return torch.cat(frames, dim=2)

    def run(self, ctx: LoopContext, latents: torch.Tensor) -> torch.Tensor:
        ddim = self.stepper(ctx.make_scheduler())
        f, s, pre = self.f, self.steps, self.prefix
        if self.queue is not None:
            queue = self.queue.to(latents.device, torch.float32).clone()
            if queue.shape[2] != pre + s:
                raise ValueError(f"a FIFO queue has {pre + s} frames (prefix {pre} + {s} levels), got {queue.shape[2]}")
        else:
            base = self.base if self.base is not None else self.base_sample(ctx, ddim, latents[:, :, :f])
            queue = self.initial_queue(ctx, ddim, base.to(latents.device, torch.float32))
        num_frames = self.num_frames or ctx.num_frames or latents.shape[2]
        levels = torch.cat([torch.zeros(pre, dtype=torch.long), torch.arange(s)])
        timesteps = ddim.timesteps[levels]
        iterations = num_frames + s - f
        dropped = s - f
        b, c, _, h, w = queue.shape
        out = torch.empty((b, c, num_frames, h, w), dtype=torch.float32)  # on the CPU: device memory stays flat
        bar = tqdm(range(iterations), desc=ctx.desc, disable=not ctx.progress, leave=False)
        for it in bar:
            t0 = time.perf_counter()
            head_frame = it - dropped  # the output frame the head emits this iteration (< 0: dropped)
            for a_, b_ in self.windows():
                x = queue[:, :, a_:b_]
                # absolute output frame of each slot: the head (slot `pre`) emits head_frame
                idx = torch.arange(a_, b_) - pre + head_frame
                cond_idx = torch.full_like(idx, min(max(head_frame, 0), num_frames - 1))
                eps = ctx.denoise(x, timesteps[a_:b_].to(x.device), num_steps=s, frame_index=idx,
                                  cond_index=cond_idx)
                # one draw per frame, discarded halves and σ = 0 included: the official RNG order
                z = torch.cat([ctx.randn((b, c, 1, h, w), x) for _ in range(f)], dim=2)
                new = ddim.step(x, eps, levels[a_:b_], z)
                keep = f // 2 if self.lookahead else 0
                queue[:, :, a_ + keep : b_] = new[:, :, keep:]
            if head_frame >= 0:
                out[:, :, head_frame] = queue[:, :, pre].float().cpu()
            queue = torch.cat([queue[:, :, 1:], ctx.randn((b, c, 1, h, w), queue)], dim=2)
            _timed(ctx, t0, queue.device)
        return out


# ----------------------------------------------------------------------------------------------
# FreeInit: rounds around any inner loop
# ----------------------------------------------------------------------------------------------
class RoundsLoop(SamplingLoop):
    """FreeInit: ``num_iters`` full runs of ``inner``; before round ``k > 0`` the start is re-derived from the
    previous round's clean latent ``x0``: ``z = add_noise(x0, ε0, noise_level)`` with the round-0 noise ``ε0``,
    then ``x_T = IFFT3(FFT3(z)·H + FFT3(η)·(1 - H))`` with fresh noise ``η`` (one draw per round, on the run's
    generator) and the low-pass ``H`` (``(T, h, w)``, fftshifted). Only the last round is returned.

    ``fast_sampling``: round ``k`` uses ``max(1, int(N / K · (k + 1)))`` steps (coarse-to-fine).
    Flow-matching schedulers (no ``alphas_cumprod``) re-noise as ``(1 - σ) x0 + σ ε0``, ``σ = noise_level / T_train``.
    """

    def __init__(self, inner: SamplingLoop, num_iters: int, lowpass: Callable[[tuple[int, int, int]], torch.Tensor],
                 noise_level: int | None = None, fast_sampling: bool = False):
        self.inner = inner
        self.num_iters = num_iters
        self.lowpass = lowpass
        self.noise_level = noise_level
        self.fast_sampling = fast_sampling

    def noise_frames(self, num_frames: int) -> int:
        return self.inner.noise_frames(num_frames)

    def renoise(self, scheduler: Any, x0: torch.Tensor, eps0: torch.Tensor) -> torch.Tensor:
        train = int(scheduler.config.num_train_timesteps)
        level = train - 1 if self.noise_level is None else int(self.noise_level)
        if getattr(scheduler, "alphas_cumprod", None) is not None:
            t = torch.full((x0.shape[0],), level, dtype=torch.long, device=x0.device)
            return scheduler.add_noise(original_samples=x0, noise=eps0, timesteps=t).to(torch.float32)
        sigma = level / train
        return ((1 - sigma) * x0 + sigma * eps0).to(torch.float32)

    def run(self, ctx: LoopContext, latents: torch.Tensor) -> torch.Tensor:
        eps0 = latents.detach().clone()
        x0 = latents
        steps = ctx.num_inference_steps
        lowpass = self.lowpass(tuple(latents.shape[2:])).to(latents.device)
        for k in range(self.num_iters):
            x = latents
            if k > 0:
                z = self.renoise(ctx.make_scheduler(), x0, eps0)
                fresh = ctx.randn(latents.shape, z).float()
                x = spectral_blend(z, fresh, lowpass).to(latents.dtype)
            n = freeinit_rounds_steps(steps, self.num_iters)[k] if self.fast_sampling else steps
            x0 = self.inner.run(replace(ctx, num_inference_steps=n, desc=f"{ctx.desc} round {k + 1}"), x)
        return x0


def freeinit_rounds_steps(steps: int, num_iters: int) -> list[int]:
    """Steps per round under fast sampling: ``max(1, int(N / K · (k + 1)))`` (diffusers' rule)."""
    return [max(1, int(steps / num_iters * (k + 1))) for k in range(num_iters)]


__all__ = ["FifoLoop", "FrameDDIM", "LoopContext", "RoundsLoop", "SamplingLoop", "StandardLoop", "WindowLoop",
           "check_single_step", "covering_windows", "fifo_timesteps", "frame_ddim_for", "freeinit_rounds_steps"]
