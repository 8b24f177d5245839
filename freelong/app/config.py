"""Structured-config schemas for the Hydra app, and validation that runs before any heavy work.

The model schema itself is core data (:mod:`freelong.models.spec`); this module adds the run's. Every
YAML file of a config group lists its schema first in its ``defaults`` (e.g. ``conf/method/freelong.yaml``
starts with ``- /schema/method/freelong@_here_``), so unknown keys and values of the wrong type fail at
compose time with a message that names the key. Value ranges and cross-field rules (``method.window <=
num_frames``, cut-offs in (0, 1], ...) are checked by :func:`validate_config` at the start of a run, before
any model is built. A plugin method without a YAML file gets its dataclass defaults as the group option.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from ..models.spec import (  # noqa: F401
    CONF_DIR,
    ModelConfig,
    SamplingConfig,
    latent_frames,
    load_model_config,
    method_values,
    temporal_patch,
)
from .sharding import check_job_device, check_shard

DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class PromptsConfig:
    """``list``: prompts; ``file``: a .txt (one prompt per line) or .json list of prompts.

    A prompt is a string, or a multi-prompt video: a list of segments ``{prompt, frames}`` (or a dict
    ``{segments: [...], transition_frames: n}``); ``transition_frames`` is the default number of
    frames over which consecutive segments' text embeddings are interpolated (``freelong/prompts.py``).
    """

    name: str = "demo"
    list: list[Any] = field(default_factory=list)
    file: str | None = None
    limit: int | None = None
    transition_frames: int = 8
    suite: str | None = None  # "vbench": VBench's prompt suite (freelong/app/prompt_suites.py)
    vbench_info: str | None = None  # VBench_full_info.json; default: the installed vbench package's
    dimensions: list[str] = field(default_factory=lambda: [])  # suite prompts tagged with any of these (empty: all)
    sample_seed: int | None = None  # with limit: a seeded random draw instead of the first `limit`


@dataclass
class LongEvalConfig:
    """``eval.protocol=long`` settings (``eval.long.LongSettings``; defaults are VBench-Long's)."""

    clip_lengths: str = "mix"  # mix: 2 s quality dims, 10 s overall_consistency | short: 2 s everywhere
    clip_seconds: dict[str, float] = field(default_factory=dict)  # per-dimension overrides
    scene_split: str = "auto"  # auto: PySceneDetect if installed, else one scene | on | off
    scene_threshold: float = 35.0
    w_inclip: float = 1.0
    w_clip2clip: float = 0.0
    dev: bool = False  # VBench-Long's --dev_flag weights (0.5/0.5)
    subject_extractor: str = "dinov2"  # dino | dinov2
    background_extractor: str = "dreamsim"  # clip | dreamsim
    static_filter: bool = False


@dataclass
class EvalConfig:
    """VBench scoring of each generated video (``eval/``); ``dims`` empty means the group named by ``name``."""

    name: str = "none"
    dims: list[str] = field(default_factory=list)
    source: str = "file"  # file: decode the written mp4 (as VBench would); frames: the generated uint8 frames
    device: str | None = None  # default: the run's device
    batch_size: int = 32
    precision: str = "vbench"  # vbench: fp16 CLIP on CUDA like VBench; fp32: fp32 everywhere
    imaging_mode: str = "longer"  # VBench imaging_quality_preprocessing_mode
    cache_dir: str | None = None  # VBench cache root (default $VBENCH_CACHE_DIR or ~/.cache/vbench)
    weights: dict[str, str | None] = field(default_factory=dict)  # explicit weight paths by name
    backend: str = "native"  # native | official (the vbench package in another environment)
    vbench_python: str | None = None  # that environment's python, for backend=official
    seed: int = 0  # seed of the random-init evaluation networks (smoke runs)
    protocol: str = "standard"  # standard (VBench) | long (VBench-Long: scenes, clips, fusion; eval/long.py)
    long: LongEvalConfig = field(default_factory=LongEvalConfig)


@dataclass
class LoggerConfig:
    """Experiment logging; ``wandb`` writes offline by default (``wandb sync`` later)."""

    name: str = "none"
    project: str = "freelong-bench"
    entity: str | None = None
    mode: str = "offline"  # offline | online | disabled
    group: str | None = None  # default: the experiment (task_name)
    tags: list[str] = field(default_factory=list)
    dir: str | None = None  # default: the run directory
    log_videos: bool = True
    log_figures: bool = True
    max_videos: int = 16  # videos uploaded per run (all scores are logged regardless)
    log_report: bool = True  # the run's HTML report (videos copied in) as a wandb artifact of type "report"


@dataclass
class PathsConfig:
    weights_dir: str | None = None
    output_root: str = "outputs"


@dataclass
class ParallelSettings:
    """One video over several processes (``freelong/parallel.py``; docs/context_parallel.md)."""

    context: int = 1  # ranks the DiT's token sequence is split over (Ulysses); launch with torch.distributed.run


@dataclass
class RunConfig:
    task_name: str = "run"
    tags: list[str] = field(default_factory=list)
    num_frames: int = MISSING
    height: int = MISSING
    width: int = MISSING
    num_inference_steps: int = MISSING
    guidance_scale: float = MISSING
    sampler: str = MISSING
    eta: float = MISSING
    fps: int = MISSING
    seed: int = 0
    num_seeds: int = 1
    shard: int = 0  # this job makes the videos at positions shard, shard + num_shards, ... (app/sharding.py)
    num_shards: int = 1
    negative_prompt: str = ""
    device: str = "auto"
    dtype: str = "auto"
    decode_chunk_size: int | None = None  # frames per VAE decode call; null = automatic
    frame_chunk_size: int | None = None  # UNet frame chunking: null = automatic, 0 = off, n = frames per chunk
    overwrite: bool = False
    progress: bool = True
    report: bool = False  # write the HTML report (analysis/report.py) into the run dir, or the sweep dir for -m
    model: ModelConfig = MISSING
    method: Any = MISSING
    prompts: PromptsConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    parallel: ParallelSettings = field(default_factory=ParallelSettings)
    analysis: dict[str, Any] = field(default_factory=dict)


def method_schema(method_cls: type) -> type:
    """A structured-config dataclass ``{name, <the method's parameters>}`` for a method class."""
    fields = [("name", str, field(default=method_cls.name))]
    for f in dataclasses.fields(method_cls):
        default = (
            field(default_factory=f.default_factory)  # type: ignore[arg-type]
            if f.default_factory is not dataclasses.MISSING
            else field(default=f.default)
        )
        fields.append((f.name, f.type, default))
    return dataclasses.make_dataclass(f"{method_cls.__name__}Config", fields)


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (called by run.py and the tests)."""
    from ..methods import available_methods, method_class

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="schema/model", name="model", node=ModelConfig, package="model")
    cs.store(group="schema/prompts", name="prompts", node=PromptsConfig, package="prompts")
    cs.store(group="schema/eval", name="eval", node=EvalConfig, package="eval")
    cs.store(group="schema/logger", name="logger", node=LoggerConfig, package="logger")
    cs.store(group="schema/paths", name="paths", node=PathsConfig, package="paths")
    for name in available_methods():
        schema = method_schema(method_class(name))
        cs.store(group="schema/method", name=name, node=schema, package="method")
        if not (CONF_DIR / "method" / f"{name}.yaml").is_file():  # a plugin method without a YAML file
            cs.store(group="method", name=name, node=schema)


def _positive(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value}")


def method_from_config(cfg: DictConfig, model_cfg: DictConfig | None = None):
    """The :class:`~freelong.methods.Method` a ``method`` node describes (``name`` + its parameters).

    With the run's ``model_cfg``, a wrapped method (FreeInit's ``inner``) takes the model's defaults for it
    (``model.methods.<inner>``) under the ``inner_params`` given, as ``method=<inner>`` itself would."""
    from ..methods import get_method

    params = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "name"}
    if model_cfg is not None and isinstance(params.get("inner"), str) and "inner_params" in params:
        own = method_values(model_cfg).get(params["inner"]) or {}
        params["inner_params"] = {**own, **(params["inner_params"] or {})}
    return get_method(cfg.name, **params)


def check_method_defaults(model_cfg: DictConfig) -> None:
    """A model's ``methods`` block names registered methods and their parameters (a typo fails, not ignored)."""
    import dataclasses

    from ..methods import available_methods, method_class

    for name, params in (model_cfg.get("methods") or {}).items():
        if name not in available_methods():
            raise ValueError(f"model.methods.{name}: no method {name!r} (available: {', '.join(available_methods())})")
        fields = {f.name for f in dataclasses.fields(method_class(name))}
        unknown = sorted(set(params or {}) - fields)
        if unknown:
            raise ValueError(f"model.methods.{name}: {', '.join(unknown)} is no parameter of method {name} "
                             f"(parameters: {', '.join(sorted(fields))})")


