"""experiment=<model>_4x / _2x for Wan2.2, CogVideoX and HunyuanVideo: every swept method composes and validates
(frame rule, windows vs latent frames, the method's own check_model) before anything is built."""

import pytest

EXPERIMENTS = {
    # experiment: (model, num_frames, latent frames, native latent, method preset suffix, riflex preset)
    "wan2_2_ti2v_5b_4x": ("wan2_2_ti2v_5b", 481, 121, 31, "wan2_2_ti2v", "riflex_wan"),
    "wan2_2_ti2v_5b_2x": ("wan2_2_ti2v_5b", 241, 61, 31, "wan2_2_ti2v", "riflex_wan"),
    "wan2_2_t2v_a14b_4x": ("wan2_2_t2v_a14b", 321, 81, 21, "wan", "riflex_wan"),
    "wan2_2_t2v_a14b_2x": ("wan2_2_t2v_a14b", 161, 41, 21, "wan", "riflex_wan"),
    "cogvideox_5b_4x": ("cogvideox_5b", 193, 49, 13, "cogvideox", "riflex_cogvideox"),
    "cogvideox_5b_2x": ("cogvideox_5b", 97, 25, 13, "cogvideox", "riflex_cogvideox"),
    "hunyuanvideo_4x": ("hunyuanvideo", 513, 129, 33, "hunyuanvideo", "riflex_hunyuanvideo"),
    "hunyuanvideo_2x": ("hunyuanvideo", 257, 65, 33, "hunyuanvideo", "riflex_hunyuanvideo"),
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_every_swept_method_composes_and_validates(compose_cfg, experiment):
    from omegaconf import OmegaConf

    from freelong.app.config import method_from_config, validate_config
    from freelong.models.spec import CONF_DIR, latent_frames

    model, frames, latent, native, suffix, riflex = EXPERIMENTS[experiment]
    sweep_file = CONF_DIR / "experiment" / f"{experiment.replace('_2x', '_4x')}.yaml"  # _2x inherits the sweep
    swept = OmegaConf.load(sweep_file).hydra.sweeper.params.method.split(",")
    assert swept == ["direct", f"sliding_window_{suffix}", f"freenoise_{suffix}", f"freelong_{suffix}",
                     f"freelong_pp_{suffix}", riflex]
    for method in swept if experiment.endswith("_4x") else swept[3:4]:  # _2x: the same presets, one suffices
        cfg = compose_cfg(f"experiment={experiment}", f"method={method}")
        validate_config(cfg)
        assert cfg.model.name == model and cfg.num_frames == frames
        assert latent_frames(cfg.model, frames) == latent
        assert latent_frames(cfg.model, cfg.model.native_frames) == native
        m = method_from_config(cfg.method)
        if method.startswith(("sliding_window", "freenoise", "freelong_")) and not method.startswith("freelong_pp"):
            assert m.window == native  # windows of the native latent length
            stride = getattr(m, "stride", None) or m.noise_stride
            assert (latent - native) % stride == 0  # the windows tile the video


def test_a_bad_frame_count_fails_at_compose_time_naming_the_key(compose_cfg):
    from freelong.app.config import validate_config

    for model, nearest in (("cogvideox_5b", "nearest valid: 189 or 193"), ("hunyuanvideo", "nearest valid: 513 or 517"),
                           ("wan2_2_ti2v_5b", "nearest valid: 481 or 485")):
        frames = int(nearest.split()[-1]) - 2
        with pytest.raises(ValueError, match=nearest):
            validate_config(compose_cfg(f"model={model}", f"num_frames={frames}"))
