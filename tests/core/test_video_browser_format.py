"""Every mp4 we write plays in browsers: H.264, yuv420p, even width and height, moov before mdat (+faststart)."""

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from freelong.video_io import read_video, write_video


def top_level_atoms(path: Path) -> list[str]:
    """The types of an MP4's top-level boxes in file order (ISO/IEC 14496-12: 32-bit size, 4-char type)."""
    data = path.read_bytes()
    atoms, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:  # 64-bit "largesize" follows the type
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:  # box runs to the end of the file
            size = len(data) - pos
        assert size >= 8, f"corrupt box at byte {pos}"
        atoms.append(kind.decode("latin-1"))
        pos += size
    assert pos == len(data), "boxes do not tile the file"
    return atoms


def stream_format(path: Path) -> tuple[str, str, int, int]:
    """(codec, pixel format, width, height) of the first video stream, as the demuxer (PyAV/libavformat) sees it."""
    import av

    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        return ctx.name, ctx.pix_fmt, ctx.width, ctx.height


@pytest.mark.parametrize("h,w", [(32, 48), (33, 47)])
def test_written_mp4_is_browser_playable(tmp_path, h, w):
    ramp = np.linspace(0, 255, w).astype(np.uint8)  # smooth, so it survives H.264 almost exactly
    frames = np.ascontiguousarray(np.broadcast_to(ramp[None, None, :, None], (6, h, w, 3)))
    path = tmp_path / "v.mp4"
    write_video(path, frames, fps=8)

    atoms = top_level_atoms(path)
    assert "moov" in atoms and "mdat" in atoms
    assert atoms.index("moov") < atoms.index("mdat"), f"not faststart: {atoms}"
    codec, pix_fmt, width, height = stream_format(path)
    assert (codec, pix_fmt) == ("h264", "yuv420p")
    assert (height, width) == (h + h % 2, w + w % 2)
    back = read_video(path)
    assert back.shape == (6, h + h % 2, w + w % 2, 3)
    # Padding repeats the last row/column; the original pixels are where they were.
    assert np.abs(back[:, :h, :w].astype(int) - frames.astype(int)).mean() < 4
    if w % 2:
        assert np.abs(back[:, :h, w].astype(int) - frames[:, :, -1].astype(int)).mean() < 4


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed (apt-get install ffmpeg)")
def test_ffprobe_agrees(tmp_path):
    """A second, independent reader of the container: ffprobe's view of codec, pixel format and size."""
    path = tmp_path / "v.mp4"
    write_video(path, np.full((4, 24, 40, 3), 128, np.uint8), fps=8)
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,pix_fmt,width,height", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out.split(",") == ["h264", "40", "24", "yuv420p"]
