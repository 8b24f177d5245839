"""Shared model checks of the sampling-loop methods (read the family's declared capabilities, no weights)."""

from __future__ import annotations

from typing import Any

from freelong.models.base import family_capabilities


def require_capability(method: str, model_cfg: Any, capability: str, why: str) -> None:
    """ValueError naming the model when its family's builder does not declare ``capability``."""
    family = model_cfg.get("family")
    try:
        caps = family_capabilities(family)
    except (KeyError, ValueError):
        caps = ()
    if capability not in caps:
        raise ValueError(f"method={method} {why}; model {model_cfg.get('name')} (family {family}) cannot")
