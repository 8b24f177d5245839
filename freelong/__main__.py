"""``python -m freelong COMMAND ...``: small commands around run directories.

    python -m freelong status SWEEP_DIR [-v]     # per job: done / failed / missing videos (freelong/app/status.py)
    python -m freelong methods                   # every registered method: module, what it changes, backbones
"""

from __future__ import annotations

import sys

COMMANDS = {
    "status": "per job of a run or sweep directory: done / failed / missing videos",
    "methods": "every registered method (entry points included): module, what it changes, backbone families",
}


def method_table() -> list[dict[str, str]]:
    """One row per registered method, read from the registries themselves (methods and backbone families)."""
    from .methods.base import available_methods, get_method, method_class, supported_families
    from .models.base import available_families

    families = available_families()
    rows = []
    for name in available_methods():
        cls = method_class(name)
        rows.append({
            "method": name,
            "module": cls.__module__,
            "changes": ", ".join(cls.levels) or "nothing (the backbone's own sampling)",
            "backbones": ", ".join(supported_families(get_method(name), families)),
        })
    return rows


def print_methods() -> int:
    rows = method_table()
    keys = ["method", "module", "changes", "backbones"]
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys[:-1]}
    print("  ".join(k.ljust(widths.get(k, 0)) for k in keys).rstrip())
    for r in rows:
        print("  ".join(r[k].ljust(widths.get(k, 0)) for k in keys).rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        listing = "\n".join(f"  {name:<8} {text}" for name, text in COMMANDS.items())
        print(f"usage: python -m freelong COMMAND ...\ncommands:\n{listing}", file=sys.stderr if argv else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "methods":
        return print_methods()
    if argv[0] == "status":
        from .app.status import main as status_main  # an entry module: it may reach the app (tests/core/test_layers.py)

        return status_main(argv[1:])
    return 2


if __name__ == "__main__":
    sys.exit(main())
