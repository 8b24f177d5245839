"""The docs say what the code does: parameters documented once (their dataclass fields), tables and the support
matrix equal to the registry, the README's first screen holding the two commands CI runs, no dead relative link.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

from freelong.__main__ import method_table
from freelong.methods.base import available_methods, method_class
from freelong.methods.docs import (
    field_default,
    field_docs,
    matrix_blocks,
    parameter_blocks,
    parameter_table,
    render_matrix_blocks,
    support_matrix,
)
from freelong.models.base import available_families

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
METHOD_CONF = ROOT / "conf" / "method"


def _ours() -> list[str]:
    """Registered methods defined in this repository (a plugin installed beside it is not its docs' business)."""
    return [n for n in available_methods() if ROOT in Path(inspect.getfile(method_class(n))).resolve().parents]


INSTALL_AND_SMOKE = 'pip install torch==2.13.0 && pip install -e ".[dev]" && python run.py'
TESTS = "pytest -q"


# -- each parameter documented once: its dataclass field ----------------------------------------------
@pytest.mark.parametrize("name", _ours())
def test_every_method_field_has_an_attribute_docstring(name):
    cls = method_class(name)
    docs = field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name, "").strip()]
    assert not missing, f"{cls.__module__}.{cls.__name__}: fields without an attribute docstring: {missing}"


