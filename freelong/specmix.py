"""SpecMix noise initialisation (FreeLong++, reconstructed from secondary descriptions; unverified).

A consistent base noise (FreeNoise's window shuffle, :func:`freelong.noise.rescheduled_noise`) and an
independent residual (i.i.d. Gaussian) are mixed frame by frame with an angle that grows from the
centre of the video towards its ends::

    d_t = |t - (T-1)/2| / ((T-1)/2),   theta_t = d_t * pi/2,   x_t = cos(theta_t) base_t + sin(theta_t) res_t

so the centre frames are the base noise and the first and last frames fresh noise. ``cos^2 + sin^2 = 1``
and the two noises are independent, so every latent keeps unit variance.

The notes say the mix happens "per frame, in the frequency domain"; a frequency-independent angle is
the same thing in pixel space (linearity), which is the default. ``cutoff`` makes the frequency domain
matter (an open choice): the angle is applied only to the spatial frequencies of each frame whose
normalised radius (1 = Nyquist) is ``>= cutoff`` — lower ones keep the base noise. Per bin the weights
are still ``cos``/``sin`` of one angle, so the variance stays exactly one.
"""

from __future__ import annotations

import math

import torch

from .noise import gaussian_noise, rescheduled_noise


def specmix_angles(num_frames: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``theta_t = d_t * pi/2`` with ``d_t`` the distance of frame ``t`` from the centre, 1 at the ends."""
    if num_frames < 2:
        return torch.zeros(num_frames, dtype=dtype)
    t = torch.arange(num_frames, dtype=torch.float64)
    centre = (num_frames - 1) / 2
    return ((t - centre).abs() / centre * (math.pi / 2)).to(dtype)


def spatial_highpass_mask(h: int, w: int, cutoff: float) -> torch.Tensor:
    """``(H, W//2+1)`` rfft2-layout mask, 1 where the radius ``sqrt((k_h/(H/2))^2 + (k_w/(W/2))^2) >= cutoff``."""
    kh = torch.fft.fftfreq(h, dtype=torch.float64) * 2
    kw = torch.fft.rfftfreq(w, dtype=torch.float64) * 2
    r = (kh[:, None] ** 2 + kw[None, :] ** 2).sqrt()
    return (r >= cutoff).double()


def specmix_noise(
    shape: tuple[int, ...],
    window: int,
    stride: int = 4,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    cutoff: float | None = None,
) -> torch.Tensor:
    """SpecMix latents ``(B, C, T, H, W)``; the FreeNoise base (``window``, ``stride``) is drawn first, then
    the residual, from the same generator."""
    if len(shape) != 5:
        raise ValueError(f"expected a (B, C, T, H, W) shape, got {tuple(shape)}")
    if cutoff is not None and not (0 < cutoff <= 1):
        raise ValueError(f"cutoff must be null or in (0, 1], got {cutoff}")
    base = rescheduled_noise(shape, window=window, stride=stride, generator=generator, dtype=torch.float32)
    res = gaussian_noise(shape, generator=generator, dtype=torch.float32)
    theta = specmix_angles(shape[2]).to(base.device)
    if cutoff is None:
        c = theta.cos().float()[None, None, :, None, None]
        s = theta.sin().float()[None, None, :, None, None]
        return (c * base + s * res).to(dtype)
    h, w = shape[3], shape[4]
    angle = theta[:, None, None] * spatial_highpass_mask(h, w, cutoff).to(base.device)[None]  # (T, H, W//2+1)
    fb = torch.fft.rfft2(base.double(), norm="ortho")
    fr = torch.fft.rfft2(res.double(), norm="ortho")
    mixed = angle.cos() * fb + angle.sin() * fr
    return torch.fft.irfft2(mixed, s=(h, w), norm="ortho").to(dtype)


__all__ = ["spatial_highpass_mask", "specmix_angles", "specmix_noise"]
