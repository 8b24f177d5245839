"""Decoding: VBench's frames for mp4 and gif, the Pillow GIF loading-strategy trap, clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from eval_synthetic import smooth_frames, transparent_gif
from PIL import GifImagePlugin, Image, ImageSequence

from eval.video import VideoDecodeError, find_videos, load_video
from freelong.video_io import write_video


def _naive_pillow_read(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])


def test_gif_decodes_with_default_strategy_even_after_imageio_changed_it(tmp_path):
    path = tmp_path / "t.gif"
    truth = transparent_gif(path)
    previous = GifImagePlugin.LOADING_STRATEGY
    try:
        GifImagePlugin.LOADING_STRATEGY = GifImagePlugin.LoadingStrategy.RGB_AFTER_DIFFERENT_PALETTE_ONLY
        # The trap is real for this file: a plain read under imageio's strategy gets frame 1 wrong ...
        assert not np.array_equal(_naive_pillow_read(path)[1], truth[1])
        video = load_video(path)
        # ... the eval decoder gets VBench's (Pillow default) frames and leaves the global setting alone.
        np.testing.assert_array_equal(video.frames, truth)
        assert GifImagePlugin.LOADING_STRATEGY == GifImagePlugin.LoadingStrategy.RGB_AFTER_DIFFERENT_PALETTE_ONLY
    finally:
        GifImagePlugin.LOADING_STRATEGY = previous
    assert video.frames.dtype == np.uint8 and video.frames.shape == (2, 16, 24, 3)
    assert video.fps == pytest.approx(1000 / 120)


def test_gif_written_by_the_project_roundtrips(tmp_path):
    frames = (np.arange(4)[:, None, None, None] * 60 + np.zeros((4, 8, 12, 3))).astype(np.uint8)
    write_video(tmp_path / "a.gif", frames, fps=8)
    video = load_video(tmp_path / "a.gif")
    np.testing.assert_array_equal(video.frames, frames)  # 4 grey levels: exact in a GIF palette


def test_mp4_all_frames_native_size_and_fps(tmp_path):
    frames = smooth_frames(t=9, h=40, w=56)
    write_video(tmp_path / "a.mp4", frames, fps=12)
    video = load_video(tmp_path / "a.mp4")
    assert video.frames.shape == frames.shape and video.frames.dtype == np.uint8
    assert video.fps == pytest.approx(12)
    # lossy H.264, but the same frames in the same order
    err = np.abs(video.frames.astype(int) - frames.astype(int)).mean(axis=(1, 2, 3))
    assert err.max() < 4.0


def test_decode_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video" * 10)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        load_video(bad)
    with pytest.raises(VideoDecodeError, match="no such file"):
        load_video(tmp_path / "missing.gif")
    (tmp_path / "clip.avi").write_bytes(b"x")
    with pytest.raises(VideoDecodeError, match="unsupported"):
        load_video(tmp_path / "clip.avi")
    (tmp_path / "fake.gif").write_bytes(io.BytesIO(b"GIF89a garbage").getvalue())
    with pytest.raises(VideoDecodeError, match="fake.gif"):
        load_video(tmp_path / "fake.gif")


def test_find_videos_recurses_and_skips_hidden(tmp_path):
    (tmp_path / "run" / "videos").mkdir(parents=True)
    for name in ("run/videos/b.mp4", "run/videos/a.GIF", "run/videos/.a.tmp.mp4", "run/notes.txt", "c.mp4"):
        (tmp_path / name).write_bytes(b"")
    found = find_videos([tmp_path / "run", tmp_path / "c.mp4", tmp_path / "c.mp4"])
    assert found == [tmp_path / "run/videos/a.GIF", tmp_path / "run/videos/b.mp4", tmp_path / "c.mp4"]
