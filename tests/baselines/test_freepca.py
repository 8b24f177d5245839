"""FreePCA: equality with the official temporal attention and UNet (goldens written by the release's code, and live
when a checkout is named), any length and batch, the schedule, the noise, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from official_code import freepca_unet_params, official_freepca_case, repo, seeded_weights

from baselines.freepca import FreePCA, FreePCAProcessor, mean_reuse_noise, pca_fuse
from freelong import get_method
from freelong.attention.context import CallContext, TemporalAttentionContext
from freelong.attention.processor import TemporalAttention, temporal_attention_layers

DATA = Path(__file__).resolve().parents[1] / "data"


def our_layer(case: dict[str, torch.Tensor]) -> TemporalAttention:
    """Our temporal attention layer with the official module's weights (32 channels, 2 heads x 16)."""
    layer = TemporalAttention(32, 2, 16)
    weights = {k.removeprefix("weight."): v for k, v in case.items() if k.startswith("weight.")}
    layer.load_state_dict(weights, strict=True)
    layer.set_processor(get_method("freepca").processor())
    return layer


def run_layer(layer, x, t, spatial=(2, 1)):
    with torch.no_grad():
        return layer(x, (x.shape[1], *spatial), CallContext(extra={"timestep": t}))


@pytest.mark.parametrize("t", [900, 200])
def test_equals_the_official_temporal_attention(t):
    """Golden from the release's ``CrossAttention.forward`` (64 frames, one sample per call) at a fusing timestep
    and a plain one; ours gets both samples in one batch and must split the PCA per sample."""
    from safetensors.torch import load_file

    case = load_file(str(DATA / "freepca_official.safetensors"))
    got = run_layer(our_layer(case), case["x"], t)
    torch.testing.assert_close(got, case[f"official_t{t}"], atol=1e-6, rtol=0)


@pytest.mark.skipif(repo("FREELONG_FREEPCA_REPO") is None, reason="set FREELONG_FREEPCA_REPO to a FreePCA checkout")
def test_equals_the_live_official_module():
    from official_code import freepca_attention_module

    case = official_freepca_case(freepca_attention_module(repo("FREELONG_FREEPCA_REPO")), seed=5)
    layer = our_layer(case)
    for t in (900, 200):
        torch.testing.assert_close(run_layer(layer, case["x"], t), case[f"official_t{t}"], atol=1e-6, rtol=0)


def our_unet(seed: int):
    from freelong.models.videocrafter.model import VideoCrafterUNet

    params = freepca_unet_params()
    unet = VideoCrafterUNet.from_config(params).eval()
    unet.load_state_dict(seeded_weights(unet, seed), strict=True)
    proc = get_method("freepca").processor()
    for layer in temporal_attention_layers(unet).values():
        layer.set_processor(proc)
    return unet


@pytest.mark.slow
def test_equals_the_official_videocrafter2_unet_at_64_frames():
    """Golden from the release's ``UNetModel`` (tiny VideoCrafter2 widths, the same seeded weights, 64 frames,
    t=901): all 16 temporal attentions run FreePCA, spatial ones xformers-equivalent SDPA."""
    from safetensors.torch import load_file

    case = load_file(str(DATA / "freepca_official_unet.safetensors"))
    unet = our_unet(int(case["seed"]))
    with torch.no_grad():
        got = unet(case["x"], torch.tensor([901]), case["context"], fps=28, call=CallContext(extra={"timestep": 901}))
    torch.testing.assert_close(got, case["official_t901"], atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.skipif(repo("FREELONG_FREEPCA_REPO") is None, reason="set FREELONG_FREEPCA_REPO to a FreePCA checkout")
def test_equals_the_live_official_unet():
    from official_code import official_freepca_unet_case

    case = official_freepca_unet_case(repo("FREELONG_FREEPCA_REPO"), seed=2)
    with torch.no_grad():
        got = our_unet(2)(case["x"], torch.tensor([901]), case["context"], fps=28,
                          call=CallContext(extra={"timestep": 901}))
    torch.testing.assert_close(got, case["official_t901"], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------- definitions
def ctx_for(frames, batch, spatial, t):
    return TemporalAttentionContext(frame_shape=(frames, *spatial), batch=batch, level=0, name="x",
                                    extra={"timestep": t})


def test_below_the_threshold_it_is_sliding_window_averaging():
    """t <= 250: every window's local output is kept, averaged over the windows holding each frame (flat weights),
    at a length the release cannot run (40 frames: windows at 0..24 step 4)."""
    from baselines.window_fusion import WindowFusionProcessor

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 2, 40, 8, generator=g) for _ in range(3))
    got = FreePCAProcessor()(q, k, v, bias=None, ctx=ctx_for(40, 2, (3, 1), 200))
    ref = WindowFusionProcessor(16, 4, "flat")(q, k, v, bias=None, ctx=ctx_for(40, 2, (3, 1), 200))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["bias", "positions"])
