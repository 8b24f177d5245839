"""The package layers import in one direction only, and there is no import cycle anywhere.

Built from the source (every ``import`` statement, also those inside functions), so a lazy import that
re-creates a cycle is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("freelong", "baselines", "eval", "analysis", "scripts")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    out["run"] = ROOT / "run.py"
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules imported by a module (relative imports resolved; ``from pkg import mod`` → ``pkg.mod``)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = base[: len(base) - node.level + 1]
                mod = ".".join(prefix + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            # the deepest project module named by t (``freelong.app.records.Job`` → ``freelong.app.records``)
            parts = t.split(".")
            for i in range(len(parts), 0, -1):
                cand = ".".join(parts[:i])
                if cand in known:
                    if cand != name:
                        out.add(cand)
                    break
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


# Command-line entry modules: `python -m eval DIRS --write-back` writes run records (app code) and
# `python -m freelong status` reads them through the app's record store, so these modules dispatch to the app;
# they are imported by nothing but their package's __main__, so no core/eval module reaches the app through them.
ENTRY_MODULES = ("run", "eval.cli", "eval.__main__", "freelong.__main__")


def _layer(module: str) -> str:
    if module in ENTRY_MODULES:
        return "entry"
    if module.startswith("freelong.app"):
        return "app"
    return module.split(".")[0]  # freelong (core), baselines, eval, analysis, scripts


# which layers each layer may import (besides itself)
ALLOWED = {
    "freelong": set(),
    "baselines": {"freelong"},
    "eval": {"freelong"},
    "app": {"freelong", "eval"},
    "analysis": {"freelong", "app", "eval", "baselines"},
    "scripts": {"freelong", "app", "eval", "analysis", "baselines"},
    "entry": {"app", "eval", "freelong"},
}


def test_layers_import_in_one_direction_only():
    graph = _graph()
    assert len(graph) > 60 and "freelong.app.records" in graph and "freelong.models.base" in graph
    wrong = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                   if _layer(b) != _layer(a) and _layer(b) not in ALLOWED[_layer(a)])
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_there_is_no_import_cycle():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_cycle_detection_would_see_a_lazy_import_cycle(tmp_path):
    """The checker itself: a function-level import back into a module is an edge."""
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from b import g\n")
    (tmp_path / "b.py").write_text("import a\n")
    assert _imports("a", a, {"a", "b"}) == {"b"}


def test_only_the_app_and_the_entry_point_know_hydra():
    knows = []
    for name, path in _modules().items():
        if _layer(name) in ("app", "entry", "scripts"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(m == "hydra" or m.startswith("hydra.") for m in mods):
                knows.append(name)
    assert not knows, f"modules outside freelong.app importing hydra: {knows}"
