"""Methods on HunyuanVideo's joint ``[video, text]`` attention (dual- and single-stream blocks), through diffusers'
processor API.

Every ``HunyuanVideoTransformerBlock.attn`` (dual stream: text projected by ``add_{q,k,v}_proj``) and every
``HunyuanVideoSingleTransformerBlock.attn`` (single stream: one projection of ``[video, text]``) runs one attention
over the ``T'*H'*W'`` video tokens followed by the text tokens, with the prompt's padding masked out of the keys.
:class:`JointVideoFirstAdapter` replaces diffusers' ``HunyuanVideoAttnProcessor2_0``: it computes q, k, v exactly as
that processor does (projections, RMS norms, RoPE on the video part) and hands the video rows to one of our
processors with every kernel also attending to the (unmasked) text keys
(:func:`freelong.models.cogvideox.attention.joint_attention`); the text rows attend to everything, as diffusers.
"""

from __future__ import annotations

import torch
from torch import nn

from ...attention.context import CallContext, TemporalAttentionContext
from ..cogvideox.attention import joint_attention
from ..wan.attention import AdapterSlot, DiTAdapter, DiTCallState


class JointVideoFirstAdapter(DiTAdapter):
    """A diffusers processor for a HunyuanVideo block's ``attn`` that delegates the video rows' maths to ours."""

    @staticmethod
    def qkv(attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, image_rotary_emb=None):
        """``(B, S+L, heads, d)`` q, k, v over ``[video, text]`` as ``HunyuanVideoAttnProcessor2_0`` computes them."""
        from diffusers.models.embeddings import apply_rotary_emb

        text_len = encoder_hidden_states.shape[1]
        single = attn.add_q_proj is None
        x = torch.cat([hidden_states, encoder_hidden_states], dim=1) if single else hidden_states
        query, key, value = (proj(x).unflatten(2, (attn.heads, -1)) for proj in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            if single:
                query = torch.cat([apply_rotary_emb(query[:, :-text_len], image_rotary_emb, sequence_dim=1),
                                   query[:, -text_len:]], dim=1)
                key = torch.cat([apply_rotary_emb(key[:, :-text_len], image_rotary_emb, sequence_dim=1),
                                 key[:, -text_len:]], dim=1)
            else:
                query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
                key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        if not single:
            eq, ek, ev = (proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
                          for proj in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
            if attn.norm_added_q is not None:
                eq = attn.norm_added_q(eq)
            if attn.norm_added_k is not None:
                ek = attn.norm_added_k(ek)
            query, key, value = (torch.cat([a, b], dim=1) for a, b in ((query, eq), (key, ek), (value, ev)))
        return query, key, value

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb=None):
        if encoder_hidden_states is None:
            raise ValueError(f"{self.name}: the frame-aware processor serves HunyuanVideo's joint attention only")
        if self._parallel_config is not None:
            raise NotImplementedError(f"{self.name}: context parallelism is not supported by the joint adapter")
        if self.state.grid is None:
            raise RuntimeError(f"{self.name}: latent grid unknown (the transformer's pre-hook did not run)")
        text_len = encoder_hidden_states.shape[1]
        q, k, v = (z.transpose(1, 2) for z in self.qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb))
        n = q.shape[2] - text_len
        text_mask = None
        if attention_mask is not None:
            full = attention_mask.reshape(attention_mask.shape[0], -1).bool()  # (B, 1, 1, S+L) key mask
            if full.device.type != "meta" and not bool(full[:, :n].all()):
                raise ValueError(f"{self.name}: the attention mask may mask text keys only")
            text_mask = full[:, n:]
        t, h, w = self.state.grid
        call = self.state.call or CallContext()
        ctx = TemporalAttentionContext(frame_shape=(t, h, w), batch=q.shape[0], level=self.level, name=self.name,
                                       step_index=call.step_index, num_steps=call.num_steps, extra=call.extra,
                                       tokens_per_frame=h * w)
        out_v, out_t = joint_attention(self.processor, q[:, :, :n], k[:, :, :n], v[:, :, :n], q[:, :, n:],
                                       k[:, :, n:], v[:, :, n:], ctx, text_mask)
        video = out_v.transpose(1, 2).flatten(2, 3).to(q.dtype)
        text = out_t.transpose(1, 2).flatten(2, 3).to(q.dtype)
        if getattr(attn, "to_out", None) is not None:
            video = attn.to_out[1](attn.to_out[0](video))
        if getattr(attn, "to_add_out", None) is not None:
            text = attn.to_add_out(text)
        return video, text

    def __repr__(self) -> str:
        return f"JointVideoFirstAdapter({self.processor!r})"


class HunyuanAttnSlot(AdapterSlot):
    """One HunyuanVideo block's ``attn`` as an attachable layer (ours wrapped in the adapter; anything else as is)."""

    adapter = JointVideoFirstAdapter


def hunyuan_attention_slots(transformer: nn.Module, state: DiTCallState) -> dict[str, HunyuanAttnSlot]:
    """The joint attention of every dual-stream then single-stream block (level = index over both); the text-only
    token refiner keeps diffusers' processor."""
    names = [f"transformer_blocks.{i}.attn" for i in range(len(transformer.transformer_blocks))]
    names += [f"single_transformer_blocks.{i}.attn" for i in range(len(transformer.single_transformer_blocks))]
    return {name: HunyuanAttnSlot(name, transformer.get_submodule(name), state, level)
            for level, name in enumerate(names)}


class HunyuanRopeEdit(nn.Module):
    """``transformer.rope`` with the temporal RoPE frequencies a method asks for (RIFLEx; as the official
    ``hunyuanvideo.py`` replaces axis 0 of ``HunyuanVideoRotaryPosEmbed``): calls diffusers' module and rewrites the
    first ``rope_dim[0]`` channels of cos/sin, in fp32 as diffusers' ``get_1d_rotary_pos_embed``."""

    def __init__(self, rope: nn.Module, edit, native_positions: int):
        super().__init__()
        self.inner = rope
        self.edit = edit
        self.native_positions = native_positions

    def forward(self, hidden_states: torch.Tensor):
        cos, sin = self.inner(hidden_states)
        dim_t = int(self.inner.rope_dim[0])
        theta = float(self.inner.theta)
        _, _, frames, height, width = hidden_states.shape
        t = frames // self.inner.patch_size_t
        tokens = (height // self.inner.patch_size) * (width // self.inner.patch_size)
        base = 1.0 / (theta ** (torch.arange(0, dim_t, 2)[: dim_t // 2].float() / dim_t))
        freqs = self.edit(base.clone(), axis="t", num_positions=t, native_positions=self.native_positions)
        if torch.equal(freqs, base):
            return cos, sin
        angles = torch.outer(torch.arange(t, dtype=torch.float32), freqs.float())
        t_cos = angles.cos().repeat_interleave(2, dim=1).to(cos)
        t_sin = angles.sin().repeat_interleave(2, dim=1).to(sin)
        cos, sin = cos.clone(), sin.clone()
        cos.view(t, tokens, -1)[..., :dim_t] = t_cos[:, None]
        sin.view(t, tokens, -1)[..., :dim_t] = t_sin[:, None]
        return cos, sin


__all__ = ["HunyuanAttnSlot", "HunyuanRopeEdit", "JointVideoFirstAdapter", "hunyuan_attention_slots"]
