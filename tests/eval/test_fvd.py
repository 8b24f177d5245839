"""FVD/KVD: the Fréchet distance and the KVD kernel from their definitions, the I3D extractor against cd-fvd on the
same random weights (saved in ``i3d_pretrained_400.pt``'s format), statistics files, and the too-small-set refusal."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from cdfvd_reference import random_clips, random_feature_sets, random_i3d_state

from eval.fvd import (
    FeatureStats,
    TooFewVideosError,
    frechet_distance,
    fvd_kvd,
    kernel_distance,
    load_stats,
    mean_cov,
    min_samples,
    save_stats,
)
from eval.i3d import I3D, i3d_features, load_i3d, preprocess_i3d, same_padding

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors on a shared CPU: no oversubscription

DATA = Path(__file__).resolve().parents[1] / "data"
REFERENCE = DATA / "cdfvd_i3d_reference.npz"


def fd_reference(a: np.ndarray, b: np.ndarray) -> float:
    """The formula, written independently: biased covariances, tr((S1 S2)^1/2) from the eigenvalues of S1 S2."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = (a - mu1).T @ (a - mu1) / len(a)
    s2 = (b - mu2).T @ (b - mu2) / len(b)
    eig = np.linalg.eigvals(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.abs(eig.real)).sum())


