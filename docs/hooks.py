"""mkdocs hooks: every docs page builds and is reachable, listed in ``mkdocs.yml``'s nav or not.

Pages that ``nav`` does not list (new pages added beside this site's own) are appended under "More", sorted by
path, so adding ``docs/<page>.md`` never needs an edit of ``mkdocs.yml`` and never fails ``mkdocs build --strict``.
"""

from __future__ import annotations

from pathlib import Path


def _listed(nav) -> set[str]:
    out: set[str] = set()
    for item in nav or []:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            out |= _listed(value)
        elif isinstance(value, str):
            out.add(value)
    return out


def on_config(config):
    nav = config.get("nav")
    if not nav:
        return config  # no explicit nav: mkdocs lists every page itself
    docs = Path(config["docs_dir"])
    listed = _listed(nav)
    extra = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md"))
    extra = [p for p in extra if p not in listed]
    if extra:
        nav.append({"More": [{_title(docs / p): p} for p in extra]})
    return config


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip().strip("`")
    return path.stem.replace("_", " ").capitalize()
