"""Where the evaluation networks' weights live, SHA-256 checks, and the one explicit fetch command.

Nothing here downloads implicitly. Each weight is looked for, in order:

1. an explicit path (``eval.weights.<name>=/path`` in run.py, ``--weight name=/path`` in ``python -m eval``);
2. the VBench cache, ``$VBENCH_CACHE_DIR`` or ``~/.cache/vbench``, at the same relative path VBench
   itself uses (so an existing VBench cache works as is); Hugging Face models may also sit there as a
   plain folder ``hf/<owner>--<name>/`` (what ``python -m eval.weights fetch`` writes with ``--local``);
3. the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``), offline lookup only.

If a weight is missing, :class:`EvalWeightsMissing` names every missing file, where it was looked
for, and the command that fetches it: ``python -m eval.weights fetch NAME ...``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from freelong.weights import MissingWeightsError, sha256_file


class EvalWeightsMissing(MissingWeightsError):
    """An evaluation network's weights are not on this machine (raised before any video is scored)."""


class WeightChecksumError(ValueError):
    """A weight file is present but its SHA-256 differs from the published one."""


@dataclass(frozen=True)
class EvalWeight:
    """One weight: a single file, or a Hugging Face model folder (``config.json`` + weights).

    ``vbench_path`` is the file's path relative to the VBench cache; ``sha256`` the full digest or a
    prefix of it (the release file names of pyiqa carry the first 8 hex digits).
    """

    name: str
    description: str
    kind: str = "file"  # "file" | "hf_model"
    vbench_path: str | None = None
    repo_id: str | None = None
    filename: str | None = None
    url: str | None = None
    zip_member: str | None = None
    licence: str = ""
    required: tuple[str, ...] = field(default_factory=tuple)
    # VBench-compatible single files that also hold this model (converted on load, see eval/convert.py);
    # "{vbench}" is the VBench cache root, "{torch_hub}" torch's hub folder.
    native: tuple[str, ...] = ()

    @property
    def local_folder(self) -> str | None:
        return f"hf/{self.repo_id.replace('/', '--')}" if self.kind == "hf_model" and self.repo_id else None


HF_MODEL_FILES = ("config.json", "model.safetensors|pytorch_model.bin")

# Published SHA-256 digests (or prefixes) by file name: OpenAI's URLs carry the digest, pyiqa's file
# names its first 8 hex digits. Files not listed here are not checked.
KNOWN_SHA256 = {
    "ViT-B-32.pt": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
    "ViT-L-14.pt": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    "musiq_spaq_ckpt-358bb6af.pth": "358bb6af",
}

EVAL_WEIGHTS: dict[str, EvalWeight] = {
    w.name: w
    for w in (
        EvalWeight("dino_vitb16", "DINO ViT-B/16 (subject_consistency)", kind="hf_model",
                   repo_id="facebook/dino-vitb16", required=HF_MODEL_FILES, licence="Apache-2.0",
                   native=("{vbench}/dino_model/dino_vitbase16_pretrain.pth",
                           "{torch_hub}/checkpoints/dino_vitbase16_pretrain.pth")),
        EvalWeight("clip_vit_b32", "CLIP ViT-B/32 (background_consistency)", kind="hf_model",
                   repo_id="openai/clip-vit-base-patch32", required=HF_MODEL_FILES, licence="MIT",
                   native=("{vbench}/clip_model/ViT-B-32.pt", "~/.cache/clip/ViT-B-32.pt")),
        EvalWeight("clip_vit_l14", "CLIP ViT-L/14 (aesthetic_quality)", kind="hf_model",
                   repo_id="openai/clip-vit-large-patch14", required=HF_MODEL_FILES, licence="MIT",
                   native=("{vbench}/clip_model/ViT-L-14.pt", "~/.cache/clip/ViT-L-14.pt")),
        EvalWeight("aesthetic_head", "LAION aesthetic linear head on CLIP ViT-L/14 (aesthetic_quality)",
                   vbench_path="aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth",
                   url="https://raw.githubusercontent.com/LAION-AI/aesthetic-predictor/main/sa_0_4_vit_l_14_linear.pth",
                   licence="MIT"),
        EvalWeight("musiq_spaq", "MUSIQ trained on SPAQ (imaging_quality)",
                   vbench_path="pyiqa_model/musiq_spaq_ckpt-358bb6af.pth",
                   repo_id="chaofengc/IQA-PyTorch-Weights", filename="musiq_spaq_ckpt-358bb6af.pth",
                   url="https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/"
                       "musiq_spaq_ckpt-358bb6af.pth",
                   licence="non-commercial (pyiqa)"),
        EvalWeight("amt_s", "AMT-S frame interpolation (motion_smoothness)", vbench_path="amt_model/amt-s.pth",
                   repo_id="lalala125/AMT", filename="amt-s.pth",
                   url="https://huggingface.co/lalala125/AMT/resolve/main/amt-s.pth", licence="CC BY-NC 4.0"),
        EvalWeight("raft_things", "RAFT (things) optical flow (dynamic_degree)",
                   vbench_path="raft_model/models/raft-things.pth",
                   url="https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip",
                   zip_member="models/raft-things.pth", licence="BSD-3-Clause"),
        EvalWeight("viclip", "ViCLIP ViT-L/14, InternVid-10M-FLT (overall_consistency)",
                   vbench_path="ViCLIP/ViClip-InternVid-10M-FLT.pth",
                   repo_id="OpenGVLab/VBench_Used_Models", filename="ViClip-InternVid-10M-FLT.pth",
                   url="https://huggingface.co/OpenGVLab/VBench_Used_Models/resolve/main/ViClip-InternVid-10M-FLT.pth",
                   licence="Apache-2.0 (InternVideo)"),
        EvalWeight("viclip_bpe", "CLIP BPE vocabulary for ViCLIP's tokenizer (overall_consistency)",
                   vbench_path="ViCLIP/bpe_simple_vocab_16e6.txt.gz",
                   url="https://raw.githubusercontent.com/openai/CLIP/main/clip/bpe_simple_vocab_16e6.txt.gz",
                   licence="MIT"),
        EvalWeight("dinov2_vitb14", "DINOv2 ViT-B/14 (VBench-Long clip-to-clip subject term)", kind="hf_model",
                   repo_id="facebook/dinov2-base", required=HF_MODEL_FILES, licence="Apache-2.0"),
    )
}


