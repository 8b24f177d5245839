"""Set-level video distances: FVD (Fréchet distance) and KVD (kernel distance) of video features.

Definitions (StyleGAN-V's ``metrics/frechet_video_distance.py``, which ``cd-fvd`` follows):

* statistics of a feature set ``X`` (``N × D``): the mean ``μ`` and the *biased* covariance
  ``Σ = XᵀX/N − μμᵀ``, accumulated in float64;
* ``FVD = ‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2})``. ``tr((Σ_r Σ_g)^{1/2})`` is the sum of the square
  roots of the eigenvalues of ``Σ_r^{1/2} Σ_g Σ_r^{1/2}`` (similar to ``Σ_r Σ_g``, symmetric PSD), so no general
  matrix square root (scipy) is needed;
* ``KVD`` (Unterthiner et al. 2018, the KID of Bińkowski et al. on video features): the unbiased estimator
  of the squared MMD with the cubic polynomial kernel ``k(x, y) = (xᵀy / D + 1)³``, over all pairs (no subsets).

A set smaller than the feature dimension has a singular covariance (rank ``N − 1 < D``) and its FVD mostly
measures the sample size, not the videos: :func:`check_enough` refuses it (``MIN_SAMPLES_RULE``).
Statistics are saved as ``.npz`` (features, mean, covariance, extractor name and weights digest) and
reused: :func:`save_stats` / :func:`load_stats`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MIN_SAMPLES_RULE = "at least feature-dimension + 1 segments (a full-rank covariance)"


class TooFewVideosError(ValueError):
    """A feature set too small for a meaningful covariance (FVD would be a number about the sample size)."""


@dataclass
class FeatureStats:
    """Features of one set of 16-frame segments and their statistics (mean, biased covariance, float64)."""

    features: np.ndarray
    extractor: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        x = np.asarray(self.features, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"features must be a non-empty (N, D) array, got shape {x.shape}")
        self.features = x

    @property
    def num(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        return mean_cov(self.features)


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(μ, Σ)`` with the biased covariance ``XᵀX/N − μμᵀ`` in float64 (StyleGAN-V's ``FeatureStats``)."""
    x = np.asarray(features, dtype=np.float32).astype(np.float64)
    n = x.shape[0]
    mu = x.sum(axis=0) / n
    return mu, x.T @ x / n - np.outer(mu, mu)


def _psd_sqrt(mat: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((mat + mat.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})`` in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    r = _psd_sqrt(s1)
    eig = np.linalg.eigvalsh(r @ s2 @ r)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    return float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(x yᵀ / D + 1)³`` (float64)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _kernel_sum(x: np.ndarray, y: np.ndarray, chunk: int = 2048) -> float:
    return float(sum(polynomial_kernel(x[i:i + chunk], y).sum() for i in range(0, x.shape[0], chunk)))


def kernel_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel over all pairs (KVD), float64, chunked over rows."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise TooFewVideosError("KVD needs at least 2 segments in each set")
    kxx = _kernel_sum(x, x) - _diag(x)
    kyy = _kernel_sum(y, y) - _diag(y)
    kxy = _kernel_sum(x, y)
    return kxx / (m * (m - 1)) + kyy / (n * (n - 1)) - 2.0 * kxy / (m * n)


def _diag(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    return float(((np.einsum("nd,nd->n", x, x) / x.shape[1] + 1.0) ** 3).sum())


def min_samples(dim: int) -> int:
    """The smallest set :func:`check_enough` accepts: ``dim + 1`` segments."""
    return int(dim) + 1


def check_enough(stats: FeatureStats, what: str, minimum: int | None = None) -> None:
    need = min_samples(stats.dim) if minimum is None else int(minimum)
    if stats.num < need:
        raise TooFewVideosError(
            f"{what} has {stats.num} segment(s) of {stats.dim}-dimensional features; FVD needs {need} or more "
            f"({MIN_SAMPLES_RULE}): generate more videos (FreeNoise: 2048 videos, 8192 segments)")


def fvd_kvd(reference: FeatureStats, generated: FeatureStats, minimum: int | None = None) -> dict[str, float]:
    """``{"fvd": ..., "kvd": ...}`` of two feature sets of the same extractor; refuses sets that are too small."""
    if reference.dim != generated.dim:
        raise ValueError(f"feature dimensions differ: reference {reference.dim}, generated {generated.dim}")
    if reference.extractor and generated.extractor and reference.extractor != generated.extractor:
        raise ValueError(f"reference statistics come from {reference.extractor!r}, the videos from "
                         f"{generated.extractor!r}: rebuild the reference with the same network and weights")
    check_enough(reference, "the reference set", minimum)
    check_enough(generated, "the generated set", minimum)
    mu_r, s_r = reference.mean_cov()
    mu_g, s_g = generated.mean_cov()
    return {"fvd": frechet_distance(mu_r, s_r, mu_g, s_g),
            "kvd": kernel_distance(reference.features, generated.features)}


def save_stats(path: str | Path, stats: FeatureStats) -> Path:
    """Write ``features``/``mean``/``cov`` and a JSON ``meta`` (extractor, info) atomically as ``.npz``."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mu, cov = stats.mean_cov()
    meta = json.dumps({"extractor": stats.extractor, "num": stats.num, "dim": stats.dim, **stats.info})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    with open(tmp, "wb") as f:
        np.savez(f, features=stats.features, mean=mu, cov=cov, meta=np.array(meta))
    os.replace(tmp, path)
    return path


def load_stats(path: str | Path) -> FeatureStats:
    with np.load(Path(path), allow_pickle=False) as z:
        if "features" not in z or "meta" not in z:
            raise ValueError(f"{path}: not a statistics file of this package (needs 'features' and 'meta')")
        meta = json.loads(str(z["meta"]))
        features = z["features"]
    extractor = meta.pop("extractor", "")
    for key in ("num", "dim"):
        meta.pop(key, None)
    return FeatureStats(features, extractor=extractor, info=meta)


def describe(stats: FeatureStats) -> Mapping[str, Any]:
    return {"extractor": stats.extractor, "segments": stats.num, "dim": stats.dim, **stats.info}