def check_method_frames(method, cfg: DictConfig) -> None:
    """``method.check_frames`` at the latent length the methods see; a video VAE's compression is spelled out."""
    latent = latent_frames(cfg.model, cfg.num_frames)
    try:
        method.check_frames(latent)
    except ValueError as err:
        if latent == cfg.num_frames:
            raise
        patch = temporal_patch(cfg.model)
        unit = "latent frames" if patch == 1 else f"temporal positions of {patch} latent frames"
        raise ValueError(f"{err} (model {cfg.model.name}: the methods see {unit}; num_frames={cfg.num_frames} "
                         f"is {latent} of them, its native {cfg.model.native_frames} frames are "
                         f"{latent_frames(cfg.model, cfg.model.native_frames)})") from None


def check_parallel(cfg: DictConfig) -> None:
    """``parallel.context``: a family diffusers can split, heads and latent tokens it divides, and as many
    processes as ``torch.distributed.run`` started."""
    from ..parallel import check_context_parallel, check_token_split, launched_world_size

    degree = int(cfg.parallel.context)
    check_context_parallel(cfg.model, degree)
    if degree == 1:
        return
    if cfg.get("analysis", {}).get("task"):
        raise ValueError(f"parallel.context={degree} splits generation; analysis.task={cfg.analysis.task} runs in "
                         f"one process (parallel.context=1)")
    if launched_world_size() != degree:
        raise ValueError(f"parallel.context={degree} needs {degree} processes, found {launched_world_size()}: launch "
                         f"with python -m torch.distributed.run --nproc_per_node {degree} run.py ... "
                         f"parallel.context={degree}")
    p_t, p_h, p_w = (OmegaConf.select(cfg.model, "unet.patch_size") or [1, 2, 2])
    vae = 8  # Wan's VAE (the only family with a context-parallel plan, freelong.parallel.CONTEXT_PARALLEL_FAMILIES)
    tokens = latent_frames(cfg.model, cfg.num_frames) // p_t * (cfg.height // (vae * p_h)) * (cfg.width // (vae * p_w))
    check_token_split(tokens, degree)


