"""dynamic_degree: is the video moving? RAFT optical flow on ~8 fps frames (VBench ``dynamic_degree``).

VBench's procedure (``vbench/dynamic_degree.py``), for any flow estimator:

1. keep every ``interval = max(1, round(fps / 8))``-th frame (Python rounding);
2. ``thres = 6 · min(H, W) / 256``, ``count_num = round(4 · n / 16)`` for n kept frames;
3. per consecutive pair: replicate-pad to a multiple of 8 (split symmetrically), flow at the padded size,
   score = mean of the top ``int(0.05 · H' · W')`` flow magnitudes;
4. the video is dynamic (True) once ``count_num`` pair scores exceed ``thres`` (a single pair suffices
   when ``count_num`` is 0; one frame is never dynamic). Overall: the fraction of dynamic videos.

RAFT comes from VBench's vendored code (optional extra), 20 iterations, fp32, inputs 0..255.
VBench only reads ``.mp4`` (and image folders) for this dimension; GIFs are accepted here, with the
frame rate from their frame durations.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .base import Dimension, DimResult, register_dimension
from .models import load_raft, vbench_third_party
from .motion_smoothness import pad_amounts
from .video import Video

FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def frame_interval(fps: float | None) -> int:
    return max(1, round(fps / 8)) if fps else 1


def top_flow_magnitude(flow: np.ndarray) -> float:
    """Mean of the largest 5 % flow magnitudes of one flow field ``(2, H, W)`` (float32, as VBench)."""
    u, v = flow[0], flow[1]
    rad = np.sqrt(np.square(u) + np.square(v))
    h, w = rad.shape
    cut = int(h * w * 0.05)
    return np.mean(np.abs(np.sort(-rad.flatten()))[:cut]).item()


def dynamic_degree_result(frames: np.ndarray, fps: float | None, flow_fn: FlowFn,
                          device: torch.device | str = "cpu", pair_batch: int = 1) -> tuple[bool, list[float]]:
    """(dynamic?, per-pair scores) for uint8 RGB frames ``(T, H, W, 3)`` with ``flow_fn(img1, img2) -> (b, 2, H', W')``.

    ``flow_fn`` receives padded float batches with values 0..255.
    """
    sampled = frames[:: frame_interval(fps)]
    h, w = frames.shape[1:3]
    thres = 6.0 * (min(h, w) / 256.0)
    count_num = round(4 * (sampled.shape[0] / 16.0))
    pads = pad_amounts(h, w, 8)
    imgs = torch.from_numpy(np.ascontiguousarray(sampled)).to(device).permute(0, 3, 1, 2).float()
    imgs = F.pad(imgs, pads, mode="replicate")
    scores: list[float] = []
    for start in range(0, imgs.shape[0] - 1, pair_batch):
        stop = min(start + pair_batch, imgs.shape[0] - 1)
        with torch.no_grad():
            flow = flow_fn(imgs[start:stop], imgs[start + 1 : stop + 1]).float().cpu().numpy()
        scores.extend(top_flow_magnitude(f) for f in flow)
    moving = bool(scores) and sum(s > thres for s in scores) >= count_num
    return moving, scores


@register_dimension
class DynamicDegree(Dimension):
    name = "dynamic_degree"
    label = "Dynamic"
    weights = ("raft_things",)
    extras = ("vbench (pip install vbench==0.1.5 --no-deps) + scipy, for VBench's vendored RAFT code",)

    @classmethod
    def check_available(cls) -> None:
        vbench_third_party("RAFT.core.raft")

    def setup(self) -> None:
        self.model = load_raft(self.weight_path("raft_things"), self.ctx.random_init, self.ctx.seed).to(self.ctx.device)

    def flow(self, img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
        return self.model(img1, img2, iters=20, test_mode=True)[1]

    def score(self, video: Video) -> DimResult:
        moving, _ = dynamic_degree_result(video.frames, video.fps, self.flow, self.ctx.device, self.ctx.pair_batch)
        return DimResult(moving)
