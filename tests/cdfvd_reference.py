"""Inputs shared with ``cd-fvd`` for the FVD parity test, and the script that records ``cd-fvd``'s outputs.

The random I3D weights, the clips and the feature sets are drawn from numpy generators (the same values in any
torch version). Run once in an environment where ``cd-fvd`` imports (it needs torchvision, which our CPU torch
build cannot import beside it)::

    python -m venv .venv-cdfvd && .venv-cdfvd/bin/pip install torch==2.14.1 torchvision==0.29.1 cd-fvd
    .venv-cdfvd/bin/python tests/cdfvd_reference.py tests/data/cdfvd_i3d_reference.npz

It saves the weights in ``i3d_pretrained_400.pt``'s format, loads them with cd-fvd's own ``load_i3d_model``
(strict), and stores cd-fvd's features of the clips (``get_i3d_logits``, with its ``preprocess_i3d``) and
cd-fvd's FVD (``compute_fvd_from_stats``, scipy ``sqrtm``) of two seeded feature sets.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEED = 2024


def random_i3d_state(shapes: dict[str, tuple[int, ...]], seed: int = SEED) -> dict[str, np.ndarray]:
    """He-scaled conv weights, batch-norm parameters and running statistics near (1, 0), from one numpy generator,
    in the order of ``shapes`` (the state_dict's order)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = np.zeros(shape, np.int64)
        elif key.endswith("conv3d.weight"):
            fan_in = int(np.prod(shape[1:]))
            out[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        elif key.endswith("running_var"):
            out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif key.endswith("bn.weight"):
            out[key] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:  # bn.bias, running_mean, logits bias
            out[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return out


def random_clips(n: int = 2, seed: int = SEED) -> np.ndarray:
    """``n`` uint8 clips (16, 36, 44, 3): moving smooth gradients plus noise (non-square, resized to 224)."""
    rng = np.random.default_rng(seed + 1)
    t, h, w = np.meshgrid(np.arange(16), np.arange(36), np.arange(44), indexing="ij")
    clips = []
    for _ in range(n):
        f = rng.uniform(0.05, 0.3, 3)
        base = np.stack([np.sin(f[c] * (w + 2 * t * (c + 1)) + f[c] * h) for c in range(3)], axis=-1)
        clips.append(np.clip(127.5 + 90 * base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
    return np.stack(clips)


def random_feature_sets(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated 400-d feature sets (600 and 500 rows) with different means and covariances."""
    rng = np.random.default_rng(seed + 2)
    mix = rng.standard_normal((400, 400)) / 20
    a = rng.standard_normal((600, 400)) @ mix + 0.5
    b = rng.standard_normal((500, 400)) @ (mix + rng.standard_normal((400, 400)) / 60) + 0.3
    return a.astype(np.float32), b.astype(np.float32)


def main(out: str) -> None:  # runs in the cd-fvd environment only
    import tempfile

    import torch
    from cdfvd import fvd as cdfvd_fvd
    from cdfvd.third_party.i3d import pytorch_i3d
    from cdfvd.third_party.i3d.utils import load_i3d_model
    from cdfvd.utils.metric_utils import FeatureStats

    shapes = {k: tuple(v.shape) for k, v in pytorch_i3d.InceptionI3d(400, in_channels=3).state_dict().items()}
    state = {k: torch.from_numpy(v) for k, v in random_i3d_state(shapes).items()}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "i3d_pretrained_400.pt"
        torch.save(state, path)
        model = load_i3d_model(torch.device("cpu"), str(path))  # strict load_state_dict
    clips = random_clips()
    stats = cdfvd_fvd.get_i3d_logits(FeatureStats(capture_all=True, capture_mean_cov=True), model, clips,
                                     batchsize=2, device="cpu")
    a, b = random_feature_sets()
    real, fake = FeatureStats(capture_mean_cov=True), FeatureStats(capture_mean_cov=True)
    real.append(a)
    fake.append(b)
    evaluator = cdfvd_fvd.cdfvd.__new__(cdfvd_fvd.cdfvd)  # compute_fvd_from_stats only (no weight download)
    fvd = float(evaluator.compute_fvd_from_stats(fake, real))
    import cdfvd

    np.savez(out, features=stats.get_all(), fvd_sets=np.float64(fvd), keys=np.array(list(shapes)),
             cdfvd_version=np.array(getattr(cdfvd, "__version__", "0.1.1")), torch_version=np.array(torch.__version__))
    print(f"wrote {out}: features {stats.get_all().shape}, FVD of the two sets {fvd:.6f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cdfvd_i3d_reference.npz")
