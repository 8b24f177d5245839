"""Method interface and registry.

A method is a dataclass of its parameters that knows how to (1) draw the initial noise and
(2) install a temporal-attention processor on every temporal attention layer of a UNet.
``method.attach(unet)`` returns a handle whose ``detach()`` puts the previous processors back.
New methods register themselves with :func:`register_method` and become available to
``get_method(name, **params)``, the Hydra ``method=`` group, and every backbone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from .attention import TemporalAttnProcessor, temporal_attention_layers

_METHODS: dict[str, type[Method]] = {}


class AttachHandle:
    """Restores the processors a method replaced. Also usable as a context manager."""

    def __init__(self, unet: nn.Module, previous: dict[str, TemporalAttnProcessor]):
        self._unet = unet
        self._previous = previous
        self.layer_names = list(previous)

    def detach(self) -> None:
        layers = temporal_attention_layers(self._unet)
        for name, proc in self._previous.items():
            layers[name].set_processor(proc)
        self._previous = {}

    def __enter__(self) -> AttachHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


@dataclasses.dataclass
class Method:
    """Base class. Subclasses are dataclasses whose fields are the method's parameters."""

    name: ClassVar[str] = "base"

    def __post_init__(self) -> None:
        self.validate()

    # -- parameters ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the offending parameter."""

    def check_frames(self, num_frames: int) -> None:
        """Raise ValueError if this method cannot run at ``num_frames`` frames."""
        window = getattr(self, "window", None)
        if window is not None and window > num_frames:
            raise ValueError(
                f"method.window={window} is larger than num_frames={num_frames}; "
                f"use a window <= num_frames (window == num_frames means plain global attention)"
            )

    def check_model(self, model_cfg: Any) -> None:
        """Raise ValueError if this method cannot run on the model a config describes (before loading it)."""

    def params(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    # -- behaviour ----------------------------------------------------------------------------
    def processor(self) -> TemporalAttnProcessor:
        return TemporalAttnProcessor()

    def init_noise(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Initial latents ``(B, C, T, H, W)`` drawn on the generator's device."""
        device = generator.device if generator is not None else "cpu"
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def for_multi_prompt(self) -> Method:
        """The method to use for a multi-prompt video (FreeLong switches to random noise there)."""
        return self

    def prompt_injection(self):
        """A :class:`freelong.prompts.MotionInjection` for multi-prompt videos, or None (FreeNoise offers one)."""
        return None

    def attach(self, unet: nn.Module) -> AttachHandle:
        layers = temporal_attention_layers(unet)
        if not layers:
            raise ValueError(f"{type(unet).__name__} has no temporal attention layers to attach {self.name} to")
        proc = self.processor()
        previous = {}
        for name, layer in layers.items():
            previous[name] = layer.processor
            layer.set_processor(proc)
        return AttachHandle(unet, previous)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}({args})"


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    return v


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def deco(cls: type[Method]) -> type[Method]:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered by {_METHODS[name].__qualname__}")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def _load_builtin_methods() -> None:
    # FreeLong lives in this package, the baselines in the top-level ``baselines`` package.
    from . import freelong_method  # noqa: F401

    try:
        import baselines  # noqa: F401
    except ImportError as err:  # pragma: no cover - only if the package is broken
        raise ImportError(f"could not import the baselines package: {err}") from err


def available_methods() -> list[str]:
    _load_builtin_methods()
    return sorted(_METHODS)


def method_class(name: str) -> type[Method]:
    _load_builtin_methods()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def get_method(name: str, **params: Any) -> Method:
    """Build a registered method: ``get_method("freelong", window=16, d_s=0.25, d_t=0.25)``."""
    cls = method_class(name)
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for method {name!r}; valid: {', '.join(sorted(valid))}"
        )
    return cls(**params)
