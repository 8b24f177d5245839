"""VideoCrafter2's text-to-video 3D UNet, re-implemented so the official ``model.ckpt`` loads strictly.

Architecture (AILab-CVC/VideoCrafter, ``lvdm.modules.networks.openaimodel3d.UNetModel`` with the
``params`` of ``configs/inference_t2v_512_v2.0.yaml``): an SD-2-style UNet run frame by frame, with a
temporal convolution after every ResBlock, a :class:`TemporalTransformer` after every spatial
transformer, one more temporal transformer (``init_attn``, 8 heads of 64, Conv1d projections) right
after ``conv_in``, and an fps embedding added to the timestep embedding. Temporal attention has
**no positional encoding**; frame order enters only through the temporal convolutions.

All 34 temporal self-attentions (``attn1``/``attn2`` of 17 temporal transformers) are
:class:`freelong.attention.TemporalAttention` layers with their resolution ``level`` set
(0 = full latent resolution, including ``init_attn``), so methods swap processors without any
method code here. Blocks live in :mod:`.videocrafter_blocks`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

from ...attention.context import CallContext
from ...attention.processor import TemporalAttention, name_temporal_layers
from ...chunking import ChunkPolicy
from ..base import FromConfigMixin, per_frame_context
from .blocks import (
    GROUPS,
    Downsample,
    GroupNorm32,
    ResBlock,
    SpatialTransformer,
    TemporalTransformer,
    TimestepSequential,
    Upsample,
)

# ``model.params.unet_config.params`` of configs/inference_t2v_512_v2.0.yaml (the full-size model).
VC2_UNET_CONFIG: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "attention_resolutions": [4, 2, 1],
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 4, 4],
    "num_head_channels": 64,
    "transformer_depth": 1,
    "context_dim": 1024,
    "use_linear": True,
    "use_checkpoint": True,
    "temporal_conv": True,
    "temporal_attention": True,
    "temporal_selfatt_only": True,
    "use_relative_position": False,
    "use_causal_attention": False,
    "temporal_length": 16,
    "addition_attention": True,
    "fps_cond": True,
}

CHECKPOINT_PREFIX = "model.diffusion_model."


def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """lvdm's sinusoidal embedding ``[cos(t f_k), sin(t f_k)]`` with ``f_k = max_period^(-k/(dim/2))``."""
    return get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0, max_period=max_period)


