"""Initial-noise schemes: i.i.d. Gaussian and FreeNoise's local noise shuffle."""

from __future__ import annotations

import torch


def gaussian_noise(
    shape: tuple[int, ...], generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def rescheduled_noise(
    shape: tuple[int, ...],
    window: int = 16,
    stride: int = 4,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """FreeNoise's noise rescheduling for latents ``(B, C, T, H, W)``.

    The first ``window`` frames are i.i.d. Gaussian. Every later block of ``stride`` frames
    ``[f, f + stride)`` is a random permutation of the block exactly ``window`` frames earlier
    (a ragged final block takes the first frames of such a permutation), so every run of
    ``window`` consecutive frames holds the same ``window`` noises in a different order.
    One permutation per block is shared by the batch; each batch item has its own base noise.
    """
    if len(shape) != 5:
        raise ValueError(f"expected a (B, C, T, H, W) shape, got {tuple(shape)}")
    if window < 1 or not (1 <= stride <= window):
        raise ValueError(f"need window >= 1 and 1 <= stride <= window, got window={window}, stride={stride}")
    b, c, t, h, w = shape
    device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.empty(shape, device=device, dtype=dtype)
    noise[:, :, : min(t, window)] = torch.randn(
        (b, c, min(t, window), h, w), generator=generator, device=device, dtype=dtype
    )
    for start in range(window, t, stride):
        n = min(stride, t - start)
        perm = torch.randperm(stride, generator=generator, device=device)[:n]
        noise[:, :, start : start + n] = noise[:, :, start - window + perm]
    return noise


__all__ = ["gaussian_noise", "rescheduled_noise"]
