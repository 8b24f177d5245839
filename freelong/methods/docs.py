"""Method documentation read from the code: parameter tables and the methods x backbones support matrix.

Every parameter of a method is documented once, as a string literal on the line after its dataclass field
(PEP 257's attribute docstrings, which mkdocstrings renders too). This module reads them back from the source,
so the parameter tables of ``docs/methods.md`` and the checks in ``tests/core/test_docs.py`` come from that one
place. The support matrix (README, ``docs/index.md``) is read from the registries: which families each method's
own ``check_model`` accepts.

    python -m freelong.methods.docs README.md docs/index.md docs/methods.md   # rewrite the generated blocks
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
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


BLOCK_START = "<!-- parameters: {name} -->"
BLOCK_END = "<!-- /parameters -->"
_BLOCK = re.compile(r"<!-- parameters: (?P<name>[\w.-]+) -->\n(?P<body>.*?)<!-- /parameters -->", re.S)


def parameter_blocks(text: str) -> dict[str, str]:
    """``{method name: table}`` of every ``<!-- parameters: NAME -->`` ... ``<!-- /parameters -->`` block."""
    return {m["name"]: m["body"].strip() for m in _BLOCK.finditer(text)}


def render_parameter_blocks(text: str, table: Callable[[str], str]) -> str:
    """``text`` with every parameter block's body replaced by ``table(name)``."""
    return _BLOCK.sub(lambda m: f"{BLOCK_START.format(name=m['name'])}\n{table(m['name'])}\n{BLOCK_END}", text)


MATRIX_START = "<!-- support-matrix -->"
MATRIX_END = "<!-- /support-matrix -->"
_MATRIX = re.compile(r"<!-- support-matrix -->\n(?P<body>.*?)<!-- /support-matrix -->", re.S)
YES, NO = "✓", "–"


def support_matrix(names: list[str] | None = None) -> str:
    """Markdown: one row per method (default: every registered one), what it changes, and a column per backbone
    family (✓ = runs)."""
    from ..models.base import available_families
    from .base import LEVELS, available_methods, get_method, method_class, supported_families

    families = available_families()
    lines = ["| method | changes | " + " | ".join(f"`{f}`" for f in families) + " |",
             "|---|---|" + "---|" * len(families)]
    for name in available_methods() if names is None else names:
        levels = [lv for lv in LEVELS if lv in method_class(name).levels]
        ok = set(supported_families(get_method(name), families))
        cells = " | ".join(YES if f in ok else NO for f in families)
        lines.append(f"| `{name}` | {', '.join(levels) or 'nothing'} | {cells} |")
    return "\n".join(lines)


def matrix_blocks(text: str) -> list[str]:
    """The bodies of every ``<!-- support-matrix -->`` ... ``<!-- /support-matrix -->`` block."""
    return [m["body"].strip() for m in _MATRIX.finditer(text)]


def render_matrix_blocks(text: str, matrix: str) -> str:
    return _MATRIX.sub(lambda m: f"{MATRIX_START}\n{matrix}\n{MATRIX_END}", text)


def main(argv: list[str] | None = None) -> int:
    """``python -m freelong.methods.docs PAGE.md ...``: rewrite the pages' generated blocks from the code."""
    from .base import method_class

    matrix = None
    for path in (sys.argv[1:] if argv is None else argv):
        page = Path(path)
        text = page.read_text()
        new = render_parameter_blocks(text, lambda name: parameter_table(method_class(name)))
        if _MATRIX.search(new):
            matrix = matrix or support_matrix()
            new = render_matrix_blocks(new, matrix)
        if new != text:
            page.write_text(new)
            print(f"updated {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
