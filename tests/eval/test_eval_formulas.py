"""Each dimension's formula against an independent computation from VBench's definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from eval_synthetic import random_frames

from eval.base import DimResult, get_dimension, parse_dims
from eval.consistency import consistency_result, pair_terms, pair_weighted_overall
from eval.dynamic_degree import dynamic_degree_result, frame_interval, top_flow_magnitude
from eval.motion_smoothness import motion_smoothness_score, pad_amounts
from eval.temporal_flickering import flicker_score


# ---------------------------------------------------------------------------------- temporal flickering
def test_flicker_static_video_is_exactly_one():
    frame = random_frames(1, 30, 50)[0]
    assert flicker_score(np.repeat(frame[None], 7, axis=0)) == 1.0


def test_flicker_known_frame_differences():
    # constant frames 10, 30, 25, 25: |diffs| = 20, 5, 0 -> mean 25/3
    frames = np.stack([np.full((8, 12, 3), v, np.uint8) for v in (10, 30, 25, 25)])
    assert flicker_score(frames) == pytest.approx((255 - 25 / 3) / 255, abs=1e-7)


def test_flicker_matches_definition_on_random_frames():
    frames = random_frames(9, 37, 61, seed=3)
    f = frames.astype(np.int64)
    maes = [np.abs(f[i] - f[i + 1]).sum() / f[i].size for i in range(len(f) - 1)]  # exact integer sums
    assert flicker_score(frames) == pytest.approx((255 - np.mean(maes)) / 255, abs=1e-7)
    with pytest.raises(ValueError, match="at least 2 frames"):
        flicker_score(frames[:1])


# ---------------------------------------------------------------------------------- consistency
def _reference_terms(feats: np.ndarray) -> list[float]:
    f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    return [(max(0.0, float(f[i - 1] @ f[i])) + max(0.0, float(f[0] @ f[i]))) / 2 for i in range(1, len(f))]


def test_pair_terms_hand_values_with_clipping():
    feats = torch.tensor([[1.0, 0.0], [-2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    # i=1: cos(prev)=-1 -> 0, cos(first)=-1 -> 0; i=2: 0, 0; i=3: cos([0,1],[1,1])=cos([1,0],[1,1])=1/sqrt2
    expected = [0.0, 0.0, 1 / math.sqrt(2)]
    assert pair_terms(feats) == pytest.approx(expected, abs=1e-6)


def test_pair_terms_match_reference_and_identical_frames_give_one():
    feats = torch.randn(12, 16, generator=torch.Generator().manual_seed(0))
    assert pair_terms(feats) == pytest.approx(_reference_terms(feats.numpy().astype(np.float64)), abs=1e-6)
    same = feats[:1].repeat(5, 1)
    assert consistency_result(pair_terms(same)).value == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 frames"):
        pair_terms(feats[:1])


def test_consistency_overall_is_weighted_by_frame_pairs():
    a = consistency_result([1.0, 1.0, 1.0, 1.0])  # 5-frame video, value 1
    b = consistency_result([0.5])  # 2-frame video, value 0.5
    assert (a.value, b.value) == (1.0, 0.5)
    assert a.extra == {"video_sim": 4.0, "cnt_per_video": 4}
    assert pair_weighted_overall([a, b]) == pytest.approx(4.5 / 5)  # not the mean of means (0.75)
    assert get_dimension("subject_consistency").overall([a, b]) == pytest.approx(0.9)
    assert get_dimension("temporal_flickering").overall([DimResult(1.0), DimResult(0.5)]) == 0.75


# ---------------------------------------------------------------------------------- motion smoothness
def _reference_motion(frames: np.ndarray) -> float:
    """VBench's procedure with a midpoint interpolator, written directly in numpy float32 (no padding needed)."""
    even = frames[0::2].astype(np.float32) / np.float32(255.0)
    diffs = []
    for k in range(len(even) - 1):
        pred = (even[k] + even[k + 1]) / np.float32(2.0)
        pred_u8 = np.clip(pred * np.float32(255.0), 0, 255).astype(np.uint8)  # truncation, as VBench
        diff = np.abs(frames[2 * k + 1].astype(np.int16) - pred_u8.astype(np.int16))
        diffs.append(diff.mean())
    return (255.0 - np.mean(diffs)) / 255.0


