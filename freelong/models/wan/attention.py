"""Methods on a diffusers video DiT: an adapter from ``WanAttnProcessor``'s signature to our processors.

Wan's self-attention (``attn1`` of every ``WanTransformerBlock``) runs over all ``T'*H'*W'`` latent
tokens, frame-major. :class:`WanSelfAttnAdapter` is a diffusers attention processor (installed with
``WanAttention.set_processor``) that computes q, k, v exactly as diffusers' ``WanAttnProcessor`` does
(projections, q/k RMS norms across heads, heads unflattened, 3D RoPE on interleaved pairs) and hands
them to one of our :class:`~freelong.attention.TemporalAttnProcessor` s with
``ctx.tokens_per_frame = H'*W'``. Cross-attention (``attn2``) keeps diffusers' processor.

:func:`attach_wan` installs a method's processor on every block, records the latent grid of each
forward (a pre-hook on the transformer), and — for methods that edit RoPE frequencies (RIFLEx,
:meth:`freelong.methods.Method.rope_frequencies`) — swaps ``transformer.rope`` for a wrapper.
The handle's ``detach()`` puts diffusers' own processor objects and rope module back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...attention.context import CallContext, TemporalAttentionContext
from ...attention.processor import TemporalAttnProcessor


@dataclass
class DiTCallState:
    """What every adapter of one transformer needs per forward: the latent token grid and the call."""

    grid: tuple[int, int, int] | None = None  # (T', H', W') after patching
    call: CallContext | None = None


def wan_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's RoPE on interleaved pairs ``(x[2i], x[2i+1])``, as ``WanAttnProcessor`` applies it."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c = cos[..., 0::2]
    s = sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out.type_as(x)


class WanSelfAttnAdapter:
    """A diffusers processor for a Wan *self*-attention that delegates the attention maths to ours."""

    def __init__(self, processor: TemporalAttnProcessor, state: DiTCallState, name: str, level: int):
        self.processor = processor
        self.state = state
        self.name = name
        self.level = level

    def qkv(self, attn: nn.Module, hidden_states: torch.Tensor, rotary_emb=None):
        """``(B, heads, N, d)`` q, k, v with RMS norms and RoPE applied (diffusers' order and dtypes)."""
        if getattr(attn, "fused_projections", False):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query = attn.norm_q(query)
        key = attn.norm_k(key)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
        if rotary_emb is not None:
            query = wan_rotary(query, *rotary_emb)
            key = wan_rotary(key, *rotary_emb)
        return query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or attn.add_k_proj is not None:
            raise ValueError(f"{self.name}: the frame-aware processor serves Wan self-attention only")
        if self.state.grid is None:
            raise RuntimeError(f"{self.name}: latent grid unknown (the transformer's pre-hook did not run)")
        t, h, w = self.state.grid
        q, k, v = self.qkv(attn, hidden_states, rotary_emb)
        call = self.state.call or CallContext()
        ctx = TemporalAttentionContext(
            frame_shape=(t, h, w),
            batch=q.shape[0],
            level=self.level,
            name=self.name,
            step_index=call.step_index,
            num_steps=call.num_steps,
            extra=call.extra,
            tokens_per_frame=h * w,
            frame_index=call.frame_index,
            timesteps=call.timesteps,
        )
        out = self.processor(q, k, v, bias=None, ctx=ctx)
        out = out.transpose(1, 2).flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))

    def __repr__(self) -> str:
        return f"WanSelfAttnAdapter({self.processor!r})"


class PerFrameCrossAttn:
    """Wan cross-attention (``attn2``) with one text context per latent frame (multi-prompt videos).

    With a ``(B, T', L, C)`` context, the tokens of latent frame ``f`` attend to context ``f``: the
    ``(B, T'*S, C)`` tokens are viewed as ``T'`` batches of one frame's ``S`` tokens and handed to
    diffusers' own processor (``inner``). A ``(B, L, C)`` context goes to ``inner`` unchanged.
    """

    def __init__(self, inner, state: DiTCallState):
        self.inner = inner
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is None or encoder_hidden_states.ndim != 4:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        b, t, length, c = encoder_hidden_states.shape
        tokens = hidden_states.shape[1] // t
        out = self.inner(attn, hidden_states.reshape(b * t, tokens, -1),
                         encoder_hidden_states.reshape(b * t, length, c), attention_mask, rotary_emb)
        return out.reshape(b, t * tokens, -1)


def per_frame_text(transformer: nn.Module, state: DiTCallState):
    """Context manager: every block's ``attn2`` takes per-frame text contexts; diffusers' processors after."""
    import contextlib

    @contextlib.contextmanager
    def swap():
        previous = [block.attn2.processor for block in transformer.blocks]
        for block, proc in zip(transformer.blocks, previous):
            block.attn2.set_processor(PerFrameCrossAttn(proc, state))
        try:
            yield
        finally:
            for block, proc in zip(transformer.blocks, previous):
                block.attn2.set_processor(proc)

    return swap()


