"""The VBench-Long protocol: clip boundaries, scenes, per-clip values, aggregation and fusion, JSON layout.

Expected values are written from VBench-Long's definitions (``vbench2_beta_long/utils.py``:
``split_video_into_clips``, ``reorganize_clips_results``, ``fuse_inclip_clip2clip``), not from the code
under test.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from eval_synthetic import smooth_frames

from eval import long as L
from eval import long_eval as E
from eval.base import DimResult
from eval.cli import main
from eval.models import MissingExtraError
from freelong.video_io import write_video

HAS_SCENEDETECT = importlib.util.find_spec("scenedetect") is not None and importlib.util.find_spec("cv2") is not None
needs_scenedetect = pytest.mark.skipif(not HAS_SCENEDETECT, reason="optional extra: pip install scenedetect "
                                                                   "opencv-python-headless")


def two_halves(n: int = 128, cut: int = 72, h: int = 40, w: int = 56) -> tuple[np.ndarray, float]:
    """A static grey first part and a static coloured second part; returns frames and the jump's MAE."""
    a = np.array([40, 90, 140], np.uint8)
    b = np.array([200, 30, 100], np.uint8)
    frames = np.empty((n, h, w, 3), np.uint8)
    frames[:cut] = a
    frames[cut:] = b
    return frames, float(np.mean(np.abs(a.astype(float) - b.astype(float))))


# ----------------------------------------------------------------------------------------------
# Clip boundaries
# ----------------------------------------------------------------------------------------------
def test_clip_boundaries_follow_vbench_long():
    assert L.split_clips(0, 128, 16) == [(i, i + 16) for i in range(0, 128, 16)]
    # a remainder becomes a full-length last clip that ends at the last frame
    assert L.split_clips(0, 130, 16) == [(i, i + 16) for i in range(0, 128, 16)] + [(114, 130)]
    assert L.split_clips(0, 10, 16) == [(0, 10)]  # shorter than one clip: the whole range
    assert L.split_clips(40, 80, 16) == [(40, 56), (56, 72), (64, 80)]
    assert L.split_clips(0, 128, 80) == [(0, 80), (48, 128)]  # overall_consistency's 10 s at 8 fps


def test_clip_length_is_int_fps_times_int_seconds():
    assert L.clip_frames(8.0, 2.0) == 16
    assert L.clip_frames(7.99, 2.0) == 14  # VBench-Long: int(avg fps)
    assert L.clip_frames(24.0, 10.0) == 240
    assert L.clip_frames(None, 2.0) == 16
    s = L.LongSettings()
    assert s.seconds("subject_consistency") == 2.0 and s.seconds("overall_consistency") == 10.0
    assert L.LongSettings(clip_lengths="short").seconds("overall_consistency") == 2.0
    assert L.LongSettings(clip_seconds={"imaging_quality": 4}).seconds("imaging_quality") == 4.0


def test_scenes_from_cuts_cover_the_video():
    assert L.scenes_from_cuts([], 50) == [(0, 50)]
    assert L.scenes_from_cuts([30, 10, 30], 50) == [(0, 10), (10, 30), (30, 50)]


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------
def test_settings_validate_and_name_the_bad_key():
    with pytest.raises(ValueError, match="bogus"):
        L.LongSettings.from_mapping({"bogus": 1})
    with pytest.raises(ValueError, match="clip_lengths"):
        L.LongSettings(clip_lengths="long")
    with pytest.raises(ValueError, match="clip_seconds.subject_consistency"):
        L.LongSettings(clip_seconds={"subject_consistency": 0.5})
    with pytest.raises(ValueError, match="scene_split"):
        L.LongSettings(scene_split="maybe")
    assert L.LongSettings(dev=True).weights("subject_consistency") == (0.5, 0.5)
    assert L.LongSettings().weights("background_consistency") == (1.0, 0.0)
    assert not L.LongSettings().needs_clip2clip("subject_consistency")
    assert L.LongSettings(w_inclip=0.7).needs_clip2clip("subject_consistency")


