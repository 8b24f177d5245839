"""Prompt suites: ``prompts=vbench`` reads VBench's own prompt list, filtered by dimension and sub-sampled.

VBench ships its suite as ``VBench_full_info.json`` inside the ``vbench`` package: a JSON list of
``{"prompt_en": str, "dimension": [str, ...], "auxiliary_info": {...}?}``, one entry per prompt, each
tagged with the dimensions it is meant for (Table 1's ``subject_consistency`` prompts also carry
``motion_smoothness`` and ``dynamic_degree``; ``background_consistency`` ones carry ``scene``; ...).
The file is located without importing ``vbench`` (whose imports pull in its heavy dependencies) or
given as ``prompts.vbench_info=PATH``; it is never copied into this repository.

Sub-sampling is reproducible: ``prompts.limit=k prompts.sample_seed=s`` draws ``k`` of the matching
prompts with ``random.Random(s)`` and keeps them in the suite's order. Every record names the suite
(:func:`prompt_source`: the file, its SHA-256, the dimensions, the limit and the seed), so a table
says exactly which prompts it was computed on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ConfigError

VBENCH_INFO_NAME = "VBench_full_info.json"
SUITES = ("vbench",)


class SuiteError(ConfigError):
    """The suite file is missing or not in VBench's layout (one line, naming the key)."""


def locate_vbench_info() -> Path:
    """``VBench_full_info.json`` of the installed ``vbench`` package (found without importing it)."""
    try:
        spec = importlib.util.find_spec("vbench")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / VBENCH_INFO_NAME
        if path.is_file():
            return path
    where = f" (not in {', '.join(locations)})" if locations else ""
    raise SuiteError(f"prompts=vbench needs VBench's {VBENCH_INFO_NAME}: install the vbench package "
                     f"(pip install vbench){where} or set prompts.vbench_info=/path/to/{VBENCH_INFO_NAME}")


def suite_file(cfg: Any) -> Path:
    """The suite file a ``prompts`` config names: ``prompts.vbench_info`` or the installed package's."""
    if cfg.get("vbench_info"):
        path = Path(str(cfg.vbench_info)).expanduser()
        if not path.is_file():
            raise SuiteError(f"prompts.vbench_info={cfg.vbench_info} does not exist")
        return path
    return locate_vbench_info()


def read_vbench_info(path: Path) -> list[dict[str, Any]]:
    """The entries of a ``VBench_full_info.json``; SuiteError if it is not VBench's layout."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SuiteError(f"prompts.vbench_info={path}: not readable JSON ({err})") from None
    if not isinstance(data, list) or not data:
        raise SuiteError(f"prompts.vbench_info={path}: expected a non-empty JSON list of "
                         f"{{prompt_en, dimension}} entries (VBench's layout)")
    for i, entry in enumerate(data):
        ok = (isinstance(entry, dict) and isinstance(entry.get("prompt_en"), str) and entry["prompt_en"].strip()
              and isinstance(entry.get("dimension"), list) and all(isinstance(d, str) for d in entry["dimension"]))
        if not ok:
            raise SuiteError(f"prompts.vbench_info={path}: entry {i} is not {{\"prompt_en\": str, "
                             f"\"dimension\": [str, ...]}}: {json.dumps(entry)[:200]}")
    return data


def filter_prompts(entries: Sequence[dict[str, Any]], dimensions: Sequence[str]) -> list[str]:
    """Prompts tagged with any of ``dimensions`` (all prompts if empty), once each, in the file's order."""
    known = sorted({d for e in entries for d in e["dimension"]})
    unknown = [d for d in dimensions if d not in known]
    if unknown:
        raise SuiteError(f"prompts.dimensions: {', '.join(unknown)} not in the suite; it has {', '.join(known)}")
    wanted = set(dimensions)
    out = [e["prompt_en"].strip() for e in entries if not wanted or wanted & set(e["dimension"])]
    return list(dict.fromkeys(out))


def sample_prompts(items: Sequence[Any], limit: int | None, seed: int | None) -> list[Any]:
    """``limit`` items: the first ones (``seed`` None), or a seeded random draw kept in the original order."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 0:
        raise SuiteError(f"prompts.limit must be >= 0, got {limit}")
    if seed is None:
        return items[:limit]
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


@lru_cache(maxsize=8)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_sha256(path: Path) -> str:
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def load_suite(cfg: Any) -> list[str]:
    """The (filtered) prompts of ``prompts.suite``, before ``prompts.limit`` is applied."""
    if cfg.suite not in SUITES:
        raise SuiteError(f"prompts.suite must be one of {', '.join(SUITES)}, got {cfg.suite!r}")
    prompts = filter_prompts(read_vbench_info(suite_file(cfg)), list(cfg.get("dimensions") or []))
    if not prompts:
        raise SuiteError(f"prompts.dimensions={list(cfg.dimensions)}: no prompts in the suite")
    return prompts


def prompt_source(cfg: Any) -> dict[str, Any]:
    """What a record says about where its prompt came from (suite file + SHA-256, dimensions, sampling)."""
    out: dict[str, Any] = {"name": cfg.get("name"), "limit": cfg.get("limit"), "sample_seed": cfg.get("sample_seed")}
    if cfg.get("suite"):
        path = suite_file(cfg)
        out.update(suite=cfg.suite, file=str(path), sha256=file_sha256(path),
                   dimensions=list(cfg.get("dimensions") or []))
    elif cfg.get("file"):
        path = Path(str(cfg.file)).expanduser()
        out.update(file=str(path), sha256=file_sha256(path) if path.is_file() else None)
    return out