class VideoCrafterUNet(nn.Module, FromConfigMixin):
    """lvdm's ``UNetModel`` for VideoCrafter2 T2V; keyword-compatible with its config ``params``.

    ``forward(sample (B, 4, T, H, W), timestep, encoder_hidden_states, fps=16, call=None)`` returns the
    noise prediction. ``encoder_hidden_states`` is ``(B, L, D)``, per-frame ``(B, T, L, D)``, or a
    dict of those keyed ``down`` (input blocks and ``init_attn``), ``mid`` and ``up`` (output blocks).
    Defaults are the VideoCrafter2 512 v2.0 values, so ``VideoCrafterUNet()`` is the full model.
    """

    # timestep may be per-frame (B, T) (FIFO-Diffusion; freelong.sampling); Backbone.per_frame_timesteps reads it
    per_frame_timesteps = True

    def __init__(
        self,
        in_channels: int = 4,
        model_channels: int = 320,
        out_channels: int = 4,
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (4, 2, 1),
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 4, 4),
        conv_resample: bool = True,
        dims: int = 2,
        context_dim: int = 1024,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        num_heads: int = -1,
        num_head_channels: int = 64,
        transformer_depth: int = 1,
        use_linear: bool = True,
        use_checkpoint: bool = False,
        temporal_conv: bool = True,
        tempspatial_aware: bool = False,
        temporal_attention: bool = True,
        temporal_selfatt_only: bool = True,
        use_relative_position: bool = False,
        use_causal_attention: bool = False,
        temporal_length: int | None = 16,
        use_fp16: bool = False,
        addition_attention: bool = True,
        use_image_attention: bool = False,
        temporal_transformer_depth: int = 1,
        fps_cond: bool = True,
    ):
        super().__init__()
        # use_checkpoint (training-time recomputation), use_fp16 (set the dtype with .to()) and
        # temporal_length (unused without relative positions) do not change the inference maths.
        unsupported = {
            "dims": (dims, 2),
            "conv_resample": (conv_resample, True),
            "use_scale_shift_norm": (use_scale_shift_norm, False),
            "resblock_updown": (resblock_updown, False),
            "tempspatial_aware": (tempspatial_aware, False),
            "temporal_attention": (temporal_attention, True),
            "temporal_selfatt_only": (temporal_selfatt_only, True),
            "use_relative_position": (use_relative_position, False),
            "use_causal_attention": (use_causal_attention, False),
            "use_image_attention": (use_image_attention, False),
        }
        for key, (value, expected) in unsupported.items():
            if value != expected:
                raise ValueError(f"VideoCrafterUNet: {key}={value!r} is not supported (VideoCrafter2 T2V uses "
                                 f"{expected!r})")
        if (num_heads == -1) == (num_head_channels == -1):
            raise ValueError("VideoCrafterUNet: set exactly one of num_heads and num_head_channels")
        for ch in (model_channels * m for m in channel_mult):
            if ch % GROUPS:
                raise ValueError(f"VideoCrafterUNet: channel count {ch} is not a multiple of {GROUPS} "
                                 f"(lvdm's GroupNorms have {GROUPS} groups)")

        def heads_of(ch: int) -> tuple[int, int]:
            if num_head_channels == -1:
                return num_heads, ch // num_heads
            if ch % num_head_channels:
                raise ValueError(f"VideoCrafterUNet: {ch} channels are not a multiple of "
                                 f"num_head_channels={num_head_channels}")
            return ch // num_head_channels, num_head_channels

        self.config = {
            "in_channels": in_channels, "model_channels": model_channels, "out_channels": out_channels,
            "num_res_blocks": num_res_blocks, "attention_resolutions": list(attention_resolutions),
            "channel_mult": list(channel_mult), "context_dim": context_dim, "num_heads": num_heads,
            "num_head_channels": num_head_channels, "transformer_depth": transformer_depth,
            "use_linear": use_linear, "temporal_conv": temporal_conv, "addition_attention": addition_attention,
            "temporal_transformer_depth": temporal_transformer_depth, "fps_cond": fps_cond,
        }
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.fps_cond = fps_cond
        # Memory: frames per chunk of the per-frame layers (None = automatic, 0 = off, n = n frames),
        # the same meaning as LaVieUNet (freelong.chunking); outputs do not depend on it.
        self.frame_chunk_size: int | None = None
        self.chunk_budget_mb: float | None = None
        temb = model_channels * 4

        self.time_embed = nn.Sequential(nn.Linear(model_channels, temb), nn.SiLU(), nn.Linear(temb, temb))
        if fps_cond:
            self.fps_embedding = nn.Sequential(nn.Linear(model_channels, temb), nn.SiLU(), nn.Linear(temb, temb))

        def res(ch_in: int, ch_out: int) -> ResBlock:
            return ResBlock(ch_in, temb, ch_out, dropout, temporal_conv=temporal_conv)

        def attn_layers(ch: int) -> list[nn.Module]:
            heads, dim_head = heads_of(ch)
            return [
                SpatialTransformer(ch, heads, dim_head, context_dim, transformer_depth, use_linear),
                TemporalTransformer(ch, heads, dim_head, temporal_transformer_depth, use_linear),
            ]

        levels: dict[str, int] = {}  # module prefix -> resolution level of its temporal attentions
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        if addition_attention:
            # 8 heads of num_head_channels, Conv1d projections (lvdm does not pass use_linear here).
            self.init_attn = TimestepSequential(
                TemporalTransformer(model_channels, 8, num_head_channels, transformer_depth, use_linear=False)
            )
            levels["init_attn."] = 0
        chans = [model_channels]
        ch, ds = model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers += attn_layers(ch)
                levels[f"input_blocks.{len(self.input_blocks)}."] = level
                self.input_blocks.append(TimestepSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                chans.append(ch)
                ds *= 2

        self.middle_block = TimestepSequential(res(ch, ch), *attn_layers(ch), res(ch, ch))
        levels["middle_block."] = len(channel_mult) - 1

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + chans.pop(), model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers += attn_layers(ch)
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                levels[f"output_blocks.{len(self.output_blocks)}."] = level
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(GROUPS, ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3,
                                                                                 padding=1))

        level_of = {}
        for name, module in self.named_modules():
            if isinstance(module, TemporalAttention):
                level_of[name] = next(lv for prefix, lv in levels.items() if name.startswith(prefix))
        name_temporal_layers(self, level_of)

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    def set_frame_chunk_size(self, chunk_size: int | None) -> None:
        """Per-frame layers on at most ``chunk_size`` frames at a time (``None`` automatic, ``0`` off)."""
        ChunkPolicy(chunk_size)  # validates
        self.frame_chunk_size = chunk_size

    def _chunk_rows(self, b: int, t: int, h: int, w: int) -> int | None:
        """Rows of the ``(B*T, ...)`` frame batch per chunk, or None for no chunking.

        The automatic size keeps the widest per-frame transient (the GEGLU hidden state at the first
        level, ``8 * model_channels`` channels) under the chunk budget.
        """
        policy = ChunkPolicy(self.frame_chunk_size, self.chunk_budget_mb)
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        frames = policy.frames(t, b * 8 * self.model_channels * h * w * itemsize)
        return None if frames >= t else frames * b

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | Mapping[str, torch.Tensor],
        fps: torch.Tensor | float | int = 16,
        call: CallContext | None = None,
    ) -> torch.Tensor:
        b, _, t, h, w = sample.shape
        steps = torch.as_tensor(timestep, device=sample.device)
        if steps.ndim == 2:  # per-frame timesteps (B, T), as FIFO-Diffusion's lvdm patch: one embedding per frame
            if tuple(steps.shape) != (b, t):
                raise ValueError(f"per-frame timesteps must be (B, T) = {(b, t)}, got {tuple(steps.shape)}")
            emb = self.time_embed(timestep_embedding(steps.reshape(-1).float(), self.model_channels).to(self.dtype))
        else:
            emb = self.time_embed(timestep_embedding(_batch_vector(steps, b, sample.device),
                                                     self.model_channels).to(self.dtype))
            emb = emb.repeat_interleave(t, dim=0)  # one embedding per frame: (B*T, 4C)
        if self.fps_cond:
            fps_emb = timestep_embedding(_batch_vector(fps, b, sample.device), self.model_channels)
            emb = emb + self.fps_embedding(fps_emb.to(self.dtype)).repeat_interleave(t, dim=0)

        if isinstance(encoder_hidden_states, Mapping):
            missing = {"down", "mid", "up"} - set(encoder_hidden_states)
            if missing:
                raise ValueError(f"text context dict lacks {', '.join(sorted(missing))} (keys: down, mid, up)")
            ctx = {k: per_frame_context(encoder_hidden_states[k], b, t, self.dtype) for k in ("down", "mid", "up")}
        else:
            one = per_frame_context(encoder_hidden_states, b, t, self.dtype)
            ctx = {"down": one, "mid": one, "up": one}

        chunk = self._chunk_rows(b, t, h, w)
        x = sample.to(self.dtype).transpose(1, 2).reshape(b * t, -1, h, w)  # frames (B*T, C, H, W)
        skips = []
        for i, block in enumerate(self.input_blocks):
            x = block(x, emb, ctx["down"], b, call, chunk_size=chunk)
            if i == 0 and hasattr(self, "init_attn"):
                x = self.init_attn(x, emb, ctx["down"], b, call, chunk_size=chunk)
            skips.append(x)
        x = self.middle_block(x, emb, ctx["mid"], b, call, chunk_size=chunk)
        for block in self.output_blocks:
            x = torch.cat([x, skips.pop()], dim=1)
            size = skips[-1].shape[-2:] if skips else None
            x = block(x, emb, ctx["up"], b, call, size=size, chunk_size=chunk)
        y = self.out(x)
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)



