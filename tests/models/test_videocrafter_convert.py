"""VideoCrafter2 checkpoint conversion: the VAE and OpenCLIP text tower against references written here
from the architectures' definitions (LDM autoencoder, OpenCLIP text transformer), and the whole
official-checkpoint loading path on a tiny synthetic ``model.ckpt``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from freelong.models.base import build_backbone
from freelong.models.spec import load_model_config
from freelong.models.tiny import randomize_, tiny_tokenizer, tiny_vae
from freelong.models.videocrafter import convert  # the module under test
from freelong.models.videocrafter.backbone import (
    VideoCrafterDDIMScheduler,
    build_text_encoder,
    lvdm_scale_arr,
)
from freelong.models.videocrafter.model import VideoCrafterUNet
from freelong.weights import MissingWeightsError

KEY_LIST = Path(__file__).parents[1] / "data" / "vc2_ckpt_keys_unet_vae.txt"

pytestmark = pytest.mark.usefixtures("one_thread")



def key_list(prefix: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in KEY_LIST.read_text().splitlines():
        key, shape = line.split("\t")
        if key.startswith(prefix):
            out[key[len(prefix):]] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


# ----------------------------------------------------------------------------------------------
# LDM autoencoder (lvdm ae_modules): key layout and a functional forward, from the architecture
# ----------------------------------------------------------------------------------------------
def ldm_vae_shapes(ch: int, ch_mult: list[int], num_res_blocks: int, z: int = 4) -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {}

    def norm(p, c):
        s[f"{p}.weight"], s[f"{p}.bias"] = (c,), (c,)

    def conv(p, cin, cout, k):
        s[f"{p}.weight"], s[f"{p}.bias"] = (cout, cin, k, k), (cout,)

    def resnet(p, cin, cout):
        norm(f"{p}.norm1", cin)
        conv(f"{p}.conv1", cin, cout, 3)
        norm(f"{p}.norm2", cout)
        conv(f"{p}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{p}.nin_shortcut", cin, cout, 1)

    def mid(p, c):
        resnet(f"{p}.block_1", c, c)
        norm(f"{p}.attn_1.norm", c)
        for n in ("q", "k", "v", "proj_out"):
            conv(f"{p}.attn_1.{n}", c, c, 1)
        resnet(f"{p}.block_2", c, c)

    conv("encoder.conv_in", 3, ch, 3)
    cin = ch
    for i, m in enumerate(ch_mult):
        for j in range(num_res_blocks):
            resnet(f"encoder.down.{i}.block.{j}", cin, ch * m)
            cin = ch * m
        if i != len(ch_mult) - 1:
            conv(f"encoder.down.{i}.downsample.conv", cin, cin, 3)
    mid("encoder.mid", cin)
    norm("encoder.norm_out", cin)
    conv("encoder.conv_out", cin, 2 * z, 3)
    conv("quant_conv", 2 * z, 2 * z, 1)
    conv("post_quant_conv", z, z, 1)
    cin = ch * ch_mult[-1]
    conv("decoder.conv_in", z, cin, 3)
    mid("decoder.mid", cin)
    for i in reversed(range(len(ch_mult))):
        for j in range(num_res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", cin, ch * ch_mult[i])
            cin = ch * ch_mult[i]
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", cin, cin, 3)
    norm("decoder.norm_out", cin)
    conv("decoder.conv_out", cin, 3, 3)
    return s


def _gn(sd, p, x, groups):
    return F.group_norm(x, groups, sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-6)


def _conv(sd, p, x, **kw):
    return F.conv2d(x, sd[f"{p}.weight"], sd[f"{p}.bias"], **kw)


def _ref_resnet(sd, p, x, g):
    h = _conv(sd, f"{p}.conv1", F.silu(_gn(sd, f"{p}.norm1", x, g)), padding=1)
    h = _conv(sd, f"{p}.conv2", F.silu(_gn(sd, f"{p}.norm2", h, g)), padding=1)
    if f"{p}.nin_shortcut.weight" in sd:
        x = _conv(sd, f"{p}.nin_shortcut", x)
    return x + h


def _ref_mid(sd, p, x, g):
    x = _ref_resnet(sd, f"{p}.block_1", x, g)
    a = f"{p}.attn_1"
    h = _gn(sd, f"{a}.norm", x, g)
    b, c, hh, ww = h.shape
    q, k, v = (_conv(sd, f"{a}.{n}", h).reshape(b, c, hh * ww) for n in "qkv")
    w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=-1)
    out = torch.einsum("bij,bcj->bci", w, v).reshape(b, c, hh, ww)
    x = x + _conv(sd, f"{a}.proj_out", out)
    return _ref_resnet(sd, f"{p}.block_2", x, g)


def ref_ldm_decode(sd, z, n_levels, num_res_blocks, g):
    x = _conv(sd, "decoder.conv_in", _conv(sd, "post_quant_conv", z), padding=1)
    x = _ref_mid(sd, "decoder.mid", x, g)
    for i in reversed(range(n_levels)):
        for j in range(num_res_blocks + 1):
            x = _ref_resnet(sd, f"decoder.up.{i}.block.{j}", x, g)
        if i != 0:
            x = _conv(sd, f"decoder.up.{i}.upsample.conv", F.interpolate(x, scale_factor=2.0, mode="nearest"),
                      padding=1)
    return _conv(sd, "decoder.conv_out", F.silu(_gn(sd, "decoder.norm_out", x, g)), padding=1)


def ref_ldm_encode_mean(sd, img, n_levels, num_res_blocks, g, z=4):
    x = _conv(sd, "encoder.conv_in", img, padding=1)
    for i in range(n_levels):
        for j in range(num_res_blocks):
            x = _ref_resnet(sd, f"encoder.down.{i}.block.{j}", x, g)
        if i != n_levels - 1:  # LDM pads right/bottom by one, then a stride-2 conv without padding
            x = _conv(sd, f"encoder.down.{i}.downsample.conv", F.pad(x, (0, 1, 0, 1)), stride=2)
    x = _ref_mid(sd, "encoder.mid", x, g)
    x = _conv(sd, "encoder.conv_out", F.silu(_gn(sd, "encoder.norm_out", x, g)), padding=1)
    return _conv(sd, "quant_conv", x)[:, :z]


def random_state(shapes, seed, std=0.1):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) * (std if len(s) == 1 else s[1] ** -0.5 if len(s) > 1 else std)
            + (1.0 if k.endswith(("norm1.weight", "norm2.weight", "norm.weight", "norm_out.weight")) else 0.0)
            for k, s in shapes.items()}


def test_ldm_vae_layout_matches_the_checkpoint_key_list():
    """The layout generator used below reproduces the real checkpoint's 248 first_stage_model keys exactly."""
    assert ldm_vae_shapes(128, [1, 2, 4, 4], 2) == key_list("first_stage_model.")


