"""A fake VBench environment for the official backend's tests: a ``vbench`` package that CHECKS its inputs.

``make_fake_vbench(root, videos, answers, cache_dir)`` writes ``root/site/vbench/__init__.py`` and an
executable ``root/python`` that runs this interpreter with that package first on the path. The fake
``VBench.evaluate`` raises (so the process exits non-zero) unless it is called the way an offline run of the
real package must be called: ``local=True``, ``mode="custom_input"``, ``VBENCH_CACHE_DIR`` equal to the
expected cache *when vbench is imported* (``vbench.utils`` reads it then), one folder holding every expected
video, the expected imaging preprocessing mode, and (for subject_consistency) torch's hub folder serving the
cache's DINO checkpoint (a minimal ``torch`` module stands in for the env's torch: the driver only uses
its device and hub-folder functions); ``videos=None`` accepts any set of videos (logged only). Each process
and each ``evaluate`` call is appended to ``root/calls.jsonl``; the answers are the controlled numbers
``{dim: {"overall": x, "per_video": {real path: value}, "default": value for other videos}}``.
"""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FAKE_PACKAGE = '''
import json, os
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CFG = json.load(open(os.path.join(_ROOT, "fake_config.json")))
_IMPORT_CACHE = os.environ.get("VBENCH_CACHE_DIR")
__version__ = "0.1.5-fake"


def _log(entry):
    with open(os.path.join(_ROOT, "calls.jsonl"), "a") as f:
        f.write(json.dumps(entry) + "\\n")


_log({"event": "process", "pid": os.getpid()})


class VBench:
    def __init__(self, device, full_info_dir, output_path):
        self.device, self.output_path = device, output_path
        os.makedirs(output_path, exist_ok=True)

    def evaluate(self, videos_path, name, prompt_list=[], dimension_list=None, local=False, read_frame=False,
                 mode="vbench_standard", **kwargs):
        files = sorted(os.path.realpath(os.path.join(videos_path, f)) for f in os.listdir(videos_path))
        _log({"event": "evaluate", "pid": os.getpid(), "dims": dimension_list, "local": local, "mode": mode,
              "videos": files})
        assert local is True, f"local={local!r}: offline runs need local=True"
        assert mode == "custom_input", f"mode={mode!r}"
        assert read_frame is False, f"read_frame={read_frame!r}"
        assert _IMPORT_CACHE == _CFG["cache_dir"], f"VBENCH_CACHE_DIR at import: {_IMPORT_CACHE!r}"
        want_mode = _CFG["imaging_mode"]
        assert kwargs.get("imaging_quality_preprocessing_mode") == want_mode, kwargs
        if _CFG["videos"] is not None:
            assert files == sorted(_CFG["videos"]), f"videos given: {files} expected: {_CFG['videos']}"
        if "subject_consistency" in dimension_list:
            import torch

            ckpt = os.path.join(torch.hub.get_dir(), "checkpoints", "dino_vitbase16_pretrain.pth")
            want = os.path.join(_CFG["cache_dir"], "dino_model", "dino_vitbase16_pretrain.pth")
            assert os.path.realpath(ckpt) == os.path.realpath(want), f"torch hub serves {ckpt}"
        out = {}
        for dim in dimension_list:
            ans = _CFG["answers"][dim]
            entries = [{"video_path": os.path.join(videos_path, f),
                        "video_results": ans["per_video"].get(os.path.realpath(os.path.join(videos_path, f)),
                                                          ans.get("default"))}
                       for f in sorted(os.listdir(videos_path))]
            out[dim] = [ans["overall"], entries]
        with open(os.path.join(self.output_path, name + "_eval_results.json"), "w") as f:
            json.dump(out, f)
'''


# The VBench env's torch, as far as the driver uses it (a real torch import costs seconds per process here).
FAKE_TORCH = '''
import os
__version__ = "2.14.1-fake"
_HUB = [os.path.expanduser("~/.cache/torch/hub")]


def device(name):
    return name


class cuda:
    @staticmethod
    def is_available():
        return False


class hub:
    @staticmethod
    def set_dir(d):
        _HUB[0] = d

    @staticmethod
    def get_dir():
        return _HUB[0]
'''


def make_fake_vbench(root: Path, videos: Sequence[Path] | None, answers: dict[str, Any], cache_dir: Path,
                     imaging_mode: str = "longer") -> Path:
    """Write the fake environment under ``root``; return the path of its ``python``."""
    pkg = root / "site" / "vbench"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(FAKE_PACKAGE)
    (root / "site" / "torch.py").write_text(FAKE_TORCH)
    expected = None if videos is None else [str(Path(v).resolve()) for v in videos]
    cfg = {"cache_dir": str(Path(cache_dir).resolve()), "videos": expected,
           "answers": answers, "imaging_mode": imaging_mode}
    (root / "fake_config.json").write_text(json.dumps(cfg))
    python = root / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{root / "site"}" exec "{sys.executable}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return python


def calls(root: Path) -> list[dict[str, Any]]:
    path = root / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def fill_cache(cache_dir: Path, dims: Sequence[str]) -> None:
    """Empty placeholder files wherever VBench's local mode reads a weight (the fake never opens them)."""
    from eval.official import OFFICIAL_CACHE_FILES

    for d in dims:
        for rel in OFFICIAL_CACHE_FILES[d]:
            (cache_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (cache_dir / rel).write_bytes(b"")