# ----------------------------------------------------------------------------------------------
# Fusion, from VBench-Long's definition
# ----------------------------------------------------------------------------------------------
def reference_fused(inclip: float, c2c: float, w_in: float, w_c2c: float, table: dict) -> float:
    """fuse_inclip_clip2clip: the table maps c2c linearly between its keys (clamped at both ends);
    a mapped value of 0 leaves the in-clip score alone."""
    keys = np.array(sorted(table))
    mapped = float(np.interp(c2c, keys, [table[k] for k in keys]))
    return inclip if mapped == 0.0 else w_in * inclip + w_c2c * mapped


@pytest.mark.parametrize("dim", L.CLIP2CLIP_DIMS)
def test_fusion_formula_matches_vbench_long_definition(dim):
    table = L.long_data()["mapping"][dim]
    assert len(table) == 101 and table[0.0] == 0.0
    for c2c in (0.0, 0.004, 0.01, 0.237, 0.5, 0.615, 0.99, 0.995, 1.0, 1.2):
        mapped = L.map_clip2clip(c2c, table)
        for w in ((1.0, 0.0), (0.5, 0.5), (0.3, 0.7)):
            assert L.fuse(0.9, mapped, *w) == pytest.approx(reference_fused(0.9, c2c, *w, table), abs=1e-12)
    assert L.map_clip2clip(0.0, table) == 0.0
    assert L.map_clip2clip(0.37, table) == pytest.approx(table[0.37])


# ----------------------------------------------------------------------------------------------
# Aggregation (reorganize_clips_results) on hand-built units
# ----------------------------------------------------------------------------------------------
def unit(scene: int, dim: str, values, sims=None, video="v.mp4", c2c=None) -> L.Unit:
    u = L.Unit(video=video, scene=scene, start=0, end=16 * len(values))
    clips = []
    for k, v in enumerate(values):
        extra = {"video_sim": sims[k][0], "cnt_per_video": sims[k][1]} if sims else {}
        clips.append(L.ClipScore(16 * k, 16 * (k + 1), v, extra))
    u.clips[dim] = clips
    if c2c is not None:
        u.clip2clip[dim] = c2c
    return u


def test_unit_means_then_mean_over_units_imaging_over_100():
    units = [unit(0, "imaging_quality", [60.0, 70.0]), unit(1, "imaging_quality", [50.0])]
    overall, entries = L.long_aggregate("imaging_quality", units, L.LongSettings())
    assert [e["video_results"] for e in entries] == [65.0, 50.0]  # per unit stays on 0-100
    assert overall == pytest.approx((65.0 + 50.0) / 2 / 100)


def test_dynamic_degree_units_are_fractions_of_dynamic_clips():
    units = [unit(0, "dynamic_degree", [True, False, True, True]), unit(1, "dynamic_degree", [False])]
    overall, entries = L.long_aggregate("dynamic_degree", units, L.LongSettings())
    assert [e["video_results"] for e in entries] == [0.75, 0.0]
    assert overall == pytest.approx(0.375)


def test_subject_overall_is_pair_weighted_until_a_unit_has_two_clips():
    d = "subject_consistency"
    single = [unit(0, d, [0.9], [(13.5, 15)], video="a.mp4"), unit(0, d, [0.5], [(2.5, 5)], video="b.mp4")]
    overall, _ = L.long_aggregate(d, single, L.LongSettings())
    assert overall == pytest.approx((13.5 + 2.5) / (15 + 5))  # VBench's overall over all clips
    multi = [unit(0, d, [0.9, 0.7], [(13.5, 15), (10.5, 15)], video="a.mp4"),
             unit(0, d, [0.5], [(2.5, 5)], video="b.mp4")]
    overall, entries = L.long_aggregate(d, multi, L.LongSettings())
    assert overall == pytest.approx((0.8 + 0.5) / 2)  # mean of the fused (= in-clip) unit values
    assert entries[0]["inclip_score"] == pytest.approx(0.8) and entries[0]["clip2clip_score"] is None
    # background: mean of unit means either way
    b = "background_consistency"
    single = [unit(0, b, [0.9], [(13.5, 15)], video="a.mp4"), unit(0, b, [0.5], [(2.5, 5)], video="b.mp4")]
    assert L.long_aggregate(b, single, L.LongSettings())[0] == pytest.approx(0.7)


