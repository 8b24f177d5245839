"""Gen-L-Video temporal co-denoising (Wang et al., 2023): inside every step the whole network runs on windows of
the video; each frame's ``x_{t-1}`` is the weighted mean of the window results that hold it
(:class:`freelong.sampling.WindowLoop`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from freelong.attention.windows import check_window_stride
from freelong.methods import Method, register_method
from freelong.sampling import WindowLoop

from .loop_checks import require_capability

WEIGHTINGS = ("uniform", "pyramid")


def merge_weights(window: int, weighting: str) -> torch.Tensor:
    """Per-position weight of a frame inside its window: ``uniform`` (the official code), or FreeNoise's
    ``pyramid`` ``window/2 - floor(|i - (window-1)/2|)``."""
    if weighting == "uniform":
        return torch.ones(window, dtype=torch.float64)
    pos = torch.arange(window, dtype=torch.float64)
    return window / 2 - torch.floor((pos - (window - 1) / 2).abs())


@register_method("gen_l_video")
@dataclass
class GenLVideo(Method):
    """Windows ``[k·stride, k·stride + window)`` plus one ending at the last frame, so every frame is covered (the
    official ``get_views`` leaves the last ``(T - window) % stride`` frames at zero)."""

    levels = ("sampling loop",)

    window: int = 16
    """Frames per window (latent frames; the backbone's native length)."""
    stride: int = 4
    """Frames between window starts (official configs: 4)."""
    weighting: str = "uniform"
    """Merge weights of a frame's window results: uniform (official) | pyramid (FreeNoise's)."""
    prompt_per_window: bool = True
    """Multi-prompt videos: every window takes the prompt of its centre frame (one prompt per window, as the
    official one embedding per view); false: each frame keeps its own prompt."""

    def validate(self) -> None:
        check_window_stride(self.window, self.stride)
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"method.weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")

    def check_model(self, model_cfg: Any) -> None:
        require_capability("gen_l_video", model_cfg, "single_step_sampler",
                           "calls the scheduler's step once per window (a multistep solver such as UniPC "
                           "would advance its history once per window)")

    def sampling_loop(self, native_frames: int) -> WindowLoop:
        return WindowLoop(self.window, self.stride, merge_weights(self.window, self.weighting),
                          self.prompt_per_window)
