"""Small helpers shared by the tests (random attention inputs). Weight-folder fakes: ``fakes.py``;
synthetic videos: ``eval_synthetic.py``; a stand-in vbench package: ``fake_vbench.py``."""

from __future__ import annotations

import torch


def random_qkv(rows: int, heads: int, length: int, d: int, seed: int = 0,
               dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """``[q, k, v]``, each ``(rows, heads, length, d)`` standard normal from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, heads, length, d, generator=g, dtype=dtype) for _ in range(3)]