def vbench_cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The VBench cache root: ``override``, else ``$VBENCH_CACHE_DIR``, else ``~/.cache/vbench``."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("VBENCH_CACHE_DIR")
    return Path(env).expanduser() if env else Path("~/.cache/vbench").expanduser()


def _hf_model_complete(folder: Path, required: Sequence[str]) -> bool:
    return folder.is_dir() and all(any((folder / alt).is_file() for alt in entry.split("|")) for entry in required)


def _hf_cache_lookup(w: EvalWeight) -> Path | None:
    try:
        if w.kind == "file":
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(w.repo_id, w.filename)
            return Path(hit) if isinstance(hit, str) and Path(hit).is_file() else None
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(w.repo_id, local_files_only=True))
        return snap if _hf_model_complete(snap, w.required) else None
    except Exception:  # not cached, or no cache at all
        return None


def torch_hub_dir() -> Path:
    env = os.environ.get("TORCH_HOME")
    return (Path(env).expanduser() if env else Path("~/.cache/torch").expanduser()) / "hub"


def _native_paths(w: EvalWeight, cache_dir: Path) -> list[Path]:
    return [Path(t.format(vbench=cache_dir, torch_hub=torch_hub_dir())).expanduser() for t in w.native]


def locate(w: EvalWeight, explicit: str | os.PathLike | None, cache_dir: Path) -> tuple[Path | None, list[str]]:
    """Where weight ``w`` is, or None, and every place looked in.

    Order: explicit path, the VBench cache (VBench's own file, or an ``hf/`` model folder), the Hugging
    Face cache, then VBench-compatible files elsewhere (``~/.cache/clip``, torch hub).
    """
    looked: list[str] = []

    def ok(p: Path) -> bool:
        if w.kind == "hf_model":
            return _hf_model_complete(p, w.required) or (p.is_file() and bool(w.native))
        return p.is_file()

    if explicit:
        p = Path(explicit).expanduser()
        if ok(p):
            return p, looked
        looked.append(f"{p} (explicit path)")
    native = _native_paths(w, cache_dir)
    in_cache = [cache_dir / rel for rel in (w.vbench_path, w.local_folder) if rel]
    in_cache += [p for p in native if cache_dir in p.parents]
    for p in in_cache:
        if ok(p):
            return p, looked
        looked.append(str(p))
    if w.repo_id:
        hit = _hf_cache_lookup(w)
        if hit is not None:
            return hit, looked
        from freelong.weights import WeightSpec, hf_cache_location

        looked.append(f"{hf_cache_location(WeightSpec(name=w.name, repo_id=w.repo_id))} (Hugging Face cache)")
    for p in native:
        if p in in_cache:
            continue
        if p.is_file():
            return p, looked
        looked.append(str(p))
    return None, looked


def check_sha256(w: EvalWeight, path: Path, expected: str | None = None) -> None:
    """Compare a file against its published SHA-256 (or prefix); folders and unknown files pass."""
    expected = expected or KNOWN_SHA256.get(path.name)
    if not expected or not path.is_file():
        return
    digest = sha256_file(path)
    if not digest.startswith(expected.lower()):
        raise WeightChecksumError(
            f"{path}: SHA-256 {digest} does not match the published {expected} for {w.name} ({w.description}); "
            f"the file is corrupt or a different checkpoint. Delete it and run: python -m eval.weights fetch {w.name}"
        )


def torch_load(path: str | os.PathLike, allow_pickle: bool = False):
    """``torch.load`` with ``weights_only=True``; a checkpoint that also pickles other objects is loaded
    fully only if ``allow_pickle`` (files whose published SHA-256 matched, or that VBench itself loads so)."""
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            raise WeightChecksumError(
                f"{path}: the checkpoint contains pickled objects besides tensors, and no published SHA-256 "
                f"vouches for it, so it is not unpickled ({str(err).splitlines()[0]})"
            ) from err
        return torch.load(str(path), map_location="cpu", weights_only=False)