def test_full_size_vae_conversion_loads_strictly_into_diffusers():
    cfg = load_model_config("videocrafter2")
    ldm = {k: torch.empty(s, device="meta") for k, s in key_list("first_stage_model.").items()}
    with torch.device("meta"):
        vae = tiny_vae(OmegaConf.to_container(cfg.vae))
    converted = convert.convert_vae(ldm, vae.config)
    assert len(converted) == len(ldm) == 248
    vae.load_state_dict(converted, strict=True, assign=True)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in vae.state_dict().items()}


def test_vae_conversion_gives_the_ldm_autoencoder_outputs():
    ch, mult, nrb, groups = 32, [1, 2, 2], 1, 32
    ldm = random_state(ldm_vae_shapes(ch, mult, nrb), seed=0)
    vae = tiny_vae({"block_out_channels": [ch * m for m in mult], "layers_per_block": nrb, "norm_num_groups": groups})
    vae.load_state_dict(convert.convert_vae(ldm, vae.config), strict=True)
    z = torch.randn(2, 4, 4, 6, generator=torch.Generator().manual_seed(1))
    img = torch.randn(1, 3, 16, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(z).sample, ref_ldm_decode(ldm, z, len(mult), nrb, groups),
                                   atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(vae.encode(img).latent_dist.mean,
                                   ref_ldm_encode_mean(ldm, img, len(mult), nrb, groups), atol=2e-5, rtol=1e-4)


def test_vae_conversion_rejects_a_mismatched_layout():
    ldm = random_state(ldm_vae_shapes(32, [1, 2, 2], 1), seed=0)
    vae = tiny_vae({"block_out_channels": [32, 64, 64], "layers_per_block": 1, "norm_num_groups": 32})
    with pytest.raises(ValueError, match="VAE conversion used"):  # a tensor no rule converts
        convert.convert_vae({**ldm, "encoder.extra.weight": torch.zeros(1)}, vae.config)
    extra_block = {**ldm, "decoder.up.0.block.5.conv1.weight": torch.zeros(1)}  # renamed, but not in the model
    with pytest.raises(RuntimeError, match="up_blocks.2.resnets.5"):
        vae.load_state_dict(convert.convert_vae(extra_block, vae.config), strict=True)


# ----------------------------------------------------------------------------------------------
# OpenCLIP text tower: key layout and a functional forward (penultimate layer, then ln_final)
# ----------------------------------------------------------------------------------------------
def open_clip_text_shapes(width: int, layers: int, vocab: int, ctx: int, mlp: int) -> dict[str, tuple[int, ...]]:
    s = {"token_embedding.weight": (vocab, width), "positional_embedding": (ctx, width),
         "ln_final.weight": (width,), "ln_final.bias": (width,), "text_projection": (width, width),
         "logit_scale": ()}
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        s.update({p + "ln_1.weight": (width,), p + "ln_1.bias": (width,),
                  p + "attn.in_proj_weight": (3 * width, width), p + "attn.in_proj_bias": (3 * width,),
                  p + "attn.out_proj.weight": (width, width), p + "attn.out_proj.bias": (width,),
                  p + "ln_2.weight": (width,), p + "ln_2.bias": (width,),
                  p + "mlp.c_fc.weight": (mlp, width), p + "mlp.c_fc.bias": (mlp,),
                  p + "mlp.c_proj.weight": (width, mlp), p + "mlp.c_proj.bias": (width,)})
    return s


def ref_open_clip_penultimate(sd, ids, heads, layers):
    """OpenCLIP ``encode_with_transformer``: embeddings, the first ``layers - 1`` resblocks (causal), ln_final."""
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][: ids.shape[1]]
    n, width = ids.shape[1], x.shape[-1]
    mask = torch.full((n, n), float("-inf")).triu(1)
    for i in range(layers - 1):
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (width,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-5)
        q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask, dim=-1) @ v
        att = att.transpose(1, 2).flatten(2)
        x = x + att @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (width,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-5)
        h = F.gelu(h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"])
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    return F.layer_norm(x, (width,), sd["ln_final.weight"], sd["ln_final.bias"], 1e-5)


def test_full_size_text_config_matches_open_clip_vit_h():
    cfg = OmegaConf.to_container(load_model_config("videocrafter2").text_encoder)
    shapes = open_clip_text_shapes(1024, 24, 49408, 77, 4096)
    assert len(shapes) == 294  # reference_code.md §2.3: 294 cond_stage_model.model. keys for 24 layers
    from transformers import CLIPTextModel

    config = convert.clip_text_config(cfg, bos_token_id=49406, eos_token_id=49407, pad_token_id=0)
    assert config.num_hidden_layers == 23 and config.hidden_act == "gelu"
    with torch.device("meta"):
        model = CLIPTextModel(config)
    converted = convert.convert_open_clip_text({k: torch.empty(s, device="meta") for k, s in shapes.items()}, 23)
    assert len(converted) == 4 + 23 * 16  # 23 resblocks (in_proj split into q/k/v) + embeddings + ln_final
    convert.load_text_weights(model, converted, assign=True)  # strict: same keys and shapes


def test_text_conversion_gives_the_open_clip_penultimate_features():
    width, layers, heads = 32, 3, 2
    tok = tiny_tokenizer(pad_token="!")
    sd = random_state(open_clip_text_shapes(width, layers, len(tok), 77, 64), seed=3, std=0.3)
    cfg = {"hidden_size": width, "intermediate_size": 64, "num_hidden_layers": layers, "num_attention_heads": heads,
           "max_position_embeddings": 77, "hidden_act": "gelu", "layer": "penultimate"}
    model = build_text_encoder(cfg, tok).eval()
    convert.load_text_weights(model, convert.convert_open_clip_text(sd, model.config.num_hidden_layers))
    ids = tok(["a red fox", ""], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], ref_open_clip_penultimate(sd, ids, heads, layers),
                                   atol=1e-5, rtol=1e-4)


