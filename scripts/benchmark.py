"""Time one denoising step of every method side by side, split by layer, with peak memory.

    python scripts/benchmark.py                                  # CPU: LaVie at reduced widths, 128 frames, 320x512
    python scripts/benchmark.py --frames 16,32,64,128,256,512    # how cost grows with length
    python scripts/benchmark.py --device cuda --model lavie --random-weights --frames 16,64,128,256,512
    python scripts/benchmark.py --device meta --model lavie --random-weights --frames 128,512   # memory + FLOPs only
    python scripts/benchmark.py --sampling-steps 4 --json bench.json
    python scripts/benchmark.py --threads 1 --clock cpu --repeats 3   # ratios on a busy, shared CPU
    python scripts/benchmark.py --model wan2_1_t2v_1_3b --device meta --frames 81,321 --height 480 --width 832
    python scripts/benchmark.py --model wan2_1_t2v_1_3b --widths reduced --frames 81,321   # Wan on CPU
    python scripts/benchmark.py --model wan2_1_t2v_14b --comm 2,4,8 --frames 321 --height 720 --width 1280
    python scripts/benchmark.py --loop --model videocrafter2 --frames 64,128 --sampling-steps 50 \
        --methods direct,freenoise,gen_l_video,fifo,freeinit            # whole videos: loop-level methods vs direct
    python scripts/benchmark.py --loop --methods fifo --frames 128,256,512,1024   # FIFO: memory flat in length

One step = one classifier-free-guided UNet call (both halves batched, as LaVie samples) plus the
scheduler update, at the first of 50 DDIM timesteps, with the method attached exactly as
``LongVideoPipeline`` attaches it. All methods run in one process on the same weights and inputs,
interleaved round by round so background load hits them alike. Reported per method and length:
median step time and its ratio to direct sampling; the time inside temporal attention per UNet
level (forward hooks) and everything else; and peak memory — CUDA ``max_memory_allocated`` on
GPU, peak resident set size on CPU (reset per run through ``/proc/self/clear_refs``), and on the
``meta`` device (nothing is computed) the peak bytes of live tensors, which is what a GPU would
allocate for activations with the fused attention kernels.

Wan (a DiT): frame counts are video frames (4n+1; the methods see n+1 latent frames), one step is two
transformer calls (cond, uncond) and a UniPC update, methods take the model's own defaults (its ``methods:``
block in ``conf/model/<model>.yaml``, as ``run.py`` does: windows of 21 latent frames on Wan2.1, the values of
``conf/method/<name>_wan.yaml``), ``riflex`` and ``freeloc`` join the default list
(``freepca`` leaves it: UNets only); the split times the 3D self-attentions (``attn1``). FreeLOC uses its release's
layer list on Wan2.1-1.3B's shape and ``tsa_layers=[0]`` (one TSA block, the other VRPR) on reduced widths.

``--comm N,M,...``: the communication of one video split over N ranks (``parallel.context=N``, diffusers' Ulysses
context parallelism, :mod:`freelong.parallel`), per denoising step and per rank, computed from the model config
(nothing is built or run): the four all-to-alls of every self-attention call (q, k, v and the output; diffusers'
own for methods that leave attention alone, our adapter's for the others — the same volume) and the all-gather of
the output after ``proj_out``, in the run's dtype (bf16/fp16: 2 bytes; ``--dtype float32``: 4); FreeLOC, which
re-encodes positions, also all-gathers the RoPE tables (cos, sin, in the model's dtype) in every layer call.

Models: timings do not depend on the weights, so random weights are the default (nothing to
download). ``--widths reduced`` (the CPU default) keeps LaVie's architecture, latent size and frame
counts but shrinks the channels to 32/64/128/128 (head dim 32, LaVie's rotary dim); ``--widths full``
(the GPU and meta default) is the real architecture; ``--widths config`` takes ``conf/model/<model>.yaml``
as it is (the default for random-init models such as ``lavie_tiny``); ``--real-weights`` loads the
trained checkpoint instead.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from omegaconf import OmegaConf

from freelong.attention.context import CallContext
from freelong.attention.processor import TemporalAttention, TemporalAttnProcessor
from freelong.metadata import device_name, git_commit, package_versions
from freelong.methods import Method, get_method
from freelong.models.cogvideox.attention import JointTextFirstAdapter
from freelong.models.diffusers_unet.attention import diffusers_temporal_level
from freelong.models.hunyuanvideo.attention import JointVideoFirstAdapter
from freelong.models.spec import latent_frames, load_model_config, method_values
from freelong.models.wan.attention import WanSelfAttnAdapter
from freelong.profiling import (
    MB,
    LayerTimer,
    PeakRSS,
    module_bytes,
    release_freed_memory_eagerly,
    synchronize,
    track_tensor_memory,
)

METHODS = ("direct", "sliding_window", "freenoise", "freelong", "freelong_pp", "freepca")
DIT_METHODS = ("direct", "sliding_window", "freenoise", "freelong", "freelong_pp", "riflex", "freeloc")
PROMPT = "a teddy bear walking on the street, high quality"

# Per family: configs that replace the model YAML's unet / vae / text_encoder sections.
# "full": the real architecture (SD1.4's UNet config with LaVie's overrides, SD1.4's VAE, CLIP ViT-L/14
# text tower) with random weights. "reduced": the same architecture with fewer channels.
WIDTH_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "lavie": {
        "full": {
            "unet": {"block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "norm_num_groups": 32,
                     "cross_attention_dim": 768, "attention_head_dim": 8},
            "vae": {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32,
                    "latent_channels": 4, "sample_size": 512},
            "text_encoder": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                             "num_attention_heads": 12, "max_position_embeddings": 77},
        },
        "reduced": {
            "unet": {"block_out_channels": [32, 64, 128, 128], "layers_per_block": 2, "norm_num_groups": 32,
                     "cross_attention_dim": 768, "attention_head_dim": [1, 2, 4, 4]},
            "vae": {"block_out_channels": [16, 32, 64, 64], "layers_per_block": 2, "norm_num_groups": 16,
                    "latent_channels": 4, "sample_size": 512},
            "text_encoder": {"hidden_size": 768, "intermediate_size": 768, "num_hidden_layers": 1,
                             "num_attention_heads": 12, "max_position_embeddings": 77},
        },
    },
    # diffusers' AnimateDiff (SD1.5 layout + motion adapter) at reduced widths, random weights; heads keep
    # the real head dims (32 here, 40 in SD1.5/the adapters) so attention costs scale like the real model's
    "animatediff": {
        "reduced": {
            "unet": {"block_out_channels": [32, 64, 128, 128], "layers_per_block": 2, "norm_num_groups": 32,
                     "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                     "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
                     "cross_attention_dim": 768, "attention_head_dim": [1, 2, 4, 4], "sample_size": 64},
            "vae": {"block_out_channels": [16, 32, 64, 64], "layers_per_block": 2, "norm_num_groups": 16,
                    "latent_channels": 4, "sample_size": 512},
            "text_encoder": {"hidden_size": 768, "intermediate_size": 768, "num_hidden_layers": 1,
                             "num_attention_heads": 12, "max_position_embeddings": 77},
            "extra": {"motion_adapter": {"block_out_channels": [32, 64, 128, 128], "motion_layers_per_block": 2,
                                         "motion_num_attention_heads": [1, 2, 4, 4], "motion_norm_num_groups": 32,
                                         "motion_max_seq_length": 32, "use_motion_mid_block": True}},
        },
    },
    # Wan2.1-T2V-1.3B: "full" = the real transformer and VAE (the text encoder never runs on meta and is
    # kept small); "reduced" = head dim 128 (the real RoPE split 44/42/42), 2 heads, 2 blocks.
    "wan": {
        "full": {
            "unet": {"patch_size": [1, 2, 2], "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
                     "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 8960, "num_layers": 30,
                     "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6},
            "vae": {"base_dim": 96, "z_dim": 16},
            "text_encoder": {"d_model": 4096, "d_kv": 64, "d_ff": 256, "num_layers": 1, "num_heads": 64},
        },
        "reduced": {
            "unet": {"patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 128, "in_channels": 16,
                     "out_channels": 16, "text_dim": 64, "freq_dim": 64, "ffn_dim": 512, "num_layers": 2,
                     "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6},
            "vae": {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 2, 2, 2], "num_res_blocks": 1},
            "text_encoder": {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 1, "num_heads": 4},
        },
    },
}
# The DiTs of issue 27, keyed by model name where one family holds several architectures. "full" = the model
# YAML's own transformer and VAE (the real architecture; on the meta device nothing is allocated) with a one-layer
# text encoder (it never runs on meta); "reduced" = the real head dim (so the real RoPE split) and token grid
# rules, 2 heads, 2 blocks, small VAE and text encoder, for CPU ratios.
_T5_SMALL = {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 1, "num_heads": 4}
_WAN_REDUCED = {"patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 128, "text_dim": 64,
                "freq_dim": 64, "ffn_dim": 512, "num_layers": 2, "cross_attn_norm": True,
                "qk_norm": "rms_norm_across_heads", "eps": 1e-6}
WIDTH_PRESETS.update({
    "wan2_2_ti2v_5b": {
        "full": {"text_encoder": {**_T5_SMALL, "d_model": 4096, "num_heads": 64, "d_kv": 64}},
        "reduced": {
            "unet": {**_WAN_REDUCED, "in_channels": 48, "out_channels": 48},
            "vae": {"base_dim": 8, "decoder_base_dim": 8, "z_dim": 48, "dim_mult": [1, 2, 2, 2], "num_res_blocks": 1,
                    "is_residual": True, "in_channels": 12, "out_channels": 12, "patch_size": 2,
                    "scale_factor_spatial": 16, "scale_factor_temporal": 4,
                    "latents_mean": [0.0] * 48, "latents_std": [1.0] * 48},
            "text_encoder": _T5_SMALL,
        },
    },
    "wan2_2_t2v_a14b": {
        "full": {"text_encoder": {**_T5_SMALL, "d_model": 4096, "num_heads": 64, "d_kv": 64}},
        "reduced": {
            "unet": {**_WAN_REDUCED, "in_channels": 16, "out_channels": 16},
            "vae": {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 2, 2, 2], "num_res_blocks": 1},
            "text_encoder": _T5_SMALL,
        },
    },
    "cogvideox": {
        "full": {"text_encoder": {**_T5_SMALL, "d_model": 4096, "num_heads": 64, "d_kv": 64}},
        "reduced": {
            "unet": {"num_attention_heads": 2, "attention_head_dim": 64, "in_channels": 16, "out_channels": 16,
                     "time_embed_dim": 64, "text_embed_dim": 64, "num_layers": 2, "sample_width": 90,
                     "sample_height": 60, "sample_frames": 49, "patch_size": 2, "max_text_seq_length": 226,
                     "use_rotary_positional_embeddings": True},
            "vae": {"block_out_channels": [16, 16, 16, 16], "latent_channels": 16, "layers_per_block": 1,
                    "norm_num_groups": 4, "temporal_compression_ratio": 4, "scaling_factor": 0.7},
            "text_encoder": {**_T5_SMALL, "feed_forward_proj": "gated-gelu"},
        },
    },
    "hunyuanvideo": {
        "full": {"text_encoder": {"hidden_size": 4096, "intermediate_size": 256, "num_hidden_layers": 3,
                                  "num_attention_heads": 32, "num_key_value_heads": 8},
                 "extra": {"temporal_compression": 4, "max_sequence_length": 256,
                           "prompt_template": {"template": "{}", "crop_start": 0},
                           "text_encoder_2": {"hidden_size": 768, "intermediate_size": 256, "num_hidden_layers": 1,
                                              "num_attention_heads": 12, "max_position_embeddings": 77}}},
        "reduced": {
            "unet": {"in_channels": 16, "out_channels": 16, "num_attention_heads": 2, "attention_head_dim": 128,
                     "num_layers": 1, "num_single_layers": 1, "num_refiner_layers": 1, "patch_size": 2,
                     "patch_size_t": 1, "text_embed_dim": 64, "pooled_projection_dim": 32,
                     "rope_axes_dim": [16, 56, 56]},
            "vae": {"block_out_channels": [16, 16, 16, 16], "latent_channels": 16, "layers_per_block": 1,
                    "norm_num_groups": 4, "scaling_factor": 0.476986},
            "text_encoder": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
                             "num_attention_heads": 2, "num_key_value_heads": 2},
            "extra": {"temporal_compression": 4, "max_sequence_length": 256,
                      "prompt_template": {"template": "{}", "crop_start": 0},
                      "text_encoder_2": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                         "num_attention_heads": 2, "max_position_embeddings": 77}},
        },
    },
})
# CogVideoX 1.5: CogVideoX's presets with its temporal patch and RoPE grid size (the reduced transformer keeps them)
WIDTH_PRESETS["cogvideox1_5_5b"] = {
    "full": WIDTH_PRESETS["cogvideox"]["full"],
    "reduced": {**WIDTH_PRESETS["cogvideox"]["reduced"], "unet": {
        **WIDTH_PRESETS["cogvideox"]["reduced"]["unet"], "patch_size_t": 2, "patch_bias": False, "sample_width": 300,
        "sample_height": 300, "sample_frames": 81}},
}
DIT_FAMILIES = ("wan", "cogvideox", "hunyuanvideo")


def is_wan_1_3b_shape(cfg) -> bool:
    """Whether a Wan config has Wan2.1-T2V-1.3B's blocks and heads (FreeLOC's published layer list fits it)."""
    from baselines.freeloc import WAN_1_3B_SHAPE

    return all(cfg.unet.get(k) == v for k, v in WAN_1_3B_SHAPE.items())


def is_dit(backbone) -> bool:
    """A backbone whose methods sit on 3D self-attentions (Wan) rather than UNet temporal attention."""
    return hasattr(backbone, "call_state")


@dataclass
class StepResult:
    method: str
    frames: int
    step_s: float | None = None  # median over repeats (wall clock)
    cpu_s: float | None = None  # median process CPU time (CPU device only)
    ratio: float | None = None  # this method's time / direct's at the same length (on the chosen clock)
    temporal_s: dict[str, float] = field(default_factory=dict)  # per UNet level, inside temporal attention
    other_s: float | None = None  # step time outside temporal attention (on the chosen clock)
    peak_mb: float | None = None
    act_mb: float | None = None  # peak minus memory in use before the step
    memory_kind: str = ""
    gflops: float | None = None  # meta only: matmul/conv/attention FLOPs of the step (torch's FlopCounterMode)
    flop_ratio: float | None = None  # gflops / direct's gflops
    repeats: list[float] = field(default_factory=list)  # wall seconds of each timed round
    cpu_repeats: list[float] = field(default_factory=list)  # process CPU seconds of each timed round
    note: str = ""


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
def model_config(name: str, widths: str):
    """``conf/model/<name>.yaml`` as is (``widths='config'``) or with a random-weight width preset."""
    cfg = load_model_config(name)
    if widths == "config":
        return cfg
    presets = WIDTH_PRESETS.get(cfg.name) or WIDTH_PRESETS.get(cfg.family, {})
    if widths not in presets:
        raise SystemExit(
            f"error: no '{widths}' width preset for model family {cfg.family!r} (have: "
            f"{', '.join(presets) or 'none'}); use --widths config with a random-init model (e.g. *_tiny), "
            f"or add a preset to WIDTH_PRESETS in scripts/benchmark.py"
        )
    over: dict[str, Any] = {k: dict(v) for k, v in presets[widths].items()}
    over["random_init"] = True
    over["description"] = f"{cfg.name} architecture at {widths} widths, RANDOM weights (benchmark)"
    merged = OmegaConf.merge(cfg, OmegaConf.create({k: v for k, v in over.items() if k != "extra"}))
    for key in ("unet", "vae", "text_encoder", "extra"):  # replace, not merge, the architecture sections
        if key in over:
            merged[key] = OmegaConf.create(over[key])
    return merged


def build(cfg, device: torch.device, dtype: torch.dtype):
    from freelong.models.base import build_backbone

    if device.type == "meta":
        with torch.device("meta"):
            backbone = build_backbone(cfg)
        return backbone.to(dtype=dtype)
    return build_backbone(cfg).to(device, dtype)


def text_context(backbone, device: torch.device, guidance: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    if device.type == "meta":
        ucfg = backbone.unet.config
        length = getattr(backbone, "max_sequence_length", 77)
        if "pooled_projection_dim" in ucfg:  # HunyuanVideo: Llama states + mask + CLIP pooled (embedded guidance)
            cond = {"prompt_embeds": torch.zeros(1, length, int(ucfg["text_embed_dim"]), device=device,
                                                 dtype=backbone.dtype),
                    "mask": torch.ones(1, length, device=device), "pooled": torch.zeros(
                        1, int(ucfg["pooled_projection_dim"]), device=device, dtype=backbone.dtype)}
            return cond, None
        key = next(k for k in ("cross_attention_dim", "text_dim", "text_embed_dim") if k in ucfg)
        cond = torch.zeros(1, length, int(ucfg[key]), device=device, dtype=backbone.dtype)
        return cond, (cond.clone() if guidance > 1 else None)
    cond = backbone.encode_text([PROMPT])
    return cond, (backbone.encode_text([""]) if guidance > 1 else None)


# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------
def temporal_level(name: str, module) -> str | None:
    adapters = (WanSelfAttnAdapter, JointTextFirstAdapter, JointVideoFirstAdapter)
    if isinstance(getattr(module, "processor", None), adapters):
        return "attn1"  # a DiT's 3D (joint) self-attentions, all blocks together
    if isinstance(module, TemporalAttention):
        return f"L{module.level}"
    return diffusers_temporal_level(name, module)  # diffusers' motion-module attentions (AnimateDiff, ModelScope)


class StepRunner:
    """One guided denoising step of ``backbone`` with a method attached, at a given length."""

    def __init__(self, backbone, args, device: torch.device):
        self.bb = backbone
        self.args = args
        self.device = device
        self.scheduler = backbone.make_scheduler(backbone.sampling.get("sampler", "ddim"))
        self.scheduler.set_timesteps(50)
        self.t = self.scheduler.timesteps[0]
        self.cond, self.uncond = text_context(backbone, device, args.guidance)

    def latents(self, method: Method, frames: int) -> torch.Tensor:
        factor = self.bb.vae_scale_factor
        shape = (1, self.bb.latent_channels, self.bb.latent_frames(frames), self.args.height // factor,
                 self.args.width // factor)
        if self.device.type == "meta":
            return torch.zeros(shape, device="meta")
        return method.init_noise(shape, torch.Generator().manual_seed(0)).to(self.device)

    @torch.no_grad()
    def step(self, latents: torch.Tensor) -> torch.Tensor:
        call = CallContext(step_index=0, num_steps=50, extra={"timestep": float(self.t)})
        eps = self.bb.predict_noise(latents, self.t.to(self.device), self.cond, self.uncond, self.args.guidance, call)
        if self.device.type == "meta":
            return eps
        if hasattr(self.scheduler, "model_outputs"):  # multistep (UniPC) keeps state: a fresh one per step
            self.scheduler = self.bb.make_scheduler(self.bb.sampling.get("sampler", "ddim"))
            self.scheduler.set_timesteps(50)
        return self.scheduler.step(eps, self.t, latents).prev_sample


def method_from_spec(spec: str, defaults: Mapping[str, Any] | None = None) -> Method:
    """``name`` or ``name:key=value:key=value`` (e.g. ``freelong_pp:sparse_global_keys=1.0``), labelled ``spec``.

    ``defaults`` (a model's own values for the method, :func:`model_defaults`) are what ``key=value`` pairs override.
    """
    import yaml

    name, *pairs = spec.split(":")
    params = dict(defaults or {})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --methods entry {spec!r}: expected key=value after ':', got {pair!r}")
        params[key.strip()] = yaml.safe_load(value)
    try:
        return with_label(get_method(name, **params), spec)
    except ValueError as err:
        raise SystemExit(f"error: --methods entry {spec!r}: {err}") from None


def model_defaults(cfg, spec: str) -> dict[str, Any]:
    """The model config's own parameters for the method of ``spec`` (``methods.<name>``; what ``run.py`` uses)."""
    return method_values(cfg).get(spec.split(":")[0], {})


def with_label(method: Method, label: str) -> Method:
    method.name = label  # the instance's label in the tables (the class keeps its registered name)
    return method


def _memory_before(device: torch.device) -> float:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / MB
    PeakRSS.reset()
    return PeakRSS.current_mb() or 0.0


def _memory_peak(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MB, "cuda_max_allocated"
    kind = "peak_rss" if PeakRSS.resettable() else "lifetime_peak_rss"
    return PeakRSS.peak_mb() or 0.0, kind


def count_cpu_flash_attention() -> None:
    """Let ``FlopCounterMode`` count the CPU flash kernel, which FreeLong's shared branches call directly
    (:mod:`freelong.attention.lse`; on ``meta`` it stands in for the CUDA kernels, same FLOPs)."""
    from torch.utils import flop_counter

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op not in flop_counter.flop_registry and op.default not in flop_counter.flop_registry:
        @flop_counter.register_flop_formula(op)
        def cpu_flash_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def run_steps(runner: StepRunner, methods: list[Method], frames: int, args, device: torch.device) -> list[StepResult]:
    """Warm-up, then ``repeats`` rounds over all methods; memory is taken on each method's first run."""
    bb = runner.bb
    results = {m.name: StepResult(m.name, frames) for m in methods}
    runnable = []
    for m in methods:
        try:
            bb.check_shape(frames, runner.args.height, runner.args.width)
            m.check_frames(bb.method_frames(frames))
            runnable.append(m)
        except ValueError as err:
            results[m.name].note = f"skipped: {err}"
    if device.type == "meta":
        from torch.utils.flop_counter import FlopCounterMode

        count_cpu_flash_attention()
        for m in runnable:
            res = results[m.name]
            lat = runner.latents(m, frames)
            conds = runner.cond.values() if isinstance(runner.cond, dict) else [runner.cond]
            base = module_bytes(bb.unet) + lat.numel() * 4 + 2 * sum(c.numel() * c.element_size() for c in conds)
            with bb.attach(m), track_tensor_memory() as tracker, FlopCounterMode(display=False) as flops:
                runner.step(lat)
            res.act_mb = tracker.peak_mb
            res.peak_mb = base / MB + tracker.peak_mb
            res.memory_kind = "meta_tensor_peak (estimate of cuda_max_allocated)"
            res.gflops = flops.get_total_flops() / 1e9
        direct = results.get("direct")
        for res in results.values():
            if res.gflops is not None and direct is not None and direct.gflops:
                res.flop_ratio = res.gflops / direct.gflops
        return [results[m.name] for m in methods]

    latents = {m.name: runner.latents(m, frames) for m in runnable}
    hooks_in_timed_runs = device.type != "cuda"  # hooks cost nothing on CPU; on GPU they synchronise
    wall: dict[str, list[float]] = {m.name: [] for m in runnable}
    cpu: dict[str, list[float]] = {m.name: [] for m in runnable}
    split: dict[str, list[dict[str, float]]] = {m.name: [] for m in runnable}

    def measure(m: Method, memory: bool, timed: bool, hooks: bool) -> None:
        res = results[m.name]
        before = _memory_before(device) if memory else None
        with bb.attach(m):
            timer = LayerTimer(bb.unet, temporal_level, device) if hooks else None
            synchronize(device)
            c0, t0 = time.process_time(), time.perf_counter()
            runner.step(latents[m.name])
            synchronize(device)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if timer is not None:
                timer.remove()
        if before is not None:
            res.peak_mb, res.memory_kind = _memory_peak(device)
            res.act_mb = res.peak_mb - before
        if timed:
            wall[m.name].append(dt)
            cpu[m.name].append(dc)
        if timer is not None:
            seconds = timer.cpu_seconds if args.clock == "cpu" else timer.seconds
            total = dc if args.clock == "cpu" else dt
            split[m.name].append({"total": total, **seconds})

    for m in runnable:  # warm-up runs (the first one also measures memory)
        for w in range(args.warmup):
            measure(m, memory=w == 0, timed=False, hooks=False)
    for r in range(args.repeats):  # rounds: every method once per round
        for m in runnable:
            measure(m, memory=r == 0 and args.warmup == 0, timed=True, hooks=hooks_in_timed_runs)
    if not hooks_in_timed_runs:  # one extra, synchronised run per method for the per-layer split
        for m in runnable:
            measure(m, memory=False, timed=False, hooks=True)

    for m in runnable:
        res = results[m.name]
        res.repeats = wall[m.name]
        res.cpu_repeats = cpu[m.name]
        res.step_s = statistics.median(wall[m.name])
        if device.type == "cpu":
            res.cpu_s = statistics.median(cpu[m.name])
        if split[m.name]:
            keys = sorted({k for d in split[m.name] for k in d} - {"total"})
            # scale each split run to the median step time, so hook synchronisation does not inflate "other"
            chosen = res.cpu_s if args.clock == "cpu" else res.step_s
            shares = [{k: d.get(k, 0.0) / d["total"] for k in keys} for d in split[m.name] if d["total"] > 0]
            res.temporal_s = {k: chosen * statistics.median([s[k] for s in shares]) for k in keys}
            res.other_s = chosen - sum(res.temporal_s.values())
    direct = results.get("direct")
    if direct is not None and direct.step_s:
        base = direct.cpu_s if args.clock == "cpu" else direct.step_s
        for res in results.values():
            value = res.cpu_s if args.clock == "cpu" else res.step_s
            if value is not None and base:
                res.ratio = value / base
    return [results[m.name] for m in methods]


def runnable_methods(backbone, methods: list[Method], frames: int, rows: list[dict[str, Any]]) -> list[Method]:
    """The methods that can run at ``frames`` frames; a ``skipped`` row in ``rows`` for each that cannot."""
    ok = []
    for m in methods:
        try:
            m.check_frames(backbone.method_frames(frames))
            ok.append(m)
        except ValueError as err:
            rows.append({"method": m.name, "frames": frames, "note": f"skipped: {err}"})
    return ok


def run_sampling(backbone, methods: list[Method], frames: int, args, device: torch.device) -> list[dict[str, Any]]:
    """A whole short generation per method (encode, ``--sampling-steps`` denoising steps, VAE decode)."""
    from freelong.pipeline import LongVideoPipeline

    rows = []
    for m in runnable_methods(backbone, methods, frames, rows):
        pipe = LongVideoPipeline(backbone, m, decode_chunk_size=None, progress=False)
        before = _memory_before(device)
        video = pipe(PROMPT, num_frames=frames, height=args.height, width=args.width,
                     num_inference_steps=args.sampling_steps, guidance_scale=args.guidance, seed=0)
        peak, kind = _memory_peak(device)
        rows.append({"method": m.name, "frames": frames, "steps": args.sampling_steps, **pipe.stats.as_dict(),
                     "peak_mb": peak, "act_mb": peak - before, "memory_kind": kind,
                     "video_shape": list(video.shape)})
    return rows


class UNetCounter:
    """Counts denoiser calls and the latent frames they process (batch x frames), a load-independent cost."""

    def __init__(self, unet: torch.nn.Module):
        self.calls = 0
        self.frame_evals = 0
        self._hook = unet.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        x = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        self.calls += 1
        self.frame_evals += int(x.shape[0]) * int(x.shape[2])

    def remove(self) -> None:
        self._hook.remove()


def run_loop_videos(backbone, methods: list[Method], frames: int, args, device: torch.device) -> list[dict[str, Any]]:
    """``--loop``: one whole denoising per method (the loop level included: FIFO's queue, Gen-L-Video's windows,
    FreeInit's rounds), ``--sampling-steps`` steps (FIFO: its own window x partitions), no decode. Reports wall and
    process-CPU seconds, denoiser calls, frame-evaluations (batch x frames through the denoiser; CFG counted) and
    peak memory, with ratios to direct at the same length."""
    from freelong.pipeline import LongVideoPipeline

    steps = args.sampling_steps or 4
    rows = []
    for m in runnable_methods(backbone, methods, frames, rows):
        pipe = LongVideoPipeline(backbone, m, progress=False)
        counter = UNetCounter(backbone.unet)
        before = _memory_before(device)
        cpu0 = time.process_time()
        try:
            pipe(PROMPT, num_frames=frames, height=args.height, width=args.width, num_inference_steps=steps,
                 guidance_scale=args.guidance, seed=0, output_type="latent")
        finally:
            counter.remove()
        cpu_s = time.process_time() - cpu0
        peak, kind = _memory_peak(device)
        rows.append({"method": m.name, "frames": frames, "steps": steps, "unet_calls": counter.calls,
                     "frame_evals": counter.frame_evals, "denoise_s": pipe.stats.denoise_s, "cpu_s": cpu_s,
                     "peak_mb": peak, "act_mb": peak - before, "memory_kind": kind})
    direct = next((r for r in rows if r["method"] == "direct" and "note" not in r), None)
    for r in rows:
        if direct is not None and "note" not in r:
            r["x_direct_evals"] = r["frame_evals"] / direct["frame_evals"]
            r["x_direct_time"] = r[f"{'cpu' if args.clock == 'cpu' else 'denoise'}_s"] / max(
                direct[f"{'cpu' if args.clock == 'cpu' else 'denoise'}_s"], 1e-12)
    return rows


LOOP_KEYS = ["frames", "method", "steps", "unet_calls", "frame_evals", "x_direct_evals", "denoise_s", "cpu_s",
             "x_direct_time", "peak_mb", "note"]


def meta_decode_estimate(backbone, frames: int, args) -> dict[str, Any]:
    """Peak tensor memory of one automatic-size VAE decode call, measured on the meta device."""
    factor = backbone.vae_scale_factor
    h, w = args.height // factor, args.width // factor
    vae_dtype = next(backbone.vae.parameters()).dtype
    if is_dit(backbone) and not hasattr(backbone, "expert_for"):  # CogVideoX, HunyuanVideo: one call, all frames
        z = torch.zeros(1, backbone.latent_channels, backbone.latent_frames(frames), h, w, device="meta",
                        dtype=vae_dtype)
        with torch.no_grad(), track_tensor_memory() as tracker:
            backbone.vae.decode(z)
        return {"frames_per_call": "all latent frames (untiled)", "act_mb": tracker.peak_mb,
                "peak_mb": tracker.peak_mb + module_bytes(backbone.vae) / MB}
    if is_dit(backbone):  # AutoencoderKLWan: one latent frame per step with its causal cache; 2 frames show it
        z = torch.zeros(1, backbone.latent_channels, 2, h, w, device="meta", dtype=vae_dtype)
        with torch.no_grad(), track_tensor_memory() as tracker:
            backbone.vae.decode(z)
        return {"frames_per_call": "1 latent frame (causal cache)", "act_mb": tracker.peak_mb,
                "peak_mb": tracker.peak_mb + module_bytes(backbone.vae) / MB}
    chunk = backbone.decode_chunk_size(frames, h, w, vae_dtype)
    z = torch.zeros(chunk, backbone.latent_channels, h, w, device="meta", dtype=vae_dtype)
    with torch.no_grad(), track_tensor_memory() as tracker:
        backbone.vae.decode(z)
    return {"frames_per_call": chunk, "act_mb": tracker.peak_mb,
            "peak_mb": tracker.peak_mb + module_bytes(backbone.vae) / MB}


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def format_table(headers: list[str], rows: list[list[Any]], markdown: bool = False) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def step_tables(results: list[StepResult], markdown: bool = False, clock: str = "wall") -> str:
    timed = any(r.step_s is not None for r in results)
    if not timed:  # meta: memory and FLOPs, nothing timed
        rows = [[r.frames, r.method, r.peak_mb, r.act_mb, r.gflops, r.flop_ratio, r.note] for r in results]
        head = ["frames", "method", "est. peak MB", "activations MB", "GFLOP", "x direct (FLOP)", "note"]
        return format_table(head, rows, markdown)
    has_cpu = any(r.cpu_s is not None for r in results)
    head = ["frames", "method", "median step s"] + (["cpu s"] if has_cpu else []) + [f"x direct ({clock})"]
    head += ["peak MB", "act. MB", "note"]
    rows = []
    for r in results:
        rows.append([r.frames, r.method, r.step_s] + ([r.cpu_s] if has_cpu else []) + [r.ratio]
                    + [r.peak_mb, r.act_mb, r.note])
    main = format_table(head, rows, markdown)
    levels = sorted({k for r in results for k in r.temporal_s})
    if not levels:
        return main
    direct = {r.frames: r for r in results if r.method == "direct"}
    head = ["frames", "method"] + [f"temporal {k} s" for k in levels] + ["temporal s", "other s", "Δtemporal", "Δother"]
    rows = []
    for r in results:
        if r.step_s is None:
            continue
        temp = sum(r.temporal_s.values())
        d = direct.get(r.frames)
        d_temp = sum(d.temporal_s.values()) if d and d.step_s is not None else None
        rows.append([r.frames, r.method] + [r.temporal_s.get(k) for k in levels]
                    + [temp, r.other_s, None if d_temp is None else temp - d_temp,
                       None if d is None or d.other_s is None else r.other_s - d.other_s])
    split = format_table(head, rows, markdown)
    title = (f"Per-layer split ({clock} seconds inside temporal attention per UNet level, and the rest of the "
             "step; Δ = minus direct sampling at the same length)")
    return main + "\n\n" + title + "\n" + split


def machine_info(device: torch.device, args) -> dict[str, Any]:
    name = "meta (no compute; memory estimate)" if device.type == "meta" else device_name(device)
    return {"device": name, "torch_threads": torch.get_num_threads(), "versions": package_versions(),
            "git_commit": git_commit(), "command": "python scripts/benchmark.py " + " ".join(args.argv)}


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lavie", help="model config name (conf/model/<name>.yaml); default lavie")
    p.add_argument("--widths", choices=("auto", "reduced", "full", "config"), default="auto",
                   help="reduced (CPU default), full (GPU/meta default), or config: the model YAML as is "
                        "(default for random-init models such as lavie_tiny)")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--random-weights", action="store_true", help="random weights (the default; no download)")
    weights.add_argument("--real-weights", action="store_true",
                         help="load the model's trained weights (the YAML's architecture)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | meta (memory estimate only)")
    p.add_argument("--dtype", default="auto",
                   help="auto (fp16 on CUDA and meta, fp32 on CPU) | float32 | float16 | bfloat16")
    p.add_argument("--frames", default="128", help="comma-separated frame counts, e.g. 16,32,64,128,256,512")
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--methods", default=None,
                   help=f"comma-separated names or name:key=value:... (default {','.join(METHODS)}; "
                        f"DiTs: {','.join(DIT_METHODS)}; with the model's own defaults, conf/model methods:)")
    p.add_argument("--guidance", type=float, default=7.5, help="CFG scale; > 1 batches the two halves (B=2)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per method (default 1 on CPU, 3 on GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per method (default 0 on CPU, 1 on GPU)")
    p.add_argument("--frame-chunk", default="auto", help="UNet frame chunking: auto | off | N frames")
    p.add_argument("--chunk-budget-mb", type=float, default=None, help="auto chunking budget per activation chunk")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what ratios and the split use: wall time, or process CPU time (CPU only; with "
                        "--threads 1 it measures the work done even on a busy shared machine)")
    p.add_argument("--sampling-steps", type=int, default=0, help="also time a whole generation with N steps")
    p.add_argument("--comm", default=None,
                   help="comma-separated rank counts: print the computed communication per step of one video split "
                        "over that many ranks (parallel.context) and exit")
    p.add_argument("--loop", action="store_true",
                   help="whole-video denoising per method (sampling-loop methods: fifo, gen_l_video, freeinit) "
                        "with --sampling-steps steps (default 4): time, denoiser frame-evaluations, peak memory")
    p.add_argument("--markdown", action="store_true", help="print markdown tables")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def resolve(args) -> tuple[torch.device, torch.dtype]:
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch.cuda.is_available() is False")
    if args.dtype == "auto":
        dtype = torch.float32 if device.type == "cpu" else torch.float16
    else:
        dtype = getattr(torch, args.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise SystemExit(f"error: unknown --dtype {args.dtype!r}")
    if args.real_weights:
        if args.widths == "reduced":
            raise SystemExit("error: --real-weights needs the real architecture (--widths full or config)")
        args.widths = "config"
    elif args.widths == "auto":
        if load_model_config(args.model).random_init:
            args.widths = "config"
        else:
            args.widths = "reduced" if device.type == "cpu" else "full"
    if args.repeats is None:
        args.repeats = 1 if device.type == "cpu" else 3
    if args.warmup is None:
        args.warmup = 0 if device.type == "cpu" else 1
    if args.clock == "cpu" and device.type != "cpu":
        raise SystemExit("error: --clock cpu is only meaningful with --device cpu")
    return device, dtype


def comm_volume(cfg, methods: list[Method], frames: int, height: int, width: int, ranks: list[int],
                guidance: float, bytes_per_element: int) -> list[dict[str, Any]]:
    """Bytes each rank sends per denoising step for every method and rank count (computed, not measured)."""
    from freelong.parallel import check_context_parallel, gather_bytes_per_call, ulysses_bytes_per_layer

    unet = cfg.unet
    p_t, p_h, p_w = unet.patch_size
    vae = 8
    tokens = latent_frames(cfg, frames) // p_t * (height // (vae * p_h)) * (width // (vae * p_w))
    heads, head_dim, layers = int(unet.num_attention_heads), int(unet.attention_head_dim), int(unet.num_layers)
    calls = 2 if guidance > 1 else 1  # Wan: cond and uncond are two transformer calls (batch 1 each)
    out_channels = int(unet.out_channels) * p_t * p_h * p_w
    rows = []
    for n in ranks:
        try:
            check_context_parallel(cfg, n, key="--comm")
        except ValueError as err:
            rows.append({"ranks": n, "method": "-", "exchange": f"refused: {err}"})
            continue
        attn = ulysses_bytes_per_layer(tokens, heads, head_dim, n, bytes_per_element=bytes_per_element)
        gather = gather_bytes_per_call(tokens, out_channels, n, bytes_per_element=bytes_per_element)
        per_step = calls * (layers * attn + gather)
        # FreeLOC re-encodes positions: each layer call also all-gathers the cos/sin RoPE tables (model dtype)
        rope = 2 * gather_bytes_per_call(tokens, head_dim, n, bytes_per_element=bytes_per_element)
        for m in methods:
            proc = m.processor()
            own = proc is None or type(proc) is TemporalAttnProcessor  # plain global attention
            needs_rope = bool(getattr(proc, "needs_rope", False))
            exchange = ("diffusers' Ulysses attention" if own else "our Ulysses all-to-all around the method"
                        + (" + all-gather of the RoPE tables" if needs_rope else ""))
            added = calls * layers * rope if needs_rope else 0
            rows.append({
                "ranks": n, "method": m.name, "tokens": tokens, "exchange": exchange,
                "all_to_alls_per_step": calls * layers * 4, "per_layer_call_mb": (attn + added / calls / layers) / MB,
                "gather_per_call_mb": gather / MB, "per_step_gb": (per_step + added) / 2**30,
                "added_vs_direct_gb": added / 2**30,
            })
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the random-init VAE's dtype-cast notice is noise here
    args = parse_args(argv)
    if args.comm:
        return main_comm(args)
    device, dtype = resolve(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cpu":
        release_freed_memory_eagerly()
    frames = [int(f) for f in str(args.frames).split(",") if f.strip()]
    chunk = {"auto": None, "off": 0}.get(args.frame_chunk)
    chunk = int(args.frame_chunk) if chunk is None and args.frame_chunk != "auto" else chunk

    cfg = model_config(args.model, args.widths)
    from freelong.methods.base import supported_families

    candidates = DIT_METHODS if cfg.family in DIT_FAMILIES else METHODS
    default = ",".join(m for m in candidates if supported_families(get_method(m), [cfg.family]))  # FreeLOC: Wan only
    names = [m.strip() for m in (args.methods or default).split(",") if m.strip()]
    if cfg.family == "wan" and not is_wan_1_3b_shape(cfg):  # FreeLOC's published layer list fits Wan2.1-1.3B only
        names = [f"{n}:tsa_layers=[0]" if n.split(":")[0] == "freeloc" and "tsa_layers" not in n else n for n in names]
    methods = [method_from_spec(n, model_defaults(cfg, n)) for n in names]
    backbone = build(cfg, device, dtype)
    native = backbone.method_frames(backbone.native_frames)  # positions the methods count (CogVideoX 1.5: 11)
    methods = [with_label(m.with_native_frames(native), m.name) for m in methods]
    backbone.unet.frame_chunk_size = chunk
    backbone.unet.chunk_budget_mb = args.chunk_budget_mb
    runner = StepRunner(backbone, args, device)
    info = machine_info(device, args)
    unet_cfg = getattr(backbone.unet, "config", {})
    print(f"# {backbone.description or backbone.name}: UNet channels {unet_cfg.get('block_out_channels')}, "
          f"{module_bytes(backbone.unet) / 2**30:.2f} GiB weights, {dtype}, {info['device']}")
    timing = ("memory and FLOPs only (meta device: nothing is computed)" if device.type == "meta" else
              f"{args.repeats} timed round(s) after {args.warmup} warm-up, ratios on the {args.clock} clock")
    print(f"# {args.height}x{args.width} video (latent {args.height // backbone.vae_scale_factor}x"
          f"{args.width // backbone.vae_scale_factor}), CFG {args.guidance}, frame chunking {args.frame_chunk}, "
          f"{timing}")

    if args.loop:
        if device.type == "meta":
            raise SystemExit("error: --loop runs whole videos; use --device cpu or cuda")
        loop_rows = []
        for n in frames:
            rows = run_loop_videos(backbone, methods, n, args, device)
            loop_rows.extend(rows)
            print(format_table(LOOP_KEYS, [[r.get(k) for k in LOOP_KEYS] for r in rows], args.markdown), flush=True)
            print()
        out = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "argv"},
               "model": {"name": backbone.name, "description": backbone.description, "dtype": str(dtype)},
               "loop": loop_rows}
        if args.json:
            from freelong.video_io import atomic_write_json

            atomic_write_json(args.json, out)
            print(f"\nwrote {args.json}")
        return out

    results: list[StepResult] = []
    for n in frames:
        rows = run_steps(runner, methods, n, args, device)
        results.extend(rows)
        print(step_tables(rows, args.markdown, args.clock), flush=True)
        print()
    if len(frames) > 1:
        print("All lengths:")
        print(step_tables(results, args.markdown, args.clock))
    decode = None
    if device.type == "meta":
        decode = meta_decode_estimate(backbone, max(frames), args)
        print(f"\nVAE decode (automatic chunks): {decode['frames_per_call']} frames per call, "
              f"est. peak {decode['peak_mb']:.0f} MB (weights included)")
    sampling = []
    if args.sampling_steps > 0 and device.type != "meta":
        for n in frames:
            sampling.extend(run_sampling(backbone, methods, n, args, device))
        keys = ["frames", "method", "steps", "total_s", "denoise_s", "median_step_s", "decode_s", "peak_mb"]
        print(f"\nWhole generation ({args.sampling_steps} steps + VAE decode):")
        print(format_table(keys, [[r.get(k) for k in keys] for r in sampling], args.markdown))
    out = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "argv"},
           "model": {"name": backbone.name, "description": backbone.description,
                     "unet": OmegaConf.to_container(cfg.unet, resolve=True), "dtype": str(dtype)},
           "step": [asdict(r) for r in results], "sampling": sampling, "meta_decode": decode}
    if args.json:
        from freelong.video_io import atomic_write_json

        atomic_write_json(args.json, out)
        print(f"\nwrote {args.json}")
    return out


