"""What a model config says (``conf/model/<name>.yaml``), as structured-config dataclasses.

Core data, not app: :func:`freelong.load_backbone` reads these files without Hydra (OmegaConf only), and
the Hydra app registers the same dataclasses as the ``model`` group's schema, so an unknown key or a value
of the wrong type fails the same way in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from ..weights import REPO_ROOT, WeightConfig
from .frames import check_wan_frames, latent_frame_count

CONF_DIR = REPO_ROOT / "conf"
SAMPLERS = ("ddim", "ddpm")


@dataclass
class SamplingConfig:
    """A backbone's native sampling settings; the top-level keys default to these."""

    num_frames: int = 16
    height: int = 320
    width: int = 512
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    sampler: str = "ddim"
    eta: float = 0.0
    fps: int = 8


@dataclass
class ModelConfig:
    """One backbone. ``random_init`` models are built in-process from the tiny configs below."""

    name: str = MISSING
    family: str = MISSING
    description: str = ""
    random_init: bool = False
    init_seed: int = 0
    native_frames: int = 16
    latent_scale: float = 0.18215
    cfg_mode: str = "batched"
    unet: dict[str, Any] = field(default_factory=dict)
    vae: dict[str, Any] = field(default_factory=dict)
    text_encoder: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, WeightConfig] = field(default_factory=dict)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    samplers: list[str] = field(default_factory=lambda: list(SAMPLERS))  # samplers this model supports
    extra: dict[str, Any] = field(default_factory=dict)
    # Per-method parameter defaults on this model (``{freelong: {window: 13, ...}}``; windows in latent frames):
    # ``method=<name>`` takes them where the method's YAML reads ``model.methods.<name>.<key>`` and nothing else
    # (a preset, an experiment, the command line) sets the key (freelong/app/config.py: check_method_defaults).
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)


def model_config_dir() -> Path:
    return CONF_DIR / "model"


def available_models() -> list[str]:
    return sorted(p.stem for p in model_config_dir().glob("*.yaml"))


def load_model_config(name: str) -> DictConfig:
    """The ``conf/model/<name>.yaml`` config validated against :class:`ModelConfig` (no Hydra needed)."""
    path = model_config_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    raw = OmegaConf.load(path)
    raw.pop("defaults", None)
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), raw)


__all__ = ["CONF_DIR", "SAMPLERS", "ModelConfig", "SamplingConfig", "available_models", "latent_frames",
           "load_model_config", "method_values", "temporal_patch"]


def method_values(model_cfg: DictConfig | Any) -> dict[str, dict[str, Any]]:
    """A model config's ``methods`` block as plain dicts: ``{method name: {parameter: value}}`` (empty without one);
    what a method named by a string means on the model (run.py, LongVideoPipeline, FreeInit's inner, benchmark)."""
    block = model_cfg.get("methods")
    return OmegaConf.to_container(block, resolve=True) if block else {}


def temporal_patch(model_cfg: DictConfig | Any) -> int:
    """Latent frames per temporal token of a model config's transformer (``unet.patch_size_t``; CogVideoX 1.5: 2,
    every other model here 1)."""
    return int((model_cfg.get("unet") or {}).get("patch_size_t") or 1)


def latent_frames(model_cfg: DictConfig | Any, num_frames: int) -> int:
    """Frames the methods see for ``num_frames`` video frames of a model config (before building it).

    A video VAE that compresses time (Wan: ``extra.temporal_compression: 4``, 4n+1 -> n+1) changes the
    count and rejects other lengths (ValueError naming the nearest valid ones), and a temporal patch
    (:func:`temporal_patch`) counts positions of that many latent frames; otherwise the identity.
    The built backbone answers the same through :meth:`~freelong.models.base.Backbone.method_frames`.
    """
    compression = int((model_cfg.get("extra") or {}).get("temporal_compression", 1))
    if compression == 1:
        return int(num_frames)
    check_wan_frames(num_frames, compression)
    return -(-latent_frame_count(num_frames, compression) // temporal_patch(model_cfg))