def resolve_eval_weights(
    names: Iterable[str],
    explicit: Mapping[str, str | os.PathLike | None] | None = None,
    cache_dir: str | os.PathLike | None = None,
    verify: bool = True,
) -> dict[str, Path]:
    """Find every named weight or raise one :class:`EvalWeightsMissing` that lists all missing ones."""
    explicit = dict(explicit or {})
    unknown = sorted(set(explicit) - set(EVAL_WEIGHTS))
    if unknown:
        raise ValueError(f"unknown eval weight name(s) {unknown}; known: {', '.join(EVAL_WEIGHTS)}")
    root = vbench_cache_dir(cache_dir)
    found: dict[str, Path] = {}
    problems: list[str] = []
    for name in dict.fromkeys(names):
        w = EVAL_WEIGHTS[name]
        path, looked = locate(w, explicit.get(name), root)
        if path is None:
            what = w.vbench_path or w.repo_id
            problems.append(f"- {name}: {w.description}: {what}\n    looked in: " + "\n               ".join(looked))
            continue
        if verify:
            check_sha256(w, path)
        found[name] = path
    if problems:
        missing = [p.split(":")[0][2:] for p in problems]
        raise EvalWeightsMissing(
            "missing evaluation weights:\n" + "\n".join(problems) + "\n"
            f"Fetch them with:\n  python -m eval.weights fetch {' '.join(missing)}"
            + (f" --cache-dir {cache_dir}" if cache_dir else "") + "\n"
            "or place the files at the paths above (VBENCH_CACHE_DIR=... points to another VBench cache), "
            "give explicit paths (eval.weights.<name>=/path, or --weight <name>=/path), "
            "or drop the dimension (eval.dims=[...], or --dims ...)."
        )
    return found


# ----------------------------------------------------------------------------------------------
# Fetching: only ever run by the user (``python -m eval.weights fetch``), never by scoring or tests.
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


def fetch(name: str, cache_dir: str | os.PathLike | None = None, local: bool = False) -> Path:
    """Download one weight into the VBench cache (files) or the Hugging Face cache (models); verify it."""
    w = EVAL_WEIGHTS[name]
    root = vbench_cache_dir(cache_dir)
    if w.kind == "hf_model":
        from huggingface_hub import snapshot_download

        kwargs = {"local_dir": root / w.local_folder} if local else {}
        try:
            path = Path(snapshot_download(w.repo_id, allow_patterns=["config.json", "model.safetensors"], **kwargs))
            if not _hf_model_complete(path, w.required):
                raise FileNotFoundError
        except FileNotFoundError:
            path = Path(snapshot_download(w.repo_id, allow_patterns=["config.json", "pytorch_model.bin"], **kwargs))
        return path
    target = root / w.vbench_path
    if w.repo_id and w.filename:
        from huggingface_hub import hf_hub_download

        target.parent.mkdir(parents=True, exist_ok=True)
        got = Path(hf_hub_download(w.repo_id, w.filename, local_dir=target.parent))
        if got != target:
            got.replace(target)
    elif w.zip_member:
        archive = target.parent / "download.zip"
        _download_url(w.url, archive)
        with zipfile.ZipFile(archive) as zf, zf.open(w.zip_member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        archive.unlink()
    else:
        _download_url(w.url, target)
    check_sha256(w, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.weights",
                                     description="List, locate or fetch the evaluation networks' weights.")
    parser.add_argument("action", choices=["list", "fetch"], help="list: where each weight is; fetch: download")
    parser.add_argument("names", nargs="*", help=f"weights (default: all): {', '.join(EVAL_WEIGHTS)}")
    parser.add_argument("--cache-dir", default=None,
                        help="VBench cache root (default $VBENCH_CACHE_DIR or ~/.cache/vbench)")
    parser.add_argument("--local", action="store_true", help="fetch HF models into <cache>/hf/ instead of the HF cache")
    args = parser.parse_args(argv)
    names = args.names or list(EVAL_WEIGHTS)
    unknown = [n for n in names if n not in EVAL_WEIGHTS]
    if unknown:
        parser.error(f"unknown weight(s) {unknown}; known: {', '.join(EVAL_WEIGHTS)}")
    root = vbench_cache_dir(args.cache_dir)
    for name in names:
        w = EVAL_WEIGHTS[name]
        if args.action == "fetch":
            print(f"{name}: fetching {w.repo_id or w.url} (licence: {w.licence})", flush=True)
            path = fetch(name, args.cache_dir, args.local)
            print(f"  -> {path}")
        else:
            path, looked = locate(w, None, root)
            print(f"{name:15s} {'OK  ' + str(path) if path else 'MISSING'}  [{w.description}; {w.licence}]")
            if path is None:
                for p in looked:
                    print(f"{'':15s}   looked in {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
