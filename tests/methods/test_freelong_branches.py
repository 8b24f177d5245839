"""FreeLong's branch modes (Fig. 6 ablation), each against its definition."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_run_refused, random_qkv

from freelong import get_method
from freelong.attention.context import TemporalAttentionContext
from freelong.attention.kernels import global_attention, local_attention
from freelong.methods.freelong import BRANCHES, SpectralBlendProcessor

T, H, W, B, HEADS, D = 24, 4, 3, 2, 2, 8


def _qkv(t=T, seed=0):
    return tuple(random_qkv(B * H * W, HEADS, t, D, seed))


def _bias(seed=1):
    table = torch.randn(HEADS, 128, generator=torch.Generator().manual_seed(seed))
    return lambda qi, ki: table[:, (ki[None, :] - qi[:, None]) + 64]


def _ctx(t=T, level=1, step=0):
    return TemporalAttentionContext(frame_shape=(t, H, W), batch=B, level=level, name="x", step_index=step,
                                    num_steps=4)


def _lowpass_reference(x, d_s=0.25, d_t=0.25, t=T):
    """Re IFFT3D(FFT3D(x) * P) over (T, H, W), P the Gaussian in the fftshifted layout, from its formula."""
    vid = x.double().reshape(B, H, W, HEADS, t, D).permute(0, 3, 5, 4, 1, 2)  # (B, heads, d, T, H, W)
    ct, ch, cw = (torch.arange(n, dtype=torch.float64) * 2 / n - 1 for n in (t, H, W))
    p = torch.exp(-0.5 * ((ct[:, None, None] / d_t) ** 2 + (ch[None, :, None] / d_s) ** 2
                          + (cw[None, None, :] / d_s) ** 2))
    dims = (-3, -2, -1)
    spec = torch.fft.fftshift(torch.fft.fftn(vid, dim=dims), dim=dims)
    out = torch.fft.ifftn(torch.fft.ifftshift(spec * p, dim=dims), dim=dims).real
    return out.permute(0, 4, 5, 1, 3, 2).reshape(x.shape).float()


def _run(branch, q, k, v, bias, ctx=None, **kw):
    return SpectralBlendProcessor(window=8, branch=branch, **kw)(q, k, v, bias=bias, ctx=ctx or _ctx())


def test_each_branch_mode_is_its_definition():
    q, k, v = _qkv()
    bias = _bias()
    glob, local = global_attention(q, k, v, bias), local_attention(q, k, v, bias, 8)
    out = {b: _run(b, q, k, v, bias) for b in BRANCHES}
    assert torch.equal(out["blend"], SpectralBlendProcessor(window=8)(q, k, v, bias=bias, ctx=_ctx()))  # default
    assert torch.equal(out["global"], glob)
    assert torch.equal(out["local"], local)
    assert torch.allclose(out["sum"], (glob + local) / 2, atol=1e-7)
    low_g, low_l = _lowpass_reference(glob), _lowpass_reference(local)
    assert torch.allclose(out["blend"], low_g + (local - low_l), atol=1e-5)  # Eq. 3-5 of the paper
    assert torch.allclose(out["low_global"], low_g, atol=1e-5)
    assert torch.allclose(out["high_local"], local - low_l, atol=1e-5)
    # the decomposition: low frequencies of global + high frequencies of local = FreeLong, to fp32 rounding
    assert torch.allclose(out["low_global"] + out["high_local"], out["blend"], atol=1e-6)
    assert not torch.allclose(out["low_global"], out["blend"], atol=1e-3)  # the parts are not the whole


def test_modes_change_only_the_blending_calls():
    q, k, v = _qkv()
    bias = _bias()
    local = local_attention(q, k, v, bias, 8)
    for branch in BRANCHES:  # a local-only level and a step after blend_steps stay local in every mode
        assert torch.equal(_run(branch, q, k, v, bias, _ctx(level=0)), local), branch
        late = _run(branch, q, k, v, bias, _ctx(level=1, step=3), blend_steps=2)
        assert torch.equal(late, local), branch


def test_a_window_covering_the_video_makes_both_branches_global():
    q, k, v = _qkv(t=8)
    ctx = _ctx(t=8)
    glob = global_attention(q, k, v, None)
    for branch in ("blend", "global", "local", "sum"):
        assert torch.equal(_run(branch, q, k, v, None, ctx), glob), branch
    assert torch.allclose(_run("low_global", q, k, v, None, ctx), _lowpass_reference(glob, t=8), atol=1e-5)
    assert torch.allclose(_run("high_local", q, k, v, None, ctx), glob - _lowpass_reference(glob, t=8), atol=1e-5)


def test_global_mode_with_local_only_off_and_random_noise_is_direct_sampling(lavie_tiny, one_thread):
    from freelong.pipeline import LongVideoPipeline

    def sample(method):
        pipe = LongVideoPipeline(lavie_tiny, method, progress=False)
        return pipe("a cat", 16, 32, 32, 2, 7.5, 0, output_type="latent")

    direct = sample(get_method("direct"))
    glob = sample(get_method("freelong", window=8, branch="global", local_only_levels=[], noise="random"))
    blend = sample(get_method("freelong", window=8, local_only_levels=[], noise="random"))
    assert torch.equal(glob, direct)
    assert not torch.allclose(blend, direct, atol=1e-4)


def test_unknown_branch_mode_names_the_value(compose_cfg, tmp_path):
    from freelong.errors import ConfigError

    with pytest.raises(ValueError, match="method.branch must be one of blend, .*got 'mean'"):
        get_method("freelong", branch="mean")
    with pytest.raises(ValueError, match="'mean'"):
        SpectralBlendProcessor(branch="mean")
    cfg = compose_cfg("method.branch=mean", "progress=false", f"paths.output_root={tmp_path}")
    assert_run_refused(cfg, ConfigError, "method.branch .*'mean'", tmp_path)


def test_ablation_experiment_sweeps_the_six_modes(compose_cfg):
    from hydra import compose, initialize_config_dir

    from freelong.models.spec import CONF_DIR

    cfg = compose_cfg("experiment=ablation_fig6")
    assert (cfg.model.name, cfg.method.name, cfg.eval.name, cfg.num_frames) == ("lavie", "freelong", "fast", 128)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        full = compose("config", overrides=["experiment=ablation_fig6"], return_hydra_config=True)
    assert full.hydra.mode.name == "MULTIRUN"
    assert full.hydra.sweeper.params["method.branch"].split(",") == list(BRANCHES)
