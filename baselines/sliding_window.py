"""Sliding-window temporal attention (Gen-L-Video style) with independent noise."""

from __future__ import annotations

from dataclasses import dataclass

from freelong.methods import Method, register_method

from .window_fusion import WindowFusionProcessor


@register_method("sliding_window")
@dataclass
class SlidingWindow(Method):
    """Windows of ``window`` frames every ``stride`` frames, overlapping outputs averaged."""

    window: int = 16
    stride: int = 4

    def validate(self) -> None:
        if self.window < 1:
            raise ValueError(f"method.window must be >= 1, got {self.window}")
        if not (1 <= self.stride <= self.window):
            raise ValueError(f"method.stride must be in [1, window={self.window}], got {self.stride}")

    def processor(self) -> WindowFusionProcessor:
        return WindowFusionProcessor(self.window, self.stride, "flat")
