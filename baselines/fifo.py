"""FIFO-Diffusion (Kim et al., NeurIPS 2024): a queue of frames at increasing noise levels, one timestep per
frame, denoised window by window with the backbone's native length; the head frame leaves each iteration and
fresh noise enters at the tail, so memory does not grow with the video length (:class:`freelong.sampling.FifoLoop`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from freelong.methods import Method, register_method
from freelong.sampling import FifoLoop

from .loop_checks import require_capability


@register_method("fifo")
@dataclass
class FIFO(Method):
    """FIFO-Diffusion with latent partitioning and lookahead denoising (defaults: the official VideoCrafter2 script).

    The window is the backbone's native length in latent frames (16 for VideoCrafter2/LaVie/AnimateDiff); the queue
    holds ``window · num_partitions`` noise levels, which is also the number of DDIM steps (the pipeline's
    ``num_inference_steps`` is not used). The queue starts from a short direct sample of one window with the same
    prompt and seed (the official code; its on-disk cache keyed by prompt alone is not reproduced).
    """

    levels = ("sampling loop",)

    num_partitions: int = 4
    """n: the queue holds window·n noise levels = DDIM steps (official 4: 64 steps for 16 frames)."""
    lookahead: bool = True
    """Lookahead denoising: 2n half-overlapping windows after a prefix of window/2 clean frames (doubles compute)."""
    eta: float = 1.0
    """DDIM η of the per-frame steps and the base video (official 1.0)."""

    def validate(self) -> None:
        if not isinstance(self.num_partitions, int) or self.num_partitions < 1:
            raise ValueError(f"method.num_partitions must be a positive integer, got {self.num_partitions}")
        if not (0.0 <= float(self.eta) <= 1.0):
            raise ValueError(f"method.eta must be in [0, 1], got {self.eta}")

    def check_frames(self, num_frames: int) -> None:
        """Any length: FIFO emits one frame per iteration."""

    def check_model(self, model_cfg: Any) -> None:
        require_capability("fifo", model_cfg, "per_frame_timesteps", "feeds one timestep per frame to the denoiser")
        require_capability("fifo", model_cfg, "single_step_sampler",
                           "steps every frame with DDIM at its own noise level (a multistep solver such as "
                           "UniPC cannot be stepped per frame)")

    def sampling_loop(self, native_frames: int) -> FifoLoop:
        if self.lookahead and native_frames % 2:
            raise ValueError(f"method.lookahead=true needs an even native length, the backbone has {native_frames} "
                             f"latent frames; use method.lookahead=false")
        return FifoLoop(native_frames, self.num_partitions, self.lookahead, float(self.eta))
