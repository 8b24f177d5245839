"""Comparison methods behind the same interface as FreeLong: direct, sliding_window, freenoise."""

from . import direct, freenoise, sliding_window  # noqa: F401  (registers the methods)
from .direct import Direct
from .freenoise import FreeNoise, rescheduled_noise
from .sliding_window import SlidingWindow
from .window_fusion import WindowFusionProcessor, window_weights

__all__ = ["Direct", "FreeNoise", "SlidingWindow", "WindowFusionProcessor", "rescheduled_noise", "window_weights"]