def test_fused_unit_values_and_single_clip_units_keep_inclip():
    d = "subject_consistency"
    table = L.long_data()["mapping"][d]
    units = [unit(0, d, [0.9, 0.8], [(0.9, 1), (0.8, 1)], video="a.mp4", c2c=0.62),
             unit(0, d, [0.6], [(0.6, 1)], video="b.mp4")]
    settings = L.LongSettings(w_inclip=0.5, w_clip2clip=0.5)
    overall, entries = L.long_aggregate(d, units, settings)
    want_a = reference_fused(0.85, 0.62, 0.5, 0.5, table)
    assert entries[0]["video_results"] == pytest.approx(want_a)
    assert entries[0]["mapped_clip2clip_score"] == pytest.approx(float(np.interp(0.62, sorted(table),
                                                                                  [table[k] for k in sorted(table)])))
    assert entries[1]["video_results"] == pytest.approx(0.6)  # no clip-to-clip term: score 0 → map 0 → in-clip
    assert overall == pytest.approx((want_a + 0.6) / 2)


def test_json_layout_and_unit_records_reaggregate_to_the_same_overall():
    d = "subject_consistency"
    units = [unit(0, d, [0.9, 0.7], [(13.5, 15), (10.5, 15)]), unit(1, d, [0.5], [(2.5, 5)])]
    for u, v in zip(units, ([1.0, 1.0], [0.98])):
        u.clips["temporal_flickering"] = [L.ClipScore(0, 16, x) for x in v]
    out = L.long_json([d, "temporal_flickering"], units, L.LongSettings())
    assert len(out[d]) == 2 and {"inclip_score", "clip2clip_score", "mapped_clip2clip_score"} <= set(out[d][1][0])
    overall, clips, per_unit = out["temporal_flickering"]
    assert len(clips) == 3 and per_unit[-1] == {"long_video_cnt": 2}
    assert overall == pytest.approx((1.0 + 0.98) / 2)
    settings = L.LongSettings()
    for dim in (d, "temporal_flickering"):
        recs = L.unit_records(dim, units, settings)
        assert L.overall_from_units(dim, recs) == pytest.approx(out[dim][0])
    single = [unit(0, d, [0.9], [(13.5, 15)]), unit(0, d, [0.5], [(2.5, 5)], video="b.mp4")]
    assert L.overall_from_units(d, L.unit_records(d, single, settings)) == pytest.approx(16 / 20)


# ----------------------------------------------------------------------------------------------
# Static filter
# ----------------------------------------------------------------------------------------------
def test_static_rule_from_vbench_definition():
    # 64x96, 16 frames: thres = 3*64/256 = 0.75, count_num = round(2*16/16) = 2, first<->last limit 3.0
    calm = [0.1] * 15
    assert L.is_static(calm + [0.5, 0.5], 64, 96, 16)
    assert L.is_static([0.8, 0.9] + [0.1] * 13 + [0.5, 0.5], 64, 96, 16)  # two above thres: still static
    assert not L.is_static([0.8, 0.9, 1.0] + [0.1] * 12 + [0.5, 0.5], 64, 96, 16)
    assert not L.is_static(calm + [3.1, 0.5], 64, 96, 16)
    assert L.is_static(calm + [3.0, 3.0], 64, 96, 16)
    flow = np.zeros((2, 10, 10), np.float32)
    flow[0, 0, :2] = [3.0, 4.0]
    assert L.top_fraction_mean(flow, 0.02) == pytest.approx(3.5)  # the top 2 of 100 magnitudes


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------
def test_without_pyscenedetect_one_scene_or_a_clear_error(monkeypatch):
    monkeypatch.setattr(L, "scenedetect_available", lambda: False)
    frames, _ = two_halves()
    assert L.detect_scenes(frames, 8.0, "auto") == ([(0, 128)], "unavailable")
    assert L.detect_scenes(frames, 8.0, "off") == ([(0, 128)], "off")
    with pytest.raises(MissingExtraError, match="scenedetect"):
        L.detect_scenes(frames, 8.0, "on")


