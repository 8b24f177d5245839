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

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from ..attention import CallContext, TemporalAttention, name_temporal_layers
from ..chunking import (
    activation_bytes_per_frame,
    cat_frames,
    chunk_frames,
    frame_chunking,
    frame_spans,
    from_frames,
    map_frames,
    norm_act_frames,
    to_frames,
)
from .base import FromConfigMixin, per_frame_context

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


# ----------------------------------------------------------------------------------------------
# Temporal positional encodings
# ----------------------------------------------------------------------------------------------
class RotaryEmbedding(nn.Module):
    """Rotary position embedding on the first ``dim`` channels, interleaved pairs (0,1), (2,3), ...

    ``freqs`` (``1 / theta^(2k/dim)``) is a persistent buffer because LaVie's checkpoint stores it
    under every temporal attention (one shared instance there; one copy per layer here).
    ``freq_edit`` (None, or a method's ``rope_frequencies``, e.g. RIFLEx) may change the frequencies
    per call from the frame count; ``native_positions`` is LaVie's training length (16 frames).
    """

    def __init__(self, dim: int = 32, theta: float = 10000.0):
        super().__init__()
        self.dim = dim
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        self.register_buffer("freqs", freqs, persistent=True)
        self.freq_edit = None
        self.native_positions = 16

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` (..., T, D) by its frame position 0..T-1 along the second-to-last axis."""
        num_frames, head_dim = x.shape[-2], x.shape[-1]
        if head_dim < self.dim:
            raise ValueError(f"head dim {head_dim} is smaller than the rotary dim {self.dim}")
        pos = torch.arange(num_frames, device=x.device, dtype=torch.float32)
        freqs = self.freqs.float()
        if self.freq_edit is not None:
            freqs = self.freq_edit(freqs.double(), axis="t", num_positions=num_frames,
                                   native_positions=self.native_positions).to(freqs)
        angles = (pos[:, None] * freqs[None, :]).repeat_interleave(2, dim=-1)  # (T, dim)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        rot, rest = x[..., : self.dim], x[..., self.dim :]
        pairs = rot.unflatten(-1, (-1, 2))
        rot_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return torch.cat((rot * cos + rot_half * sin, rest), dim=-1)


def relative_position_bucket(rel: torch.Tensor, num_buckets: int = 32, max_distance: int = 32) -> torch.Tensor:
    """T5's bidirectional bucketing of ``rel = key - query``.

    Past keys (rel <= 0) use buckets 0..15 (exact up to 7, then logarithmic up to ``max_distance``);
    future keys use 16 + the same bucket.
    """
    half = num_buckets // 2
    n = -rel
    bucket = (n < 0).long() * half
    n = n.abs()
    max_exact = half // 2
    large = max_exact + (
        torch.log(n.float() / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    ).long()
    large = torch.minimum(large, torch.full_like(large, half - 1))
    return bucket + torch.where(n < max_exact, n, large)


class RelativePositionBias(nn.Module):
    """Learned per-head bias of the bucketed relative frame distance (LaVie's ``time_rel_pos_bias``).

    It depends on ``key - query`` only (``translation_invariant``), which lets windowed processors
    build every window's bias from one row of offsets instead of one call per window.
    """

    translation_invariant = True

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 32):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def forward(self, q_idx: torch.Tensor, k_idx: torch.Tensor) -> torch.Tensor:
        rel = k_idx[None, :] - q_idx[:, None]
        buckets = relative_position_bucket(rel, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)  # (heads, Lq, Lk)


class LaVieTemporalAttention(TemporalAttention):
    def __init__(self, dim: int, heads: int, rotary_dim: int = 32):
        super().__init__(dim, heads=heads, dim_head=dim // heads)
        self.rotary_emb = RotaryEmbedding(rotary_dim)
        self.time_rel_pos_bias = RelativePositionBias(heads)

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rotary_emb.rotate(q), self.rotary_emb.rotate(k)

    @property
    def position_bias(self) -> RelativePositionBias:
        return self.time_rel_pos_bias


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------
def per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D op to a ``(B, C, T, H, W)`` tensor frame by frame (one batched call)."""
    b, c, t, h, w = x.shape
    y = fn(x.transpose(1, 2).reshape(b * t, c, h, w))
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class InflatedConv3d(nn.Conv2d):
    """A 2D convolution applied to every frame (in frame chunks under :func:`~freelong.chunking.frame_chunking`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        widest = max(self.in_channels, self.out_channels)
        return map_frames(self.conv_frames, x, chunk_frames(x.shape[2], activation_bytes_per_frame(x, widest)))

    def conv_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """The plain 2D convolution on ``(N, C, H, W)`` frames."""
        return super().forward(frames)


class ResnetBlock3D(nn.Module):
    """SD's resnet block on video; the GroupNorms see all frames of a sample at once, as in LaVie."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float,
                 output_scale_factor: float = 1.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = InflatedConv3d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = InflatedConv3d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = InflatedConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.output_scale_factor = output_scale_factor

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor], temb: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, T, H, W)``, or a sequence of tensors to concatenate along channels (an up
        block's ``(hidden, skip)``; chunked, the concatenation then only ever exists for one chunk)."""
        parts = (x,) if isinstance(x, torch.Tensor) else tuple(x)
        # widest tensor: the concatenated input, normalised in fp32 when chunked
        widest = max(sum(p.shape[1] for p in parts), self.conv1.out_channels) * max(1, 4 // parts[0].element_size())
        chunk = chunk_frames(parts[0].shape[2], activation_bytes_per_frame(parts[0], widest))
        if chunk < parts[0].shape[2]:
            return self._forward_chunked(parts, temb, chunk)
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor

    def _forward_chunked(self, parts: tuple[torch.Tensor, ...], temb: torch.Tensor, chunk: int) -> torch.Tensor:
        """The same maths frame chunk by frame chunk; GroupNorm statistics still cover all frames."""
        spans = frame_spans(parts[0].shape[2], chunk)
        emb = self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = None
        for s, e, hc in norm_act_frames(parts, self.norm1, F.silu, self.conv1.conv_frames, spans):
            if h is None:
                h = hc.new_empty((hc.shape[0], hc.shape[1], parts[0].shape[2], *hc.shape[3:]))
            h[:, :, s:e] = hc + emb
        # Each chunk of h is read (inside the generator) before it is overwritten with the output.
        conv2 = lambda f: self.conv2.conv_frames(self.dropout(f))
        for s, e, hc in norm_act_frames((h,), self.norm2, F.silu, conv2, spans):
            xc = cat_frames(parts, s, e)
            if self.conv_shortcut is not None:
                xc = from_frames(self.conv_shortcut.conv_frames(to_frames(xc)), xc.shape[0])
            h[:, :, s:e] = (xc + hc) / self.output_scale_factor
        return h


class Downsample3D(nn.Module):
    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.conv = InflatedConv3d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample3D(nn.Module):
    """Nearest x2 on (H, W) — or to the skip connection's size for odd sizes — then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = InflatedConv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        hw = tuple(size) if size is not None else (x.shape[3] * 2, x.shape[4] * 2)
        # Chunked, the 4x larger upsampled tensor only ever exists for one chunk of frames.
        big = activation_bytes_per_frame(x) * (hw[0] * hw[1]) // (x.shape[3] * x.shape[4])
        chunk = chunk_frames(x.shape[2], big)
        return map_frames(lambda f: self.conv.conv_frames(self._upsample(f, hw)), x, chunk)

    @staticmethod
    def _upsample(frames: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        dtype = frames.dtype
        if dtype == torch.bfloat16:  # nearest upsampling has no bf16 kernel on some builds
            frames = frames.float()
        return F.interpolate(frames, size=hw, mode="nearest").to(dtype)


class BasicTransformerBlock3D(nn.Module):
    """Spatial self-attn, cross-attn to text, temporal self-attn, GEGLU feed-forward (pre-LN, residual)."""

    def __init__(self, dim: int, heads: int, cross_attention_dim: int, rotary_dim: int = 32):
        super().__init__()
        dim_head = dim // heads
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=dim_head, bias=False)
        self.norm1 = nn.LayerNorm(dim)
        self.attn2 = Attention(query_dim=dim, cross_attention_dim=cross_attention_dim, heads=heads,
                               dim_head=dim_head, bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.attn_temp = LaVieTemporalAttention(dim, heads, rotary_dim)
        self.norm_temp = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, frame_shape: tuple[int, int, int],
                call: CallContext | None) -> torch.Tensor:
        # x: (B*T, H*W, C); context: (B*T, L, D)
        t, h, w = frame_shape
        x = self.spatial(x, context)
        bt, n, c = x.shape
        b = bt // t
        xt = x.view(b, t, n, c).transpose(1, 2).reshape(b * n, t, c)
        xt = self.temporal(xt, frame_shape, call)
        x = xt.view(b, n, t, c).transpose(1, 2).reshape(bt, n, c)
        return self.feed_forward(x)

    # The three stages, so a chunked caller can run the per-frame ones over frame chunks.
    def spatial(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Spatial self- and cross-attention with residuals; ``x`` ``(N frames, H*W, C)``."""
        x = self.attn1(self.norm1(x)) + x
        return self.attn2(self.norm2(x), encoder_hidden_states=context) + x

    def temporal(self, xt: torch.Tensor, frame_shape: tuple[int, int, int], call: CallContext | None) -> torch.Tensor:
        """Temporal self-attention with residual; ``xt`` ``(B*H*W, T, C)``."""
        return self.attn_temp(self.norm_temp(xt), frame_shape, call) + xt

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """GEGLU feed-forward with residual; ``x`` ``(tokens..., C)``."""
        return self.ff(self.norm3(x)) + x


class Transformer3DModel(nn.Module):
    def __init__(self, channels: int, heads: int, cross_attention_dim: int, groups: int, rotary_dim: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock3D(channels, heads, cross_attention_dim, rotary_dim)]
        )
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor, call: CallContext | None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        # widest tensor: the GEGLU projection of the feed-forward, 8 x the channels
        widest = 8 * c
        chunk = chunk_frames(t, activation_bytes_per_frame(x, widest))
        if chunk < t:
            return self._forward_chunked(x, context, call, frame_spans(t, chunk))
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        hidden = self.proj_in(self.norm(frames))  # GroupNorm per frame here, as LaVie
        hidden = hidden.permute(0, 2, 3, 1).reshape(b * t, h * w, c)
        for block in self.transformer_blocks:
            hidden = block(hidden, context, (t, h, w), call)
        hidden = hidden.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        out = self.proj_out(hidden) + frames
        return out.reshape(b, t, c, h, w).transpose(1, 2)

    def _forward_chunked(self, x: torch.Tensor, context: torch.Tensor, call: CallContext | None,
                         spans: list[tuple[int, int]]) -> torch.Tensor:
        """Same maths; per-frame stages run per chunk of frames, temporal attention on all frames.

        The hidden state lives in the temporal layout ``(B, H*W, T, C)`` between stages, so the
        temporal attention gets its ``(B*H*W, T, C)`` input as a view.
        """
        b, c, t, h, w = x.shape
        n = h * w
        ctx = context.reshape(b, t, *context.shape[1:])
        blocks = list(self.transformer_blocks)

        def rows(hid: torch.Tensor, s: int, e: int) -> torch.Tensor:  # chunk of (B, n, T, C) → (B*tc, n, C)
            return hid[:, :, s:e].transpose(1, 2).reshape(b * (e - s), n, c)

        def put(hid: torch.Tensor, s: int, e: int, val: torch.Tensor) -> None:
            hid[:, :, s:e] = val.reshape(b, e - s, n, c).transpose(1, 2)

        hid = None
        for s, e in spans:
            f = self.proj_in(self.norm(to_frames(x[:, :, s:e])))
            f = blocks[0].spatial(f.permute(0, 2, 3, 1).reshape(b * (e - s), n, c), ctx[:, s:e].flatten(0, 1))
            if hid is None:
                hid = f.new_empty((b, n, t, c))
            put(hid, s, e, f)
        out = None
        for i, block in enumerate(blocks):
            if i > 0:
                for s, e in spans:
                    put(hid, s, e, block.spatial(rows(hid, s, e), ctx[:, s:e].flatten(0, 1)))
            hid = block.temporal(hid.view(b * n, t, c), (t, h, w), call).view(b, n, t, c)
            last = i == len(blocks) - 1
            for s, e in spans:
                f = block.feed_forward(rows(hid, s, e))
                if not last:
                    put(hid, s, e, f)
                    continue
                f = self.proj_out(f.reshape(b * (e - s), h, w, c).permute(0, 3, 1, 2)) + to_frames(x[:, :, s:e])
                if out is None:
                    out = f.new_empty((b, c, t, h, w))
                out[:, :, s:e] = from_frames(f, b)
        return out


class DownBlock3D(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb: int, layers: int, groups: int, eps: float,
                 add_downsample: bool, padding: int, attention: bool, heads: int, cross_dim: int, rotary_dim: int):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock3D(in_ch if i == 0 else out_ch, out_ch, temb, groups, eps) for i in range(layers)]
        )
        self.attentions = (
            nn.ModuleList([Transformer3DModel(out_ch, heads, cross_dim, groups, rotary_dim) for _ in range(layers)])
            if attention
            else None
        )
        self.downsamplers = nn.ModuleList([Downsample3D(out_ch, padding)]) if add_downsample else None

    def forward(self, x, temb, context, call):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context, call)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock3D(nn.Module):
    def __init__(self, in_ch: int, prev_ch: int, out_ch: int, temb: int, layers: int, groups: int, eps: float,
                 add_upsample: bool, attention: bool, heads: int, cross_dim: int, rotary_dim: int):
        super().__init__()
        resnets = []
        for i in range(layers):
            skip_ch = in_ch if i == layers - 1 else out_ch
            res_in = prev_ch if i == 0 else out_ch
            resnets.append(ResnetBlock3D(res_in + skip_ch, out_ch, temb, groups, eps))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = (
            nn.ModuleList([Transformer3DModel(out_ch, heads, cross_dim, groups, rotary_dim) for _ in range(layers)])
            if attention
            else None
        )
        self.upsamplers = nn.ModuleList([Upsample3D(out_ch)]) if add_upsample else None

    def forward(self, x, skips, temb, context, call, upsample_size=None):
        for i, resnet in enumerate(self.resnets):
            x = resnet((x, skips.pop()), temb)  # the resnet concatenates (per chunk when chunked)
            if self.attentions is not None:
                x = self.attentions[i](x, context, call)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class MidBlock3D(nn.Module):
    def __init__(self, ch: int, temb: int, groups: int, eps: float, scale: float, heads: int, cross_dim: int,
                 rotary_dim: int):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock3D(ch, ch, temb, groups, eps, scale), ResnetBlock3D(ch, ch, temb, groups, eps, scale)]
        )
        self.attentions = nn.ModuleList([Transformer3DModel(ch, heads, cross_dim, groups, rotary_dim)])

    def forward(self, x, temb, context, call):
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context, call)
        return self.resnets[1](x, temb)


# ----------------------------------------------------------------------------------------------
# The UNet
# ----------------------------------------------------------------------------------------------
_SUPPORTED_BLOCKS = {"CrossAttnDownBlock3D", "DownBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"}


def _select_context(context: torch.Tensor | Mapping[str, torch.Tensor], group: str) -> torch.Tensor:
    return context[group] if isinstance(context, Mapping) else context


class LaVieUNet(nn.Module, FromConfigMixin):
    """LaVie's ``UNet3DConditionModel`` (base T2V), keyword-compatible with its config.

    ``forward(sample (B, 4, T, H, W), timestep, encoder_hidden_states)`` returns the noise prediction.
    ``encoder_hidden_states`` may be ``(B, L, D)`` (one prompt per video), ``(B, T, L, D)`` (one
    embedding per frame, for multi-prompt videos) or a dict of those keyed by ``down``, ``mid`` and
    ``up`` (a different text per block group, for FreeNoise's motion injection).

    Memory: ``frame_chunk_size`` (``None`` = automatic, ``0`` = off, ``n`` frames) and
    ``chunk_budget_mb`` control how the per-frame layers split long videos into frame chunks
    (:mod:`freelong.chunking`); the output is the same up to floating-point rounding.
    """

    frame_chunk_size: int | None = None
    chunk_budget_mb: float | None = None

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
            if bt not in _SUPPORTED_BLOCKS:
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