def kvd_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(a, b) = (a·b/d + 1)^3, by explicit sums over index pairs."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a.astype(np.float64), b.astype(np.float64))) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_frechet_distance_equals_the_formula():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 40)) @ rng.standard_normal((40, 40)) / 5 + 1.0
    b = rng.standard_normal((250, 40)) @ rng.standard_normal((40, 40)) / 4
    mu1, s1 = mean_cov(a)
    mu2, s2 = mean_cov(b)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(fd_reference(a, b), rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    # statistics are StyleGAN-V's: biased covariance (numpy's bias=True)
    np.testing.assert_allclose(s1, np.cov(a.astype(np.float32).astype(np.float64), rowvar=False, bias=True),
                               rtol=1e-10, atol=1e-12)


def test_kernel_distance_equals_the_definition():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((23, 7)).astype(np.float32)
    y = (rng.standard_normal((19, 7)) * 1.5 + 0.3).astype(np.float32)
    assert kernel_distance(x, y) == pytest.approx(kvd_reference(x, y), rel=1e-10)
    # more rows than one chunk (2048): the chunked sums equal the whole kernel matrices
    big, other = rng.standard_normal((2100, 5)), rng.standard_normal((300, 5)) + 0.2
    kxx, kyy, kxy = ((a @ b.T / 5 + 1) ** 3 for a, b in ((big, big), (other, other), (big, other)))
    want = ((kxx.sum() - np.trace(kxx)) / (2100 * 2099) + (kyy.sum() - np.trace(kyy)) / (300 * 299)
            - 2 * kxy.mean())
    assert kernel_distance(big, other) == pytest.approx(want, rel=1e-9)


@pytest.mark.skipif(not REFERENCE.exists(), reason="tests/data/cdfvd_i3d_reference.npz missing")
def test_frechet_distance_equals_cdfvd():
    a, b = random_feature_sets()
    expected = float(np.load(REFERENCE)["fvd_sets"])
    ours = fvd_kvd(FeatureStats(a), FeatureStats(b))["fvd"]
    assert ours == pytest.approx(expected, rel=1e-7)


def random_i3d() -> I3D:
    model = I3D()
    state = random_i3d_state({k: tuple(v.shape) for k, v in model.state_dict().items()})
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model.eval()


@pytest.mark.skipif(not REFERENCE.exists(), reason="tests/data/cdfvd_i3d_reference.npz missing")
def test_i3d_features_equal_cdfvd_on_the_same_random_weights(tmp_path):
    ref = np.load(REFERENCE)
    shapes = {k: tuple(v.shape) for k, v in I3D().state_dict().items()}
    keys = [str(k) for k in ref["keys"]]  # cd-fvd's state_dict keys, in its order (its logits come first)
    assert sorted(keys) == sorted(shapes)
    # saved and loaded in the checkpoint's on-disk format (a plain state_dict), strictly, by our loader
    state = random_i3d_state({k: shapes[k] for k in keys})
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    from eval.weights import EVAL_WEIGHTS

    assert EVAL_WEIGHTS["i3d_400"].vbench == ["fvd/i3d_pretrained_400.pt"]
    with torch.no_grad():
        feats = i3d_features(load_i3d(path), random_clips(), batch_size=2)
    expected = ref["features"]
    assert feats.shape == expected.shape == (2, 400)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(feats, expected, rtol=0, atol=2e-5 * scale)


def test_same_padding_is_tensorflow_same():
    # output size ceil(s / stride) and the extra pixel at the end, as TensorFlow's SAME
    for s in range(5, 12):
        for k, st in ((7, 2), (3, 1), (3, 2), (2, 2), (1, 1)):
            lo, hi = same_padding((s,), (k,), (st,))
            assert (s + lo + hi - k) // st + 1 == -(-s // st)
            assert hi - lo in (0, 1)


def test_preprocess_is_bilinear_resize_to_224_and_scale():
    clips = random_clips(1)
    x = preprocess_i3d(clips)
    assert tuple(x.shape) == (1, 3, 16, 224, 224) and x.min() >= -1 - 1e-6 and x.max() <= 1 + 1e-6
    frame = torch.from_numpy(clips[0, 5]).permute(2, 0, 1)[None].float()
    want = torch.nn.functional.interpolate(frame, (224, 224), mode="bilinear", align_corners=False)[0] / 127.5 - 1
    torch.testing.assert_close(x[0, :, 5], want, rtol=0, atol=1e-6)


def test_too_small_sets_are_refused():
    rng = np.random.default_rng(2)
    ref = FeatureStats(rng.standard_normal((50, 16)))
    with pytest.raises(TooFewVideosError, match="the generated set has 16 segment.*needs 17"):
        fvd_kvd(ref, FeatureStats(rng.standard_normal((16, 16))))
    assert min_samples(400) == 401
    out = fvd_kvd(ref, FeatureStats(rng.standard_normal((17, 16))))
    assert out["fvd"] > 0 and np.isfinite(out["kvd"])
    with pytest.raises(ValueError, match="rebuild the reference"):
        fvd_kvd(FeatureStats(ref.features, extractor="i3d400-aaaa"),
                FeatureStats(ref.features, extractor="i3d16-random"))



def test_statistics_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    stats = FeatureStats(rng.standard_normal((30, 8)), extractor="i3d16-random", info={"videos": 30})
    back = load_stats(save_stats(tmp_path / "s.npz", stats))
    np.testing.assert_array_equal(back.features, stats.features)
    assert back.extractor == "i3d16-random" and back.info == {"videos": 30}
    with np.load(tmp_path / "s.npz") as z:
        np.testing.assert_allclose(z["cov"], stats.mean_cov()[1])


@pytest.mark.skipif(importlib.util.find_spec("cdfvd") is None, reason="cd-fvd (optional lane) not installed")
def test_against_cdfvd_itself(tmp_path):  # pragma: no cover - runs only where cd-fvd imports
    from cdfvd.third_party.i3d.utils import load_i3d_model
    from cdfvd.third_party.i3d.utils import preprocess_i3d as cd_preprocess

    model = random_i3d()
    path = tmp_path / "i3d.pt"
    torch.save(model.state_dict(), path)
    theirs = load_i3d_model(torch.device("cpu"), str(path))
    clips = random_clips(2)
    with torch.no_grad():
        torch.testing.assert_close(model(preprocess_i3d(clips)), theirs(cd_preprocess(clips)), rtol=1e-5, atol=1e-5)
