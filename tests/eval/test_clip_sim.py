"""CLIP-SIM equals a reference written from its definition, on frames of LaVie's own GIFs (Vchitect/LaVie
``assets/``, commit 6ce851e, first 6 frames at a quarter of their size: ``tests/data/lavie_gif_frames.npz``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eval.clip_sim import ClipSim, adjacent_similarity

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors on a shared CPU: no oversubscription


DATA = Path(__file__).resolve().parents[1] / "data" / "lavie_gif_frames.npz"
MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])


def reference_clip_sim(model, frames: np.ndarray) -> float:
    """PIL bicubic short side → 224, centre crop 224, /255, CLIP mean/std; projected embeddings; mean cosine of
    each frame with the next one, one pair at a time."""
    pixels = []
    for f in frames:
        h, w = f.shape[:2]
        size = (224, int(224 * h / w)) if w < h else (int(224 * w / h), 224)  # PIL takes (width, height)
        img = np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC), dtype=np.float64)
        top, left = (img.shape[0] - 224) // 2, (img.shape[1] - 224) // 2
        img = (img[top:top + 224, left:left + 224] / 255.0 - MEAN) / STD
        pixels.append(torch.from_numpy(img.transpose(2, 0, 1)).float())
    with torch.no_grad():
        emb = [model(p[None])[0].double() for p in pixels]
    cos = [float(torch.dot(a, b) / (a.norm() * b.norm())) for a, b in zip(emb[:-1], emb[1:])]
    return sum(cos) / len(cos)


@pytest.fixture(scope="module")
def scorer():
    return ClipSim(None, random_init=True, batch_size=4)


@pytest.mark.parametrize("name", ["teddy", "ironman"])
def test_clip_sim_equals_the_definition_on_lavie_gifs(scorer, name):
    frames = np.load(DATA)[name]
    assert frames.dtype == np.uint8 and frames.shape == (6, 80, 128, 3)
    ours = scorer.score(frames)
    assert ours == pytest.approx(reference_clip_sim(scorer.model, frames), abs=2e-6)
    # a reversed video has the same adjacent pairs; a shuffled one is a different number
    assert scorer.score(frames[::-1].copy()) == pytest.approx(ours, abs=1e-9)
    assert scorer.score(frames[[0, 3, 1, 5, 2, 4]]) != pytest.approx(ours, abs=1e-9)


def test_adjacent_similarity_and_errors(scorer):
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, -3.0]])
    assert adjacent_similarity(e) == pytest.approx((0.0 + -1.0) / 2)
    with pytest.raises(ValueError, match="at least 2 frames"):
        scorer.score(np.zeros((1, 8, 8, 3), np.uint8))
