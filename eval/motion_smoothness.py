"""motion_smoothness: how well a frame interpolator (AMT-S) predicts each odd frame from its even neighbours.

VBench's procedure (``vbench/motion_smoothness.py``), for any interpolator:

1. inputs = the even-index frames 0, 2, 4, … as float ``/255`` (at least two, i.e. N >= 3);
2. replicate-pad to a multiple of 16 (floor half left/top), interpolate each consecutive pair at t = 0.5;
3. unpad, convert to uint8 by ``(x·255).clip(0, 255)`` with *truncation*;
4. per pair the mean of ``|odd frame 2k+1 − prediction k|`` over all H·W·3 values; average over pairs;
5. value = ``(255 − that average) / 255``; overall = mean over videos.

AMT-S comes from VBench's vendored code (optional extra, CC BY-NC 4.0 weights); VBench's CUDA
down-scaling branch never triggers (it compares a ``torch.device`` with a string), so the scale is 1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .base import Dimension, DimResult, register_dimension
from .models import load_amt, vbench_third_party
from .video import BadVideoError, Video

Interpolator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pad_amounts(height: int, width: int, divisor: int) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` replicate padding up to a multiple of ``divisor``, smaller half first."""
    ph = (((height // divisor) + 1) * divisor - height) % divisor
    pw = (((width // divisor) + 1) * divisor - width) % divisor
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def motion_smoothness_score(frames: np.ndarray, interpolate: Interpolator, device: torch.device | str = "cpu",
                            pair_batch: int = 1) -> float:
    """Motion smoothness of uint8 RGB frames ``(T, H, W, 3)`` with ``interpolate(img0, img1) -> middle``.

    ``interpolate`` receives padded float batches ``(b, 3, H', W')`` in [0, 1] and returns the predicted
    middle frames of the same shape.
    """
    even = frames[0::2]
    if even.shape[0] < 2:
        raise BadVideoError(f"motion_smoothness needs at least 3 frames, got {frames.shape[0]}")
    h, w = frames.shape[1:3]
    left, right, top, bottom = pad_amounts(h, w, 16)
    inputs = torch.from_numpy(np.ascontiguousarray(even)).to(device).permute(0, 3, 1, 2).float() / 255.0
    inputs = F.pad(inputs, (left, right, top, bottom), mode="replicate")
    odd = frames[1::2]
    diffs: list[float] = []
    for start in range(0, inputs.shape[0] - 1, pair_batch):
        stop = min(start + pair_batch, inputs.shape[0] - 1)
        with torch.no_grad():
            pred = interpolate(inputs[start:stop], inputs[start + 1 : stop + 1])
        pred = pred[..., top : pred.shape[-2] - bottom, left : pred.shape[-1] - right]
        pred_u8 = (pred * 255.0).permute(0, 2, 3, 1).float().cpu().numpy().clip(0, 255).astype(np.uint8)
        for k in range(pred_u8.shape[0]):
            ref = odd[start + k]
            diffs.append(float(np.mean(np.abs(ref.astype(np.int16) - pred_u8[k].astype(np.int16)).astype(np.uint8))))
    vfi = np.mean(np.array(diffs))
    return float((255.0 - vfi) / 255.0)


@register_dimension
class MotionSmoothness(Dimension):
    name = "motion_smoothness"
    label = "Motion"
    weights = ("amt_s",)
    extras = ("vbench (pip install vbench==0.1.5 --no-deps) + omegaconf, for VBench's vendored AMT code",)

    @classmethod
    def check_available(cls) -> None:
        vbench_third_party("amt.networks.AMT-S")

    def setup(self) -> None:
        self.model = load_amt(self.weight_path("amt_s"), self.ctx.random_init, self.ctx.seed).to(self.ctx.device)

    def interpolate(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        embt = torch.full((img0.shape[0], 1, 1, 1), 0.5, device=img0.device)
        return self.model(img0, img1, embt, scale_factor=1.0, eval=True)["imgt_pred"]

    def score(self, video: Video) -> DimResult:
        return DimResult(motion_smoothness_score(video.frames, self.interpolate, self.ctx.device, self.ctx.pair_batch))
