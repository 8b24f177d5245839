"""Where model weights come from, and a clear error when they are not there.

Resolution order for every weight (a file or a folder): the explicit ``path`` in the model config
→ the weights folder (``paths.weights_dir``, env ``FREELONG_WEIGHTS``, default ``<repo>/weights``)
→ the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``; nothing is downloaded). If none has it,
:class:`MissingWeightsError` names the file, every place looked, and the command that fetches it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


class MissingWeightsError(FileNotFoundError):
    """Raised before any heavy work when a required weight file is missing."""


def default_weights_dir() -> Path:
    env = os.environ.get("FREELONG_WEIGHTS")
    return Path(env).expanduser() if env else REPO_ROOT / "weights"


@dataclass
class WeightConfig:
    """One weight as a model config declares it (``model.weights.<name>`` in ``conf/model/*.yaml``).

    A single file (``kind: file``) or a folder (``kind: folder``) that must contain ``required`` files,
    where ``"a|b"`` is satisfied by either. ``local`` lists candidate paths relative to the weights
    folder; ``repo_id``/``filename`` say where it lives on the Hugging Face Hub (for the cache lookup
    and for ``scripts/download_weights.py``); ``path`` is an explicit location that wins over both.
    """

    kind: str = "file"
    local: list[str] = field(default_factory=list)
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None
    required: list[str] = field(default_factory=list)
    allow_patterns: list[str] = field(default_factory=list)
    path: str | None = None
    sha256: str | None = None


@dataclass
class WeightSpec(WeightConfig):
    """A named :class:`WeightConfig`: what the resolver looks for."""

    name: str = ""

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any]) -> WeightSpec:
        data = {k: (list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v) for k, v in cfg.items()}
        return cls(name=name, **data)


def _folder_complete(folder: Path, required: Sequence[str]) -> list[str]:
    """Required entries missing from ``folder`` (each may list alternatives separated by '|')."""
    missing = []
    for entry in required:
        if not any((folder / alt).is_file() for alt in entry.split("|")):
            missing.append(entry)
    return missing


def _hf_cached(spec: WeightSpec) -> Path | None:
    if not spec.repo_id:
        return None
    try:
        if spec.kind == "file":
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(spec.repo_id, spec.filename, revision=spec.revision)
            return Path(hit) if isinstance(hit, str) and Path(hit).is_file() else None
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(spec.repo_id, revision=spec.revision, local_files_only=True,
                                      allow_patterns=spec.allow_patterns or None))
        return snap if not _folder_complete(snap, spec.required) else None
    except Exception:  # not cached (LocalEntryNotFoundError) or no cache at all
        return None


def hf_cache_location(spec: WeightSpec) -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except Exception:  # pragma: no cover
        HF_HUB_CACHE = "~/.cache/huggingface/hub"
    return f"{HF_HUB_CACHE}/models--{spec.repo_id.replace('/', '--')}" if spec.repo_id else "(no hub repo)"


def _find(spec: WeightSpec, wdir: Path) -> tuple[Path | None, list[str]]:
    """Where ``spec`` is (or None), and every place that was looked in."""
    looked: list[str] = []

    def ok(p: Path) -> bool:
        if spec.kind == "file":
            return p.is_file()
        return p.is_dir() and not _folder_complete(p, spec.required)

    if spec.path:
        p = Path(spec.path).expanduser()
        if ok(p):
            return p, looked
        looked.append(f"{p} (explicit path)")
    for rel in spec.local:
        p = wdir / rel
        if ok(p):
            return p, looked
        looked.append(str(p))
    hit = _hf_cached(spec)
    if hit is not None:
        return hit, looked
    looked.append(f"{hf_cache_location(spec)} (Hugging Face cache)")
    return None, looked


def resolve_many(
    specs: Sequence[WeightSpec], weights_dir: str | os.PathLike | None, model_name: str
) -> dict[str, Path]:
    """Find every weight of a model, or raise one :class:`MissingWeightsError` listing all missing ones.

    Nothing is downloaded here; the error says which command does.
    """
    wdir = Path(weights_dir).expanduser() if weights_dir else default_weights_dir()
    found: dict[str, Path] = {}
    problems: list[str] = []
    for spec in specs:
        path, looked = _find(spec, wdir)
        if path is not None:
            found[spec.name] = path
            continue
        what = spec.filename if spec.kind == "file" else f"a folder with {', '.join(spec.required)}"
        source = f"huggingface.co/{spec.repo_id}" if spec.repo_id else "the model's release page"
        problems.append(f"- {spec.name}: {what} (from {source})\n    looked in: " + "\n               ".join(looked))
    if problems:
        raise MissingWeightsError(
            f"missing weights for model '{model_name}':\n" + "\n".join(problems) + "\n"
            f"Fetch them with:\n  python scripts/download_weights.py {model_name} --weights-dir {wdir}\n"
            f"or point to existing copies with FREELONG_WEIGHTS=/path/to/weights, paths.weights_dir=..., "
            f"or model.weights.<name>.path=/path/to/file on the command line."
        )
    return found


def resolve_model_weights(model_cfg: Mapping[str, Any], weights_dir: str | os.PathLike | None) -> dict[str, Path]:
    """Every weight of a model config (``cfg.model``), found before anything is loaded; ``{}`` for
    random-init models. Raises one :class:`MissingWeightsError` naming all missing files."""
    if model_cfg.get("random_init") or not model_cfg.get("weights"):
        return {}
    from omegaconf import OmegaConf

    specs = [WeightSpec.from_config(k, OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v)
             for k, v in model_cfg["weights"].items()]
    return resolve_many(specs, weights_dir, model_cfg["name"])


def resolve(spec: WeightSpec, weights_dir: str | os.PathLike | None, model_name: str) -> Path:
    """Find one weight or raise :class:`MissingWeightsError`."""
    return resolve_many([spec], weights_dir, model_name)[spec.name]


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` / ``.pt`` / ``.ckpt`` file: ``weights_only=True`` and memory-mapped
    where the format allows, so a multi-GB checkpoint is not read into memory twice."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:  # legacy (non-zip) pickles cannot be memory-mapped
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------------------------
# Identity of the weights used by a run (recorded in results.jsonl)
# ----------------------------------------------------------------------------------------------
_HASH_CACHE = Path(os.environ.get("FREELONG_CACHE", "~/.cache/freelong-bench")).expanduser() / "sha256.json"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, cached by (path, size, mtime) so big checkpoints are hashed once."""
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{int(st.st_mtime)}"
    cache: dict[str, str] = {}
    try:
        cache = json.loads(_HASH_CACHE.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    cache[key] = digest
    try:
        _HASH_CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = _HASH_CACHE.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=0))
        tmp.replace(_HASH_CACHE)
    except OSError:
        pass
    return digest


def verify_sha256(spec: WeightSpec, path: Path) -> None:
    if spec.sha256 and path.is_file():
        digest = sha256_file(path)
        if digest != spec.sha256:
            raise ValueError(f"{path}: SHA-256 {digest} does not match the expected {spec.sha256} for {spec.name}")


def identity(path: Path) -> dict[str, Any]:
    """Path, size and SHA-256 of a weight file (or of each weight file in a folder)."""
    if path.is_file():
        return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    files = sorted(p for p in path.rglob("*") if p.suffix in {".safetensors", ".bin", ".pt", ".ckpt", ".pth"})
    return {"path": str(path), "files": {str(p.relative_to(path)): sha256_file(p) for p in files}}


# ----------------------------------------------------------------------------------------------
# Fetching (only ever called by scripts/download_weights.py)
# ----------------------------------------------------------------------------------------------
def download(spec: WeightSpec, weights_dir: str | os.PathLike) -> Path:
    """Fetch ``spec`` from the Hugging Face Hub into the weights folder (first ``local`` path)."""
    if not spec.repo_id:
        raise ValueError(f"{spec.name}: no Hugging Face repo is known; place the file by hand")
    from huggingface_hub import hf_hub_download, snapshot_download

    target = Path(weights_dir).expanduser() / spec.local[0]
    if spec.kind == "file":
        target.parent.mkdir(parents=True, exist_ok=True)
        got = Path(hf_hub_download(spec.repo_id, spec.filename, revision=spec.revision, local_dir=target.parent))
        if got != target:
            got.replace(target)
        verify_sha256(spec, target)
        return target
    target.mkdir(parents=True, exist_ok=True)
    snapshot_download(spec.repo_id, revision=spec.revision, local_dir=target,
                      allow_patterns=spec.allow_patterns or None)
    missing = _folder_complete(target, spec.required)
    if missing:
        raise MissingWeightsError(f"{spec.repo_id} downloaded to {target} but lacks {', '.join(missing)}")
    return target