@needs_scenedetect
def test_scene_cuts_equal_pyscenedetects_own_scene_manager_on_the_file(tmp_path):
    from scenedetect import SceneManager, open_video
    from scenedetect.detectors import ContentDetector

    parts = [smooth_frames(t=24, h=64, w=512), 255 - smooth_frames(t=30, h=64, w=512, seed=7),
             np.roll(smooth_frames(t=20, h=64, w=512, seed=3), 200, axis=2)[..., ::-1]]
    path = tmp_path / "three.mp4"
    write_video(path, np.concatenate(parts), fps=8)
    from eval.video import load_video

    video = load_video(path)
    ours, how = L.detect_scenes(video.frames, video.fps, "on", 35.0)
    manager = SceneManager()
    manager.add_detector(ContentDetector(threshold=35.0))
    manager.detect_scenes(open_video(str(path)))
    theirs = [(a.get_frames(), b.get_frames()) for a, b in manager.get_scene_list()]
    assert how == "scenedetect" and ours == theirs == [(0, 24), (24, 54), (54, 74)]


# ----------------------------------------------------------------------------------------------
# End to end on synthetic videos with known answers
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_long():
    """Random-init evaluator for flicker + subject (+ DINOv2 clip-to-clip term)."""
    import torch

    torch.set_num_threads(1)
    settings = L.LongSettings(scene_split="off", w_inclip=0.5, w_clip2clip=0.5, subject_extractor="dinov2")
    return E.LongEvaluator(["temporal_flickering", "subject_consistency"], settings, random_init=True,
                           device="cpu", batch_size=16)


def test_two_halves_per_clip_values_one_scene(tiny_long):
    frames, mae = two_halves(cut=72)
    s = tiny_long.score("halves-0.mp4", frames=frames, fps=8.0)
    (u,) = s.units
    flick = [c.value for c in u.clips["temporal_flickering"]]
    assert [(c.start, c.end) for c in u.clips["temporal_flickering"]] == [(i, i + 16) for i in range(0, 128, 16)]
    # only clip 4 (frames 64-79) contains the jump: one of its 15 pairs has MAE `mae`
    want = [1.0] * 8
    want[4] = (255 - mae / 15) / 255
    assert flick == pytest.approx(want, abs=1e-7)
    out = L.long_json(tiny_long.dims, s.units, tiny_long.settings)
    assert out["temporal_flickering"][0] == pytest.approx(np.mean(want))
    # subject: static clips are exactly consistent; the jump clip is not
    subj = [c.value for c in u.clips["subject_consistency"]]
    assert all(v == pytest.approx(1.0, abs=1e-6) for i, v in enumerate(subj) if i != 4) and subj[4] < 1.0
    assert u.clip2clip["subject_consistency"] is not None
    (entry,) = out["subject_consistency"][1]
    table = L.long_data()["mapping"]["subject_consistency"]
    want_fused = reference_fused(np.mean(subj), u.clip2clip["subject_consistency"], 0.5, 0.5, table)
    assert entry["video_results"] == pytest.approx(want_fused) == out["subject_consistency"][0]


def test_static_video_is_perfectly_consistent_and_clip2clip_is_one(tiny_long):
    frames = np.repeat(smooth_frames(t=1, h=40, w=56), 40, axis=0)
    s = tiny_long.score("still.mp4", frames=frames, fps=8.0)
    (u,) = s.units
    assert [(c.start, c.end) for c in u.clips["subject_consistency"]] == [(0, 16), (16, 32), (24, 40)]
    assert all(c.value == 1.0 for c in u.clips["temporal_flickering"])
    assert all(c.value == pytest.approx(1.0, abs=1e-6) for c in u.clips["subject_consistency"])
    assert u.clip2clip["subject_consistency"] == pytest.approx(1.0, abs=1e-6)


