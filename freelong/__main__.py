"""``python -m freelong COMMAND ...``: small commands around run directories.

    python -m freelong status SWEEP_DIR [-v]     # per job: done / failed / missing videos (freelong/app/status.py)
"""

from __future__ import annotations

import sys

COMMANDS = {"status": "per job of a run or sweep directory: done / failed / missing videos"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        listing = "\n".join(f"  {name:<8} {text}" for name, text in COMMANDS.items())
        print(f"usage: python -m freelong COMMAND ...\ncommands:\n{listing}", file=sys.stderr if argv else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "status":
        from .app.status import main as status_main  # an entry module: it may reach the app (tests/test_layers.py)

        return status_main(argv[1:])
    return 2


if __name__ == "__main__":
    sys.exit(main())
