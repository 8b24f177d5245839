"""Plugin registries fed by Python entry points (methods, backbone families, analysis tasks).

A registry maps a name to an object. Names come from two places:

- entry points of any installed distribution in the registry's group (``[project.entry-points."freelong.methods"]``
  in ``pyproject.toml``): this package declares its built-in methods and backbones there, and a separate pip
  package can add its own the same way without touching this repository;
- :meth:`Registry.register` at import time (a notebook or a test defining a method in-process).

Entry points are loaded lazily, the first time their name is asked for, so listing the names imports nothing.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → object for one entry-point group."""

    def __init__(self, group: str, kind: str):
        self.group = group
        self.kind = kind  # "method", "backbone family", ... (for messages)
        self._items: dict[str, T] = {}

    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        # Read afresh each time: a distribution installed (or a path added) after start-up is found too.
        return {ep.name: ep for ep in metadata.entry_points(group=self.group)}

    def register(self, name: str, obj: T | None = None) -> Any:
        """``registry.register(name, obj)``, or ``@registry.register(name)`` as a decorator."""

        def add(item: T) -> T:
            known = self._items.get(name)
            if known is not None and known is not item:
                raise ValueError(f"{self.kind} {name!r} is already registered by {_describe(known)}")
            self._items[name] = item
            return item

        return add(obj) if obj is not None else add

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._entry_points()))

    def get(self, name: str) -> T:
        """The object registered as ``name`` (loading its entry point if needed); ValueError listing the names."""
        if name in self._items:
            return self._items[name]
        ep = self._entry_points().get(name)
        if ep is None:
            available = self.names()
            hint = "" if available else (f" (no {self.kind} is registered at all: is freelong-bench installed? "
                                         f"run `pip install -e .` so its entry points exist)")
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(available) or 'none'}{hint}")
        try:
            obj = ep.load()
        except Exception as err:  # a broken plugin must say which one it is
            raise ImportError(f"{self.kind} {name!r} from entry point {ep.value!r} "
                              f"({self.group}) failed to load: {err}") from err
        return self.register(name, obj) if name not in self._items else self._items[name]


def _describe(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or repr(obj)


__all__ = ["Registry"]
