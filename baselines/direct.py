"""Direct sampling: the backbone's own global temporal attention at the target length."""

from __future__ import annotations

from dataclasses import dataclass

from freelong.methods import Method, register_method


@register_method("direct")
@dataclass
class Direct(Method):
    """No change to the model; i.i.d. Gaussian noise for all frames.

    ``window`` and ``stride`` are accepted and ignored, so that one sweep can vary them across
    methods (``python run.py -m method=direct,freelong method.window=8,16``); results record them.
    """

    levels = ()

    window: int | None = None
    stride: int | None = None

    def check_frames(self, num_frames: int) -> None:
        """Direct sampling runs at any length."""
