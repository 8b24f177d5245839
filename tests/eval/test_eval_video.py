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


def test_find_videos_skips_the_copies_of_an_html_report(tmp_path):
    """A run dir holding its report with the videos copied in (the wandb logger's) gives each video once; a
    folder that merely has an index.html is searched as any other."""
    import json

    from analysis.report import build_report
    from freelong.video_io import atomic_write_text, write_video

    run = tmp_path / "run"
    write_video(run / "videos" / "v.mp4", np.zeros((4, 16, 16, 3), np.uint8), fps=8)
    rec = {"video": "videos/v.mp4", "prompt": "p", "seed": 0, "method": "direct", "model": "m", "random_init": False}
    atomic_write_text(run / "results.jsonl", json.dumps(rec) + "\n")
    build_report([run], run / "report", copy=True)
    assert len(list((run / "report" / "videos").glob("*.mp4"))) == 1  # the copy is there
    assert find_videos([run]) == [run / "videos" / "v.mp4"]
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<html></html>")
    (tmp_path / "site" / "w.mp4").write_bytes(b"")
    assert find_videos([tmp_path]) == [run / "videos" / "v.mp4", tmp_path / "site" / "w.mp4"]


# ---- mp4 files whose stored frames are not one-per-tick in decode order (VBench: decord / cv2 semantics) ----
def _ffmpeg_encode(path, frames, fps, args):
    """Encode uint8 RGB ``frames`` with the ffmpeg binary of imageio-ffmpeg (raw frames on stdin)."""
    import subprocess

    import imageio_ffmpeg

    t, h, w, _ = frames.shape
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", *args, str(path)]
    subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True)


def _stored_frames(path):
    """(presentation time, picture type) of every stored frame, from ffmpeg's showinfo filter."""
    import re
    import subprocess

    import imageio_ffmpeg

    p = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), "-vf", "showinfo",
                        "-fps_mode", "passthrough", "-f", "null", "-"], capture_output=True, text=True, check=True)
    return [(float(t), k) for t, k in re.findall(r"pts_time:(\S+).*?type:(\w)", p.stderr)]


def test_variable_frame_rate_mp4_gives_every_stored_frame_once(tmp_path):
    """Irregular timestamps (gaps of 3 ticks after frame 5): no frame duplicated to fill the gaps."""
    import imageio_ffmpeg

    frames = np.random.default_rng(3).integers(0, 256, (12, 32, 48, 3), dtype=np.uint8)
    path = tmp_path / "vfr.mp4"
    _ffmpeg_encode(path, frames, 10, ["-vf", "setpts='if(lt(N,6),N,3*N)/10/TB'", "-fps_mode", "vfr",
                                      "-c:v", "libx264rgb", "-qp", "0"])  # lossless RGB: pixels are exact
    times = [t for t, _ in _stored_frames(path)]
    assert len(times) == 12 and times[6] - times[5] > 1.0  # the file really is variable-rate
    # ffmpeg's default re-timing to a constant rate (what a plain pipe read does) duplicates frames here
    assert sum(1 for _ in imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")) - 1 > 12
    video = load_video(path)
    np.testing.assert_array_equal(video.frames, frames)


def test_mp4_with_b_frames_decodes_in_presentation_order(tmp_path):
    """I B B B P ...: frames are stored in decode order (I P B B B) but must come out in display order."""
    t, h, w = 24, 32, 48
    levels = 8 + 10 * np.arange(t)  # each frame one grey level: its index survives lossy coding
    frames = np.broadcast_to(levels[:, None, None, None], (t, h, w, 3)).astype(np.uint8)
    path = tmp_path / "b.mp4"
    _ffmpeg_encode(path, frames, 10, ["-c:v", "libx264", "-pix_fmt", "yuv444p", "-qp", "4", "-bf", "3", "-g", "12",
                                      "-x264-params", "b-adapt=0:scenecut=0"])
    kinds = "".join(k for _, k in _stored_frames(path))
    assert kinds.startswith("IBBBP") and len(kinds) == t
    video = load_video(path)
    assert video.num_frames == t
    np.testing.assert_array_equal(np.round((video.frames[:, 0, 0, 0].astype(float) - 8) / 10), np.arange(t))
    assert np.abs(video.frames.astype(int) - frames.astype(int)).max() <= 2


@pytest.mark.parametrize("kind", ["vfr", "bframes"])
def test_mp4_frames_equal_opencv_where_installed(tmp_path, kind):
    """Where cv2 (VBench's decoder for flicker/motion/dynamic) is installed: byte-identical frames."""
    cv2 = pytest.importorskip("cv2", reason="opencv not installed (VBench's decoder; optional cross-check)")
    frames = smooth_frames(t=14, h=32, w=48)
    path = tmp_path / f"{kind}.mp4"
    args = (["-vf", "setpts='if(lt(N,6),N,3*N)/10/TB'", "-fps_mode", "vfr", "-c:v", "libx264", "-bf", "0"]
            if kind == "vfr" else ["-c:v", "libx264", "-bf", "3", "-x264-params", "b-adapt=0"])
    _ffmpeg_encode(path, frames, 10, [*args, "-pix_fmt", "yuv420p"])
    cap = cv2.VideoCapture(str(path))
    ref = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        ref.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    np.testing.assert_array_equal(load_video(path).frames, np.stack(ref))


def test_vfr_b_frame_file_equals_opencv_and_decord_output():
    """tests/data/vfr_bframes.mp4 (variable rate and B-frames, 14 frames) with the frames that cv2 5.0.0 and
    decord 0.6.0 (VBench's decoders) gave for it, byte-identical to each other: ours must equal them."""
    from pathlib import Path

    data = Path(__file__).parents[1] / "data"
    ref = np.load(data / "vfr_bframes_decoded.npz")
    stored = _stored_frames(data / "vfr_bframes.mp4")
    assert "B" in "".join(k for _, k in stored) and len(stored) == 14
    gaps = np.diff([t for t, _ in stored])
    assert gaps.max() > 2.5 * gaps.min()  # variable frame rate
    video = load_video(data / "vfr_bframes.mp4")
    np.testing.assert_array_equal(video.frames, ref["frames"])
    assert video.fps == pytest.approx(float(ref["cv2_fps"])) == pytest.approx(float(ref["decord_fps"]))
