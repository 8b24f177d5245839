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
