"""LaVie's base text-to-video UNet, re-implemented so the official ``lavie_base.pt`` loads strictly.

Architecture (Vchitect/LaVie ``base/models``): Stable Diffusion 1.x's UNet with every 2D conv
applied per frame ("inflated"), GroupNorms in the resnets pooled over all frames, and in every
transformer block a temporal self-attention (``attn_temp``) after the spatial self- and
cross-attention. The temporal attention rotates the first 32 channels of each head with rotary
embeddings (interleaved pairs, theta 10000) and adds a T5-style relative position bias
(32 buckets, max distance 32). It goes through :class:`freelong.attention.TemporalAttention`,
so methods replace only its processor.

Spatial attention and the feed-forward use diffusers' ``Attention`` and ``FeedForward`` (same
parameter names as the checkpoint); time embeddings use diffusers' ``Timesteps`` and
``TimestepEmbedding``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from ...attention.context import CallContext
from ...attention.processor import TemporalAttention, name_temporal_layers
from ...chunking import (
    activation_bytes_per_frame,
    chunk_frames,
    frame_chunking,
    frame_spans,
    norm_act_frames,
)
from ..base import FromConfigMixin, per_frame_context
from .blocks import SUPPORTED_BLOCKS, DownBlock3D, InflatedConv3d, MidBlock3D, RotaryEmbedding, UpBlock3D

# LaVie's overrides of Stable Diffusion 1.4's ``unet/config.json`` (``from_pretrained_2d``).
LAVIE_OVERRIDES: dict[str, Any] = {
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
    "use_first_frame": False,
}

# Stable Diffusion 1.4's unet/config.json with LaVie's overrides applied: the full-size model.
LAVIE_BASE_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    **LAVIE_OVERRIDES,
}


def _select_context(context: torch.Tensor | Mapping[str, torch.Tensor], group: str) -> torch.Tensor:
    return context[group] if isinstance(context, Mapping) else context


class LaVieUNet(nn.Module, FromConfigMixin):
    """LaVie's ``UNet3DConditionModel`` (base T2V), keyword-compatible with its config.

    ``forward(sample (B, 4, T, H, W), timestep, encoder_hidden_states)`` returns the noise prediction;
    ``timestep`` is a scalar, ``(B,)`` or per-frame ``(B, T)`` (each frame's ResNet time bias from its own t).
    ``encoder_hidden_states`` may be ``(B, L, D)`` (one prompt per video), ``(B, T, L, D)`` (one
    embedding per frame, for multi-prompt videos) or a dict of those keyed by ``down``, ``mid`` and
    ``up`` (a different text per block group, for FreeNoise's motion injection).

    Memory: ``frame_chunk_size`` (``None`` = automatic, ``0`` = off, ``n`` frames) and
    ``chunk_budget_mb`` control how the per-frame layers split long videos into frame chunks
    (:mod:`freelong.chunking`); the output is the same up to floating-point rounding.
    """

    frame_chunk_size: int | None = None
    chunk_budget_mb: float | None = None

    # timestep may be per-frame (B, T) (FIFO-Diffusion; freelong.sampling); Backbone.per_frame_timesteps reads it
    per_frame_timesteps = True

    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: Sequence[str] = tuple(LAVIE_OVERRIDES["down_block_types"]),
        up_block_types: Sequence[str] = tuple(LAVIE_OVERRIDES["up_block_types"]),
        only_cross_attention: bool = False,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        attention_head_dim: int | Sequence[int] = 8,
        dual_cross_attention: bool = False,
        use_linear_projection: bool = False,
        class_embed_type: str | None = None,
        num_class_embeds: int | None = None,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        use_first_frame: bool = False,
        use_relative_position: bool = False,
        rotary_dim: int = 32,
    ):
        super().__init__()
        unsupported = {
            "only_cross_attention": (only_cross_attention, False),
            "dual_cross_attention": (dual_cross_attention, False),
            "use_linear_projection": (use_linear_projection, False),
            "class_embed_type": (class_embed_type, None),
            "num_class_embeds": (num_class_embeds, None),
            "upcast_attention": (upcast_attention, False),
            "resnet_time_scale_shift": (resnet_time_scale_shift, "default"),
            "use_first_frame": (use_first_frame, False),
            "use_relative_position": (use_relative_position, False),
            "act_fn": (act_fn, "silu"),
        }
        for key, (value, expected) in unsupported.items():
            if value != expected:
                raise ValueError(f"LaVieUNet: {key}={value!r} is not LaVie's base model setting ({expected!r})")
        if len(down_block_types) != len(block_out_channels) or len(up_block_types) != len(block_out_channels):
            raise ValueError(
                "LaVieUNet: down_block_types, up_block_types and block_out_channels must have equal length"
            )
        for bt in (*down_block_types, *up_block_types):
            if bt not in SUPPORTED_BLOCKS:
                raise ValueError(f"LaVieUNet: unsupported block type {bt!r}")
        heads = [attention_head_dim] * len(block_out_channels) if isinstance(attention_head_dim, int) \
            else list(attention_head_dim)
        for ch, hd in zip(block_out_channels, heads):
            if ch % hd or ch // hd < rotary_dim:
                raise ValueError(
                    f"LaVieUNet: {ch} channels with {hd} heads gives head dim {ch / hd:g}; it must be an integer "
                    f">= rotary_dim={rotary_dim} (LaVie rotates 32 channels per head)"
                )
        self.config = {
            "sample_size": sample_size, "in_channels": in_channels, "out_channels": out_channels,
            "block_out_channels": list(block_out_channels), "layers_per_block": layers_per_block,
            "down_block_types": list(down_block_types), "up_block_types": list(up_block_types),
            "norm_num_groups": norm_num_groups, "norm_eps": norm_eps, "cross_attention_dim": cross_attention_dim,
            "attention_head_dim": attention_head_dim, "flip_sin_to_cos": flip_sin_to_cos, "freq_shift": freq_shift,
            "downsample_padding": downsample_padding, "mid_block_scale_factor": mid_block_scale_factor,
            "center_input_sample": center_input_sample, "rotary_dim": rotary_dim,
        }
        self.in_channels = in_channels
        self.center_input_sample = center_input_sample
        temb = block_out_channels[0] * 4
        n = len(block_out_channels)

        self.conv_in = InflatedConv3d(in_channels, block_out_channels[0], 3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], temb)

        self.down_blocks = nn.ModuleList()
        out_ch = block_out_channels[0]
        for i, block_type in enumerate(down_block_types):
            in_ch, out_ch = out_ch, block_out_channels[i]
            self.down_blocks.append(DownBlock3D(
                in_ch, out_ch, temb, layers_per_block, norm_num_groups, norm_eps,
                add_downsample=i < n - 1, padding=downsample_padding, attention=block_type.startswith("CrossAttn"),
                heads=heads[i], cross_dim=cross_attention_dim, rotary_dim=rotary_dim,
            ))

        self.mid_block = MidBlock3D(block_out_channels[-1], temb, norm_num_groups, norm_eps, mid_block_scale_factor,
                                    heads[-1], cross_attention_dim, rotary_dim)

        self.up_blocks = nn.ModuleList()
        rev_ch = list(reversed(block_out_channels))
        rev_heads = list(reversed(heads))
        out_ch = rev_ch[0]
        for i, block_type in enumerate(up_block_types):
            prev_ch, out_ch = out_ch, rev_ch[i]
            in_ch = rev_ch[min(i + 1, n - 1)]
            self.up_blocks.append(UpBlock3D(
                in_ch, prev_ch, out_ch, temb, layers_per_block + 1, norm_num_groups, norm_eps,
                add_upsample=i < n - 1, attention=block_type.startswith("CrossAttn"),
                heads=rev_heads[i], cross_dim=cross_attention_dim, rotary_dim=rotary_dim,
            ))

        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_out = InflatedConv3d(block_out_channels[0], out_channels, 3, padding=1)

        levels = {}
        for name, module in self.named_modules():
            if isinstance(module, TemporalAttention):
                group, idx = name.split(".")[:2]
                level = {"down_blocks": lambda i: int(i), "up_blocks": lambda i: n - 1 - int(i)}.get(group)
                levels[name] = level(idx) if level else n - 1
        name_temporal_layers(self, levels)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | Mapping[str, torch.Tensor],
        call: CallContext | None = None,
    ) -> torch.Tensor:
        with frame_chunking(self.frame_chunk_size, self.chunk_budget_mb):
            return self._forward(sample, timestep, encoder_hidden_states, call)

    def _forward(self, sample, timestep, encoder_hidden_states, call) -> torch.Tensor:
        b, _, t, h, w = sample.shape
        if self.center_input_sample:
            sample = 2 * sample - 1.0
        timesteps = torch.as_tensor(timestep, device=sample.device)
        if timesteps.ndim == 2:  # per-frame timesteps (B, T): one embedding per frame, (B, T, D)
            if tuple(timesteps.shape) != (b, t):
                raise ValueError(f"per-frame timesteps must be (B, T) = {(b, t)}, got {tuple(timesteps.shape)}")
            emb = self.time_embedding(self.time_proj(timesteps.reshape(-1)).to(self.dtype)).reshape(b, t, -1)
        else:
            if timesteps.ndim == 0:
                timesteps = timesteps[None]
            timesteps = timesteps.expand(b)
            emb = self.time_embedding(self.time_proj(timesteps).to(self.dtype))

        context = (
            {k: per_frame_context(v, b, t, self.dtype) for k, v in encoder_hidden_states.items()}
            if isinstance(encoder_hidden_states, Mapping)
            else per_frame_context(encoder_hidden_states, b, t, self.dtype)
        )

        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, res = block(x, emb, _select_context(context, "down"), call)
            skips.extend(res)
        x = self.mid_block(x, emb, _select_context(context, "mid"), call)
        for block in self.up_blocks:
            block_skips = skips[-len(block.resnets):]
            del skips[-len(block.resnets):]
            size = skips[-1].shape[-2:] if skips else None
            x = block(x, block_skips, emb, _select_context(context, "up"), call, upsample_size=size)
        chunk = chunk_frames(t, activation_bytes_per_frame(x))
        if chunk >= t:
            return self.conv_out(F.silu(self.conv_norm_out(x)))
        out = None
        for s, e, y in norm_act_frames((x,), self.conv_norm_out, F.silu, self.conv_out.conv_frames,
                                       frame_spans(t, chunk)):
            if out is None:
                out = y.new_empty((b, y.shape[1], t, *y.shape[3:]))
            out[:, :, s:e] = y
        return out



# ----------------------------------------------------------------------------------------------
# Checkpoint loading
# ----------------------------------------------------------------------------------------------
def unwrap_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Accept a plain state dict or one wrapped in ``ema`` / ``state_dict`` / ``module``."""
    for key in ("ema", "state_dict", "module"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_lavie_unet_weights(unet: LaVieUNet, state_dict: Mapping[str, Any], assign: bool = False) -> None:
    """Load LaVie's UNet weights with ``strict=True`` (``assign=True`` for a meta-device model).

    The rotary ``freqs`` buffers are deterministic; if a checkpoint lacks them (e.g. saved with a
    rotary implementation that keeps them non-persistent) they are filled in.
    """
    sd = unwrap_state_dict(state_dict)
    for key in unet.state_dict():
        if key.endswith("rotary_emb.freqs") and key not in sd:
            sd[key] = RotaryEmbedding(unet.config["rotary_dim"]).freqs
    unet.load_state_dict(sd, strict=True, assign=assign)
