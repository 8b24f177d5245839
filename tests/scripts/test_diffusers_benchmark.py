"""scripts/benchmark.py on the diffusers AnimateDiff backbone: the code path and the per-level split."""

import pytest
from omegaconf import OmegaConf

pytestmark = pytest.mark.usefixtures("one_thread")


def test_benchmark_runs_on_animatediff_tiny_with_a_per_level_split(capsys):
    from scripts.benchmark import main

    result = main(["--model", "animatediff_tiny", "--frames", "20", "--height", "64", "--width", "64",
                   "--methods", "direct,freelong", "--repeats", "1", "--threads", "1", "--clock", "cpu"])
    assert "x direct (cpu)" in capsys.readouterr().out
    rows = {r["method"]: r for r in result["step"]}
    for method in ("direct", "freelong"):
        assert set(rows[method]["temporal_s"]) == {"L0", "L1"}  # the motion modules' attn1/attn2, per level
        r = rows[method]
        assert r["other_s"] == pytest.approx(r["cpu_s"] - sum(r["temporal_s"].values()))
    assert rows["freelong"]["ratio"] == pytest.approx(rows["freelong"]["cpu_s"] / rows["direct"]["cpu_s"])


def test_reduced_animatediff_preset_is_a_consistent_sd15_layout():
    from freelong.models.diffusers_unet.backbone import check_motion_adapter
    from scripts.benchmark import model_config

    cfg = model_config("animatediff", "reduced")
    assert cfg.random_init and len(cfg.unet.down_block_types) == 4
    check_motion_adapter(OmegaConf.to_container(cfg.unet), OmegaConf.to_container(cfg.extra.motion_adapter), "x")
