"""Prompts for text-video dimensions, as VBench's custom-input mode finds them.

Default: the file name without its suffix and a trailing ``-<digits>`` (``a cat-0.mp4`` → ``a cat``).
``--prompt TEXT`` gives one prompt to every video; ``--prompt-file map.json`` a JSON object
``{file name or path: prompt}`` that must cover every video (VBench asserts the same).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def resolve_prompts(videos: Sequence[Path], prompt: str | None = None,
                    prompt_file: str | None = None) -> dict[Path, str]:
    """``{video: prompt}`` for the videos that get an explicit prompt (the others use their file names)."""
    if prompt is not None and prompt_file is not None:
        raise ValueError("--prompt and --prompt-file cannot be used together (as in VBench)")
    if prompt is not None:
        return {Path(v): prompt for v in videos}
    if prompt_file is None:
        return {}
    path = Path(prompt_file)
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"--prompt-file {path}: cannot read a JSON object ({err})") from err
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ValueError(f"--prompt-file {path}: expected a JSON object {{\"video file\": \"prompt\", ...}}")
    out: dict[Path, str] = {}
    missing = []
    for v in map(Path, videos):
        for key in (str(v), v.name, str(v.resolve())):
            if key in table:
                out[v] = table[key]
                break
        else:
            missing.append(str(v))
    if missing:
        raise ValueError(f"--prompt-file {path} has no prompt for: {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return out
