"""The one undo handle: what an install changed, as a list of undo actions.

``Backbone.attach(method)`` (and nothing else) installs a method; every change it makes — a processor
swapped, a forward hook registered, a RoPE module replaced, a block's ``forward`` overridden — records how
to undo itself here. ``detach()`` runs the undo actions last-first, so the model is exactly as it was
(the very same processor objects, modules and forwards). The handle is also a context manager.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Handle:
    """Undo actions of one install, run last-first by :meth:`detach`; ``with backbone.attach(m): ...``."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []
        self.layer_names: list[str] = []  # the attention layers that received the method's processor

    def on_detach(self, undo: Callable[[], None]) -> None:
        """Record one undo action."""
        self._undo.append(undo)

    def set_attr(self, obj: Any, name: str, value: Any) -> None:
        """``setattr(obj, name, value)``, undone by restoring the previous value (or removing an instance attribute
        that did not exist, so a class attribute such as a method shows through again)."""
        missing = not _owns(obj, name)
        old = getattr(obj, name, None)
        setattr(obj, name, value)
        self.on_detach(lambda: obj.__dict__.pop(name, None) if missing else setattr(obj, name, old))

    def set_processor(self, layer: Any, processor: Any) -> None:
        """``layer.set_processor(processor)``, undone by setting the layer's previous processor object back."""
        old = layer.processor
        layer.set_processor(processor)
        self.on_detach(lambda: layer.set_processor(old))

    @property
    def attached(self) -> bool:
        return bool(self._undo)

    def detach(self) -> None:
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()


def _owns(obj: Any, name: str) -> bool:
    """Whether ``name`` is set on the instance itself (its ``__dict__``, or a torch module's submodules/tensors)."""
    stores = ("__dict__", "_modules", "_parameters", "_buffers")
    return any(name in (getattr(obj, store, None) or {}) for store in stores)
