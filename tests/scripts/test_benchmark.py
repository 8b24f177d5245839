"""scripts/benchmark.py end to end at tiny sizes (the code path, not the timings), and its measuring tools."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from freelong.attention.processor import TemporalAttention
from freelong.profiling import LayerTimer, PeakRSS, track_tensor_memory

MiB = 2**20


pytestmark = pytest.mark.usefixtures("one_thread")


def test_tensor_memory_tracker_counts_live_storages():
    with track_tensor_memory() as tracker:
        a = torch.empty(MiB // 4)  # 1 MiB
        v = a.view(-1, 2)  # a view: no new bytes
        b = torch.empty(MiB // 2)  # 2 MiB -> 3 live
        del a  # the view keeps the storage alive
        c = torch.ones(MiB // 4)  # -> 4 live (the peak)
        c.add_(1)  # in place: no new bytes
        del v, b  # -> 1 live
        d = c * 2  # -> 2 live
    assert tracker.peak == 4 * MiB
    assert tracker.current == 2 * MiB
    del c, d
    assert tracker.current == 0


def test_tracker_charges_meta_sdpa_like_the_fused_kernels():
    """On meta, SDPA must not be charged for the (rows, heads, L, L) matrix the reference maths builds."""
    q = torch.empty(64, 2, 512, 32, device="meta", dtype=torch.float16)
    bias = torch.empty(1, 2, 512, 512, device="meta", dtype=torch.float16)
    with track_tensor_memory() as tracker:
        out = F.scaled_dot_product_attention(q, q, q, attn_mask=bias)
    assert out.shape == q.shape and out.device.type == "meta"
    attn_matrix = 64 * 2 * 512 * 512 * 2
    assert q.numel() * 2 <= tracker.peak < attn_matrix / 4


def test_layer_timer_splits_temporal_layers_by_level(lavie_tiny):
    unet = lavie_tiny.unet
    timer = LayerTimer(unet, lambda n, m: f"L{m.level}" if isinstance(m, TemporalAttention) else None)
    with timer, torch.no_grad():
        unet(torch.randn(1, 4, 6, 8, 8), 500, torch.randn(1, 77, 32))
    assert set(timer.seconds) == {"L0", "L1", "L2", "L3"}
    assert sum(timer.calls.values()) == len([m for m in unet.modules() if isinstance(m, TemporalAttention)])
    assert all(v >= 0 for v in timer.cpu_seconds.values())
    assert not unet._forward_hooks and not any(m._forward_pre_hooks for m in unet.modules())  # removed


def test_peak_rss_is_resettable_on_linux():
    if not PeakRSS.resettable():
        pytest.skip("needs Linux /proc/self/clear_refs")
    big = torch.ones(64 * MiB // 4)  # 64 MiB touched
    high = PeakRSS.peak_mb()
    del big
    assert PeakRSS.reset()
    assert PeakRSS.peak_mb() < high


def test_benchmark_script_cpu_smoke(tmp_path, capsys):
    from scripts.benchmark import main

    out = tmp_path / "bench.json"
    result = main(["--model", "lavie_tiny", "--frames", "8,20", "--height", "64", "--width",
                   "64", "--methods", "direct,freelong,sliding_window", "--repeats", "1", "--threads", "1",
                   "--clock", "cpu", "--sampling-steps", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "Per-layer split" in printed and "x direct (cpu)" in printed
    saved = json.loads(out.read_text())
    assert saved["step"] == json.loads(json.dumps(result["step"]))
    rows = {(r["frames"], r["method"]): r for r in saved["step"]}
    assert "skipped" in rows[(8, "freelong")]["note"]  # window 16 > 8 frames
    assert rows[(8, "direct")]["step_s"] > 0
    for method in ("direct", "freelong", "sliding_window"):
        r = rows[(20, method)]
        assert r["step_s"] > 0 and r["peak_mb"] > 0
        assert set(r["temporal_s"]) == {"L0", "L1", "L2", "L3"}
        assert r["other_s"] == pytest.approx(r["cpu_s"] - sum(r["temporal_s"].values()))
    assert rows[(20, "direct")]["ratio"] == 1.0
    fl, direct = rows[(20, "freelong")], rows[(20, "direct")]
    assert fl["ratio"] == pytest.approx(fl["cpu_s"] / direct["cpu_s"])
    sampled = {(r["frames"], r["method"]): r for r in saved["sampling"]}
    assert sampled[(20, "freelong")]["video_shape"] == [20, 64, 64, 3]
    assert "torch" in saved["machine"]["versions"]
    assert saved["machine"]["command"].startswith("python scripts/benchmark.py --model lavie_tiny")


def test_benchmark_script_meta_memory_estimate():
    """--device meta computes nothing and reports the tensor-memory estimate (LaVie, reduced widths)."""
    from scripts.benchmark import main

    result = main(["--model", "lavie", "--device", "meta", "--widths", "reduced", "--frames", "16,32",
                   "--height", "64", "--width", "64", "--methods", "direct,freenoise"])
    rows = {(r["frames"], r["method"]): r for r in result["step"]}
    assert all(r["step_s"] is None and r["act_mb"] > 0 for r in rows.values())
    # activations grow with the frame count, about linearly
    ratio = rows[(32, "direct")]["act_mb"] / rows[(16, "direct")]["act_mb"]
    assert 1.5 < ratio < 2.5


def test_reduced_widths_keep_the_lavie_architecture():
    from scripts.benchmark import model_config

    cfg = model_config("lavie", "reduced")
    assert cfg.random_init and list(cfg.unet.block_out_channels) == [32, 64, 128, 128]
    heads = list(cfg.unet.attention_head_dim)
    assert all(ch // h >= 32 for ch, h in zip(cfg.unet.block_out_channels, heads))  # LaVie's rotary dim
    full = model_config("lavie", "full")
    assert list(full.unet.block_out_channels) == [320, 640, 1280, 1280] and full.random_init
    assert not model_config("lavie", "config").random_init  # the real model: --real-weights


def test_missing_width_preset_is_a_clear_error(monkeypatch):
    from scripts import benchmark

    monkeypatch.setattr(benchmark, "WIDTH_PRESETS", {})
    with pytest.raises(SystemExit, match="no 'reduced' width preset for model family 'lavie'"):
        benchmark.model_config("lavie", "reduced")


def test_meta_flops_count_freelongs_shared_branch_kernels_on_a_dit():
    """FreeLong on a DiT calls the fused SDPA kernel directly (log-sum-exp): its FLOPs must be counted too.

    The shared branches attend every query-key pair once (plus the blend's per-axis matmuls), so FreeLong's
    step FLOPs lie between direct sampling's and direct + sliding window's (the separate global and local
    branches); without the kernel's formula they would fall below direct's.
    """
    from scripts.benchmark import main

    result = main(["--model", "wan_tiny", "--device", "meta", "--frames", "161", "--height", "64", "--width", "64",
                   "--methods", "direct,sliding_window,freelong"])
    flops = {r["method"]: r["gflops"] for r in result["step"]}
    assert flops["direct"] < flops["freelong"] < flops["direct"] + flops["sliding_window"]


def test_comm_volume_of_a_split_video_is_computed_from_the_config(tmp_path):
    """``--comm``: Wan2.1-14B, 4x length at 720p over 2 and 4 ranks; every method moves what direct sampling moves."""
    import json

    from scripts.benchmark import main

    out = main(["--model", "wan2_1_t2v_14b", "--comm", "2,4,3", "--frames", "321", "--height", "720",
                "--width", "1280", "--guidance", "5", "--json", str(tmp_path / "comm.json")])
    rows = [r for r in out["comm"] if r["method"] != "-"]
    assert {r["method"] for r in rows} == {"direct", "sliding_window", "freenoise", "freelong", "freelong_pp", "riflex",
                                           "freeloc"}
    tokens = 81 * (720 // 16) * (1280 // 16)  # 291,600 tokens
    for r in rows:
        n = r["ranks"]
        # per rank and layer call: q, k, v and the output, each (S/N) x 40 heads x 128 bf16, (N-1)/N of it sent
        attn = 4 * tokens / n * 40 * 128 * 2 * (n - 1) / n
        gather = tokens / n * 16 * 4 * 2 * (n - 1)  # proj_out: 16 channels x patch 1x2x2, to N-1 ranks
        # FreeLOC: cos and sin, (S/N) x 128 bf16 each, to N-1 ranks, in each of 40 layers x 2 calls
        rope = 2 * 40 * 2 * tokens / n * 128 * 2 * (n - 1) if r["method"] == "freeloc" else 0
        assert r["tokens"] == tokens
        assert abs(r["per_step_gb"] * 2**30 - 2 * (40 * attn + gather) - rope) < 1e3  # cond + uncond calls
        assert r["all_to_alls_per_step"] == 2 * 40 * 4
        assert abs(r["added_vs_direct_gb"] * 2**30 - rope) < 1e3
    assert [r["exchange"] for r in out["comm"] if r["method"] == "-"] == [
        "refused: --comm=3 must divide the attention heads of wan2_1_t2v_14b (40): Ulysses gives each rank "
        "heads/--comm heads"]
    assert json.loads((tmp_path / "comm.json").read_text())["model"] == "wan2_1_t2v_14b"
