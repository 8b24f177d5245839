"""Independent references for the scorers' numerics, written here from the definitions (VBench, pyiqa, CLIP).

Nothing below calls the scorers' own helpers to build an expected value: resizes are explicit
interpolation matrices (PyTorch's bicubic A = -0.75 and bilinear kernels, ``align_corners=False``, no
antialias), MUSIQ is a float64 functional transcription of pyiqa's arch (weight standardisation, TF
"SAME" padding, multi-scale patches, hashed positions, -1000 attention masking), CLIP's image tower is
the OpenAI ``VisionTransformer`` forward written out on the model's parameters, and the AMT/RAFT checks
call the networks the way VBench's ``motion_smoothness.py`` / ``dynamic_degree.py`` do, with VBench's own
vendored padders and tensor helpers.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eval.base import DimResult, EvalContext, get_dimension
from eval.transforms import clip_transform, dino_transform, imaging_transform
from eval.video import Video

pytestmark = pytest.mark.usefixtures("one_thread")

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


# ------------------------------------------------------------------------------------ resizing by hand
def _cubic(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    t = np.abs(t)
    return np.where(t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1,
                    np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0))


def interp_matrix(n_in: int, n_out: int, kind: str) -> np.ndarray:
    """(n_out, n_in) weights of a 1-D resize: source x = (i + 0.5) * n_in / n_out - 0.5, edge indices clamped."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        x = (i + 0.5) * n_in / n_out - 0.5
        if kind == "bilinear":
            x = max(x, 0.0)  # linear: negative source coordinates are clamped to 0
            i0 = min(int(math.floor(x)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            m[i, i0] += 1 - (x - i0)
            m[i, i1] += x - i0
        else:  # bicubic: 4 taps around floor(x), coordinates not clamped, indices clamped
            f = math.floor(x)
            for k in range(-1, 3):
                m[i, min(max(f + k, 0), n_in - 1)] += _cubic(np.array(x - (f + k)))
    return m


def resize_ref(img: np.ndarray, out_h: int, out_w: int, kind: str) -> np.ndarray:
    """``(C, H, W)`` float64 → ``(C, out_h, out_w)``: separable, no antialias, no clamping of values."""
    mh, mw = interp_matrix(img.shape[1], out_h, kind), interp_matrix(img.shape[2], out_w, kind)
    return mh @ img @ mw.T


def test_interpolation_matrices_equal_hand_computed_weights():
    # 2x bilinear upscale of 4 samples: x = -0.25 (clamped to 0), 0.25, 0.75, ...
    np.testing.assert_allclose(interp_matrix(4, 8, "bilinear")[:3], [[1, 0, 0, 0], [0.75, 0.25, 0, 0],
                                                                     [0.25, 0.75, 0, 0]])
    # bicubic at x = 0.25 (2x upscale, output 1): taps -1, 0, 1, 2 at distances 1.25, 0.25, 0.75, 1.75
    w = [_cubic(np.array(d)) for d in (1.25, 0.25, 0.75, 1.75)]
    np.testing.assert_allclose(interp_matrix(4, 8, "bicubic")[1], [w[0] + w[1], w[2], w[3], 0])
    # Keys a = -0.75 by hand, e.g. t = 0.25: 1.25 t³ - 2.25 t² + 1 = 0.87890625; the four sum to 1
    np.testing.assert_allclose(w, [-0.10546875, 0.87890625, 0.26171875, -0.03515625])


# ------------------------------------------------------------------------------ transforms, non-constant
def test_clip_transform_is_bicubic_short_side_crop_normalise_on_a_random_image():
    img = np.random.default_rng(0).integers(0, 256, (3, 50, 70)).astype(np.float64)
    # short side 50 -> 224, long side int(224 * 70 / 50) = 313; crop left = round((313 - 224) / 2) = round(44.5) = 44
    full = resize_ref(img, 224, 313, "bicubic")
    ref = (full[:, :, 44:268] / 255 - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None]
    out = clip_transform(torch.from_numpy(img).float()[None])[0].double().numpy()
    np.testing.assert_allclose(out, ref, atol=2e-4)
    assert full.min() < 0 and full.max() > 255  # bicubic overshoot, kept (no clamp)
    bilinear = resize_ref(img, 224, 313, "bilinear")[:, :, 44:268] / 255 / CLIP_STD[:, None, None]
    assert np.abs(bilinear - (full[:, :, 44:268] / 255) / CLIP_STD[:, None, None]).max() > 0.1  # the mode matters


def test_imaging_transform_is_bilinear_without_antialias_on_a_random_image():
    img = np.random.default_rng(1).integers(0, 256, (3, 520, 780)).astype(np.float64)
    # longer side 780 > 512: s = 512 / 780, size (int(520 s), int(780 s)) = (341, 512)
    ref = resize_ref(img, 341, 512, "bilinear") / 255
    x = torch.from_numpy(img).float()[None]
    out = imaging_transform(x, "longer")[0].double().numpy()
    assert out.shape == (3, 341, 512)
    np.testing.assert_allclose(out, ref, atol=1e-4)  # float32 source coordinates: ~0.01 grey levels
    aa = F.interpolate(x, size=(341, 512), mode="bilinear", align_corners=False, antialias=True)[0].numpy() / 255
    assert np.abs(aa - ref).max() > 0.05  # an antialiased resize would be caught
    small = np.random.default_rng(2).integers(0, 256, (3, 40, 60)).astype(np.float32)
    np.testing.assert_allclose(imaging_transform(torch.from_numpy(small)[None])[0].numpy(), small / 255, rtol=1e-6)


def test_dino_transform_is_bilinear_short_side_without_crop_on_a_random_image():
    img = np.random.default_rng(3).integers(0, 256, (3, 50, 70)).astype(np.float64)
    ref = (resize_ref(img, 224, 313, "bilinear") / 255 - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    out = dino_transform(torch.from_numpy(img).float()[None])[0].double().numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)


# ------------------------------------------------------------------------- MUSIQ, functional (pyiqa)
def _same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TF 'SAME': total (ceil(n/s) - 1) * s + k - n per axis, the smaller half before."""
    h, w = x.shape[-2:]
    ph, pw = (math.ceil(h / s) - 1) * s + k - h, (math.ceil(w / s) - 1) * s + k - w
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def _std_conv(x: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
    w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
    return F.conv2d(_same_pad(x, w.shape[-1], stride), w, stride=stride)


def _nearest_ids(grid: int, count: int) -> list[int]:
    """torch 'nearest' (pyiqa's hash): source = floor(dst * (grid / count)) in float32."""
    scale = np.float32(grid) / np.float32(count)
    return [min(int(np.floor(np.float32(i) * scale)), grid - 1) for i in range(count)]


def _tokens(img: np.ndarray, scale_id: int, max_len: int | None, grid: int = 10, p: int = 32):
    """One scale of pyiqa's get_multiscale_patches, with slicing instead of unfold."""
    x = _same_pad(torch.from_numpy(img)[None], p, p)[0]
    rows, cols = x.shape[1] // p, x.shape[2] // p
    hr, hc = _nearest_ids(grid, rows), _nearest_ids(grid, cols)
    toks = [(x[:, r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(-1), hr[r] * grid + hc[c], scale_id, 1)
            for r in range(rows) for c in range(cols)]
    if max_len is not None:
        toks = (toks + [(torch.zeros(3 * p * p, dtype=x.dtype), 0, 0, 0)] * max_len)[:max_len]
    return toks


def musiq_reference(sd: dict[str, torch.Tensor], img01: np.ndarray, heads: int) -> float:
    """MOS of one image ``(3, H, W)`` in [0, 1], float64, from pyiqa's MUSIQ definitions on a state dict."""
    sd = {k: v.double() for k, v in sd.items()}
    x = (img01 - 0.5) * 2
    h, w = x.shape[1:]
    toks = []
    for sid, side in enumerate((224, 384)):
        r = side / max(h, w)
        toks += _tokens(resize_ref(x, round(h * r), round(w * r), "bicubic"), sid, math.ceil(side / 32) ** 2)
    toks += _tokens(x, 2, None)
    patches = torch.stack([t[0] for t in toks]).reshape(-1, 3, 32, 32)
    spatial = torch.tensor([t[1] for t in toks])
    scale = torch.tensor([t[2] for t in toks])
    mask = torch.tensor([1] + [t[3] for t in toks], dtype=torch.float64)
    # ResNet stem per patch
    y = F.relu(F.group_norm(_std_conv(patches, sd["conv_root.weight"], 2), 32, sd["gn_root.weight"],
                            sd["gn_root.bias"], eps=1e-6))
    y = F.max_pool2d(_same_pad(y, 3, 2), 3, 2)

    def gn(t, name):
        return F.group_norm(t, 32, sd[f"block1.{name}.weight"], sd[f"block1.{name}.bias"], eps=1e-4)

    short = gn(_std_conv(y, sd["block1.conv_proj.weight"], 1), "gn_proj")
    z = F.relu(gn(_std_conv(y, sd["block1.conv1.weight"], 1), "gn1"))
    z = F.relu(gn(_std_conv(z, sd["block1.conv2.weight"], 1), "gn2"))
    y = F.relu(gn(_std_conv(z, sd["block1.conv3.weight"], 1), "gn3") + short)
    emb = y.permute(0, 2, 3, 1).reshape(len(toks), -1) @ sd["embedding.weight"].T + sd["embedding.bias"]
    te = "transformer_encoder."
    emb = emb + sd[te + "posembed_input.position_emb"][0][spatial] + sd[te + "scaleembed_input.scale_emb"][scale]
    t = torch.cat([sd[te + "cls"][0], emb])
    n, c = t.shape
    pair = mask[:, None] * mask[None, :]

    def ln(v, name):
        return F.layer_norm(v, (c,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-6)

    def lin(v, name):
        return v @ sd[name + ".weight"].T + sd[name + ".bias"]

    i = 0
    while f"{te}transformer.encoderblock_{i}.norm1.weight" in sd:
        b = f"{te}transformer.encoderblock_{i}."
        u = ln(t, b + "norm1")
        q, k, v = (lin(u, b + f"attention.{m}").view(n, heads, c // heads).transpose(0, 1)
                   for m in ("query", "key", "value"))
        att = ((q @ k.transpose(1, 2)) * (c // heads) ** -0.5).masked_fill(pair == 0, -1000.0).softmax(-1)
        t = t + lin((att @ v).transpose(0, 1).reshape(n, c), b + "attention.out")
        t = t + lin(F.gelu(lin(ln(t, b + "norm2"), b + "mlp.fc1")), b + "mlp.fc2")
        i += 1
    cls = ln(t, te + "encoder_norm")[0]
    return float(cls @ sd["head.weight"][0] + sd["head.bias"][0])


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial values everywhere (zero embeddings / unit norms would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.dim() == 1 else 0.0) * 0.5)


def test_imaging_quality_equals_functional_musiq_and_overall_divides_by_100():
    scorer = get_dimension("imaging_quality")(EvalContext(random_init=True, batch_size=8))
    _randomise(scorer.model, 0)
    sd = scorer.model.state_dict()
    heads = scorer.model.transformer_encoder.transformer.encoderblock_0.attention.heads
    rng = np.random.default_rng(4)
    # 530 x 44: long side > 512 -> bilinear to (512, int(44 * 512 / 530) = 42); native tokens 16 x 2 with SAME pad
    frames = rng.integers(0, 256, (2, 530, 44, 3), dtype=np.uint8)
    per_frame = []
    for f in frames:
        img = resize_ref(f.transpose(2, 0, 1).astype(np.float64), 512, 42, "bilinear") / 255
        per_frame.append(musiq_reference(sd, img, heads))
    value = scorer.score(Video(None, frames)).value
    assert value == pytest.approx(np.mean(per_frame), rel=1e-4, abs=1e-4)  # per video: MUSIQ's own scale
    # a small frame: no resize; 40 x 72 -> 224 scale (124, 224) 4 x 7 tokens, 384 scale (213, 384) 7 x 12
    small = rng.integers(0, 256, (1, 40, 72, 3), dtype=np.uint8)
    ref = musiq_reference(sd, small[0].transpose(2, 0, 1).astype(np.float64) / 255, heads)
    assert scorer.score(Video(None, small)).value == pytest.approx(ref, rel=1e-4, abs=1e-4)
    assert get_dimension("imaging_quality").overall([DimResult(61.0), DimResult(70.0)]) == pytest.approx(0.655)


# ------------------------------------------------------------------- aesthetic: functional CLIP + head
def clip_image_reference(sd: dict[str, torch.Tensor], pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """OpenAI CLIP VisionTransformer.forward (conv1 → class + positional → ln_pre → blocks → ln_post → proj)."""
    sd = {k.replace("vision_model.", ""): v.double() for k, v in sd.items()}
    w = sd["embeddings.patch_embedding.weight"]
    x = F.conv2d(pixels.double(), w, stride=w.shape[-1]).flatten(2).transpose(1, 2)
    b, _, c = x.shape
    x = torch.cat([sd["embeddings.class_embedding"].expand(b, 1, c), x], 1) + sd["embeddings.position_embedding.weight"]

    def ln(v, name):
        return F.layer_norm(v, (c,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-5)

    def lin(v, name):
        return v @ sd[name + ".weight"].T + sd[name + ".bias"]

    x = ln(x, "pre_layrnorm")
    n = x.shape[1]
    i = 0
    while f"encoder.layers.{i}.layer_norm1.weight" in sd:
        p = f"encoder.layers.{i}."
        u = ln(x, p + "layer_norm1")
        q, k, v = (lin(u, p + f"self_attn.{m}_proj").view(b, n, heads, c // heads).transpose(1, 2) for m in "qkv")
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(c // heads)).softmax(-1)
        x = x + lin((att @ v).transpose(1, 2).reshape(b, n, c), p + "self_attn.out_proj")
        hdn = lin(ln(x, p + "layer_norm2"), p + "mlp.fc1")
        x = x + lin(hdn * torch.sigmoid(1.702 * hdn), p + "mlp.fc2")  # QuickGELU
        i += 1
    return ln(x[:, 0], "post_layernorm") @ sd["visual_projection.weight"].T


def test_aesthetic_equals_functional_clip_with_a_known_linear_head():
    scorer = get_dimension("aesthetic_quality")(EvalContext(random_init=True, batch_size=3))
    _randomise(scorer.clip, 1)
    weight = torch.linspace(-1.0, 1.0, 768).view(1, 768) * torch.cos(torch.arange(768.0))
    with torch.no_grad():
        scorer.head.weight.copy_(weight)
        scorer.head.bias.fill_(0.25)
    frames = np.random.default_rng(5).integers(0, 256, (5, 40, 64, 3), dtype=np.uint8)
    pix = []
    for f in frames:  # short side 40 -> 224, long int(224 * 64 / 40) = 358, crop left round(67) = 67
        full = resize_ref(f.transpose(2, 0, 1).astype(np.float64), 224, 358, "bicubic")[:, :, 67:291]
        pix.append((full / 255 - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None])
    emb = clip_image_reference(scorer.clip.model.state_dict(), torch.from_numpy(np.stack(pix)),
                               scorer.clip.model.config.num_attention_heads)
    emb = emb / emb.norm(dim=-1, keepdim=True)
    per_frame = (emb @ weight.double()[0] + 0.25) / 10
    assert scorer.score(Video(None, frames)).value == pytest.approx(per_frame.mean().item(), abs=2e-5)
    overall = get_dimension("aesthetic_quality").overall([DimResult(0.4), DimResult(0.6), DimResult(0.8)])
    assert overall == pytest.approx(0.6)


# --------------------------------------------- AMT-S / RAFT called as VBench calls them (optional extra)
needs_vbench = pytest.mark.skipif(importlib.util.find_spec("vbench") is None,
                                  reason="VBench's vendored AMT/RAFT code is not importable (optional extra: "
                                         "pip install vbench==0.1.5 --no-deps && pip install omegaconf scipy easydict)")


@needs_vbench
def test_motion_smoothness_calls_amt_as_vbench_does():
    from eval.models import vbench_third_party

    utils = vbench_third_party("amt.utils.utils")
    scorer = get_dimension("motion_smoothness")(EvalContext(random_init=True, pair_batch=2))
    # >= 128 px: below, the last level of the correlation pyramid is 1 px wide and the networks return NaN
    frames = np.random.default_rng(6).integers(0, 256, (5, 120, 136, 3), dtype=np.uint8)
    # VBench motion_score: even frames /255, pad to 16, embt 0.5, scale_factor 1 (never 'cuda' == device)
    inputs = [utils.img2tensor(f) for f in frames[0::2]]
    padder = utils.InputPadder(inputs[0].shape, 16)
    inputs = padder.pad(*inputs)
    embt = torch.tensor(1 / 2).float().view(1, 1, 1, 1)
    outputs = [inputs[0]]
    for a, b in zip(inputs[:-1], inputs[1:]):
        with torch.no_grad():
            pred = scorer.model(a, b, embt, scale_factor=1.0, eval=True)["imgt_pred"]
        assert torch.isfinite(pred).all() and pred.std() > 0  # a real prediction, not NaN cast to 0
        outputs += [pred, b]
    outputs = [utils.tensor2img(o) for o in padder.unpad(*outputs)]
    diffs = [np.abs(o.astype(np.int16) - p.astype(np.int16)).mean() for o, p in zip(frames[1::2], outputs[1::2])]
    expected = (255.0 - np.mean(diffs)) / 255.0
    assert scorer.score(Video(None, frames)).value == pytest.approx(expected, abs=1e-12)


@needs_vbench
def test_dynamic_degree_calls_raft_as_vbench_does():
    from eval.dynamic_degree import dynamic_degree_result
    from eval.models import vbench_third_party

    padder_cls = vbench_third_party("RAFT.core.utils_core.utils").InputPadder
    scorer = get_dimension("dynamic_degree")(EvalContext(random_init=True, pair_batch=2))
    frames = np.random.default_rng(7).integers(0, 256, (2, 124, 150, 3), dtype=np.uint8)  # padded to 128 x 152
    ref = []
    for f1, f2 in zip(frames[:-1], frames[1:]):  # VBench infer(): 0-255 floats, sintel padding to 8, 20 iterations
        a, b = (torch.from_numpy(f).permute(2, 0, 1).float()[None] for f in (f1, f2))
        a, b = padder_cls(a.shape).pad(a, b)
        with torch.no_grad():
            _, flow_up = scorer.model(a, b, iters=20, test_mode=True)
        rad = np.sqrt((flow_up[0].numpy() ** 2).sum(0)).flatten()
        ref.append(np.mean(np.abs(np.sort(-rad))[: int(rad.size * 0.05)]).item())
    moving, scores = dynamic_degree_result(frames, 8.0, scorer.flow, "cpu", 2)
    np.testing.assert_allclose(scores, ref, rtol=1e-5, atol=1e-6)
    assert np.isfinite(ref).all()  # below 128 px RAFT's 1-px correlation level gives NaN
    thres, count_num = 6.0 * 124 / 256, round(4 * 2 / 16)
    assert moving == (sum(s > thres for s in ref) >= count_num)
    assert scorer.score(Video(None, frames, fps=8.0)).value == moving
