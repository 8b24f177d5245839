"""Frame maps of a DiT's 3D self-attention (analysis/dit_attention.py) against token-level definitions."""

import pytest
import torch

from analysis.dit_attention import dit_frame_probs
from baselines.window_fusion import WindowFusionProcessor, window_weights
from freelong.attention.context import TemporalAttentionContext
from freelong.attention.processor import TemporalAttnProcessor
from freelong.attention.windows import local_window_mask, sliding_windows
from freelong.methods.freelong import SpectralBlendProcessor

T, S = 9, 4


def _qk(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, T * S, 8, generator=g), torch.randn(2, 3, T * S, 8, generator=g)


def _ctx():
    return TemporalAttentionContext(frame_shape=(T, 2, 2), batch=2, level=0, name="blocks.0.attn1", tokens_per_frame=S)


def _frames(p):
    """Token map (rows, heads, T*S, T*S) -> frame map: mean over query tokens, sum over key tokens."""
    return p.view(2, 3, T, S, T, S).sum(-1).mean(3)


def _softmax(q, k, mask=None):
    logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return logits.softmax(-1)


def _token_mask(frame_mask):
    return frame_mask.repeat_interleave(S, 0).repeat_interleave(S, 1)


def test_global_and_freelong_branches():
    q, k = _qk()
    glob = _frames(_softmax(q, k))
    out = dit_frame_probs(TemporalAttnProcessor(), q, k, _ctx())
    assert torch.allclose(out["attn"], glob, atol=1e-5)
    assert torch.allclose(out["attn"].sum(-1), torch.ones(2, 3, T), atol=1e-5)
    fl = dit_frame_probs(SpectralBlendProcessor(window=3, local_only_levels=()), q, k, _ctx())
    local = _frames(_softmax(q, k, _token_mask(local_window_mask(T, 3))))
    assert torch.allclose(fl["global"], glob, atol=1e-5) and torch.allclose(fl["local"], local, atol=1e-5)


@pytest.mark.parametrize("weighting", ["pyramid", "flat"])
def test_window_fusion_is_the_weighted_mean_of_window_softmaxes(weighting):
    q, k = _qk(1)
    window, stride = 4, 2
    proc = WindowFusionProcessor(window, stride, weighting)
    acc = torch.zeros(2, 3, T, T)
    total = torch.zeros(T)
    w = window_weights(window, weighting).float()
    for a, b in sliding_windows(T, window, stride):
        sl = slice(a * S, b * S)
        p = _softmax(q[:, :, sl], k[:, :, sl]).view(2, 3, b - a, S, b - a, S).sum(-1).mean(3)
        acc[:, :, a:b, a:b] += p * w[:, None]
        total[a:b] += w
    assert torch.allclose(dit_frame_probs(proc, q, k, _ctx())["attn"], acc / total[:, None], atol=1e-5)


def test_analysis_method_entries_follow_preset_defaults():
    from omegaconf import OmegaConf

    from analysis.common import methods_from_config
    from freelong.models.spec import load_model_config

    cfg = OmegaConf.create({"method": {"name": "direct"}, "model": load_model_config("wan_tiny")})
    entries = methods_from_config(cfg, ["freelong_vc2", {"name": "freelong_wan", "window": 5}])
    vc2, wan = (e.method for e in entries)
    assert vc2.name == "freelong" and vc2.layout == "centered"
    assert wan.name == "freelong" and wan.window == 5 and wan.noise_stride == 5 and wan.local_only_levels == []
    # FreeLong++ is bound to the native length in LATENT frames (wan_tiny: 21 video frames -> 6)
    (pp,) = (e.method for e in methods_from_config(cfg, ["freelong_pp"]))
    assert pp.native_frames == 6


def test_attention_maps_experiment_on_wan_tiny(compose_cfg, tmp_path):
    import numpy as np

    from analysis.attention_maps import run_experiment

    methods = "analysis.methods=[direct,{name: freelong_wan, window: 3, noise_stride: 1}]"
    cfg = compose_cfg("experiment=attention_maps", "model=wan_tiny", "method=direct", "num_frames=21",
                      "analysis.lengths=[41]", methods, "analysis.layers=[-1]", "num_inference_steps=1",
                      "progress=false", f"paths.output_root={tmp_path}")
    maps = run_experiment(cfg)["maps"]
    assert set(maps) == {(c, 41) for c in ("direct", "freelong_wan(window=3, noise_stride=1) (global)",
                                            "freelong_wan(window=3, noise_stride=1) (local)")}
    for m in maps.values():
        assert m.shape == (11, 11) and np.allclose(m.sum(axis=1), 1.0, atol=1e-5)  # 41 frames = 11 latent
    local = maps[("freelong_wan(window=3, noise_stride=1) (local)", 41)]
    i, j = np.indices(local.shape)
    assert local[np.abs(i - j) > 2].max() == 0.0  # the adjusted 3-frame window
    assert (maps[("direct", 41)][np.abs(i - j) > 2] > 0).all()  # full attention reaches every frame
