"""What ``method=<name>`` means on each model: the model config's ``methods:`` block (windows in latent frames) under
everything a preset, an experiment or the command line sets, checked by validation before any weight is read."""

import copy
import dataclasses

import pytest
from helpers import compose_config
from omegaconf import OmegaConf

from freelong.app.config import method_from_config, validate_config
from freelong.errors import ConfigError
from freelong.methods import available_methods, get_method, method_class
from freelong.models.spec import CONF_DIR, available_models, latent_frames, load_model_config

METHODS = [m for m in available_methods() if (CONF_DIR / "method" / f"{m}.yaml").is_file()]


def lengths(model_cfg) -> dict[str, int]:
    """The model's default length and its native length x1, x2, x4 (4n+1 models: 4(k(n_native)) + 1 frames)."""
    native = int(model_cfg.native_frames)
    compressed = latent_frames(model_cfg, native) != native
    times = {f"{k}x": k * (native - 1) + 1 if compressed else k * native for k in (1, 2, 4)}
    return {"default": int(model_cfg.sampling.num_frames), **times}


def family_refusal(model_cfg, method: str) -> str | None:
    """The method's own refusal of this model (its family or shape), before any length is looked at."""
    try:
        get_method(method).check_model(model_cfg)
    except ValueError as err:
        return str(err)
    return None


@pytest.fixture(scope="module")
def method_configs():
    """Each method's own config, composed once (``method=X``); a model is put in by replacing ``model``, which is
    what composing ``model=M method=X`` does (the method's YAML reads ``model.methods`` when resolved)."""
    return {m: compose_config(f"method={m}") for m in METHODS}


@pytest.mark.parametrize("model", available_models())
def test_every_model_runs_every_method_its_family_takes_at_1x_2x_4x(method_configs, model):
    """``model=M method=X`` with X's own config: validates at M's default length and native x1/x2/x4 whenever X runs
    on M's family; otherwise the refusal is X's family rule (not a window that is too long)."""
    model_cfg = load_model_config(model)
    for method, composed in method_configs.items():
        cfg = copy.deepcopy(composed)  # lengths are set on it
        cfg.model = model_cfg
        refusal = family_refusal(model_cfg, method)
        if refusal is not None:
            with pytest.raises(ValueError) as err:
                validate_config(cfg)
            assert str(err.value) == refusal, (model, method)
            continue
        for what, frames in lengths(model_cfg).items():
            OmegaConf.update(cfg, "num_frames", frames)
            try:
                validate_config(cfg)
            except ValueError as err:
                pytest.fail(f"model={model} method={method} num_frames={frames} ({what}): {err}")


def test_swapping_the_model_is_composing_it(method_configs, compose_cfg):
    """The shortcut above against real composition, on a model with a block and one without."""
    for model in ("cogvideox_5b", "lavie"):
        for method in ("freelong", "freenoise", "freelong_pp", "riflex"):
            cfg = copy.deepcopy(method_configs[method])
            cfg.model = load_model_config(model)
            assert OmegaConf.to_container(cfg, resolve=True) == \
                OmegaConf.to_container(compose_cfg(f"model={model}", f"method={method}"), resolve=True)


@pytest.mark.parametrize("model", [m for m in available_models() if load_model_config(m).methods])
def test_a_model_block_sets_windows_of_its_native_latent_length(compose_cfg, model):
    """Each value of the block reaches the method (the method's YAML reads every key the block sets), and windows
    are the native length in latent frames (CogVideoX-5B: 49 frames = 13)."""
    model_cfg = load_model_config(model)
    native = latent_frames(model_cfg, model_cfg.native_frames)
    for name, block in model_cfg.methods.items():
        params = method_from_config(compose_cfg(f"model={model}", f"method={name}").method).params()
        block = OmegaConf.to_container(block)
        assert {k: params[k] for k in block} == block, (model, name)
        if "window" in block:
            assert block["window"] == native, (model, name)


PRESETS = {  # real model: the suffixes of its method presets, conf/method/<name>_<suffix>.yaml (its own first)
    "wan2_1_t2v_1_3b": ["wan"], "wan2_1_t2v_14b": ["wan"], "wan2_2_t2v_a14b": ["wan"],
    "wan2_2_ti2v_5b": ["wan2_2_ti2v", "wan"], "cogvideox_5b": ["cogvideox"], "hunyuanvideo": ["hunyuanvideo"]}


@pytest.mark.parametrize("model", sorted(PRESETS))
def test_the_method_presets_are_the_model_defaults(compose_cfg, model):
    """``method=freelong_cogvideox`` (the presets wan_4x and users name) runs what ``method=freelong`` runs on that
    model: one set of values, wherever a user starts from."""
    blocks = load_model_config(model).methods
    assert set(blocks) == {"freelong", "freelong_pp", "freenoise", "sliding_window", "riflex"}
    for name in blocks:
        preset = next(f"{name}_{s}" for s in PRESETS[model] if (CONF_DIR / "method" / f"{name}_{s}.yaml").is_file())
        ours = method_from_config(compose_cfg(f"model={model}", f"method={name}").method).params()
        assert ours == method_from_config(compose_cfg(f"model={model}", f"method={preset}").method).params(), preset


