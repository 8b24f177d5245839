"""FIFO-Diffusion: the queue, its schedule and its output against an independent transcription of the official
code (jjihwan/FIFO-Diffusion_public: scripts/evaluation/funcs.py ``prepare_latents``/``fifo_ddim_sampling``/
``shift_latents``, lvdm/models/samplers/ddim.py ``fifo_onestep``/``ddim_step``, lvdm/models/utils_diffusion.py
``make_ddim_timesteps``/``make_ddim_sampling_parameters``), written here from reading it, on the tiny random-weight
VideoCrafter2 with the same weights, the same base video and the same noise stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freelong import LongVideoPipeline, get_method, load_backbone
from freelong.sampling import FifoLoop, LoopContext, fifo_timesteps


def lvdm_alphas_cumprod() -> torch.Tensor:
    """lvdm's VideoCrafter2 schedule: betas = linspace(√0.00085, √0.012, 1000)² in float64, stored as float32."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    return torch.tensor(np.cumprod(1.0 - betas), dtype=torch.float32)


def official_fifo(eps_fn, video, f, n, lookahead, eta, new_len, g):
    """The official FIFO loop, step by step (per-frame Python loops as in the original)."""
    s = f * n
    tau = np.linspace(0, 999, s).round().astype(np.int64)  # make_ddim_timesteps('uniform'), FIFO's version
    ac = lvdm_alphas_cumprod()  # model.alphas_cumprod (float32)
    # make_sampling_parameters: alphas a float32 tensor, alphas_prev a float64 array, sigmas float64
    alphas = ac[tau]
    alphas_prev = np.asarray([float(ac[0])] + ac[tau[:-1]].tolist())
    a64 = alphas.double().numpy()
    sigmas = eta * np.sqrt((1 - alphas_prev) / (1 - a64) * (1 - a64 / alphas_prev))
    sqrt_one_minus_alphas = torch.sqrt(1.0 - alphas)
    size = (1, 1, 1, 1, 1)

    slots = []  # prepare_latents (alpha: a 0-d float32 tensor)
    if lookahead:
        for _ in range(f // 2):
            a = alphas[0]
            slots.append(a**0.5 * video[:, :, [0]] + (1 - a) ** 0.5 * torch.randn(video[:, :, [0]].shape, generator=g))
    for i in range(s):
        a = alphas[i]
        j = max(0, i - (s - f))
        slots.append(a**0.5 * video[:, :, [j]] + (1 - a) ** 0.5 * torch.randn(video[:, :, [j]].shape, generator=g))
    latents = torch.cat(slots, dim=2)

    timesteps, indices = tau, np.arange(s)
    if lookahead:
        timesteps = np.concatenate([np.full((f // 2,), timesteps[0]), timesteps])
        indices = np.concatenate([np.full((f // 2,), 0), indices])
    frames = []
    for _ in range(new_len + s - f):
        for rank in reversed(range(2 * n if lookahead else n)):
            start = rank * (f // 2) if lookahead else rank * f
            mid, end = start + f // 2, start + f
            x_in = latents[:, :, start:end].clone()
            e = eps_fn(x_in, torch.tensor(timesteps[start:end]))
            outs = []
            for i, index in enumerate(indices[start:end]):  # ddim_step
                x, e_t = x_in[:, :, [i]], e[:, :, [i]]
                a_t, a_prev = torch.full(size, float(alphas[index])), torch.full(size, float(alphas_prev[index]))
                sigma_t = torch.full(size, float(sigmas[index]))
                sqrt_one_minus_at = torch.full(size, float(sqrt_one_minus_alphas[index]))
                pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
                dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * e_t
                noise = sigma_t * torch.randn(x.shape, generator=g)
                outs.append(a_prev.sqrt() * pred_x0 + dir_xt + noise)
            out = torch.cat(outs, dim=2)
            if lookahead:
                latents[:, :, mid:end] = out[:, :, -(f // 2):]
            else:
                latents[:, :, start:end] = out
        frames.append(latents[:, :, [f // 2 if lookahead else 0]].clone())
        latents[:, :, :-1] = latents[:, :, 1:].clone()  # shift_latents
        latents[:, :, -1] = torch.randn(latents[:, :, -1].shape, generator=g)
    return torch.cat(frames[-new_len:], dim=2)


@pytest.fixture(scope="module")
def vc2():
    return load_backbone("videocrafter2_tiny")


def test_schedule_equals_the_official_one():
    tau = fifo_timesteps(1000, 64)
    assert len(tau) == 64 and tau[:5].tolist() == [0, 16, 32, 48, 63] and tau[-2:].tolist() == [983, 999]
    loop = FifoLoop(16, 4, lookahead=True)
    assert loop.steps == 64 and loop.prefix == 8
    assert loop.windows()[0] == (56, 72) and loop.windows()[-1] == (0, 16) and len(loop.windows()) == 8
    assert [w for w in FifoLoop(16, 4, lookahead=False).windows()] == [(48, 64), (32, 48), (16, 32), (0, 16)]


@torch.no_grad()
@pytest.mark.parametrize("lookahead,eta", [(True, 1.0), (False, 0.0),
                                           pytest.param(True, 0.0, marks=pytest.mark.slow)])
def test_fifo_equals_the_official_loop_on_tiny_videocrafter2(vc2, lookahead, eta, one_thread):
    f, n, new_len = 4, 2, 3  # a 4-frame window keeps it fast; the algorithm does not depend on f
    cond, uncond = vc2.encode_text(["a cat"]), vc2.encode_text([""])
    video = torch.randn(1, 4, f, 4, 4, generator=torch.Generator().manual_seed(1))
    ours_ctx = LoopContext(denoise=LongVideoPipeline(vc2, "direct", progress=False).denoiser(cond, uncond, 12.0),
                           make_scheduler=lambda: vc2.make_scheduler("ddim"), num_inference_steps=0,
                           num_frames=new_len, generator=torch.Generator().manual_seed(7))
    ours = FifoLoop(f, n, lookahead, eta, base=video).run(ours_ctx, video)

    def official_eps(x, t):  # DDIMSampler.unet: cond pass, then uncond pass, e_u + s (e_c - e_u)
        e_c = vc2.unet(x, t[None], cond, fps=vc2.fps_condition)
        e_u = vc2.unet(x, t[None], uncond, fps=vc2.fps_condition)
        return e_u + 12.0 * (e_c - e_u)

    theirs = official_fifo(official_eps, video, f, n, lookahead, eta, new_len, torch.Generator().manual_seed(7))
    assert ours.shape == theirs.shape == (1, 4, new_len, 4, 4)
    assert torch.equal(ours, theirs)  # bitwise: the same float32 operations in the same order, the same noise


def test_queue_calls_and_output_length_with_the_official_defaults():
    """16 frames x 4 partitions with lookahead: 8 windows per iteration (16 UNet calls with CFG), N + 48
    iterations, exactly N frames out (on the CPU), every window of the native length."""
    calls = []

    def denoise(x, t, **kw):
        calls.append((x.shape[2], t.shape, kw["frame_index"]))
        return torch.zeros_like(x)

    ctx = LoopContext(denoise=denoise, make_scheduler=_ddim,
                      num_inference_steps=0, num_frames=5, generator=torch.Generator().manual_seed(0))
    base = torch.zeros(1, 4, 16, 2, 2)
    out = FifoLoop(16, 4, True, 1.0, base=base).run(ctx, base)
    assert out.shape == (1, 4, 5, 2, 2) and out.device.type == "cpu"
    assert len(calls) == 8 * (5 + 48)
    assert {c[0] for c in calls} == {16} and {tuple(c[1]) for c in calls} == {(16,)}
    # the head window of the last iteration holds output frames 4-8..4+7 (slot 8 = the head = frame 4)
    assert calls[-1][2].tolist() == list(range(-4, 12))


def _ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def test_bad_input_fails_before_any_weight():
    with pytest.raises(ValueError, match="method.num_partitions"):
        get_method("fifo", num_partitions=0)
    with pytest.raises(ValueError, match="method.eta"):
        get_method("fifo", eta=2.0)
    with pytest.raises(ValueError, match="multistep solver such as UniPC"):
        get_method("fifo").check_model({"family": "wan", "name": "wan"})
    get_method("fifo").check_model({"family": "videocrafter2", "name": "videocrafter2"})
    with pytest.raises(ValueError, match="even native length"):
        get_method("fifo").sampling_loop(21)


@pytest.mark.slow
@torch.no_grad()
def test_pipeline_fifo_gives_num_frames_from_a_base_sample_of_the_same_seed(vc2, one_thread):
    """Through the pipeline: the base video is a direct DDIM sample on the FIFO grid from the seed's first
    window of noise (the pipeline draws one window of noise, not the whole length); exactly num_frames out."""
    method = get_method("fifo", num_partitions=1, lookahead=False, eta=0.0)
    pipe = LongVideoPipeline(vc2, method, progress=False)
    out = pipe("a cat", num_frames=18, height=32, width=32, seed=3, output_type="latent")
    assert out.shape == (1, 4, 18, 4, 4) and torch.isfinite(out).all()
