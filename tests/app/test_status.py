"""One table from many jobs: shards merge, duplicates count once, missing/failed videos are reported."""

import json
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from eval.tables import aggregate, records_frame
from freelong.__main__ import main as freelong_main
from freelong.app.records import RunRecords, generated_records, read_results
from freelong.app.runner import run


def load_records(paths):
    """What scripts/make_tables.py tabulates: failed records out, each job_key once."""
    return records_frame(generated_records(read_results(paths)))


def sharded_sweep(compose_cfg, root: Path) -> list[Path]:
    dirs = []
    for s in (0, 1):
        cfg = compose_cfg("method=direct", "num_frames=8", "height=32", "width=32", "num_inference_steps=1",
                          "progress=false", "prompts.list=[a cat,a dog,a red fox]", f"shard={s}", "num_shards=2")
        OmegaConf.update(cfg, "paths.output_root", str(root))
        dirs.append(run(cfg, root / f"{s}_lavie_tiny_direct_shard{s}of2"))
    return dirs


def test_status_tables_and_aggregate_merge_shards(compose_cfg, tmp_path, capsys, one_thread):
    import scripts.make_tables as make_tables
    from analysis.aggregate import collect

    root = tmp_path / "sweep"
    shard0, shard1 = sharded_sweep(compose_cfg, root)
    assert freelong_main(["status", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2/2" in out and "1/1" in out and "3/3 video(s) done, 0 failed, 0 missing" in out

    shutil.copytree(shard0, root / "copy_of_shard0")  # the same videos twice (a re-submitted shard)
    table = aggregate(load_records([root]))
    assert table["n"].tolist() == [3]
    df, swept = collect(root)
    assert len(df) == 3 and "shard" not in swept
    shutil.rmtree(root / "copy_of_shard0")

    # shard 0 loses a video (never generated) and shard 1's video failed
    (shard0 / "videos" / "002_a-red-fox_seed0.mp4").unlink()
    (shard0 / "videos" / "002_a-red-fox_seed0.json").unlink()
    side = shard1 / "videos" / "001_a-dog_seed0.json"
    rec = json.loads(side.read_text())
    side.write_text(json.dumps({**rec, "status": "failed", "error": "OutOfMemoryError: CUDA out of memory"}))
    (shard1 / "videos" / "001_a-dog_seed0.mp4").unlink()
    for d in (shard0, shard1):
        RunRecords(d).rebuild_results()
    assert freelong_main(["status", str(root)]) == 1
    out = capsys.readouterr().out
    assert "missing 002_a-red-fox_seed0" in out
    assert "failed  001_a-dog_seed0: OutOfMemoryError: CUDA out of memory" in out
    assert "1/3 video(s) done, 1 failed, 1 missing" in out

    assert make_tables.main([str(root), "--include-random-init", "--out-dir", str(tmp_path / "tables")]) == 0
    err = capsys.readouterr().err
    assert "lavie_tiny direct (8 frames): 1 of 3 video(s) done, 1 failed, 1 missing" in err
    assert "001_a-dog_seed0" in err and "002_a-red-fox_seed0" in err
    assert aggregate(load_records([root]))["n"].tolist() == [1]  # the failed record is not a video


def test_a_stale_record_from_another_config_is_not_done(compose_cfg, tmp_path, capsys, one_thread):
    cfg = compose_cfg("method=direct", "num_frames=8", "height=32", "width=32", "num_inference_steps=1",
                      "progress=false", "prompts.list=[a cat]")
    run_dir = run(cfg, tmp_path / "run")
    side = run_dir / "videos" / "000_a-cat_seed0.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "job_key": "0123456789abcdef"}))
    assert freelong_main(["status", str(run_dir)]) == 1
    assert "stale 000_a-cat_seed0" in capsys.readouterr().out


def test_status_of_nothing_is_a_one_line_error(tmp_path, capsys):
    assert freelong_main(["status", str(tmp_path / "nope")]) == 2
    assert freelong_main(["status", str(tmp_path)]) == 2
    assert freelong_main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "no such run" in err and "no run directories" in err and "commands:" in err


def test_tables_count_generated_videos_once():
    recs = [{"job_key": "a", "run_dir": "s0"}, {"job_key": "b", "status": "failed"}, {"job_key": "a", "run_dir": "s1"},
            {"video": "x.mp4"}, {"video": "y.mp4"}, {"job_key": "c", "status": "done"}]
    assert generated_records(recs) == [recs[0], recs[3], recs[4], recs[5]]  # first copy of "a"; no key: all kept