@needs_scenedetect
def test_two_halves_split_into_scenes(tiny_long):
    frames, _ = two_halves(cut=72)
    ev = E.LongEvaluator(["temporal_flickering"], L.LongSettings(scene_split="on"), random_init=True, device="cpu")
    s = ev.score("halves.mp4", frames=frames, fps=8.0)
    assert [(u.scene, u.start, u.end) for u in s.units] == [(0, 0, 72), (1, 72, 128)]
    assert [(c.start, c.end) for c in s.units[0].clips["temporal_flickering"]] == [
        (0, 16), (16, 32), (32, 48), (48, 64), (56, 72)]
    assert [(c.start, c.end) for c in s.units[1].clips["temporal_flickering"]] == [
        (72, 88), (88, 104), (104, 120), (112, 128)]
    out = L.long_json(ev.dims, s.units, ev.settings)
    assert out["temporal_flickering"][0] == 1.0 and len(out["temporal_flickering"][2]) == 3


def test_cli_long_protocol_writes_vbench_long_layout(tmp_path, capsys):
    frames, _ = two_halves(n=48, cut=24)
    write_video(tmp_path / "v" / "halves-0.mp4", frames, fps=8)
    out = tmp_path / "res.json"
    code = main([str(tmp_path / "v"), "--protocol", "long", "--dims", "flicker", "--random-init", "--scene-split",
                 "off", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    res = json.loads(out.read_text())
    overall, clips, per_unit = res["temporal_flickering"]
    assert [(c["start_frame"], c["end_frame"]) for c in clips] == [(0, 16), (16, 32), (32, 48)]
    assert per_unit[-1] == {"long_video_cnt": 1} and overall == pytest.approx(per_unit[0]["video_results"])
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["protocol"] == "long" and meta["long"]["clip_seconds"] == {"temporal_flickering": 2.0}
    assert "dimension" in out.with_suffix(".csv").read_text().splitlines()[0]


def test_cli_long_protocol_bad_settings_are_one_error_line(tmp_path, capsys):
    write_video(tmp_path / "a.mp4", smooth_frames(t=3), fps=8)
    code = main([str(tmp_path / "a.mp4"), "--protocol", "long", "--dims", "flicker", "--clip-seconds", "flicker=0"])
    assert code == 2 and "clip_seconds.temporal_flickering" in capsys.readouterr().err
    code = main([str(tmp_path / "a.mp4"), "--protocol", "long", "--dims", "back", "--random-init", "--w-clip2clip",
                 "0.5"])  # DreamSim (the default background extractor) has no random-init twin: said before loading
    assert code == 2 and "background-extractor clip" in capsys.readouterr().err
    code = main([str(tmp_path / "a.mp4"), "--protocol", "long", "--dims", "flicker", "--backend", "official"])
    assert code == 2 and "native" in capsys.readouterr().err


def test_clip_values_equal_the_standard_dimension_on_the_slice(tiny_long):
    frames = smooth_frames(t=35, h=40, w=56)
    s = tiny_long.score("x.mp4", frames=frames, fps=8.0)
    scorer = tiny_long.evaluator.scorers["subject_consistency"]
    from eval.video import Video

    for c in s.units[0].clips["subject_consistency"]:
        ref: DimResult = scorer.score(Video(None, frames[c.start : c.end], 8.0))
        assert c.value == ref.value and c.extra == ref.extra


# ----------------------------------------------------------------------------------------------
# run.py: eval.protocol=long
# ----------------------------------------------------------------------------------------------
def test_run_with_protocol_long_records_unit_values(compose_cfg, tmp_path):
    from freelong.app.runner import run

    cfg = compose_cfg("eval=fast", "eval.protocol=long", "eval.dims=[flicker,subject]", "eval.long.scene_split=off",
                      "num_frames=24", "num_inference_steps=1", "progress=false", f"paths.output_root={tmp_path}",
                      "eval.batch_size=8")
    run_dir = run(cfg)
    (line,) = (run_dir / "results.jsonl").read_text().splitlines()
    scores = json.loads(line)["scores"]
    meta = scores["meta"]
    assert meta["protocol"] == "long" and meta["label"] == "random-init" and meta["errors"] == {}
    units = meta["long"]["units"]
    assert [u["clips"] for u in units["subject_consistency"]] == [2]  # clips (0, 16) and (8, 24)
    assert scores["subject_consistency"] == pytest.approx(units["subject_consistency"][0]["value"])
    assert L.overall_from_units("temporal_flickering", units["temporal_flickering"]) == pytest.approx(
        scores["temporal_flickering"])


def test_bad_protocol_settings_fail_before_any_model_loads(compose_cfg):
    import torch

    from freelong.app.eval_hook import build_run_evaluator
    from freelong.errors import ConfigError

    with pytest.raises(ConfigError, match="eval.protocol"):
        build_run_evaluator(compose_cfg("eval=fast", "eval.protocol=longer").eval, torch.device("cpu"), True)
    with pytest.raises(ConfigError, match="scene_split"):
        build_run_evaluator(compose_cfg("eval=fast", "eval.protocol=long", "eval.long.scene_split=x").eval,
                            torch.device("cpu"), True)
    with pytest.raises(Exception, match="bogus"):
        compose_cfg("eval=fast", "eval.long.bogus=1")


def test_clip2clip_real_loaders_read_saved_models(tmp_path):
    """DINO and DINOv2 from Hugging Face model folders (tiny configs of the real classes, saved and re-read)."""
    import torch
    from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTModel

    from eval.models import TINY_VIT

    ViTModel(ViTConfig(**TINY_VIT, patch_size=16, image_size=224), add_pooling_layer=False).save_pretrained(
        tmp_path / "dino")
    ref = Dinov2Model(Dinov2Config(**E.TINY_DINOV2)).eval()
    ref.save_pretrained(tmp_path / "dinov2")
    settings = L.LongSettings(scene_split="off", w_clip2clip=0.5, subject_extractor="dinov2")
    ev = E.LongEvaluator(["subject_consistency"], settings, device="cpu",
                         weights={"dino_vitb16": str(tmp_path / "dino"), "dinov2_vitb14": str(tmp_path / "dinov2")})
    frames = smooth_frames(t=48, h=40, w=56)
    s = ev.score("x.mp4", frames=frames, fps=8.0)
    first = frames[[0, 16, 32]]
    with torch.no_grad():
        x = E.dinov2_transform(torch.from_numpy(first).permute(0, 3, 1, 2).float())
        feats = torch.nn.functional.normalize(ref(pixel_values=x).pooler_output, dim=-1)
    cos = feats @ feats.T
    want = np.mean([(max(0.0, float(cos[i - 1, i])) + max(0.0, float(cos[0, i]))) / 2 for i in (1, 2)])
    assert s.units[0].clip2clip["subject_consistency"] == pytest.approx(want, abs=1e-6)
    assert x.shape == (3, 3, 224, 224)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vbench") is None, reason="optional extra: vbench's vendored RAFT")
def test_static_filter_runs_raft_on_every_pair_plus_first_last(monkeypatch):
    ev = E.LongEvaluator(["temporal_flickering"], L.LongSettings(scene_split="off", static_filter=True),
                         random_init=True, device="cpu")
    assert ev.dims == ["temporal_flickering"] and "dynamic_degree" in ev.evaluator.scorers
    seen = []
    real = E.static_pair_scores

    def spy(frames, idx_a, idx_b, *a, **k):
        seen.append((list(idx_a), list(idx_b)))
        return real(frames, idx_a, idx_b, *a, **k)

    monkeypatch.setattr(E, "static_pair_scores", spy)
    frames = smooth_frames(t=20, h=64, w=96)  # RAFT's 4-level pyramid needs at least 64 pixels
    s = ev.score("x.mp4", frames=frames, fps=8.0)
    clips = s.units[0].clips["temporal_flickering"]
    assert [(c.start, c.end) for c in clips] == [(0, 16), (4, 20)] and all(isinstance(c.static, bool) for c in clips)
    assert seen[0] == ([*range(15), 0, 15], [*range(1, 16), 15, 0])
    overall, entries = L.long_aggregate("temporal_flickering", s.units, ev.settings)
    kept = [c.value for c in clips if c.static]
    assert (overall is None) == (not kept) and (not kept or overall == pytest.approx(np.mean(kept)))


def test_dreamsim_weights_are_checked_before_dreamsim_could_download(tmp_path):
    from eval.weights import EvalWeightsMissing

    with pytest.raises(EvalWeightsMissing, match="ensemble_lora") as err:
        E.load_dreamsim(tmp_path, "cpu")
    assert "dreamsim(pretrained=True" in str(err.value)
