"""``python -m eval --protocol freenoise``: 16-frame segments, the reference folder and its cached statistics, the
set-level numbers equal to FVD/KVD/CLIP-SIM computed directly, and the refusal of a too-small set."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from eval_synthetic import smooth_frames

from eval.cli import main
from eval.clip_sim import ClipSim
from eval.freenoise_protocol import CACHE_NAME, FreeNoiseEvaluator, _fingerprint, cut_segments, reference_stats
from eval.fvd import FeatureStats, fvd_kvd, load_stats
from eval.i3d import i3d_features, load_i3d
from eval.video import load_video
from freelong.video_io import write_video

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors on a shared CPU: no oversubscription



def test_cut_segments_are_consecutive_and_drop_the_remainder():
    frames = np.arange(70)[:, None, None, None] * np.ones((1, 2, 3, 3), np.int64)
    seg = cut_segments(frames)
    assert seg.shape == (4, 16, 2, 3, 3)
    assert [int(s[0, 0, 0, 0]) for s in seg] == [0, 16, 32, 48] and int(seg[3, -1, 0, 0, 0]) == 63
    with pytest.raises(ValueError, match="10 frames has no 16-frame segment"):
        cut_segments(frames[:10])


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("freenoise")
    for i in range(4):  # direct 16-frame samples
        write_video(root / "ref" / f"ref-{i}.mp4", smooth_frames(t=16, h=32, w=32, seed=i), fps=8)
    for i in range(2):  # two 32-frame "long" videos: 2 segments each
        write_video(root / "gen" / f"gen-{i}.mp4", smooth_frames(t=32, h=32, w=32, seed=10 + i), fps=8)
    return root


ARGS = ["--protocol", "freenoise", "--random-init", "--device", "cpu", "--no-progress"]


def test_protocol_equals_fvd_kvd_clip_sim_computed_directly(dirs, capsys):
    out = dirs / "res" / "results.json"
    rc = main([str(dirs / "gen"), "--reference", str(dirs / "ref"), "--min-segments", "3", "--out", str(out), *ARGS])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert (res["num_videos"], res["num_segments"], res["reference_videos"], res["reference_segments"]) == (2, 4, 4, 4)
    # independently: decode, cut by hand, the same tiny I3D / CLIP, the metrics module
    i3d = load_i3d(None, random_init=True)
    gen = [load_video(dirs / "gen" / f"gen-{i}.mp4").frames for i in range(2)]
    ref = np.concatenate([load_video(dirs / "ref" / f"ref-{i}.mp4").frames[None] for i in range(4)])
    g = i3d_features(i3d, np.stack([v[s:s + 16] for v in gen for s in (0, 16)]))
    want = fvd_kvd(FeatureStats(i3d_features(i3d, ref)), FeatureStats(g), minimum=3)
    assert res["fvd"] == pytest.approx(want["fvd"], rel=1e-5) and res["kvd"] == pytest.approx(want["kvd"], rel=1e-5)
    clip = ClipSim(None, random_init=True)
    assert res["clip_sim"] == pytest.approx(np.mean([clip.score(v) for v in gen]), abs=1e-6)
    rows = pd.read_csv(out.with_suffix(".csv"))
    assert rows["segments"].tolist() == [2, 2]
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["protocol"] == "freenoise" and meta["label"] == "random-init" and meta["min_segments"] == 3
    printed = capsys.readouterr().out
    assert "fvd" in printed and "2 video(s), 4 segment(s) of 16 frames" in printed

    # the reference statistics were cached beside the reference videos; the file works as --reference too
    cached = dirs / "ref" / CACHE_NAME.format(extractor="i3d16-random")
    assert cached.is_file() and load_stats(cached).num == 4
    np.testing.assert_allclose(load_stats(cached).features, i3d_features(i3d, ref), rtol=1e-5, atol=1e-6)
    ev = FreeNoiseEvaluator(device="cpu", random_init=True, clip_sim=False)
    assert reference_stats(cached, ev).num == 4
    ev.score = None  # a cache hit scores nothing
    assert reference_stats(dirs / "ref", ev, progress=False).num == 4
    # a changed file list (or a changed file) does not hit the cache
    videos = sorted((dirs / "ref").glob("*.mp4"))
    assert _fingerprint(videos) == load_stats(cached).info["fingerprint"] != _fingerprint(videos[:3])


def test_too_small_sets_are_refused_with_one_line(dirs, capsys):
    out = dirs / "small" / "results.json"
    assert main([str(dirs / "gen"), "--reference", str(dirs / "ref"), "--out", str(out), *ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the reference set" in err[0] and "has 4 segment(s)" in err[0] and "needs 17" in err[0]
    assert not out.exists()
    assert main([str(dirs / "gen"), "--out", str(out), *ARGS]) == 2
    assert "needs --reference" in capsys.readouterr().err


def test_real_weight_path_loads_the_checkpoint_strictly_and_tags_it(tmp_path):
    import torch
    from cdfvd_reference import random_i3d_state

    from eval.i3d import I3D
    from freelong.weights import sha256_file

    shapes = {k: tuple(v.shape) for k, v in I3D().state_dict().items()}
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save({k: torch.from_numpy(v) for k, v in random_i3d_state(shapes).items()}, path)
    ev = FreeNoiseEvaluator(device="cpu", weights={"i3d_400": str(path)}, clip_sim=False)
    digest = sha256_file(path)
    assert ev.extractor == f"i3d400-{digest[:12]}" and ev.label == "real"
    assert ev.describe()["weights"]["i3d_400"]["sha256"] == digest
    assert ev.i3d.num_classes == 400 and ev.i3d.input_size == 224  # the full network (features: test_fvd.py)
    bad = tmp_path / "bad.pt"
    torch.save({k: v for k, v in torch.load(path).items() if not k.startswith("logits")}, bad)
    with pytest.raises(RuntimeError, match="Missing key"):
        FreeNoiseEvaluator(device="cpu", weights={"i3d_400": str(bad)}, clip_sim=False)
