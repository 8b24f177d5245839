"""LaVie's UNet blocks: temporal positional encodings, inflated convolutions, resnets, 3D transformers, up/down blocks.

The temporal attention (:class:`LaVieTemporalAttention`) rotates the first 32 channels of each head with rotary
embeddings (interleaved pairs, theta 10000) and adds a T5-style relative position bias (32 buckets, max
distance 32); it is a :class:`freelong.attention.TemporalAttention`, so methods replace only its processor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from ...attention.context import CallContext
from ...attention.processor import TemporalAttention
from ...chunking import (
    activation_bytes_per_frame,
    cat_frames,
    chunk_frames,
    frame_spans,
    from_frames,
    map_frames,
    norm_act_frames,
    to_frames,
)


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
        h = h + self._time_bias(temb)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor

    def _time_bias(self, temb: torch.Tensor) -> torch.Tensor:
        """``(B, C, 1, 1, 1)`` from ``temb (B, D)``; ``(B, C, T, 1, 1)`` from per-frame ``temb (B, T, D)``."""
        emb = self.time_emb_proj(F.silu(temb))
        if emb.ndim == 3:
            return emb.transpose(1, 2)[:, :, :, None, None]
        return emb[:, :, None, None, None]

    def _forward_chunked(self, parts: tuple[torch.Tensor, ...], temb: torch.Tensor, chunk: int) -> torch.Tensor:
        """The same maths frame chunk by frame chunk; GroupNorm statistics still cover all frames."""
        spans = frame_spans(parts[0].shape[2], chunk)
        emb = self._time_bias(temb)
        h = None
        for s, e, hc in norm_act_frames(parts, self.norm1, F.silu, self.conv1.conv_frames, spans):
            if h is None:
                h = hc.new_empty((hc.shape[0], hc.shape[1], parts[0].shape[2], *hc.shape[3:]))
            h[:, :, s:e] = hc + (emb[:, :, s:e] if emb.shape[2] > 1 else emb)
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
SUPPORTED_BLOCKS = {"CrossAttnDownBlock3D", "DownBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"}
