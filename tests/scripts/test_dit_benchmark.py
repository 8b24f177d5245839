"""scripts/benchmark.py on the new DiTs: meta-device FLOPs/memory with the family's method presets, width presets."""

import pytest


@pytest.mark.parametrize("model,frames,size", [
    ("cogvideox_5b", "49,97", "32"),
    ("cogvideox1_5_5b", "81,161", "32"),  # 11 and 21 temporal positions (2 latent frames each)
    pytest.param("cogvideox_5b", "49,193", "64", marks=pytest.mark.slow),
    pytest.param("hunyuanvideo", "129,513", "64", marks=pytest.mark.slow),
    pytest.param("wan2_2_t2v_a14b", "81,321", "64", marks=pytest.mark.slow),
    pytest.param("wan2_2_ti2v_5b", "121,481", "64", marks=pytest.mark.slow),
])
def test_meta_estimate_runs_every_default_method_at_reduced_widths(model, frames, size):
    from scripts.benchmark import main

    result = main(["--model", model, "--device", "meta", "--widths", "reduced", "--frames", frames,
                   "--height", size, "--width", size])
    rows = {(r["frames"], r["method"]): r for r in result["step"]}
    native, long = (int(f) for f in frames.split(","))
    expected = {"direct", "sliding_window", "freenoise", "freelong", "freelong_pp", "riflex"}
    assert {m for _, m in rows} == expected | ({"freeloc"} if model.startswith("wan") else set())  # FreeLOC: Wan only
    for m in ("sliding_window", "freenoise", "freelong", "freelong_pp", "riflex"):
        assert rows[(native, m)]["gflops"] == pytest.approx(rows[(native, "direct")]["gflops"])  # native: = direct
    # 2x / 4x: local windows attend fewer keys than the full attention, RIFLEx costs what direct costs, FreeLong++
    # (bound to the native length the methods count) adds its wider branch
    assert rows[(long, "freelong_pp")]["gflops"] > rows[(long, "direct")]["gflops"]
    assert rows[(long, "sliding_window")]["gflops"] < rows[(long, "direct")]["gflops"]
    assert rows[(long, "riflex")]["gflops"] == pytest.approx(rows[(long, "direct")]["gflops"])


def test_width_presets_by_model_name_and_methods_with_the_model_defaults():
    from scripts.benchmark import method_from_spec, model_config, model_defaults

    ti2v = model_config("wan2_2_ti2v_5b", "reduced")
    assert ti2v.unet.in_channels == 48 and ti2v.vae.patch_size == 2 and ti2v.random_init
    assert model_config("wan2_2_t2v_a14b", "full").unet.num_layers == 40  # the YAML's own architecture
    assert method_from_spec("freelong", model_defaults(ti2v, "freelong")).window == 31  # 121 frames = 31 latent
    assert method_from_spec("riflex", model_defaults(ti2v, "riflex")).k == 6
    assert method_from_spec("freelong:window=9", model_defaults(ti2v, "freelong:window=9")).window == 9  # spec wins


@pytest.mark.parametrize("model", ["cogvideox_5b", "hunyuanvideo", "wan2_2_ti2v_5b", "wan2_2_t2v_a14b",
                                   "wan2_1_t2v_1_3b", "cogvideox_5b_tiny", "lavie"])
def test_benchmark_methods_are_what_run_py_runs(compose_cfg, model):
    """benchmark.py builds each default method of a model with the parameters ``run.py model=M method=X`` uses."""
    from freelong.app.config import method_from_config
    from scripts.benchmark import DIT_METHODS, method_from_spec, model_config, model_defaults

    cfg = model_config(model, "config")
    for name in DIT_METHODS[:-1]:  # FreeLOC's layer list depends on the widths: test_freeloc.py
        ours = method_from_spec(name, model_defaults(cfg, name)).params()
        assert ours == method_from_config(compose_cfg(f"model={model}", f"method={name}").method).params(), name