class RopeFrequencyEdit(nn.Module):
    """``transformer.rope`` with the temporal RoPE frequencies a method asks for.

    Calls diffusers' ``WanRotaryPosEmbed`` and, where ``edit(freqs, axis="t", num_positions=T',
    native_positions=...)`` changes the temporal frequencies, rewrites the temporal channels of cos/sin
    (interleaved pairs, ``t_dim`` leading channels) for the current number of latent frames.
    """

    def __init__(self, rope: nn.Module, edit, native_positions: int):
        super().__init__()
        self.inner = rope
        self.edit = edit
        self.native_positions = native_positions

    def base_frequencies(self) -> torch.Tensor:
        """The temporal axis' frequencies ``theta^(-2j/t_dim)`` (float64, as diffusers builds them)."""
        t_dim = self.inner.t_dim
        theta = getattr(self.inner, "theta", 10000.0)
        return 1.0 / (theta ** (torch.arange(0, t_dim, 2, dtype=torch.float64)[: t_dim // 2] / t_dim))

    def forward(self, hidden_states: torch.Tensor):
        cos, sin = self.inner(hidden_states)
        p_t, p_h, p_w = self.inner.patch_size
        _, _, frames, height, width = hidden_states.shape
        ppf, tokens = frames // p_t, (height // p_h) * (width // p_w)
        base = self.base_frequencies()
        freqs = self.edit(base.clone(), axis="t", num_positions=ppf, native_positions=self.native_positions)
        if torch.equal(freqs, base):
            return cos, sin
        angles = torch.outer(torch.arange(ppf, dtype=torch.float64), freqs.to(torch.float64))
        t_cos = angles.cos().repeat_interleave(2, dim=1).to(cos.dtype).to(cos.device)
        t_sin = angles.sin().repeat_interleave(2, dim=1).to(sin.dtype).to(sin.device)
        t_dim = self.inner.t_dim
        cos, sin = cos.clone(), sin.clone()
        cos.view(1, ppf, tokens, 1, -1)[..., :t_dim] = t_cos[None, :, None, None, :]
        sin.view(1, ppf, tokens, 1, -1)[..., :t_dim] = t_sin[None, :, None, None, :]
        return cos, sin


class DiTAttachHandle:
    """Undo :func:`attach_wan`: diffusers' processors (the same objects), the rope module, the hook."""

    def __init__(self, transformer: nn.Module, previous: dict, hook, rope: nn.Module | None):
        self._transformer = transformer
        self._previous = previous
        self._hook = hook
        self._rope = rope
        self.layer_names = [k.removesuffix(".processor") for k in previous]

    def detach(self) -> None:
        if self._previous:
            modules = dict(self._transformer.named_modules())
            for key, proc in self._previous.items():
                modules[key.removesuffix(".processor")].set_processor(proc)
            self._previous = {}
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._rope is not None:
            self._transformer.rope = self._rope
            self._rope = None

    def __enter__(self) -> DiTAttachHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


def wan_self_attentions(transformer: nn.Module) -> dict[str, nn.Module]:
    """``{"blocks.i.attn1": WanAttention}``: the 3D self-attention of every block."""
    return {f"blocks.{i}.attn1": block.attn1 for i, block in enumerate(transformer.blocks)}


def attach_wan(transformer: nn.Module, method, state: DiTCallState | None = None,
               native_latent_frames: int | None = None) -> DiTAttachHandle:
    """Install ``method`` on a ``WanTransformer3DModel``; returns the handle that restores it exactly."""
    from ...methods import Method

    state = state or DiTCallState()
    proc = method.processor()
    previous = {}
    for i, (name, attn) in enumerate(wan_self_attentions(transformer).items()):
        previous[f"{name}.processor"] = attn.processor
        attn.set_processor(WanSelfAttnAdapter(proc, state, name, level=i))

    patch = tuple(transformer.config.patch_size)

    def record_grid(module, args, kwargs):
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        _, _, t, h, w = x.shape
        state.grid = (t // patch[0], h // patch[1], w // patch[2])

    hook = transformer.register_forward_pre_hook(record_grid, with_kwargs=True)
    rope = None
    edit = getattr(method, "rope_frequencies", None)  # a method, or a proxy of one (analysis capture)
    if edit is not None and getattr(edit, "__func__", None) is not Method.rope_frequencies:
        if native_latent_frames is None:
            raise ValueError(f"{method.name} edits RoPE frequencies and needs the backbone's native latent frames")
        rope = transformer.rope
        transformer.rope = RopeFrequencyEdit(rope, edit, native_latent_frames)
    return DiTAttachHandle(transformer, previous, hook, rope)


__all__ = [
    "DiTAttachHandle",
    "PerFrameCrossAttn",
    "per_frame_text",
    "DiTCallState",
    "RopeFrequencyEdit",
    "WanSelfAttnAdapter",
    "attach_wan",
    "wan_rotary",
    "wan_self_attentions",
]
