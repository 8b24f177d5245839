"""Direct sampling: the backbone's own global temporal attention at the target length."""

from __future__ import annotations

from dataclasses import dataclass

from freelong.methods import Method, register_method


@register_method("direct")
@dataclass
class Direct(Method):
    """No change to the model; i.i.d. Gaussian noise for all frames."""

    levels = ()

    window: int | None = None
    """Accepted and ignored, so one sweep can vary it across methods
    (`python run.py -m method=direct,freelong method.window=8,16`); results record it."""
    stride: int | None = None
    """Accepted and ignored (for cross-method sweeps, as `window`)."""

    def check_frames(self, num_frames: int) -> None:
        """Direct sampling runs at any length."""
