"""Scorers record the errors of a bad video (BadVideoError) and let everything else (OOM, bugs) propagate."""

from __future__ import annotations

import numpy as np
import pytest
from eval_synthetic import smooth_frames

from eval.scorer import Evaluator, vbench_json
from eval.video import BadVideoError, VideoDecodeError
from freelong.video_io import write_video


@pytest.fixture()
def evaluator():
    return Evaluator(["temporal_flickering", "subject_consistency"], device="cpu", random_init=True)


@pytest.mark.parametrize("error", [RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError(),
                                   TypeError("unsupported operand"), KeyError("weight")])
def test_out_of_memory_and_programming_errors_propagate(evaluator, tmp_path, error, monkeypatch):
    write_video(tmp_path / "v.mp4", smooth_frames(t=4), fps=8)

    def boom(video):
        raise error

    monkeypatch.setattr(evaluator.scorers["subject_consistency"], "score", boom)
    with pytest.raises(type(error)):
        evaluator.score(tmp_path / "v.mp4")
    with pytest.raises(type(error)):
        evaluator.score_many([tmp_path / "v.mp4"], progress=False)


def test_corrupt_file_and_unsuitable_video_are_recorded(evaluator, tmp_path):
    write_video(tmp_path / "good.mp4", smooth_frames(t=4), fps=8)
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 4)
    write_video(tmp_path / "one.mp4", smooth_frames(t=1), fps=8)  # one frame: no frame pairs
    scores = evaluator.score_many([tmp_path / "good.mp4", tmp_path / "corrupt.mp4", tmp_path / "one.mp4"],
                                  progress=False)
    good, corrupt, one = scores
    assert set(good.results) == {"temporal_flickering", "subject_consistency"} and not good.errors
    assert corrupt.error.startswith("VideoDecodeError") and "corrupt.mp4" in corrupt.error and not corrupt.results
    assert set(one.errors) == {"temporal_flickering", "subject_consistency"}
    assert all(e.startswith("BadVideoError") for e in one.errors.values())
    layout = vbench_json(evaluator.dims, scores)
    assert [e["video_results"] is None for e in layout["temporal_flickering"][1]] == [False, True, True]
    assert issubclass(VideoDecodeError, BadVideoError)


def test_frames_of_the_wrong_shape_or_type_are_a_bad_video(evaluator, tmp_path):
    for frames in (np.zeros((4, 8, 8), np.uint8), np.zeros((4, 8, 8, 3), np.float32), np.zeros((0, 8, 8, 3), np.uint8)):
        s = evaluator.score(tmp_path / "x.mp4", frames=frames)
        assert s.error.startswith("BadVideoError") and "expected uint8 frames" in s.error