@pytest.mark.parametrize("t", [7, 8])
def test_motion_smoothness_matches_reference_with_padding(t):
    frames = random_frames(t, 20, 28, seed=t)  # 20x28: padded to 32x32 inside, unpadded after
    seen_shapes = []

    def midpoint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        seen_shapes.append(tuple(a.shape[-2:]))
        return (a + b) / 2

    score = motion_smoothness_score(frames, midpoint, pair_batch=2)
    assert score == pytest.approx(_reference_motion(frames), abs=1e-12)
    assert set(seen_shapes) == {(32, 32)}
    assert pad_amounts(20, 28, 16) == (2, 2, 6, 6)


def test_motion_smoothness_perfect_interpolator_and_too_short():
    ramp = np.stack([np.full((16, 16, 3), 4 * i, np.uint8) for i in range(9)])  # linear in time
    # a midpoint of two even frames equals the odd frame between them, up to VBench's truncation
    assert motion_smoothness_score(ramp, lambda a, b: (a + b) / 2) > 254 / 255
    with pytest.raises(ValueError, match="at least 3 frames"):
        motion_smoothness_score(ramp[:2], lambda a, b: a)


# ---------------------------------------------------------------------------------- dynamic degree
def test_frame_interval_and_top_flow():
    assert [frame_interval(f) for f in (8, 16, 24, 25, 30, 12, 20, None)] == [1, 2, 3, 3, 4, 2, 2, 1]
    mags = np.arange(1, 401, dtype=np.float32).reshape(20, 20)  # magnitudes 1..400; top 5% = 381..400
    flow = np.stack([mags * 0.6, mags * 0.8])  # |(0.6m, 0.8m)| = m
    assert top_flow_magnitude(flow) == pytest.approx(np.mean(np.arange(381, 401)), rel=1e-6)


def test_dynamic_degree_thresholds_and_sampling():
    frames = np.zeros((24, 60, 100, 3), np.uint8)  # thres = 6 * 60 / 256 = 1.40625
    calls = []

    def flow_of(magnitudes):
        def fn(a, b):
            calls.append(tuple(a.shape))
            m = magnitudes[len(calls) - 1]
            return torch.stack([torch.full(a.shape[-2:], 0.6 * m), torch.full(a.shape[-2:], 0.8 * m)])[None]
        return fn

    # fps 24 -> every 3rd frame: 8 kept, 7 pairs, count_num = round(4 * 8 / 16) = 2
    moving, scores = dynamic_degree_result(frames, 24, flow_of([0, 2, 0, 0, 0, 0, 0]))
    assert len(scores) == 7 and not moving
    assert calls[0] == (1, 3, 64, 104)  # padded to multiples of 8
    calls.clear()
    moving, scores = dynamic_degree_result(frames, 24, flow_of([0, 2, 0, 0, 2, 0, 0]))
    assert moving and scores[1] == pytest.approx(2.0)
    calls.clear()
    # 2 frames: count_num = round(0.5) = 0 -> any single pair makes it dynamic; 1 frame is never dynamic
    assert dynamic_degree_result(frames[:2], 8, flow_of([0.0]))[0] is True
    assert dynamic_degree_result(frames[:1], 8, flow_of([]))[0] is False


def test_dimension_names_groups_and_aliases():
    assert parse_dims("fast") == ["temporal_flickering", "subject_consistency", "background_consistency",
                                  "aesthetic_quality", "imaging_quality"]
    assert parse_dims("sub,back,sub") == ["subject_consistency", "background_consistency"]
    assert len(parse_dims(["vbench"])) == 7
    with pytest.raises(ValueError, match="unknown VBench dimension 'colour'"):
        parse_dims("colour")
