"""Where weights come from — backbones and evaluation networks alike — and one clear error when absent.

One spec type (:class:`WeightSpec`), one lookup order, one checksum error, one missing-weights message.
For every weight (a file or a folder) the places looked, in order:

1. the explicit ``path`` (``model.weights.<name>.path=...``, ``eval.weights.<name>=...``, ``--weight``);
2. the weights folder (``paths.weights_dir``, env ``FREELONG_WEIGHTS``, default ``<repo>/weights``), at each
   of ``local`` (relative paths);
3. the VBench cache (``$VBENCH_CACHE_DIR`` or ``~/.cache/vbench``), at each of ``vbench`` — evaluation
   networks only, at the relative paths VBench itself uses, so an existing VBench cache works as is;
4. the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``; offline lookup, nothing is downloaded);
5. other known locations of VBench-compatible files (``elsewhere``: ``~/.cache/clip``, torch hub).

If none has it, :class:`~freelong.errors.MissingWeightsError` names each missing file, every place looked
and the command that fetches it. :func:`download` (only ever called by the fetch commands) brings a weight
from the Hugging Face Hub or its release URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MissingWeightsError, WeightChecksumError

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_weights_dir() -> Path:
    env = os.environ.get("FREELONG_WEIGHTS")
    return Path(env).expanduser() if env else REPO_ROOT / "weights"


def vbench_cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The VBench cache root: ``override``, else ``$VBENCH_CACHE_DIR``, else ``~/.cache/vbench``."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("VBENCH_CACHE_DIR")
    return Path(env).expanduser() if env else Path("~/.cache/vbench").expanduser()


def torch_hub_dir() -> Path:
    env = os.environ.get("TORCH_HOME")
    return (Path(env).expanduser() if env else Path("~/.cache/torch").expanduser()) / "hub"


@dataclass
class WeightConfig:
    """One weight as a model config declares it (``model.weights.<name>`` in ``conf/model/*.yaml``).

    A single file (``kind: file``) or a folder (``kind: folder``) that must contain ``required`` files,
    where ``"a|b"`` is satisfied by either. ``local`` lists candidate paths relative to the weights
    folder; ``repo_id``/``filename`` say where it lives on the Hugging Face Hub (for the cache lookup
    and for the fetch command); ``path`` is an explicit location that wins over both.
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
    """A named weight: what the resolver looks for, and how it is fetched.

    ``vbench``: paths relative to the VBench cache; ``elsewhere``: other locations (``{vbench}`` and
    ``{torch_hub}`` are expanded). A folder weight may also be satisfied by a single file found at one of
    those (a VBench-layout checkpoint the loader converts). ``sha256`` is the digest (or a prefix) of
    ``filename``; ``digests`` gives published digests of other file names the weight may be found as.
    ``fetch`` is the command that fetches it (shown in the missing-weights message).
    """

    name: str = ""
    description: str = ""
    vbench: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    url: str | None = None
    zip_member: str | None = None
    licence: str = ""
    digests: dict[str, str] = field(default_factory=dict)
    fallback_patterns: list[str] = field(default_factory=list)
    fetch: str = ""

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any], **extra: Any) -> WeightSpec:
        data = {k: (list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v) for k, v in cfg.items()}
        return cls(name=name, **data, **extra)

    @property
    def accepts_single_file(self) -> bool:
        return self.kind == "folder" and bool(self.vbench or self.elsewhere)

    def what(self) -> str:
        if self.kind == "file":
            return self.filename or (self.vbench[0] if self.vbench else self.name)
        return f"a folder with {', '.join(self.required)}"

    def source(self) -> str:
        if self.repo_id:
            return f"huggingface.co/{self.repo_id}"
        return self.url or "the model's release page"


# ----------------------------------------------------------------------------------------------
# Lookup
# ----------------------------------------------------------------------------------------------
def _folder_missing(folder: Path, required: Sequence[str]) -> list[str]:
    """Required entries missing from ``folder`` (each may list alternatives separated by '|')."""
    return [entry for entry in required if not any((folder / alt).is_file() for alt in entry.split("|"))]


def _present(spec: WeightSpec, p: Path) -> bool:
    if spec.kind == "file":
        return p.is_file()
    if p.is_dir():
        return not _folder_missing(p, spec.required)
    return spec.accepts_single_file and p.is_file()


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
        return snap if not _folder_missing(snap, spec.required) else None
    except Exception:  # not cached (LocalEntryNotFoundError), or no cache at all: just not here
        return None


def hf_cache_location(spec: WeightSpec) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return f"{HF_HUB_CACHE}/models--{spec.repo_id.replace('/', '--')}" if spec.repo_id else "(no hub repo)"


def _expand(template: str, vbench: Path) -> Path:
    return Path(template.format(vbench=vbench, torch_hub=torch_hub_dir())).expanduser()


def locate(spec: WeightSpec, weights_dir: str | os.PathLike | None = None,
           vbench_dir: str | os.PathLike | None = None) -> tuple[Path | None, list[str]]:
    """Where ``spec`` is (or None), and every place that was looked in, in the documented order."""
    wdir = Path(weights_dir).expanduser() if weights_dir else default_weights_dir()
    vdir = vbench_cache_dir(vbench_dir)
    looked: list[str] = []
    elsewhere = [_expand(t, vdir) for t in spec.elsewhere]
    candidates: list[tuple[Path, str]] = []
    if spec.path:
        candidates.append((Path(spec.path).expanduser(), " (explicit path)"))
    candidates += [(wdir / rel, "") for rel in spec.local]
    candidates += [(vdir / rel, "") for rel in spec.vbench]
    candidates += [(p, "") for p in elsewhere if vdir in p.parents]
    for p, note in candidates:
        if _present(spec, p):
            return p, looked
        looked.append(f"{p}{note}")
    if spec.repo_id:
        hit = _hf_cached(spec)
        if hit is not None:
            return hit, looked
        looked.append(f"{hf_cache_location(spec)} (Hugging Face cache)")
    for p in elsewhere:
        if vdir in p.parents:
            continue
        if _present(spec, p):
            return p, looked
        looked.append(str(p))
    return None, looked


def resolve_many(
    specs: Sequence[WeightSpec],
    weights_dir: str | os.PathLike | None = None,
    model_name: str = "",
    *,
    vbench_dir: str | os.PathLike | None = None,
    title: str | None = None,
    fetch: str | Callable[[list[str]], str] | None = None,
    hints: str | None = None,
    verify: bool = True,
) -> dict[str, Path]:
    """Find every weight, or raise one :class:`MissingWeightsError` listing all missing ones.

    ``title`` names what needs them (default ``model '<model_name>'``); ``fetch`` is the command that
    fetches the missing ones, or a function of their names giving it (default:
    ``scripts/download_weights.py <model_name>``); ``hints`` says how
    to point at existing copies. Found files with a known digest are checked (:func:`verify_sha256`).
    """
    wdir = Path(weights_dir).expanduser() if weights_dir else default_weights_dir()
    found: dict[str, Path] = {}
    problems: list[str] = []
    missing: list[str] = []
    for spec in specs:
        path, looked = locate(spec, wdir, vbench_dir)
        if path is None:
            missing.append(spec.name)
            label = f"{spec.description}: " if spec.description else ""
            problems.append(f"- {spec.name}: {label}{spec.what()} (from {spec.source()})\n    looked in: "
                            + "\n               ".join(looked))
            continue
        if verify:
            verify_sha256(spec, path)
        found[spec.name] = path
    if problems:
        title = title or f"model '{model_name}'"
        fetch = fetch(missing) if callable(fetch) else (
            fetch or f"python scripts/download_weights.py {model_name} --weights-dir {wdir}")
        hints = hints or ("FREELONG_WEIGHTS=/path/to/weights, paths.weights_dir=..., "
                          "or model.weights.<name>.path=/path/to/file on the command line")
        raise MissingWeightsError(
            f"missing weights for {title}:\n" + "\n".join(problems) + "\n"
            f"Fetch them with:\n  {fetch}\nor point to existing copies with {hints}.",
            missing=missing,
        )
    return found


def resolve(spec: WeightSpec, weights_dir: str | os.PathLike | None, model_name: str) -> Path:
    """Find one weight or raise :class:`MissingWeightsError`."""
    return resolve_many([spec], weights_dir, model_name)[spec.name]


def model_weight_specs(model_cfg: Mapping[str, Any]) -> list[WeightSpec]:
    """The :class:`WeightSpec` of each ``weights`` entry of a model config."""
    from omegaconf import OmegaConf

    fetch = f"python scripts/download_weights.py {model_cfg['name']}"
    return [WeightSpec.from_config(k, OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v,
                                   fetch=fetch)
            for k, v in (model_cfg.get("weights") or {}).items()]


def resolve_model_weights(model_cfg: Mapping[str, Any], weights_dir: str | os.PathLike | None) -> dict[str, Path]:
    """Every weight of a model config (``cfg.model``), found before anything is loaded; ``{}`` for
    random-init models. Raises one :class:`MissingWeightsError` naming all missing files."""
    if model_cfg.get("random_init") or not model_cfg.get("weights"):
        return {}
    return resolve_many(model_weight_specs(model_cfg), weights_dir, model_cfg["name"])


# ----------------------------------------------------------------------------------------------
# Integrity and loading
# ----------------------------------------------------------------------------------------------
_HASH_CACHE = Path(os.environ.get("FREELONG_CACHE", "~/.cache/freelong-bench")).expanduser() / "sha256.json"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, cached by (path, size, mtime) so big checkpoints are hashed once."""
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{int(st.st_mtime)}"
    try:
        cache: dict[str, str] = json.loads(_HASH_CACHE.read_text())
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
    except OSError:  # a read-only home only costs re-hashing
        pass
    return digest


def expected_sha256(spec: WeightSpec, path: Path) -> str | None:
    """The published digest (or prefix) for the file ``path`` that was found for ``spec``, if any."""
    if path.name in spec.digests:
        return spec.digests[path.name]
    if spec.sha256 and spec.kind == "file" and spec.filename in (None, path.name):
        return spec.sha256
    return None


def verify_sha256(spec: WeightSpec, path: Path, expected: str | None = None) -> None:
    """Compare a file against its published SHA-256 (or prefix); folders and files without one pass."""
    expected = expected or expected_sha256(spec, path)
    if not expected or not path.is_file():
        return
    digest = sha256_file(path)
    if not digest.startswith(expected.lower()):
        again = f" Delete it and run: {spec.fetch}" if spec.fetch else ""
        raise WeightChecksumError(
            f"{path}: SHA-256 {digest} does not match the published {expected} for {spec.name}"
            f"{f' ({spec.description})' if spec.description else ''}; the file is corrupt or a different "
            f"checkpoint.{again}")


def load_checkpoint(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` / ``.pt`` / ``.ckpt`` / ``.pth`` file.

    ``weights_only=True`` and memory-mapped where the format allows, so a multi-GB checkpoint is not read
    twice. A checkpoint that pickles other objects besides tensors is only unpickled in full when
    ``allow_pickle`` (a file vouched for by its published SHA-256, or one its own project loads that way);
    otherwise :class:`WeightChecksumError` says why it was refused.
    """
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # legacy (non-zip) pickles cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            raise WeightChecksumError(
                f"{path}: the checkpoint contains pickled objects besides tensors, and no published SHA-256 "
                f"vouches for it, so it is not unpickled (torch.load with weights_only=True refused it)") from err
        return torch.load(path, map_location="cpu", weights_only=False)


def identity(path: Path) -> dict[str, Any]:
    """Path, size and SHA-256 of a weight file (or of each weight file in a folder)."""
    if path.is_file():
        return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    files = sorted(p for p in path.rglob("*") if p.suffix in {".safetensors", ".bin", ".pt", ".ckpt", ".pth"})
    return {"path": str(path), "files": {str(p.relative_to(path)): sha256_file(p) for p in files}}


# ----------------------------------------------------------------------------------------------
# Fetching (only ever called by the fetch commands, never by loading, scoring or tests)
# ----------------------------------------------------------------------------------------------
def _download_url(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        with urllib.request.urlopen(url) as resp, open(tmp, "wb") as fh:  # noqa: S310 (user-invoked fetch)
            shutil.copyfileobj(resp, fh)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download(spec: WeightSpec, target: str | os.PathLike | None) -> Path:
    """Fetch ``spec`` to ``target`` (a file path, or a folder for folder weights; ``None``: the HF cache).

    Files come from the Hub (``repo_id`` + ``filename``) or the release ``url`` (optionally one member
    of a zip); folders are Hub snapshots limited to ``allow_patterns`` (then ``fallback_patterns`` if
    the first set lacks a required file). The result is checked like any found weight.
    """
    if spec.kind == "folder":
        if not spec.repo_id:
            raise ValueError(f"{spec.name}: no Hugging Face repo is known; place the folder by hand")
        from huggingface_hub import snapshot_download

        kwargs = {"local_dir": Path(target).expanduser()} if target is not None else {}
        folder = None
        for patterns in [spec.allow_patterns, spec.fallback_patterns]:
            if folder is not None and not patterns:
                break
            folder = Path(snapshot_download(spec.repo_id, revision=spec.revision,
                                            allow_patterns=patterns or None, **kwargs))
            if not _folder_missing(folder, spec.required):
                return folder
        raise MissingWeightsError(f"{spec.repo_id} downloaded to {folder} but lacks "
                                  f"{', '.join(_folder_missing(folder, spec.required))}", missing=[spec.name])
    if target is None:
        raise ValueError(f"{spec.name}: a file weight needs a target path")
    target = Path(target).expanduser()
    if spec.repo_id and spec.filename:
        from huggingface_hub import hf_hub_download

        target.parent.mkdir(parents=True, exist_ok=True)
        got = Path(hf_hub_download(spec.repo_id, spec.filename, revision=spec.revision, local_dir=target.parent))
        if got != target:
            got.replace(target)
    elif spec.url and spec.zip_member:
        archive = target.parent / f".{target.name}.zip"
        _download_url(spec.url, archive)
        with zipfile.ZipFile(archive) as zf, zf.open(spec.zip_member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        archive.unlink()
    elif spec.url:
        _download_url(spec.url, target)
    else:
        raise ValueError(f"{spec.name}: no Hugging Face repo or URL is known; place the file by hand")
    verify_sha256(spec, target)
    return target


__all__ = [
    "REPO_ROOT",
    "MissingWeightsError",
    "WeightChecksumError",
    "WeightConfig",
    "WeightSpec",
    "default_weights_dir",
    "download",
    "expected_sha256",
    "hf_cache_location",
    "identity",
    "load_checkpoint",
    "locate",
    "model_weight_specs",
    "resolve",
    "resolve_many",
    "resolve_model_weights",
    "sha256_file",
    "torch_hub_dir",
    "vbench_cache_dir",
    "verify_sha256",
]
