"""Methods on CogVideoX's joint ``[text, video]`` self-attention, through diffusers' processor API.

Every ``CogVideoXBlock.attn1`` runs one attention over the ``L`` text tokens followed by the ``T'*H'*W'``
video tokens (frame-major). :class:`JointTextFirstAdapter` replaces diffusers' ``CogVideoXAttnProcessor2_0``:
it computes q, k, v exactly as that processor does (projections, per-head LayerNorms, RoPE on the video part
only) and splits them:

- the **video** queries go to one of our :class:`~freelong.attention.TemporalAttnProcessor` s with the video keys
  (``ctx.tokens_per_frame = H'*W'``) while every kernel also appends all text keys
  (:func:`freelong.attention.kernels.joint_keys`): windows stay among video tokens, every text token stays
  visible to every video query, and a spectral blend sees the video outputs only;
- the **text** queries attend to everything, exactly as diffusers does (a method never changes their rows).

:class:`CogVideoXAttnSlot` makes each block's ``attn1`` attachable (``processor``/``set_processor``); the
backbone's pre-hook records each forward's token grid for the adapters
(:meth:`~freelong.models.dit.VideoDiTBackbone.prepare_attention`).
"""

from __future__ import annotations

import torch
from torch import nn

from ...attention.context import CallContext, TemporalAttentionContext
from ...attention.kernels import attention, joint_keys
from ...attention.processor import TemporalAttnProcessor
from ..wan.attention import AdapterSlot, DiTAdapter, DiTCallState


def joint_attention(processor: TemporalAttnProcessor, q_v, k_v, v_v, q_t, k_t, v_t, ctx: TemporalAttentionContext,
                    text_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(video rows, text rows)`` of a joint attention with ``processor`` on the video part.

    Video rows: ``processor(q_v, k_v, v_v)`` with every kernel also attending to the text keys. Text rows: plain
    attention of the text queries over all video and (unmasked) text keys. All ``(B, heads, N, d)``.
    """
    with joint_keys(k_t, v_t, text_mask):
        out_v = processor(q_v, k_v, v_v, bias=None, ctx=ctx)
        out_t = attention(q_t, k_v, v_v)  # + the joint text keys, appended by the kernel
    return out_v, out_t


class JointTextFirstAdapter(DiTAdapter):
    """A diffusers processor for a CogVideoX ``attn1`` that delegates the video rows' maths to ours."""

    def qkv(self, attn: nn.Module, hidden_states: torch.Tensor, text_len: int, image_rotary_emb=None):
        """``(B, heads, L+N, d)`` q, k, v as ``CogVideoXAttnProcessor2_0`` computes them (RoPE on the video part)."""
        from diffusers.models.embeddings import apply_rotary_emb

        b = hidden_states.shape[0]
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key, value = (x.view(b, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)
                             for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            query[:, :, text_len:] = apply_rotary_emb(query[:, :, text_len:], image_rotary_emb)
            key[:, :, text_len:] = apply_rotary_emb(key[:, :, text_len:], image_rotary_emb)
        return query, key, value

    def context(self, q_v: torch.Tensor) -> TemporalAttentionContext:
        if self.state.grid is None:
            raise RuntimeError(f"{self.name}: latent grid unknown (the transformer's pre-hook did not run)")
        t, h, w = self.state.grid
        call = self.state.call or CallContext()
        return TemporalAttentionContext(frame_shape=(t, h, w), batch=q_v.shape[0], level=self.level, name=self.name,
                                        step_index=call.step_index, num_steps=call.num_steps, extra=call.extra,
                                        tokens_per_frame=h * w)

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb=None):
        if attention_mask is not None or encoder_hidden_states is None:
            raise ValueError(f"{self.name}: the frame-aware processor serves CogVideoX's joint self-attention only")
        text_len = encoder_hidden_states.shape[1]
        x = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        q, k, v = self.qkv(attn, x, text_len, image_rotary_emb)
        q_v, k_v, v_v = (z[:, :, text_len:] for z in (q, k, v))
        q_t, k_t, v_t = (z[:, :, :text_len] for z in (q, k, v))
        out_v, out_t = joint_attention(self.processor, q_v, k_v, v_v, q_t, k_t, v_t, self.context(q_v))
        out = torch.cat([out_t, out_v.type_as(out_t)], dim=2).transpose(1, 2).flatten(2, 3)
        out = attn.to_out[1](attn.to_out[0](out))
        return out[:, text_len:], out[:, :text_len]

    def __repr__(self) -> str:
        return f"JointTextFirstAdapter({self.processor!r})"


class CogVideoXAttnSlot(AdapterSlot):
    """One CogVideoX block's ``attn1`` as an attachable layer (ours wrapped in the adapter; anything else as is)."""

    adapter = JointTextFirstAdapter


def cogvideox_attention_slots(transformer: nn.Module, state: DiTCallState) -> dict[str, CogVideoXAttnSlot]:
    """``{"transformer_blocks.i.attn1": slot}`` of the live transformer (level = block index)."""
    return {f"transformer_blocks.{i}.attn1": CogVideoXAttnSlot(f"transformer_blocks.{i}.attn1", block.attn1, state, i)
            for i, block in enumerate(transformer.transformer_blocks)}


__all__ = ["CogVideoXAttnSlot", "JointTextFirstAdapter", "cogvideox_attention_slots", "joint_attention"]