def validate_config(cfg: DictConfig) -> None:
    """Value and cross-field checks; raise ValueError naming the key. Cheap: builds no model."""
    for key in ("num_frames", "height", "width", "num_inference_steps", "num_seeds", "fps"):
        _positive(cfg, key)
    if cfg.decode_chunk_size is not None:
        _positive(cfg, "decode_chunk_size")
    if cfg.frame_chunk_size is not None and cfg.frame_chunk_size < 0:
        raise ValueError(
            f"frame_chunk_size must be null (auto), 0 (off) or a positive integer, got {cfg.frame_chunk_size}"
        )
    check_shard(cfg.shard, cfg.num_shards)
    for key in ("height", "width"):
        if cfg[key] % 8:
            raise ValueError(f"{key}={cfg[key]} must be a multiple of 8 (the VAE downsamples by 8)")
    if cfg.guidance_scale < 0:
        raise ValueError(f"guidance_scale must be >= 0, got {cfg.guidance_scale}")
    if cfg.sampler not in cfg.model.samplers:
        raise ValueError(f"sampler must be one of {', '.join(cfg.model.samplers)} for model {cfg.model.name}, "
                         f"got {cfg.sampler!r}")
    if not (0.0 <= cfg.eta <= 1.0):
        raise ValueError(f"eta must be in [0, 1], got {cfg.eta}")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    check_job_device(cfg.device)  # cpu | cuda[:N] | mps | cuda:free
    # Methods see latent frames (Wan: 4n+1 video frames -> n+1); FreeLong++ is bound to the native latent length.
    # The family first: a method that does not run on this model says so, whatever its window.
    check_method_defaults(cfg.model)
    native = latent_frames(cfg.model, cfg.model.native_frames)
    method = method_from_config(cfg.method, cfg.model).with_native_frames(native)
    method.check_model(cfg.model)
    check_method_frames(method, cfg)
    check_parallel(cfg)
    if cfg.prompts.file is not None and not Path(cfg.prompts.file).expanduser().is_file():
        raise ValueError(f"prompts.file={cfg.prompts.file} does not exist")
    if cfg.prompts.file is None and not cfg.prompts.list and not cfg.prompts.suite:
        raise ValueError("no prompts: set prompts.list or prompts.file (e.g. prompts=file prompts.file=my.txt)")