def main_comm(args) -> dict[str, Any]:
    """``--comm``: the communication table, from the model config alone."""
    cfg = load_model_config(args.model)
    if cfg.family != "wan":
        raise SystemExit(f"error: --comm: model {args.model} (family {cfg.family}) has no context-parallel plan")
    names = [m.strip() for m in (args.methods or ",".join(DIT_METHODS)).split(",") if m.strip()]
    native = latent_frames(cfg, cfg.native_frames)
    methods = [with_label(method_from_spec(n, model_defaults(cfg, n)).with_native_frames(native), n) for n in names]
    ranks = [int(r) for r in str(args.comm).split(",") if r.strip()]
    size = 4 if args.dtype == "float32" else 2
    frames = [int(f) for f in str(args.frames).split(",") if f.strip()]
    rows = []
    for n in frames:
        rows += [{"frames": n, **r} for r in comm_volume(cfg, methods, n, args.height, args.width, ranks,
                                                          args.guidance, size)]
    keys = ["frames", "ranks", "method", "tokens", "exchange", "all_to_alls_per_step", "per_layer_call_mb",
            "gather_per_call_mb", "per_step_gb", "added_vs_direct_gb"]
    print(f"# {cfg.description}: communication per denoising step and rank (computed), {size}-byte elements, "
          f"CFG {args.guidance}")
    print(format_table(keys, [[r.get(k, "") for k in keys] for r in rows], args.markdown))
    out = {"model": cfg.name, "comm": rows}
    if args.json:
        from freelong.video_io import atomic_write_json

        atomic_write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
