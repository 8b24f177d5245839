"""Fetch a model's weights from the Hugging Face Hub into the weights folder.

    python scripts/download_weights.py lavie [--weights-dir DIR]
    python scripts/download_weights.py lavie --list      # show what would be fetched, fetch nothing
    python scripts/download_weights.py animatediff --set extra.motion_adapter=v1-5-3   # a config override

What to fetch is read from the model's config (``conf/model/<name>.yaml``, key ``weights``), the
same place the loader looks, so the two never disagree. The weights folder defaults to
``$FREELONG_WEIGHTS`` or ``<repo>/weights``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from freelong.models.spec import load_model_config
from freelong.weights import default_weights_dir, download, model_weight_specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model config name, e.g. lavie or videocrafter2")
    parser.add_argument("--weights-dir", default=None, help="target folder (default: $FREELONG_WEIGHTS or ./weights)")
    parser.add_argument("--list", action="store_true", help="print what would be downloaded and exit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model config key, as model.KEY=VALUE on the run.py command line")
    args = parser.parse_args(argv)
    cfg = load_model_config(args.model)
    if args.set:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(args.set))
    if cfg.random_init or not cfg.weights:
        print(f"{args.model} uses random weights built in-process; nothing to download.")
        return 0
    wdir = Path(args.weights_dir).expanduser() if args.weights_dir else default_weights_dir()
    for spec in model_weight_specs(cfg):
        name = spec.name
        what = spec.filename if spec.kind == "file" else f"{len(spec.allow_patterns) or 'all'} pattern(s)"
        print(f"{name}: {spec.repo_id} [{what}] -> {wdir / spec.local[0]}")
        if not args.list:
            path = download(spec, wdir / spec.local[0])
            print(f"  done: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
