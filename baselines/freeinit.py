"""FreeInit (Wu et al., ECCV 2024): rounds of full sampling around any other method; before each later round the
start noise is re-derived from the previous round's clean latent (its low frequencies, re-noised with the
round-0 noise) and fresh noise (its high frequencies) (:class:`freelong.sampling.RoundsLoop`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from freelong.methods import Method, get_method, register_method
from freelong.sampling import FifoLoop, RoundsLoop, StandardLoop
from freelong.spectral import FREEINIT_FILTERS, freeinit_lowpass


@register_method("freeinit")
@dataclass
class FreeInit(Method):
    """``get_method("freeinit", inner=get_method("freelong"))``; Hydra ``method=freeinit method.inner=freelong``
    (``method.inner_params`` sets the inner method's parameters). Defaults: diffusers' ``enable_free_init``."""

    levels = ("sampling loop",)

    inner: str = "direct"
    """The wrapped method: a registered name (Hydra), or a Method (Python; then held as that Method)."""
    inner_params: dict = field(default_factory=dict)
    """The inner method's parameters (recorded in results.jsonl; its dataclass defaults when empty)."""
    num_iters: int = 3
    """Sampling rounds K (diffusers 3, the official script 5; 1 = no FreeInit)."""
    filter: str = "butterworth"
    """Low-pass filter: butterworth | gaussian | ideal | box (FreeInit's definitions)."""
    order: int = 4
    """Butterworth order n."""
    spatial_stop_frequency: float = 0.25
    """d_s, the normalised spatial stop frequency in [0, 1]."""
    temporal_stop_frequency: float = 0.25
    """d_t, the normalised temporal stop frequency in [0, 1]."""
    noise_level: int | None = None
    """Timestep the previous clean latent is re-noised to (null: num_train_timesteps - 1, as the official code)."""
    fast_sampling: bool = False
    """Coarse-to-fine: round k uses max(1, int(N/K·(k+1))) steps."""

    def __post_init__(self) -> None:
        if isinstance(self.inner, Method):
            if self.inner.name == "freeinit":
                raise ValueError("method.inner cannot be freeinit")
            self.inner_params = self.inner.params()
        elif isinstance(self.inner, str):
            if self.inner == "freeinit":
                raise ValueError("method.inner cannot be freeinit")
            try:
                self.inner = get_method(self.inner, **dict(self.inner_params or {}))
            except ValueError as err:
                raise ValueError(f"method.inner: {err}") from None
            self.inner_params = self.inner.params()
        else:
            raise ValueError(f"method.inner must be a method name or a Method, got {type(self.inner).__name__}")
        super().__post_init__()

    def validate(self) -> None:
        if not isinstance(self.num_iters, int) or self.num_iters < 1:
            raise ValueError(f"method.num_iters must be a positive integer, got {self.num_iters}")
        if self.filter not in FREEINIT_FILTERS:
            raise ValueError(f"method.filter must be one of {', '.join(FREEINIT_FILTERS)}, got {self.filter!r}")
        if not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"method.order must be a positive integer, got {self.order}")
        for key in ("spatial_stop_frequency", "temporal_stop_frequency"):
            if not (0.0 <= float(getattr(self, key)) <= 1.0):
                raise ValueError(f"method.{key} must be in [0, 1], got {getattr(self, key)}")
        if self.noise_level is not None and self.noise_level < 0:
            raise ValueError(f"method.noise_level must be >= 0 (a training timestep), got {self.noise_level}")
        if "sampling loop" in self.inner.levels and isinstance(self.inner.sampling_loop(16), FifoLoop):
            raise ValueError("method.inner=fifo: FreeInit re-noises a full-length clean latent, and FIFO's queue "
                             "has none; wrap direct, freelong, freenoise, gen_l_video, ...")

    # -- parameters --------------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["inner"] = self.inner.name
        out["inner_params"] = self.inner.params()
        return out

    def describe(self) -> str:
        own = ", ".join(f"{k}={v}" for k, v in self.params().items() if k not in ("inner", "inner_params"))
        return f"freeinit({own}, inner={self.inner.describe()})"

    # -- the inner method's levels ---------------------------------------------------------------------
    def model_method(self) -> Method:
        return self.inner.model_method()

    def processor(self):
        return self.inner.processor()

    def init_noise(self, shape, generator=None, dtype=None):
        return self.inner.init_noise(shape, generator=generator, **({} if dtype is None else {"dtype": dtype}))

    def rope_frequencies(self, freqs, *, axis, num_positions, native_positions):
        return self.inner.rope_frequencies(freqs, axis=axis, num_positions=num_positions,
                                           native_positions=native_positions)

    def check_frames(self, num_frames: int) -> None:
        self.inner.check_frames(num_frames)

    def check_model(self, model_cfg: Any) -> None:
        self.inner.check_model(model_cfg)

    def with_native_frames(self, native_frames: int | None) -> Method:
        inner = self.inner.with_native_frames(native_frames)
        return self if inner is self.inner else dataclasses.replace(self, inner=inner, inner_params={})

    def for_multi_prompt(self) -> Method:
        inner = self.inner.for_multi_prompt()
        return self if inner is self.inner else dataclasses.replace(self, inner=inner, inner_params={})

    def prompt_injection(self):
        return self.inner.prompt_injection()

    # -- the loop ------------------------------------------------------------------------------------------
    def sampling_loop(self, native_frames: int) -> RoundsLoop:
        inner = self.inner.sampling_loop(native_frames) or StandardLoop()
        lowpass = partial(freeinit_lowpass, self.filter, d_s=float(self.spatial_stop_frequency),
                          d_t=float(self.temporal_stop_frequency), order=int(self.order))
        return RoundsLoop(inner, self.num_iters, lowpass, self.noise_level, self.fast_sampling)
