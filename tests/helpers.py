"""Small helpers shared by the tests (random attention inputs). Weight-folder fakes: ``fakes.py``;
synthetic videos: ``eval_synthetic.py``; a stand-in vbench package: ``fake_vbench.py``."""

from __future__ import annotations

import torch


def random_qkv(rows: int, heads: int, length: int, d: int, seed: int = 0,
               dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """``[q, k, v]``, each ``(rows, heads, length, d)`` standard normal from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, heads, length, d, generator=g, dtype=dtype) for _ in range(3)]


def relative_bias(heads: int, max_offset: int, seed: int = 1):
    """A random relative position bias ``bias(q_idx, k_idx) -> (heads, Lq, Lk)`` for offsets in ``[-m, m)``."""
    table = torch.randn(heads, 2 * max_offset, generator=torch.Generator().manual_seed(seed))
    return lambda qi, ki: table[:, (ki[None, :] - qi[:, None]) + max_offset]


def column_ctx(t: int, rows: int = 6, level: int = 1, step: int = 0):
    """The context of a UNet call over a ``(t, rows, 1)`` video, batch 1, at ``step`` of 4."""
    from freelong.attention.context import TemporalAttentionContext

    return TemporalAttentionContext(frame_shape=(t, rows, 1), batch=1, level=level, name="x", step_index=step,
                                    num_steps=4)


def bare_backbone(denoiser: torch.nn.Module, name: str = "bare"):
    """The base :class:`~freelong.models.base.Backbone` viewed over a denoiser alone (tests that build only a UNet):
    installing a method needs nothing but the denoiser (:meth:`Backbone.over`)."""
    from freelong.models.base import Backbone

    return Backbone.over(denoiser, name, native_frames=16)


def attach(method, denoiser: torch.nn.Module):
    """``bare_backbone(denoiser).attach(method)``: the handle of the one installer."""
    return bare_backbone(denoiser).attach(method)


PROMPT = "a red fox runs through snow"  # the DiT parity tests' prompt


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative difference ``|a - b| / |b|`` (Frobenius norms)."""
    return float((a - b).norm() / b.norm())


def dit_latents(bb, frames: int = 21, h: int = 32, w: int = 48, seed: int = 1) -> torch.Tensor:
    """Seeded initial latents of a ``frames``-frame ``h x w`` video for a DiT backbone ``bb``."""
    g = torch.Generator().manual_seed(seed)
    f = bb.vae_scale_factor
    return torch.randn(1, bb.latent_channels, bb.latent_frames(frames), h // f, w // f, generator=g)


def pipeline_latents(bb, method, latents: torch.Tensor, steps: int = 3, frames: int = 21, guidance: float = 5.0):
    """The final latents of ``LongVideoPipeline(bb, method)`` from ``latents`` (the parity tests' "ours")."""
    from freelong import LongVideoPipeline

    f = bb.vae_scale_factor
    pipe = LongVideoPipeline(bb, method, progress=False)
    return pipe(PROMPT, num_frames=frames, height=latents.shape[-2] * f, width=latents.shape[-1] * f,
                num_inference_steps=steps, guidance_scale=guidance, latents=latents.clone(), output_type="latent")
