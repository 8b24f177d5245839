"""A method's parameters as documented: each dataclass field with its attribute docstring.

Every parameter of a method is documented once, as a string literal on the line after its dataclass field
(PEP 257's attribute docstrings, which mkdocstrings renders too). This module reads them back from the source,
so the docs site's parameter tables (``docs/hooks.py``) and the checks in ``tests/core/test_docs.py`` come from
that one place.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from typing import Any


def field_docs(cls: type) -> dict[str, str]:
    """``{field name: its attribute docstring}`` of a dataclass, base classes first (a subclass may re-document).

    Fields without a docstring are absent from the result.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        node = next((n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)), None)
        if node is None:
            continue
        body = node.body
        for stmt, nxt in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (``default_factory`` called); ``dataclasses.MISSING`` when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def yaml_value(value: Any) -> str:
    """A default as it is written in a Hydra YAML file / on the command line (``null``, ``true``, ``[1, 2]``)."""
    if value is dataclasses.MISSING:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    return str(value)


def parameter_rows(cls: type) -> list[tuple[str, str, str]]:
    """``(key, default, meaning)`` per field of a method class, in field order (meaning: the docstring)."""
    docs = field_docs(cls)
    return [(f.name, yaml_value(field_default(f)), docs.get(f.name, ""))
            for f in dataclasses.fields(cls)]


def parameter_table(cls: type) -> str:
    """A markdown table of a method's parameters: ``method.<key>``, default, meaning."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, doc in parameter_rows(cls):
        meaning = " ".join(doc.split()).replace("|", "\\|")
        lines.append(f"| `method.{key}` | `{default}` | {meaning} |")
    return "\n".join(lines)