def _batch_vector(value: torch.Tensor | float | int, b: int, device: torch.device) -> torch.Tensor:
    """A scalar or ``(B,)`` timestep/fps as a float vector of length ``b``."""
    v = torch.as_tensor(value, device=device)
    if v.ndim == 0:
        v = v[None]
    if v.numel() == 1:
        v = v.expand(b)
    if v.shape != (b,):
        raise ValueError(f"expected a scalar or a ({b},) tensor, got shape {tuple(v.shape)}")
    return v.float()


# ----------------------------------------------------------------------------------------------
# Checkpoint loading
# ----------------------------------------------------------------------------------------------
def unet_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The UNet's tensors: keys under ``model.diffusion_model.`` with the prefix removed.

    A dict without that prefix anywhere is taken to be a bare UNet state dict.
    """
    if any(k.startswith(CHECKPOINT_PREFIX) for k in state_dict):
        n = len(CHECKPOINT_PREFIX)
        return {k[n:]: v for k, v in state_dict.items() if k.startswith(CHECKPOINT_PREFIX)}
    return dict(state_dict)


def load_videocrafter_unet_weights(unet: VideoCrafterUNet, state_dict: Mapping[str, torch.Tensor],
                                   assign: bool = False) -> None:
    """Load the UNet part of a VideoCrafter2 checkpoint with ``strict=True`` (``assign=True`` for meta models)."""
    unet.load_state_dict(unet_state_dict(state_dict), strict=True, assign=assign)


def count_parameters(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())


__all__ = [
    "CHECKPOINT_PREFIX",
    "VC2_UNET_CONFIG",
    "VideoCrafterUNet",
    "count_parameters",
    "load_videocrafter_unet_weights",
    "timestep_embedding",
    "unet_state_dict",
]
