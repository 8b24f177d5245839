"""motion_smoothness / dynamic_degree through VBench's vendored AMT-S and RAFT (optional extra; slow)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from eval_synthetic import smooth_frames

from eval.base import EvalContext, get_dimension
from eval.video import Video

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vbench") is None,
                       reason="optional extra: pip install vbench==0.1.5 --no-deps && pip install omegaconf scipy"),
]


def test_amt_and_raft_architectures_run_through_the_scoring_code():
    ctx = EvalContext(random_init=True, pair_batch=2)
    motion = get_dimension("motion_smoothness")(ctx)
    dynamic = get_dimension("dynamic_degree")(ctx)
    assert sum(p.numel() for p in motion.model.parameters()) == 2_990_543  # AMT-S
    assert sum(p.numel() for p in dynamic.model.parameters()) == 5_257_536  # RAFT (large)
    video = Video(None, smooth_frames(t=5, h=128, w=160), fps=8.0)  # < 128 px: NaN (1-px correlation level)
    value = motion.score(video).value
    assert 0.0 <= value <= 1.0 and np.isfinite(value)
    assert isinstance(dynamic.score(video).value, bool)
