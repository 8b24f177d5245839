"""FreeNoise (Qiu et al., ICLR 2024): noise rescheduling + window-based attention fusion."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from freelong.methods import Method, register_method
from freelong.noise import rescheduled_noise

from .window_fusion import WEIGHTINGS, WindowFusionProcessor


@register_method("freenoise")
@dataclass
class FreeNoise(Method):
    """Window ``window`` (= the backbone's training length), stride ``stride``, pyramid fusion weights."""

    window: int = 16
    stride: int = 4
    weighting: str = "pyramid"

    def validate(self) -> None:
        if self.window < 1:
            raise ValueError(f"method.window must be >= 1, got {self.window}")
        if not (1 <= self.stride <= self.window):
            raise ValueError(f"method.stride must be in [1, window={self.window}], got {self.stride}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"method.weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")

    def processor(self) -> WindowFusionProcessor:
        return WindowFusionProcessor(self.window, self.stride, self.weighting)

    def init_noise(self, shape, generator=None, dtype=torch.float32):
        return rescheduled_noise(shape, window=self.window, stride=self.stride, generator=generator, dtype=dtype)


__all__ = ["FreeNoise", "rescheduled_noise"]
