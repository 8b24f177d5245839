"""experiment=<model>_4x / _2x for Wan2.2, CogVideoX and HunyuanVideo: every swept method composes and validates
(frame rule, windows vs latent frames, the method's own check_model) before anything is built, with the model's own
method values (conf/model ``methods:``; tests/app/test_method_defaults.py) on the real model and on its tiny twin."""

import pytest

EXPERIMENTS = {
    # experiment: (model, num_frames, latent frames (CogVideoX 1.5: positions), native, RIFLEx's (k, n_k))
    "wan2_2_ti2v_5b_4x": ("wan2_2_ti2v_5b", 481, 121, 31, (6, None)),
    "wan2_2_ti2v_5b_2x": ("wan2_2_ti2v_5b", 241, 61, 31, (6, None)),
    "wan2_2_t2v_a14b_4x": ("wan2_2_t2v_a14b", 321, 81, 21, (6, None)),
    "wan2_2_t2v_a14b_2x": ("wan2_2_t2v_a14b", 161, 41, 21, (6, None)),
    "cogvideox_5b_4x": ("cogvideox_5b", 193, 49, 13, (2, 20)),
    "cogvideox_5b_2x": ("cogvideox_5b", 97, 25, 13, (2, 20)),
    "cogvideox1_5_5b_4x": ("cogvideox1_5_5b", 321, 41, 11, (2, 20)),  # temporal positions (2 latent frames each)
    "cogvideox1_5_5b_2x": ("cogvideox1_5_5b", 161, 21, 11, (2, 20)),
    "hunyuanvideo_4x": ("hunyuanvideo", 513, 129, 33, (4, 50)),
    "hunyuanvideo_2x": ("hunyuanvideo", 257, 65, 33, (4, 50)),
}
SWEPT = ["direct", "sliding_window", "freenoise", "freelong", "freelong_pp", "riflex"]


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_every_swept_method_composes_and_validates(compose_cfg, experiment):
    from omegaconf import OmegaConf

    from freelong.app.config import method_from_config, validate_config
    from freelong.models.spec import CONF_DIR, latent_frames

    model, frames, latent, native, riflex = EXPERIMENTS[experiment]
    sweep_file = CONF_DIR / "experiment" / f"{experiment.replace('_2x', '_4x')}.yaml"  # _2x inherits the sweep
    swept = OmegaConf.load(sweep_file).hydra.sweeper.params.method.split(",")
    assert swept == SWEPT
    for method in swept if experiment.endswith("_4x") else swept[3:4]:  # _2x: the same values, one suffices
        cfg = compose_cfg(f"experiment={experiment}", f"method={method}")
        validate_config(cfg)
        assert cfg.model.name == model and cfg.num_frames == frames
        assert latent_frames(cfg.model, frames) == latent
        assert latent_frames(cfg.model, cfg.model.native_frames) == native
        m = method_from_config(cfg.method)
        if method in ("sliding_window", "freenoise", "freelong"):
            assert m.window == native  # windows of the native latent length
            stride = getattr(m, "stride", None) or m.noise_stride
            assert (latent - native) % stride == 0  # the windows tile the video
        if method == "riflex":
            assert (m.k, m.n_k) == riflex  # the official values for this RoPE


@pytest.mark.parametrize("experiment", sorted(e for e in EXPERIMENTS if e.endswith("_4x")))
def test_the_tiny_twin_runs_the_same_sweep(compose_cfg, experiment):
    """``experiment=<model>_4x model=<model>_tiny num_frames=81`` (4x the twin's 21 frames) validates for every swept
    method: the twin brings its own windows (6 latent frames), where the real model's 13-33 would not fit."""
    from freelong.app.config import method_from_config, validate_config

    model = EXPERIMENTS[experiment][0]
    for method in SWEPT:
        cfg = compose_cfg(f"experiment={experiment}", f"model={model}_tiny", "num_frames=81", f"method={method}")
        validate_config(cfg)
        if method in ("sliding_window", "freenoise", "freelong"):
            assert method_from_config(cfg.method).window == 6


def test_a_bad_frame_count_fails_at_compose_time_naming_the_key(compose_cfg):
    from freelong.app.config import validate_config

    for model, nearest in (("cogvideox_5b", "nearest valid: 189 or 193"), ("hunyuanvideo", "nearest valid: 513 or 517"),
                           ("wan2_2_ti2v_5b", "nearest valid: 481 or 485")):
        frames = int(nearest.split()[-1]) - 2
        with pytest.raises(ValueError, match=nearest):
            validate_config(compose_cfg(f"model={model}", f"num_frames={frames}"))
