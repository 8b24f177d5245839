"""VideoCrafter2's sampler: lvdm's DDIM with the ``scale_arr`` x0 rescale, against an independent float64
implementation of reference_code.md §2.5, and the backbone's CFG / fps / uint8 conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from freelong.models.spec import load_model_config
from freelong.models.videocrafter.backbone import VideoCrafterDDIMScheduler, lvdm_scale_arr

pytestmark = pytest.mark.usefixtures("one_thread")


def lvdm_schedule_f64():
    """lvdm: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2 (float64), alphas_cumprod = cumprod(1 - betas)."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1.0 - betas)
    r = np.concatenate([np.linspace(1.0, 0.7, 400), np.full(1000, 0.7)])
    return ac, r


def ref_trajectory(x, eps_fn, steps, eta, noises):
    """DDIM per §2.5 in float64: uniform timesteps c*j + 1, a_prev(first) = a[0], r_prev(first) = r[0]."""
    ac, r = lvdm_schedule_f64()
    c = 1000 // steps
    taus = np.arange(0, 1000, c)[:steps] + 1
    x = x.double()
    for j in reversed(range(steps)):
        t = int(taus[j])
        a_t = ac[t]
        a_prev = ac[taus[j - 1]] if j > 0 else ac[0]
        r_t, r_prev = r[t], (r[taus[j - 1]] if j > 0 else r[0])
        sigma = eta * np.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        e = eps_fn(x, t).double()
        x0 = (x - np.sqrt(1 - a_t) * e) / np.sqrt(a_t) / r_t
        x = np.sqrt(a_prev) * r_prev * x0 + np.sqrt(1 - a_prev - sigma**2) * e + sigma * noises[steps - 1 - j].double()
    return x


def test_schedule_timesteps_and_scale_arr():
    sched = VideoCrafterDDIMScheduler(**OmegaConf.to_container(load_model_config("videocrafter2").scheduler))
    sched.set_timesteps(50)
    assert [int(t) for t in sched.timesteps] == list(range(981, 0, -20))
    ac, r = lvdm_schedule_f64()
    torch.testing.assert_close(sched.alphas_cumprod, torch.tensor(ac, dtype=torch.float32), atol=0, rtol=0)
    assert sched.final_alpha_cumprod.item() == pytest.approx(ac[0])
    arr = lvdm_scale_arr()
    assert arr.shape == (1400,) and arr[0] == 1.0 and arr[399].item() == pytest.approx(0.7) and (arr[400:] == 0.7).all()
    assert arr[1].item() == pytest.approx(1 - 0.3 / 399, abs=1e-7)
    tiny = load_model_config("videocrafter2_tiny").scheduler
    assert OmegaConf.to_container(tiny) == OmegaConf.to_container(load_model_config("videocrafter2").scheduler)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_matches_the_float64_reference(eta):
    steps = 50
    gen = torch.Generator().manual_seed(0)
    x_init = torch.randn(1, 4, 3, 4, 5, generator=gen)
    noises = [torch.randn(1, 4, 3, 4, 5, generator=gen) for _ in range(steps)]
    w = torch.randn(4, 4, generator=gen, dtype=torch.float64) * 0.4

    def eps_fn(x, t):  # a smooth fake noise predictor, evaluated in float64 for both
        return torch.tanh(torch.einsum("bcthw,dc->bdthw", x.double(), w) + 1e-3 * t)

    sched = VideoCrafterDDIMScheduler()
    sched.set_timesteps(steps)
    x = x_init.clone()
    for i, t in enumerate(sched.timesteps):
        x = sched.step(eps_fn(x, int(t)).float(), t, x, eta=eta, variance_noise=noises[i]).prev_sample
    ref = ref_trajectory(x_init, eps_fn, steps, eta, noises)
    torch.testing.assert_close(x.double(), ref, atol=1e-4, rtol=1e-4)
    assert ref.abs().max() > 1  # a non-trivial trajectory


def test_eta_noise_comes_from_the_generator():
    sched = VideoCrafterDDIMScheduler()
    sched.set_timesteps(4)
    x, eps = torch.randn(1, 4, 2, 3, 3), torch.randn(1, 4, 2, 3, 3)
    t = sched.timesteps[1]
    a = sched.step(eps, t, x, eta=1.0, generator=torch.Generator().manual_seed(5)).prev_sample
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, sched.step(eps, t, x, eta=1.0, variance_noise=z).prev_sample)
    assert not torch.allclose(a, sched.step(eps, t, x, eta=0.0).prev_sample)


def test_backbone_sampling_conventions(vc2_tiny):
    bb = vc2_tiny
    assert bb.unet_kwargs() == {"fps": 28} and bb.cfg_mode == "separate"
    assert bb.sampling["guidance_scale"] == 12.0 and bb.sampling["eta"] == 1.0
    with pytest.raises(ValueError, match="DDIM only"):
        bb.make_scheduler("ddpm")
    assert isinstance(bb.make_scheduler("ddim"), VideoCrafterDDIMScheduler)

    x = torch.randn(1, 4, 3, 4, 4)
    cond, uncond = bb.encode_text(["a cat"]), bb.encode_text([""])
    t = torch.tensor(981)
    with torch.no_grad():
        e_c = bb.unet(x, t, cond, fps=28)
        e_u = bb.unet(x, t, uncond, fps=28)
    torch.testing.assert_close(bb.predict_noise(x, t, cond, uncond, 12.0), e_u + 12.0 * (e_c - e_u))

    img = torch.tensor([[-1.5, -1.0, 0.0, 0.999, 1.0, 2.0]]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert bb.to_uint8(img)[0, 0, :, 0].tolist() == [0, 0, 127, 254, 255, 255]  # official: truncate, not round


@pytest.fixture(scope="module")
def vc2_tiny():
    from freelong import load_backbone

    return load_backbone("videocrafter2_tiny")
