"""Direct sampling: the backbone's own global temporal attention at the target length."""

from __future__ import annotations

from dataclasses import dataclass

from freelong.methods import Method, register_method


@register_method("direct")
@dataclass
class Direct(Method):
    """No change to the model; i.i.d. Gaussian noise for all frames."""
