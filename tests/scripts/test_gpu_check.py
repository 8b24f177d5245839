"""scripts/gpu_check.py: the smoke run covers every section on the CPU; the full-size networks are the real sizes."""

import json
from pathlib import Path

import pytest
import torch

from scripts import gpu_check


def test_smoke_run_covers_every_section_and_every_smoke_backbone_without_an_error(tmp_path, one_thread):
    """The script for the day a GPU is lent: any section in error fails here (main returns 1), on every tiny model."""
    rc = gpu_check.main(["--smoke", "--out-dir", str(tmp_path), "--budget-s", "1500"])  # a bound, not a speed claim
    report = json.loads((tmp_path / "gpu_check_smoke.json").read_text())
    errors = {k: v["error"] for k, v in report.items() if isinstance(v, dict) and "error" in v}
    assert rc == 0 and not errors, errors
    assert report["smoke"] is True
    tiny = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "model").glob("*_tiny.yaml"))
    assert len(tiny) >= 5 and all(f"backbone:{m}" in report for m in tiny)
    for m in tiny:
        assert report[f"backbone:{m}"]["steps"] and all(s["step_s"] > 0 for s in report[f"backbone:{m}"]["steps"])
    nets = {r["network"]: r for r in report["eval_throughput"]["rows"]}
    assert set(nets) == {"DINO ViT-B/16", "CLIP ViT-B/32", "CLIP ViT-L/14", "MUSIQ"}
    assert all(r["frames_per_s"] > 0 for r in nets.values())
    gaps = report["clip_fp16_vs_fp32"]["rows"]
    assert [g["dimension"] for g in gaps] == ["background_consistency", "aesthetic_quality"]
    assert all(g["max_abs_diff"] == 0 for g in gaps)  # CPU: both precisions are fp32, so the same numbers
    for model in ("lavie_tiny", "videocrafter2_tiny"):
        part = report[f"backbone:{model}"]
        assert [s["method"] for s in part["steps"]] == list(gpu_check.METHODS)  # every method of scripts/benchmark.py
        assert all(s["step_s"] > 0 for s in part["steps"])
        lengths = {(m["method"], m["frames"]) for m in part["memory"] if m.get("peak_mb")}
        assert lengths == {(m, f) for m in gpu_check.METHODS for f in (16, 24)}
    md = (tmp_path / "gpu_check_smoke.md").read_text()
    assert "## lavie_tiny" in md and "## videocrafter2_tiny" in md and "frames/s" in md


def test_full_size_evaluation_networks_have_the_published_sizes():
    sizes = {}
    for kind in ("dino", "clip_b32", "clip_l14", "musiq"):
        with torch.device("meta"):
            net = gpu_check.full_eval_network(kind)
        sizes[kind] = sum(p.numel() for p in net.parameters()) / 1e6
    # ViT-B/16 (no pooler) 85.8 M; CLIP visual towers with projection: B/32 87.8 M, L/14 304.0 M
    assert 85.5 < sizes["dino"] < 86.1
    assert 87.6 < sizes["clip_b32"] < 88.1
    assert 303.5 < sizes["clip_l14"] < 304.5
    assert 20 < sizes["musiq"] < 35


def test_backbone_section_times_every_method_and_measures_memory_per_length(one_thread):
    spec = {**gpu_check.SMOKE, "memory_frames": [20]}
    out = gpu_check.backbone_check("lavie_tiny", torch.device("cpu"), torch.float32, spec, True, gpu_check.Budget(60))
    assert [s["method"] for s in out["steps"]] == list(gpu_check.METHODS) and all(s["step_s"] > 0 for s in out["steps"])
    assert {(m["method"], m["frames"]) for m in out["memory"] if m["peak_mb"]} == {
        (m, f) for m in gpu_check.METHODS for f in (16, 20)}
    assert "lavie_tiny" in gpu_check.markdown({"smoke": True, "wall_s": 1.0, "backbone:lavie_tiny": out,
                                               "machine": {"device": "cpu", "versions": {}, "git_commit": "x"}})


def test_an_unregistered_backbone_family_is_skipped_with_a_note(monkeypatch):
    monkeypatch.setattr(gpu_check, "registered_families", lambda: {"lavie"})
    out = gpu_check.backbone_check("videocrafter2_tiny", torch.device("cpu"), torch.float32, gpu_check.SMOKE, True,
                                   gpu_check.Budget(60))
    assert "not registered" in out["skipped"]


def test_without_cuda_the_full_check_is_a_one_line_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gpu_check.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_dit_attention_section_checks_the_fused_kernels_and_times_the_branches(one_thread):
    out = gpu_check.dit_attention_check(torch.device("cpu"), smoke=True)
    assert out["fused_ok"]["float32"] is True
    assert out["max_abs_diff_global"] < 1e-5 and out["max_abs_diff_local"] < 1e-5
    assert [one["tokens_per_frame"] for one in out["self_attentions"]] == [40, 10]  # one-frame and 3-frame blocks
    for one in out["self_attentions"]:
        assert set(one["seconds"]) == {"global_sdpa", "separate_branches", "shared_branches"}
        assert one["x_global"]["global_sdpa"] == 1.0 and all(sec > 0 for sec in one["seconds"].values())
    md = gpu_check.markdown({"smoke": True, "machine": {"device": "cpu", "versions": {}, "git_commit": "x"},
                             "wall_s": 1.0, "dit_attention": out})
    assert "shared_branches" in md


def test_multi_gpu_section_is_skipped_with_a_note_without_several_gpus_and_rendered_with_them():
    out = gpu_check.multi_gpu_check(True, gpu_check.Budget(10))
    assert "needs 2 or more" in out["skipped"] and "error" not in out
    # the shape scripts/parallel_check.py writes (tests/scripts/test_parallel_check.py runs it on two CPU ranks)
    multi = {"gpus": 4, "ranks": 4, "description": "Wan", "size": [480, 832], "model": "wan2_1_t2v_1_3b",
             "parity": [{"method": "freelong", "ranks": 4, "frames": 81, "split_s": 1.5, "rel_diff": 3e-7}],
             "timing": [{"method": "freelong", "ranks": 4, "frames": 321, "dtype": "bfloat16",
                         "one_step_call_s": 2.5, "peak_mb_rank": 9000.0}]}
    md = gpu_check.markdown({"smoke": False, "wall_s": 1.0, "machine": {"device": "x", "versions": {},
                                                                        "git_commit": "c"}, "multi_gpu": multi})
    assert "## One video over 4 GPUs" in md and "| freelong | 4 | 3e-07 |" in md and "| freelong | 321 |" in md
