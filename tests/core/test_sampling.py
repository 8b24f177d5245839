"""The sampling-loop level (freelong/sampling.py): processors learn a window's absolute frames and per-frame
timesteps, rounds run the documented step counts, and multistep solvers are refused."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from freelong import LongVideoPipeline, load_backbone
from freelong.attention.processor import TemporalAttnProcessor
from freelong.methods import Method
from freelong.sampling import LoopContext, RoundsLoop, StandardLoop, check_single_step


class Recorder(TemporalAttnProcessor):
    def __init__(self):
        self.seen = []

    def __call__(self, q, k, v, *, bias, ctx):
        self.seen.append((ctx.frame_index, ctx.timesteps, ctx.num_frames(q)))
        return super().__call__(q, k, v, bias=bias, ctx=ctx)


@dataclasses.dataclass
class Recording(Method):
    proc: object = None

    def processor(self):
        return self.proc


@pytest.mark.parametrize("name", ["lavie_tiny", "animatediff_tiny", "wan_tiny"])
@torch.no_grad()
def test_processors_see_window_frames_and_per_frame_timesteps(name, one_thread):
    bb = load_backbone(name)
    rec = Recorder()
    pipe = LongVideoPipeline(bb, "direct", progress=False)
    denoise = pipe.denoiser(bb.encode_text(["a"]), None, 1.0)
    x = torch.randn(1, bb.latent_channels, 3, 4, 4)
    with bb.attach(Recording(proc=rec)):
        denoise(x, torch.tensor([900, 500, 100]), frame_index=torch.tensor([7, 8, 9]))
    assert rec.seen
    for frame_index, timesteps, frames in rec.seen:
        assert frames == 3 and frame_index.tolist() == [7, 8, 9] and timesteps.tolist() == [900, 500, 100]


def test_rounds_run_the_documented_steps():
    calls = []

    def denoise(x, t, **kw):
        calls.append(kw["num_steps"])
        return torch.zeros_like(x)

    from diffusers import DDIMScheduler

    ctx = LoopContext(denoise=denoise, make_scheduler=DDIMScheduler, num_inference_steps=20,
                      generator=torch.Generator().manual_seed(0))
    lowpass = lambda shape: torch.ones(shape)  # noqa: E731  (all low band: x_T = the re-noised x0)
    RoundsLoop(StandardLoop(), 3, lowpass, fast_sampling=True).run(ctx, torch.randn(1, 4, 4, 2, 2))
    assert calls == [6] * 6 + [13] * 13 + [20] * 20
    calls.clear()
    RoundsLoop(StandardLoop(), 2, lowpass).run(ctx, torch.randn(1, 4, 4, 2, 2))
    assert calls == [20] * 40


def test_multistep_solvers_are_refused_with_one_line():
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    check_single_step(DDIMScheduler(), "x")
    check_single_step(DDPMScheduler(), "x")
    for cls in (UniPCMultistepScheduler, DPMSolverMultistepScheduler):
        with pytest.raises(ValueError, match=f"{cls.__name__} is a multistep solver") as err:
            check_single_step(cls(), "method fifo")
        assert "\n" not in str(err.value)