def test_presets_experiments_and_the_command_line_win_over_the_model(compose_cfg):
    assert compose_cfg("model=cogvideox_5b").method.window == 13  # the default method on CogVideoX: 13 latent frames
    assert compose_cfg("model=cogvideox_5b", "method.window=7").method.window == 7
    assert compose_cfg("model=lavie").method.window == 16  # UNets: FreeLong's released window
    assert compose_cfg("model=wan2_1_t2v_1_3b", "method=freelong_vc2").method.window == 21  # a preset keeps the rest
    cfg = compose_cfg("experiment=sweep_freelong_pp_bands", "model=lavie")
    assert list(cfg.method.scales) == [1, 2, 4]  # the experiment's own scales, not lavie's scales=null
    assert compose_cfg("model=lavie", "method=freelong_pp").method.scales is None
    # FreeInit's inner method takes the model's defaults too, under the inner parameters given
    inner = method_from_config(compose_cfg("model=cogvideox_5b", "method=freeinit", "method.inner=freelong").method,
                               load_model_config("cogvideox_5b"))
    assert (inner.inner.window, inner.inner.noise_stride, list(inner.inner.local_only_levels)) == (13, 4, [])
    cfg = compose_cfg("model=cogvideox_5b", "method=freeinit", "method.inner=freelong", "+method.inner_params.window=5")
    assert method_from_config(cfg.method, cfg.model).inner.window == 5


def test_a_window_past_the_latent_length_names_latent_frames_before_any_weight(compose_cfg, tmp_path):
    """A window set past CogVideoX's 13 latent frames fails in validation (no weights on this machine: the error is
    the window's, not the weights'); the message says the methods count latent frames."""
    from freelong.app.runner import run
    from freelong.errors import MissingWeightsError

    cfg = compose_cfg("model=cogvideox_5b", "method.window=20", f"paths.weights_dir={tmp_path}",
                      f"paths.output_root={tmp_path}")
    with pytest.raises(ConfigError, match=r"method\.window=20 is larger than num_frames=13.*latent frames; "
                                          r"num_frames=49 is 13 of them, its native 49 frames are 13"):
        run(cfg)
    cfg = compose_cfg("model=cogvideox_5b", f"paths.weights_dir={tmp_path}", f"paths.output_root={tmp_path}")
    with pytest.raises(MissingWeightsError, match="cogvideox"):  # the default method passes: next come the weights
        run(cfg)
    assert not list(tmp_path.rglob("*.mp4"))


@pytest.mark.parametrize("override,needle", [
    ("+model.methods.freelong.windw=3", r"model\.methods\.freelong: windw is no parameter of method freelong"),
    ("+model.methods.nosuch={window: 3}", r"model\.methods\.nosuch: no method 'nosuch'"),
])
def test_a_bad_model_block_is_one_clear_error(compose_cfg, override, needle):
    with pytest.raises(ValueError, match=needle):
        validate_config(compose_cfg("model=cogvideox_5b_tiny", override))


def test_every_method_in_a_block_has_the_keys_its_yaml_reads():
    """A block may only set keys the method's YAML takes from the model (others would be silently ignored)."""
    for model in available_models():
        for name, block in load_model_config(model).methods.items():
            yaml = OmegaConf.load(CONF_DIR / "method" / f"{name}.yaml")
            reads = {k for k in yaml if OmegaConf.is_interpolation(yaml, k)}
            assert set(block) <= reads, (model, name, set(block) - reads)
            assert set(block) <= {f.name for f in dataclasses.fields(method_class(name))}


def test_the_job_key_holds_the_resolved_method_not_the_block(compose_cfg):
    """A video's key (resume, status) is that of a config without any ``methods`` block (runs made before it keep
    their videos), moves when the block changes the method in use, and not when it changes another method."""
    from freelong.app.records import Job, job_key

    job = Job(0, "a cat", 0)
    for model in ("lavie_tiny", "cogvideox_5b_tiny"):
        cfg = compose_cfg(f"model={model}")
        old = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        old.model.pop("methods")  # a config saved before model configs had the block
        assert job_key(cfg, job, "float32") == job_key(old, job, "float32"), model
    cfg = compose_cfg("model=cogvideox_5b_tiny")
    key = job_key(cfg, job, "float32")
    OmegaConf.update(cfg, "model.methods.freenoise.window", 3)  # not the method in use (freelong)
    assert job_key(cfg, job, "float32") == key
    OmegaConf.update(cfg, "model.methods.freelong.window", 3)
    assert cfg.method.window == 3 and job_key(cfg, job, "float32") != key
