"""Method interface and registry.

A method is a dataclass of its parameters that *describes* what it changes (:data:`LEVELS`): the processor
every temporal attention layer gets (:meth:`Method.processor`), the RoPE frequencies (:meth:`Method.
rope_frequencies`), the initial noise (:meth:`Method.init_noise`), or whole motion blocks
(:meth:`Method.block_forward`). It installs nothing itself: ``backbone.attach(method)``
(:meth:`freelong.models.base.Backbone.attach`) is the one installer, for every family, and returns a
:class:`freelong.handle.Handle` whose ``detach()`` undoes it exactly.
Methods are plugins: the registry is fed by the ``freelong.methods`` entry-point group (``pyproject.toml``
declares the paper's own family from :mod:`freelong.methods` and every comparison method from ``baselines``;
any installed distribution can add more) and by :func:`register_method` for in-process definitions. Every
registered method is available to ``get_method(name, **params)``, the Hydra ``method=`` group and every
backbone it accepts (:meth:`Method.check_model`); ``python -m freelong methods`` lists them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from ..attention.processor import TemporalAttnProcessor
from ..registry import Registry

METHODS: Registry[type[Method]] = Registry("freelong.methods", "method")

# The four places a method can act (DESIGN: attention processors, positions, initial noise, the sampling loop).
LEVELS = ("attention", "positions", "initial noise", "sampling loop")


@dataclasses.dataclass
class Method:
    """Base class. Subclasses are dataclasses whose fields are the method's parameters."""

    name: ClassVar[str] = "base"
    # What the method changes, a subset of LEVELS (``python -m freelong methods`` and the README matrix read it).
    levels: ClassVar[tuple[str, ...]] = ()
    # True when the method edits the backbone's RoPE frequencies (:meth:`rope_frequencies`; RIFLEx).
    edits_rope: ClassVar[bool] = False

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

    def rope_frequencies(
        self, freqs: torch.Tensor, *, axis: str, num_positions: int, native_positions: int
    ) -> torch.Tensor:
        """The RoPE frequencies to use on ``axis`` at ``num_positions`` positions (default: unchanged).

        Backbones whose positions are RoPE (Wan's 3D RoPE) call this when a method overrides it (RIFLEx).
        """
        return freqs

    def with_native_frames(self, native_frames: int | None) -> Method:
        """This method for a backbone whose native length is ``native_frames`` (FreeLong++ sizes windows by it)."""
        return self

    def params(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    # -- behaviour ----------------------------------------------------------------------------
    def processor(self) -> TemporalAttnProcessor | None:
        """The processor every temporal attention layer gets (None: leave the attention as it is)."""
        return TemporalAttnProcessor()

    @property
    def fuses_blocks(self) -> bool:
        """True when the method replaces whole motion blocks' ``forward`` (:meth:`block_forward`) instead."""
        return False

    def block_forward(self, block: nn.Module) -> Callable[..., torch.Tensor]:
        """The ``forward`` that replaces a motion transformer block's own (only when :attr:`fuses_blocks`)."""
        raise NotImplementedError(f"method {self.name} does not replace transformer blocks")

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

    # -- the sampling-loop level (freelong.sampling) ----------------------------------------------
    def sampling_loop(self, native_frames: int):
        """The :class:`freelong.sampling.SamplingLoop` this method runs (None: the standard loop).

        ``native_frames``: the backbone's native length in latent frames (FIFO's window).
        """
        return None

    def model_method(self) -> Method:
        """The method whose attention/positions/noise levels the backbone installs (itself; FreeInit: its inner)."""
        return self

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}({args})"


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    return v


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a :class:`Method` subclass under ``name`` (sets ``cls.name``)."""

    def deco(cls: type[Method]) -> type[Method]:
        METHODS.register(name, cls)
        cls.name = name
        return cls

    return deco


def available_methods() -> list[str]:
    return METHODS.names()


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``; ValueError listing the available methods."""
    cls = METHODS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"method {name!r} resolves to {cls!r}, not a freelong.methods.Method subclass")
    cls.name = name
    return cls


def supported_families(method: Method, families: list[str]) -> list[str]:
    """The backbone families among ``families`` that ``method`` runs on, as its own :meth:`Method.check_model` says."""
    ok = []
    for family in families:
        try:
            method.check_model({"family": family, "name": family})
        except ValueError:
            continue
        ok.append(family)
    return ok


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