def test_unets_positional_terms_follow_the_window_convention(kind):
    """LaVie's relative bias and AnimateDiff's additive positions: below the threshold FreePCA equals the harness's
    flat window fusion with the same terms (window-local positions, the bias on the window's own frames)."""
    from baselines.window_fusion import WindowFusionProcessor

    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(4, 2, 24, 8, generator=g) for _ in range(3))
    table = torch.randn(2, 64, 8, generator=g)
    slopes = torch.randn(2, generator=g)

    def bias(qi, kj):
        return slopes[:, None, None] * (kj[None, None, :] - qi[None, :, None]).abs().float() * 0.1

    def positions(idx):
        return table[:, idx], 0.5 * table[:, idx], 0.25 * table[:, idx]

    ctx = ctx_for(24, 2, (2, 1), 100)
    b = bias if kind == "bias" else None
    if kind == "positions":
        ctx.positions = positions
    got = FreePCAProcessor()(q, k, v, bias=b, ctx=ctx)
    ref = WindowFusionProcessor(16, 4, "flat")(q, k, v, bias=b, ctx=ctx)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    ctx.extra["timestep"] = 900  # and the fusing path runs with them
    assert torch.isfinite(FreePCAProcessor()(q, k, v, bias=b, ctx=ctx)).all()


def test_pca_fuse_takes_the_most_similar_components_from_global():
    """keep=0: the local window unchanged; keep=W: the global window (the fused scores are then all global)."""
    g = torch.Generator().manual_seed(1)
    local, glob = torch.randn(2, 50, 16, generator=g), torch.randn(2, 50, 16, generator=g)
    torch.testing.assert_close(pca_fuse(local, glob, 0), local - local.mean(-1, keepdim=True) + glob.mean(-1, True),
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pca_fuse(local, glob, 16), glob, atol=1e-4, rtol=1e-4)


def test_batched_call_equals_one_sample_per_call():
    """The PCA pools one sample's rows: a batch of 3 (e.g. two guidance branches and another prompt) equals three
    separate calls; pooling across the batch (the release's rows at batch > 1) would not."""
    g = torch.Generator().manual_seed(2)
    spatial = (2, 2)
    q, k, v = (torch.randn(3 * 4, 2, 24, 8, generator=g) for _ in range(3))
    proc = FreePCAProcessor()
    together = proc(q, k, v, bias=None, ctx=ctx_for(24, 3, spatial, 900))
    apart = torch.cat([proc(q[i * 4:(i + 1) * 4], k[i * 4:(i + 1) * 4], v[i * 4:(i + 1) * 4], bias=None,
                            ctx=ctx_for(24, 1, spatial, 900)) for i in range(3)])
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=1e-5)
    pooled = proc(q, k, v, bias=None, ctx=ctx_for(24, 1, (6, 2), 900))
    assert (pooled - apart).abs().max() > 1e-3


def test_mean_reuse_noise_carries_the_first_blocks_mean():
    z = mean_reuse_noise((2, 3, 40, 4, 5), 16, torch.Generator().manual_seed(0))
    base = torch.randn((2, 3, 40, 4, 5), generator=torch.Generator().manual_seed(0))
    first = z[:, :, :16].mean(2)
    torch.testing.assert_close(first, base[:, :, :16].mean(2))
    for a in (16, 32):
        b = min(a + 16, 40)
        torch.testing.assert_close(z[:, :, a:b].mean(2), first, atol=1e-6, rtol=1e-6)
        res = base[:, :, a:b] - base[:, :, a:b].mean(2, keepdim=True)
        torch.testing.assert_close(z[:, :, a:b] - z[:, :, a:b].mean(2, keepdim=True), res, atol=1e-6, rtol=1e-6)
    assert FreePCA().init_noise((1, 4, 20, 2, 2), torch.Generator().manual_seed(0)).shape == (1, 4, 20, 2, 2)


@pytest.mark.slow
def test_runs_on_the_tiny_videocrafter2_pipeline():
    """The pipeline hands every call its timestep (FreePCA raises without one)."""
    from freelong import LongVideoPipeline, load_backbone

    bb = load_backbone("videocrafter2_tiny")
    video = LongVideoPipeline(bb, get_method("freepca"), progress=False)(
        "a cat", num_frames=16, height=32, width=32, num_inference_steps=1, guidance_scale=7.5, seed=0)
    assert video.shape == (16, 32, 32, 3)


def test_bad_input_fails_at_validation_naming_the_key(compose_cfg):
    from freelong.app.config import validate_config

    cases = {
        ("model=videocrafter2_tiny", "method=freepca", "num_frames=8"): "method.window",
        ("model=wan_tiny", "method=freepca"): "method=freepca",
        ("model=videocrafter2_tiny", "method=freepca", "method.stride=20"): "method.stride",
        ("model=videocrafter2_tiny", "method=freepca", "method.num_components=17"): "method.num_components",
    }
    for overrides, key in cases.items():
        with pytest.raises(ValueError, match=key) as err:
            validate_config(compose_cfg(*overrides))
        assert "\n" not in str(err.value)


def test_videocrafter2_sweeps_include_freepca(compose_cfg):
    from omegaconf import OmegaConf

    from freelong.app.config import CONF_DIR, validate_config

    for exp in ("paper_table1_vc2", "sweep_methods"):
        assert "freepca" in OmegaConf.load(CONF_DIR / "experiment" / f"{exp}.yaml").hydra.sweeper.params.method
    validate_config(compose_cfg("experiment=paper_table1_vc2", "method=freepca"))
