"""FreeNoise's protocol on run directories: score later (``--write-back --protocol freenoise``) over sharded runs,
resume, and ``make_tables --protocol freenoise`` equal to FVD/KVD/CLIP-SIM computed from the stored features.

The default test builds the run directories by hand (records as the runner writes them, synthetic videos); the
slow one generates them with the tiny LaVie backbone through run.py's runner (direct, and FreeNoise in 2 shards)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from eval_synthetic import smooth_frames
from helpers import ReportPage, compose_config
from omegaconf import OmegaConf

from analysis.report import main as report_main
from eval.cli import main as eval_main
from eval.freenoise_protocol import CACHE_NAME, load_video_features
from eval.fvd import FeatureStats, fvd_kvd, load_stats
from freelong.app.records import RunRecords
from freelong.app.runner import run
from freelong.video_io import write_video
from scripts.make_tables import main as tables_main

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors on a shared CPU: no oversubscription

SETTINGS = ("height=32", "width=32", "num_inference_steps=1", "progress=false", "prompts.list=[a cat,a dog]")


def generate(compose_cfg, tmp_path, run_dir: Path, *extra) -> Path:
    cfg = compose_cfg(*SETTINGS, *extra)
    OmegaConf.update(cfg, "paths.output_root", str(tmp_path))
    return run(cfg, run_dir)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]


def hand_made(root: Path) -> Path:
    """Run dirs as the runner leaves them: ref (4 direct 16-frame videos), gen/direct (2 videos of 32 frames),
    gen/freenoise_0 and gen/freenoise_1 (one shard each, 1 video each)."""
    layout = {"ref": ("direct", 16, 4), "gen/direct": ("direct", 32, 2), "gen/freenoise_0": ("freenoise", 32, 1),
              "gen/freenoise_1": ("freenoise", 32, 1)}
    seed = 0
    for d, (method, frames, n) in layout.items():
        rr = RunRecords(root / d)
        for i in range(n):
            seed += 1
            stem = f"p{i}_s{seed}"
            write_video(rr.video_dir / f"{stem}.mp4", smooth_frames(t=frames, h=32, w=32, seed=seed), fps=8)
            rr.save_stem(stem, {"video": f"videos/{stem}.mp4", "prompt": f"p{i}", "prompt_index": i, "seed": seed,
                                "method": method, "model": "lavie_tiny", "family": "lavie", "num_frames": frames,
                                "height": 32, "width": 32, "wall_time_s": 2.0 + seed, "random_init": True,
                                "job_key": f"{d}-{stem}"})
    return root


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    return hand_made(tmp_path_factory.mktemp("fn_small"))


def test_write_back_resumes_and_the_table_equals_the_definitions(small_runs, capsys):
    check_write_back_and_table(small_runs, capsys, per_method=2)


@pytest.mark.slow
def test_write_back_then_table_equal_the_definitions_on_generated_runs(runs, capsys):
    check_write_back_and_table(runs, capsys, per_method=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    compose_cfg = compose_config
    root = tmp_path_factory.mktemp("fn")
    generate(compose_cfg, root, root / "ref", "num_frames=16", "method=direct", "num_seeds=2")  # 4 references
    generate(compose_cfg, root, root / "gen" / "direct", "num_frames=32", "method=direct")
    for shard in (0, 1):  # one method in two shards
        generate(compose_cfg, root, root / "gen" / f"freenoise_{shard}", "num_frames=32", "method=freenoise",
                 f"shard={shard}", "num_shards=2")
    return root


def check_write_back_and_table(runs: Path, capsys, per_method: int):
    n = 2 * per_method
    args = [str(runs / "gen"), "--write-back", "--protocol", "freenoise", "--random-init", "--no-progress"]
    assert eval_main(args) == 0
    assert f"{n} video(s) scored" in capsys.readouterr().out
    assert eval_main(args) == 0  # resumable: nothing left
    assert f"0 video(s) scored, {n} already up to date" in capsys.readouterr().out
    recs = [r for d in ("direct", "freenoise_0", "freenoise_1") for r in records(runs / "gen" / d)]
    for r in recs:
        meta = r["scores"]["meta"]
        assert meta["protocol"] == "freenoise" and meta["segments"] == 2 and meta["label"] == "random-init"
        assert 0 < r["scores"]["clip_sim"] <= 1

    out = runs / "tables"
    rc = tables_main([str(runs / "gen"), "--protocol", "freenoise", "--reference", str(runs / "ref" / "videos"),
                      "--include-random-init", "--min-segments", "2", "--out-dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "FreeNoise Table 1" in printed and "737.61" in printed  # the paper's direct FVD beside ours
    table = pd.read_csv(out / "freenoise_table1.csv").set_index("method")
    # the paper's rows not run here are shown with its numbers only; its time ratios are +17 % and +255 %
    assert table.loc["gen_l_video", "videos"] == 0 and np.isnan(table.loc["gen_l_video", "FVD"])
    assert table.loc["freenoise", "paper Time vs direct"] == pytest.approx(25.75 / 21.97 - 1)
    assert round(table.loc["gen_l_video", "paper Time vs direct"], 2) == 2.55
    assert round(table.loc["freenoise", "paper Time vs direct"], 2) == 0.17
    assert table.loc["direct", "videos"] == per_method and table.loc["freenoise", "videos"] == per_method  # shards
    assert table.loc["freenoise", "segments"] == 2 * per_method and table.loc["direct", "Time vs direct"] == 0.0
    ref = load_stats(runs / "ref" / "videos" / CACHE_NAME.format(extractor="i3d16-random"))
    assert ref.num == 4
    for method in ("direct", "freenoise"):
        mine = [r for r in recs if r["method"] == method]
        feats = np.concatenate([load_video_features(Path(runs / "gen" / d / "videos" / r["scores"]["meta"]["features"]))
                                for d in ("direct", "freenoise_0", "freenoise_1") for r in records(runs / "gen" / d)
                                if r["method"] == method])
        want = fvd_kvd(ref, FeatureStats(feats, extractor=ref.extractor), minimum=2)
        assert table.loc[method, "FVD"] == pytest.approx(want["fvd"], rel=1e-9)
        assert table.loc[method, "KVD"] == pytest.approx(want["kvd"], rel=1e-9)
        assert table.loc[method, "CLIP-SIM"] == pytest.approx(np.mean([r["scores"]["clip_sim"] for r in mine]))
        times = [r["wall_time_s"] for r in mine]
        assert table.loc[method, "Time (s/video)"] == pytest.approx(np.mean(times))


def test_table_refuses_unscored_runs_and_missing_reference(small_runs, capsys):
    runs = small_runs
    assert tables_main([str(runs / "ref"), "--protocol", "freenoise", "--reference", str(runs / "ref" / "videos"),
                        "--out-dir", str(runs / "t2")]) == 1

    assert "--write-back --protocol freenoise" in capsys.readouterr().err
    assert tables_main([str(runs / "gen"), "--protocol", "freenoise", "--out-dir", str(runs / "t2")]) == 2
    assert "needs --reference" in capsys.readouterr().err


def test_experiments_compose_with_freenoise_settings(compose_cfg):
    ref = compose_cfg("experiment=freenoise_reference")
    table = compose_config("experiment=paper_freenoise_table1", hydra_config=True)
    for cfg in (ref, table):  # FreeNoise §5: DDIM 50, eta 0, CFG 15, 256x256, the same base model and sampler
        assert (cfg.height, cfg.width, cfg.num_inference_steps, cfg.sampler, cfg.eta, cfg.guidance_scale) == \
            (256, 256, 50, "ddim", 0.0, 15.0)
        assert cfg.model.name == "videocrafter2" and cfg.eval.name == "none"
    assert (ref.num_frames, ref.method.name, ref.num_seeds) == (16, "direct", 16)
    assert (table.num_frames, table.num_seeds) == (64, 4) and table.seed == ref.seed  # the first 4 seeds are shared
    methods = str(table.hydra.sweeper.params.method).split(",")
    assert methods == ["direct", "sliding_window", "gen_l_video", "freenoise", "freelong_vc2"]
    for m in methods:  # every swept method composes on this model
        assert compose_cfg("experiment=paper_freenoise_table1", f"method={m}").method is not None


def test_run_time_freenoise_protocol_is_one_clear_error(compose_cfg):
    import torch

    from freelong.app.eval_hook import build_run_evaluator
    from freelong.errors import ConfigError

    cfg = compose_cfg("eval=fast", "eval.protocol=freenoise")
    with pytest.raises(ConfigError, match="eval.protocol=freenoise scores a set.*--write-back --protocol freenoise"):
        build_run_evaluator(cfg.eval, torch.device("cpu"), random_init=True)


def test_report_shows_the_freenoise_table_of_scored_runs(small_runs, tmp_path, capsys):
    check_report(small_runs, tmp_path, capsys)


@pytest.mark.slow
def test_report_of_generated_runs_scored_later(runs, tmp_path, capsys):
    check_report(runs, tmp_path, capsys)


def check_report(runs: Path, tmp_path: Path, capsys):
    """``python -m analysis.report`` over runs scored later with the FreeNoise protocol (a method in two shards):
    FreeNoise's table with FVD/KVD against --reference equal to the definitions, CLIP-SIM, video and segment
    counts, no all-empty VBench table; each video's CLIP-SIM and segments in its caption; without --reference the
    CLIP-SIM table stays and FVD/KVD are empty; a bad reference is one error line."""
    assert eval_main([str(runs / "gen"), "--write-back", "--protocol", "freenoise", "--random-init",
                      "--no-progress"]) == 0  # scores what an earlier test did not (resumable)
    ref_dir = runs / "ref" / "videos"
    out = tmp_path / "report"
    assert report_main([str(runs / "gen"), "--out", str(out), "--reference", str(ref_dir), "--min-segments", "2"]) == 0
    page = ReportPage((out / "index.html").read_text())
    table = page.table("RANDOM-INIT FreeNoise Table 1 — FVD/KVD vs 4 reference segments (i3d16-random)")
    assert len(page.tables) == 1  # no VBench table of empty columns for these records
    methods = page.column(table, "method", values=False)
    assert methods == ["direct", "freenoise", "sliding_window", "gen_l_video"]  # ours, then the paper's rows
    recs = [(runs / "gen" / d, r) for d in ("direct", "freenoise_0", "freenoise_1") for r in records(runs / "gen" / d)]
    ref = load_stats(ref_dir / CACHE_NAME.format(extractor="i3d16-random"))
    for method in ("direct", "freenoise"):
        i = methods.index(method)
        mine = [r for _, r in recs if r["method"] == method]
        feats = np.concatenate([load_video_features(d / "videos" / r["scores"]["meta"]["features"])
                                for d, r in recs if r["method"] == method])
        want = fvd_kvd(ref, FeatureStats(feats, extractor=ref.extractor), minimum=2)
        assert page.column(table, "FVD")[i] == pytest.approx(want["fvd"], rel=1e-9)
        assert page.column(table, "KVD")[i] == pytest.approx(want["kvd"], rel=1e-9)
        assert page.column(table, "CLIP-SIM")[i] == pytest.approx(np.mean([r["scores"]["clip_sim"] for r in mine]))
        assert (page.column(table, "videos")[i], page.column(table, "segments")[i]) == (2, 4)  # both shards
        assert page.column(table, "model", values=False)[i] == "lavie_tiny"
    assert page.column(table, "paper FVD")[methods.index("gen_l_video")] == 177.63
    assert np.isnan(page.column(table, "FVD")[methods.index("gen_l_video")])
    assert "FreeNoise Table 1 (ICLR 2024)" in table["note"]
    captions = [c for c in page.captions if c.startswith("freenoise ")]
    assert len(captions) == 2 and all("segments 2" in c and "CLIP-SIM 0." in c for c in captions), captions

    # without a reference: the same CLIP-SIM and counts, FVD/KVD empty, a title that says what is missing
    bare = tmp_path / "bare"
    assert report_main([str(runs / "gen"), "--out", str(bare)]) == 0
    page2 = ReportPage((bare / "index.html").read_text())
    t2 = page2.table("RANDOM-INIT FreeNoise Table 1 — CLIP-SIM (FVD/KVD need --reference)")
    for col in ("CLIP-SIM", "segments", "videos"):
        np.testing.assert_array_equal(page2.column(t2, col), page.column(table, col))
    assert all(np.isnan(v) for v in page2.column(t2, "FVD") + page2.column(t2, "KVD"))

    # a reference set too small for FVD: empty cells and a note naming the rule, not a crash
    assert report_main([str(runs / "gen"), "--out", str(bare), "--reference", str(ref_dir)]) == 0
    t3 = ReportPage((bare / "index.html").read_text()).table("RANDOM-INIT FreeNoise Table 1 — FVD/KVD vs 4")
    assert all(np.isnan(v) for v in ReportPage.column(t3, "FVD")) and "fewer than 17 segments" in t3["note"]
    capsys.readouterr()
    assert report_main([str(runs / "gen"), "--out", str(bare), "--reference", str(tmp_path / "none.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "none.npz" in err and err.count("\n") == 1


def test_table_keeps_models_and_method_variants_apart(tmp_path):
    """Two models and a swept window in one set of scored records: one row per (model, variant), each with its own
    videos and CLIP-SIM, the time ratio against the same model's direct."""
    from eval.freenoise_protocol import freenoise_table, save_video_features

    recs = []
    for i, (model, method, params, t) in enumerate([("m1", "direct", {}, 2.0), ("m1", "freelong", {"window": 8}, 3.0),
                                                     ("m1", "freelong", {"window": 16}, 4.0), ("m2", "direct", {}, 8.0),
                                                     ("m2", "freelong", {"window": 8}, 10.0)]):
        save_video_features(tmp_path / "videos" / f"v{i}.freenoise.npz", np.full((2, 4), float(i)))
        recs.append({"run_dir": str(tmp_path), "model": model, "method": method, "method_params": params,
                     "num_frames": 32, "height": 32, "width": 32, "wall_time_s": t,
                     "scores": {"clip_sim": 0.5 + i / 10, "meta": {"protocol": "freenoise", "extractor": "x",
                                                                   "features": f"v{i}.freenoise.npz"}}})
    table = freenoise_table(recs, None, compare=False).set_index(["model", "method"])
    assert list(table.index) == [("m1", "direct"), ("m1", "freelong (window=8)"), ("m1", "freelong (window=16)"),
                                 ("m2", "direct"), ("m2", "freelong (window=8)")]
    assert table["videos"].tolist() == [1] * 5 and table["segments"].tolist() == [2] * 5
    assert table["CLIP-SIM"].tolist() == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])
    assert table["Time vs direct"].tolist() == pytest.approx([0.0, 0.5, 1.0, 0.0, 0.25])
    assert table["FVD"].isna().all()  # no reference
    recs[1]["scores"]["meta"]["extractor"] = "y"
    with pytest.raises(ValueError, match="features from y, other videos here hold x"):
        freenoise_table(recs, None)
