"""Gen-L-Video co-denoising: each frame's x_{t-1} is the weighted mean of the x_{t-1} of the windows that hold it
(checked against a per-frame reference written here from that definition), every frame is covered, and at the
native length it is direct sampling."""

from __future__ import annotations

import pytest
import torch

from freelong import LongVideoPipeline, get_method
from freelong.sampling import LoopContext, WindowLoop, covering_windows


def reference(bb, cond, uncond, latents, steps, window, stride, weights, guidance):
    """For every step: each view's x_{t-1} from its own UNet call and scheduler step; then frame by frame the
    weighted mean over the views that contain the frame."""
    sched = bb.make_scheduler("ddim")
    sched.set_timesteps(steps)
    frames = latents.shape[2]
    starts = list(range(0, frames - window + 1, stride))
    if starts[-1] != frames - window:
        starts.append(frames - window)
    for t in sched.timesteps:
        views = {}
        for s in starts:
            x = latents[:, :, s : s + window]
            eps = bb.predict_noise(x, t, cond, uncond, guidance)
            views[s] = sched.step(eps, t, x).prev_sample
        new = torch.empty_like(latents)
        for j in range(frames):
            num, den = 0.0, 0.0
            for s, v in views.items():
                if s <= j < s + window:
                    num = num + float(weights[j - s]) * v[:, :, j - s]
                    den += float(weights[j - s])
            new[:, :, j] = num / den
        latents = new
    return latents


def test_views_cover_every_frame():
    assert covering_windows(22, 16, 4) == [(0, 16), (4, 20), (6, 22)]  # official get_views stops at (4, 20)
    assert covering_windows(24, 16, 4) == [(0, 16), (4, 20), (8, 24)]
    assert covering_windows(16, 16, 4) == [(0, 16)]
    with pytest.raises(ValueError, match="method.window=16 is larger"):
        covering_windows(8, 16, 4)


@torch.no_grad()
@pytest.mark.parametrize("weighting", ["uniform", "pyramid"])
def test_merge_equals_its_definition(lavie_tiny, weighting, one_thread):
    bb = lavie_tiny
    method = get_method("gen_l_video", window=4, stride=3, weighting=weighting)
    latents = torch.randn(1, 4, 9, 4, 4, generator=torch.Generator().manual_seed(0))  # views 0, 3, 5: a tail view
    ours = LongVideoPipeline(bb, method, progress=False)("a cat", num_frames=9, height=32, width=32,
                                                        num_inference_steps=2, latents=latents, output_type="latent")
    from baselines.gen_l_video import merge_weights

    cond, uncond = bb.encode_text(["a cat"]), bb.encode_text([""])
    ref = reference(bb, cond, uncond, latents, 2, 4, 3, merge_weights(4, weighting), bb.sampling["guidance_scale"])
    assert ((ours - ref).norm() / ref.norm()).item() < 1e-5
    assert ours[:, :, -2:].abs().min() > 0  # the tail frames are denoised, not zeroed


@torch.no_grad()
def test_native_length_is_direct(lavie_tiny, one_thread):
    kw = dict(num_frames=8, height=32, width=32, num_inference_steps=2, seed=1, output_type="latent")
    a = LongVideoPipeline(lavie_tiny, get_method("gen_l_video", window=8, stride=4), progress=False)("a", **kw)
    b = LongVideoPipeline(lavie_tiny, "direct", progress=False)("a", **kw)
    assert torch.equal(a, b)


def test_one_prompt_per_window_and_frame_indices():
    seen = []

    def denoise(x, t, **kw):
        seen.append((kw["frame_index"].tolist(), kw["cond_index"].tolist()))
        return torch.zeros_like(x)

    from diffusers import DDIMScheduler

    ctx = LoopContext(denoise=denoise, make_scheduler=DDIMScheduler, num_inference_steps=1)
    WindowLoop(4, 2).run(ctx, torch.zeros(1, 4, 8, 2, 2))
    assert [s[0] for s in seen] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    assert [s[1] for s in seen] == [[1] * 4, [3] * 4, [5] * 4]  # each window: its centre frame's prompt
    seen.clear()
    WindowLoop(4, 2, prompt_per_window=False).run(ctx, torch.zeros(1, 4, 8, 2, 2))
    assert [s[1] for s in seen] == [s[0] for s in seen]


def test_bad_input():
    with pytest.raises(ValueError, match="method.stride"):
        get_method("gen_l_video", window=4, stride=5)
    with pytest.raises(ValueError, match="method.weighting"):
        get_method("gen_l_video", weighting="gauss")
    with pytest.raises(ValueError, match="method.window=16 is larger than num_frames=8"):
        get_method("gen_l_video").check_frames(8)
    with pytest.raises(ValueError, match="multistep solver such as UniPC"):
        get_method("gen_l_video").check_model({"family": "wan", "name": "wan"})
    from diffusers import UniPCMultistepScheduler

    from freelong.sampling import check_single_step

    with pytest.raises(ValueError, match="UniPCMultistepScheduler is a multistep solver"):
        check_single_step(UniPCMultistepScheduler(), "method gen_l_video")


@torch.no_grad()
def test_multi_prompt_windows_on_a_one_context_backbone(one_thread):
    """ModelScope takes one text context per video; with one prompt per window each window gets one. With
    stride == window the windows are independent: each equals a one-prompt run of its own prompt."""
    from freelong import load_backbone

    bb = load_backbone("modelscope_tiny")
    method = get_method("gen_l_video", window=4, stride=4)
    latents = torch.randn(1, 4, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    kw = dict(num_frames=8, height=32, width=32, num_inference_steps=2, latents=latents, output_type="latent")
    pipe = LongVideoPipeline(bb, method, progress=False)
    segments = {"segments": [{"prompt": "a cat", "frames": 4}, {"prompt": "a dog", "frames": 4}],
                "transition_frames": 0}
    multi = pipe(segments, **kw)
    cat, dog = pipe("a cat", **kw), pipe("a dog", **kw)
    assert torch.allclose(multi[:, :, :4], cat[:, :, :4], atol=1e-5)
    assert torch.allclose(multi[:, :, 4:], dog[:, :, 4:], atol=1e-5)
    assert not torch.allclose(cat, dog, atol=1e-3)
