"""VBench's DINO / CLIP / MUSIQ preprocessing against hand-computed tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    DINO_MEAN,
    DINO_STD,
    center_crop,
    clip_transform,
    dino_transform,
    imaging_transform,
    resize,
    short_side_size,
    to_tensor,
)


def test_short_side_sizes_match_vbench_examples():
    assert short_side_size(320, 512, 224) == (224, 358)
    assert short_side_size(576, 1024, 224) == (224, 398)
    assert short_side_size(720, 1280, 224) == (224, 398)
    assert short_side_size(480, 740, 224) == (224, 345)
    assert short_side_size(512, 320, 224) == (358, 224)
    assert short_side_size(100, 100, 224) == (224, 224)


def test_to_tensor_is_float_0_255_channels_first():
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 3), dtype=np.uint8)
    t = to_tensor(frames)
    assert t.dtype == torch.float32 and t.shape == (2, 3, 3, 5)
    assert torch.equal(t[1, 2], torch.from_numpy(frames[1, :, :, 2]).float())


def test_dino_transform_halving_is_2x2_block_mean_then_imagenet_normalisation():
    # 448x672 -> short side 224 -> 224x336: bilinear with align_corners=False at scale 1/2 samples the
    # centre of each 2x2 block, i.e. the block mean. No crop for DINO.
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 3, 448, 672)).astype(np.float32))
    out = dino_transform(x)
    assert out.shape == (1, 3, 224, 336)
    block = x.reshape(1, 3, 224, 2, 336, 2).mean(dim=(3, 5))
    mean = torch.tensor(DINO_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(DINO_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (block / 255 - mean) / std, rtol=0, atol=1e-5)


def test_clip_transform_constant_frame_and_crop_offsets():
    c = torch.tensor([10.0, 128.0, 250.0]).view(1, 3, 1, 1)
    x = c.expand(1, 3, 320, 512).clone()
    out = clip_transform(x)
    assert out.shape == (1, 3, 224, 224)
    expected = (c / 255 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected.expand_as(out), rtol=0, atol=1e-5)
    # torchvision CenterCrop: top = int(round((h - 224) / 2)), half-to-even: (335 - 224) / 2 = 55.5 -> 56
    ramp = torch.arange(335.0).view(1, 1, 335, 1).expand(1, 1, 335, 230)
    assert center_crop(ramp, 224)[0, 0, 0, 0].item() == 56.0
    assert center_crop(torch.arange(226.0).view(1, 1, 1, 226).expand(1, 1, 224, 226), 224)[0, 0, 0, 0].item() == 1.0


def test_clip_bicubic_overshoot_is_not_clamped():
    # A hard edge resized bicubically overshoots beyond 0..255; VBench works on floats and keeps it.
    x = torch.zeros(1, 3, 300, 500)
    x[..., :, 250:] = 255.0
    y = resize(x, short_side_size(300, 500, 224), "bicubic")
    assert y.max().item() > 255.0 and y.min().item() < 0.0


def test_imaging_longer_mode_sizes():
    for (h, w), expected in {(320, 512): (320, 512), (720, 1280): (288, 512), (480, 740): (332, 512),
                             (1280, 720): (512, 288)}.items():
        out = imaging_transform(torch.full((1, 3, h, w), 255.0), "longer")
        assert tuple(out.shape[-2:]) == expected
        assert out.max().item() == pytest.approx(1.0)
    assert tuple(imaging_transform(torch.zeros(1, 3, 720, 1280), "shorter_centercrop").shape[-2:]) == (512, 512)
    with pytest.raises(ValueError, match="imaging preprocessing mode"):
        imaging_transform(torch.zeros(1, 3, 8, 8), "short")