def test_field_docs_reads_attribute_docstrings_and_sees_a_missing_one(tmp_path, monkeypatch):
    (tmp_path / "docmod_probe.py").write_text(
        "from dataclasses import dataclass, field\n\n"
        "@dataclass\nclass A:\n    x: int = 1\n    \"\"\"The x.\n\n    Two lines.\"\"\"\n    y: int = 2\n"
        "    z: list = field(default_factory=list)\n    'The z.'\n\n"
        "@dataclass\nclass B(A):\n    w: float = 0.5\n    \"\"\"The w.\"\"\"\n"
    )
    spec = importlib.util.spec_from_file_location("docmod_probe", tmp_path / "docmod_probe.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "docmod_probe", mod)  # inspect.getsource finds classes through it
    spec.loader.exec_module(mod)
    assert field_docs(mod.A) == {"x": "The x.\n\nTwo lines.", "z": "The z."}  # y has none
    assert field_docs(mod.B) == {"x": "The x.\n\nTwo lines.", "z": "The z.", "w": "The w."}


def _method_of(path: Path, seen: tuple[Path, ...] = ()) -> tuple[str, bool]:
    """(method name, whether the file sits directly on the method's schema) of a conf/method YAML file."""
    assert path not in seen, f"defaults cycle through {path}"
    cfg = yaml.safe_load(path.read_text()) or {}
    for entry in cfg.get("defaults", []):
        entry = entry if isinstance(entry, str) else next(iter(entry.values()))
        m = re.fullmatch(r"/schema/method/(\w+)@_here_", entry)
        if m:
            return m[1], True
        if entry != "_self_" and (METHOD_CONF / f"{entry}.yaml").exists():
            return _method_of(METHOD_CONF / f"{entry}.yaml", (*seen, path))[0], False
    raise AssertionError(f"{path}: no method schema in its defaults")


def model_default_fallback(file: str, name: str, key: str, value):
    """A method YAML value as written, or for ``${oc.select:model.methods.<name>.<key>,D}`` (the model's default for
    this method, conf/model ``methods:``) its fallback ``D``; the path must name this very method and key."""
    if not (isinstance(value, str) and value.startswith("${")):
        return value
    m = re.fullmatch(r"\$\{oc\.select:model\.methods\.(\w+)\.(\w+),(.*)\}", value)
    assert m and (m[1], m[2]) == (name, key), f"{file}: {key}: {value} is not model.methods.{name}.{key} or a default"
    return yaml.safe_load(m[3])


@pytest.mark.parametrize("path", sorted(METHOD_CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_method_yaml_keys_are_fields_and_base_values_are_the_defaults(path):
    name, on_schema = _method_of(path)
    cls = method_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    cfg = yaml.safe_load(path.read_text())
    keys = set(cfg) - {"defaults", "name"}
    assert keys <= set(fields), f"{path.name}: keys that are no field of {cls.__name__}: {sorted(keys - set(fields))}"
    if on_schema:  # the group's own file: `method=<name>` must mean the dataclass defaults (or the model's own)
        assert cfg.get("name") == name
        values = {k: model_default_fallback(path.name, name, k, cfg[k]) for k in keys}
        differ = {k: (v, field_default(fields[k])) for k, v in values.items() if v != field_default(fields[k])}
        assert not differ, f"{path.name}: values differ from the dataclass defaults (yaml, field): {differ}"
    commented = [line for line in path.read_text().splitlines()
                 if re.match(r"\s*\w+:", line) and "#" in line]
    assert not commented, f"{path.name}: document parameters under their dataclass field, not here: {commented}"


def test_parameter_tables_in_the_methods_page_are_the_fields():
    blocks = parameter_blocks((DOCS / "methods.md").read_text())
    assert sorted(blocks) == sorted(_ours()), "docs/methods.md needs one parameter block per registered method"
    for name, table in blocks.items():
        assert table == parameter_table(method_class(name)), (
            f"docs/methods.md: the {name} table differs from its fields; "
            f"run python -m freelong.methods.docs README.md docs/index.md docs/methods.md")


@pytest.mark.parametrize("name", _ours())
def test_parameter_table_has_one_row_per_field_in_order(name):
    cls = method_class(name)
    rows = parameter_table(cls).splitlines()[2:]
    keys = [re.match(r"\| `method\.(\w+)` \| `[^`]*` \| .+ \|$", r)[1] for r in rows]
    assert keys == [f.name for f in dataclasses.fields(cls)]


def test_defaults_are_written_as_in_yaml():
    from freelong.methods.docs import yaml_value

    assert [yaml_value(v) for v in (None, True, False, 0.25, 4, 4.0, "gaussian", [1.0, 2.0, 4.0], [0.1, 0.3], [],
                                    ["down", "mid"], dataclasses.MISSING)] == \
        ["null", "true", "false", "0.25", "4", "4", "gaussian", "[1, 2, 4]", "[0.1, 0.3]", "[]", "[down, mid]",
         "(required)"]


# -- the support matrix: what check_model says -----------------------------------------------------------------
def matrix_problems(text: str, where: str) -> list[str]:
    """Differences between a page's support matrix and the registry (``python -m freelong methods``)."""
    blocks = matrix_blocks(text)
    if len(blocks) != 1:
        return [f"{where}: expected one support-matrix block, found {len(blocks)}"]
    lines = [line for line in blocks[0].splitlines() if line.startswith("|")]
    header = [c.strip().strip("`") for c in lines[0].strip("|").split("|")]
    problems = []
    families = available_families()
    if header[2:] != families:
        problems.append(f"{where}: family columns {header[2:]} != registered families {families}")
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = (cells[1], {f for f, c in zip(header[2:], cells[2:]) if c == "✓"})
    for row in method_table():
        name = row["method"]
        if name not in _ours():
            continue
        if name not in rows:
            problems.append(f"{where}: method {name} is missing from the support matrix")
            continue
        changes, ok = rows.pop(name)
        want_levels = set(method_class(name).levels)
        got_levels = set() if changes == "nothing" else {c.strip() for c in changes.split(",")}
        if got_levels != want_levels:
            problems.append(f"{where}: {name} changes {sorted(got_levels)}, its levels are {sorted(want_levels)}")
        want = {f.strip() for f in row["backbones"].split(",") if f.strip()}
        if ok != want:
            problems.append(f"{where}: {name} runs on {sorted(want)} (check_model), the matrix says {sorted(ok)}")
    problems += [f"{where}: {name} is in the matrix but not registered" for name in rows]
    return problems


@pytest.mark.parametrize("page", [README, DOCS / "index.md"], ids=["README", "docs/index"])
def test_support_matrix_equals_the_registry(page):
    assert matrix_problems(page.read_text(), page.name) == []


def test_support_matrix_check_fails_on_a_missing_row_or_a_wrong_cell():
    text = render_matrix_blocks("<!-- support-matrix -->\n<!-- /support-matrix -->\n", support_matrix(_ours()))
    assert matrix_problems(text, "x") == []
    no_row = "\n".join(line for line in text.splitlines() if not line.startswith("| `freelong` |"))
    assert matrix_problems(no_row, "x") == ["x: method freelong is missing from the support matrix"]
    riflex = next(line for line in text.splitlines() if line.startswith("| `riflex` |"))
    flipped = riflex.replace("–", "✓", 1)
    problems = matrix_problems(text.replace(riflex, flipped), "x")
    assert len(problems) == 1 and "riflex runs on" in problems[0]


# -- what a new user sees first ----------------------------------------------------------------------------------
def test_readme_first_screen_holds_the_two_commands_ci_runs():
    first_screen = "\n".join(README.read_text().splitlines()[:30])
    assert INSTALL_AND_SMOKE in first_screen and f"\n{TESTS}\n" in first_screen
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install torch==2.13.0" in ci and 'pip install -e ".[dev]" && python run.py' in ci
    assert re.search(r"^pytest -q$", ci, re.M) and re.search(r"^mkdocs build --strict$", ci, re.M)
    assert len(README.read_text().splitlines()) <= 250


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """Python-Markdown's toc slug (what mkdocs and the links use) of a heading's text."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m[1]) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def test_relative_links_point_at_existing_files_and_headings():
    bad = []
    for page in _pages():
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, "dead links:\n" + "\n".join(bad)


def test_slug_matches_the_headings_we_link_to():
    assert _slug("Wan2.1: methods on a video DiT") == "wan21-methods-on-a-video-dit"
    assert _slug("Methods × backbones") == "methods-backbones"
    assert _slug("Diffusers video UNets (AnimateDiff, ModelScope, ZeroScope)") == \
        "diffusers-video-unets-animatediff-modelscope-zeroscope"


def test_docs_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "methods" / "index.html").exists()