def test_text_conversion_rejects_unknown_tensors():
    sd = random_state(open_clip_text_shapes(32, 2, 10, 77, 64), seed=0)
    sd["transformer.resblocks.0.attn.extra_weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="resblocks.0.attn.extra_weight"):
        convert.convert_open_clip_text(sd, 1)


# ----------------------------------------------------------------------------------------------
# The whole official loading path on a tiny synthetic model.ckpt
# ----------------------------------------------------------------------------------------------
def _tiny_official_checkpoint(tmp_path: Path, cfg, wrap: str = "state_dict"):
    unet = randomize_(VideoCrafterUNet.from_config(OmegaConf.to_container(cfg.unet)), 11)
    tok = tiny_tokenizer(pad_token="!")
    text_cfg = cfg.text_encoder
    text = random_state(open_clip_text_shapes(text_cfg.hidden_size, text_cfg.num_hidden_layers, len(tok), 77,
                                              text_cfg.intermediate_size), seed=12, std=0.3)
    vae_cfg = cfg.vae
    ch = vae_cfg.block_out_channels[0]
    vae = random_state(ldm_vae_shapes(ch, [c // ch for c in vae_cfg.block_out_channels], vae_cfg.layers_per_block), 13)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    sd = {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}
    sd.update({"first_stage_model." + k: v for k, v in vae.items()})
    sd.update({"cond_stage_model.model." + k: v for k, v in text.items()})
    sd.update({"betas": betas.float(), "alphas_cumprod": torch.cumprod(1 - betas, 0).float(),
               "scale_arr": lvdm_scale_arr()})
    path = tmp_path / "model.ckpt"
    torch.save({wrap: {("_forward_module." if wrap == "module" else "") + k: v for k, v in sd.items()}}, path)
    tok_dir = tmp_path / "tokenizer"
    tok.save_pretrained(tok_dir)
    return path, tok_dir, unet, text


@pytest.mark.parametrize("wrap", ["state_dict", "module"])
def test_official_checkpoint_path_loads_a_tiny_model_ckpt(tmp_path, wrap):
    cfg = load_model_config("videocrafter2_tiny")
    path, tok_dir, unet, text = _tiny_official_checkpoint(tmp_path, cfg, wrap)
    cfg = OmegaConf.merge(cfg, {"random_init": False, "weights": {
        "checkpoint": {"kind": "file", "path": str(path), "filename": "model.ckpt"},
        "tokenizer": {"kind": "folder", "path": str(tok_dir), "required": ["tokenizer.json"]}}})
    bb = build_backbone(cfg)
    assert not bb.random_init and bb.weights["checkpoint"]["path"] == str(path)
    for key, value in unet.state_dict().items():
        assert torch.equal(bb.unet.state_dict()[key], value), key
    ids = bb.tokenize(["a red fox"])
    assert ids[0, -1].item() == bb.tokenizer.convert_tokens_to_ids("!")  # padded with "!"
    torch.testing.assert_close(bb.encode_text(["a red fox"]),
                               ref_open_clip_penultimate(text, ids, cfg.text_encoder.num_attention_heads,
                                                         cfg.text_encoder.num_hidden_layers), atol=1e-5, rtol=1e-4)
    from freelong import LongVideoPipeline

    video = LongVideoPipeline(bb, "direct", progress=False)("a red fox", num_frames=4, height=32, width=48,
                                                            num_inference_steps=1)
    assert video.shape == (4, 32, 48, 3)


def test_checkpoint_reading_is_memory_mapped_and_weights_only(tmp_path):
    cfg = load_model_config("videocrafter2_tiny")
    path, *_ = _tiny_official_checkpoint(tmp_path, cfg)
    parts = convert.split_checkpoint(convert.read_checkpoint(path))
    assert set(parts) == {"unet", "vae", "text", "schedule"}
    assert set(parts["schedule"]) == {"betas", "alphas_cumprod", "scale_arr"}
    bad = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "hparams": Path("x")}, bad)
    with pytest.raises(ValueError, match="weights_only=True"):
        convert.read_checkpoint(bad)


def test_schedule_mismatch_is_reported(tmp_path):
    from freelong.models.videocrafter.backbone import check_schedule

    sched = VideoCrafterDDIMScheduler()
    check_schedule({"alphas_cumprod": sched.alphas_cumprod.clone(), "scale_arr": lvdm_scale_arr()}, sched, "ckpt")
    with pytest.raises(ValueError, match="scale_arr"):
        check_schedule({"scale_arr": torch.ones(1400)}, sched, "ckpt")


def test_missing_weights_fail_fast_with_the_fetch_command(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        build_backbone(load_model_config("videocrafter2"), weights_dir=str(tmp_path))
    msg = str(info.value)
    assert "model.ckpt" in msg and "VideoCrafter/VideoCrafter2" in msg
    assert str(tmp_path / "videocrafter2" / "model.ckpt") in msg
    assert "python scripts/download_weights.py videocrafter2" in msg


def test_download_script_lists_the_checkpoint_and_tokenizer(tmp_path, capsys):
    from scripts.download_weights import main

    assert main(["videocrafter2", "--list", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "checkpoint: VideoCrafter/VideoCrafter2 [model.ckpt]" in out
    assert str(tmp_path / "videocrafter2" / "model.ckpt") in out
    assert "tokenizer: openai/clip-vit-large-patch14" in out
