"""FreeNoise (Qiu et al., ICLR 2024): noise rescheduling + window-based attention fusion."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from freelong.attention.windows import check_window_stride
from freelong.methods import Method, register_method
from freelong.noise import rescheduled_noise
from freelong.prompts import MotionInjection

from .window_fusion import WEIGHTINGS, WindowFusionProcessor

FUSIONS = ("attention", "block")


@register_method("freenoise")
@dataclass
class FreeNoise(Method):
    """FreeNoise: rescheduled noise + window fusion of temporal attention (pyramid weights by default).

    Motion injection for multi-prompt videos: :class:`freelong.prompts.MotionInjection` (defaults = the
    official code: steps 5..15 of 50, encoder + middle block, the last prompt).
    """

    levels = ("attention", "initial noise")

    window: int = 16
    """Attention window and noise window in frames (latent frames on a DiT): the backbone's training length."""
    stride: int = 4
    """Frames between window starts, and the shuffle block of the rescheduled noise, in [1, window]."""
    weighting: str = "pyramid"
    """Window fusion weights: `pyramid` (FreeNoise's U/2 − ⌊|i − c|⌋) or `flat` (plain mean)."""
    motion_injection: bool = False
    """Multi-prompt videos only: outside `injection_steps` the block groups `injection_groups` see the prompt of
    segment `injection_prompt` on every frame (FreeNoise Eq. 11)."""
    injection_prompt: int = -1
    """Segment whose prompt motion injection uses: `-1` the last (official code), `0` the first (the paper)."""
    injection_groups: list[str] = field(default_factory=lambda: ["down", "mid"])
    """UNet block groups (`down`, `mid`, `up`) that see the injected prompt (default: encoder + middle block)."""
    injection_steps: list[float] = field(default_factory=lambda: [0.1, 0.3])
    """Inclusive step range, as fractions of the trajectory, that keeps the per-frame prompts (`[0.1, 0.3]` =
    DDIM steps 5..15 of 50)."""
    fusion: str = "attention"
    """`attention` fuses each temporal attention's window outputs (the paper's Eq. 8-9); `block` fuses once
    around attn1 + attn2 of each motion-module block, as diffusers' `enable_free_noise` (diffusers backbones
    only, :mod:`baselines.block_fusion`)."""

    def validate(self) -> None:
        check_window_stride(self.window, self.stride)
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"method.weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"method.fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        try:
            self._injection()
        except ValueError as err:
            raise ValueError(f"method.injection_*: {err}") from None

    def _injection(self) -> MotionInjection:
        return MotionInjection(int(self.injection_prompt), tuple(self.injection_groups),
                               tuple(float(s) for s in self.injection_steps))

    def prompt_injection(self) -> MotionInjection | None:
        return self._injection() if self.motion_injection else None

    def processor(self) -> WindowFusionProcessor | None:
        return None if self.fusion == "block" else WindowFusionProcessor(self.window, self.stride, self.weighting)

    @property
    def fuses_blocks(self) -> bool:
        return self.fusion == "block"

    def block_forward(self, block):
        from .block_fusion import fused_block_forward

        return fused_block_forward(block, self.window, self.stride, self.weighting)

    def check_model(self, model_cfg) -> None:
        from .block_fusion import BLOCK_FAMILIES

        if self.fusion == "block" and model_cfg.get("family") not in BLOCK_FAMILIES:
            raise ValueError(f"method.fusion=block needs a diffusers motion-module backbone (families "
                             f"{', '.join(BLOCK_FAMILIES)}), not model {model_cfg.get('name')}; "
                             f"use method.fusion=attention")

    def init_noise(self, shape, generator=None, dtype=torch.float32):
        return rescheduled_noise(shape, window=self.window, stride=self.stride, generator=generator, dtype=dtype)


__all__ = ["FreeNoise", "rescheduled_noise"]
