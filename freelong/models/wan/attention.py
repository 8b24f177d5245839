"""Methods on a diffusers video DiT: an adapter from ``WanAttnProcessor``'s signature to our processors.

Wan's self-attention (``attn1`` of every ``WanTransformerBlock``) runs over all ``T'*H'*W'`` latent
tokens, frame-major. :class:`WanSelfAttnAdapter` is a diffusers attention processor (installed with
``WanAttention.set_processor``) that computes q, k, v exactly as diffusers' ``WanAttnProcessor`` does
(projections, q/k RMS norms across heads, heads unflattened, 3D RoPE on interleaved pairs) and hands
them to one of our :class:`~freelong.attention.TemporalAttnProcessor` s with
``ctx.tokens_per_frame = H'*W'``. Cross-attention (``attn2``) keeps diffusers' processor.

The Wan backbone installs methods through these pieces (:meth:`freelong.models.base.Backbone.attach`): every
block's self-attention as a :class:`WanSelfAttnSlot`, a pre-hook recording the latent grid of each forward
(:meth:`~freelong.models.dit.VideoDiTBackbone.prepare_attention`), and, for methods that edit RoPE frequencies
(RIFLEx), :class:`RopeFrequencyEdit` in place of ``transformer.rope``. Detaching puts diffusers' own processor
objects and rope module back.
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


def wan_temporal_frequencies(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Wan's temporal RoPE frequencies ``theta^(-2j/t_dim)``, ``t_dim = d - 4*(d//6)`` (float64, as diffusers')."""
    t_dim = head_dim - 4 * (head_dim // 6)
    return 1.0 / (theta ** (torch.arange(0, t_dim, 2, dtype=torch.float64)[: t_dim // 2] / t_dim))


class WanFrameRope:
    """:class:`~freelong.attention.context.FrameRope` of one Wan self-attention call.

    Holds the un-rotated ``(B, N, heads, d)`` q and k and diffusers' cos/sin tables; ``q_at(p)`` rotates the
    temporal channels (the leading ``t_dim``) by ``p[f] * theta_j`` for the tokens of frame ``f`` and the spatial
    channels as diffusers does, returning ``(B, heads, N, d)`` like the q handed to the processor.
    """

    def __init__(self, q: torch.Tensor, k: torch.Tensor, rotary_emb, grid: tuple[int, int, int]):
        self._q, self._k = q, k
        self._cos, self._sin = rotary_emb
        self.grid = grid
        self.freqs = wan_temporal_frequencies(q.shape[-1])

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin tables ``(1, N, 1, d)`` with the temporal channels at ``positions`` (one per frame)."""
        t, h, w = self.grid
        if positions.shape != (t,):
            raise ValueError(f"need one temporal position per latent frame ({t}), got shape {tuple(positions.shape)}")
        t_dim = 2 * len(self.freqs)
        angles = torch.outer(positions.to(torch.float64).cpu(), self.freqs).repeat_interleave(2, dim=1)
        cos, sin = self._cos.clone(), self._sin.clone()
        for table, fn in ((cos, torch.cos), (sin, torch.sin)):
            vals = fn(angles).to(device=table.device, dtype=table.dtype)  # (T, t_dim)
            table.view(table.shape[0], t, h * w, *table.shape[2:-1], -1)[..., :t_dim] = vals[None, :, None, None]
        return cos, sin

    def q_at(self, positions: torch.Tensor) -> torch.Tensor:
        return wan_rotary(self._q, *self.tables(positions)).transpose(1, 2)

    def k_at(self, positions: torch.Tensor) -> torch.Tensor:
        return wan_rotary(self._k, *self.tables(positions)).transpose(1, 2)


class DiTAdapter:
    """A diffusers attention processor that hands one DiT attention's maths to one of our processors.

    Each family's adapter computes q/k/v as diffusers' own processor does; this base holds what they share.
    """

    # diffusers' processor attributes: ``enable_parallelism`` / ``set_attention_backend`` set them on processors
    # that have them; our slot copies them from the processor it replaces.
    _attention_backend = None
    _parallel_config = None

    def __init__(self, processor: TemporalAttnProcessor, state: DiTCallState, name: str, level: int):
        self.processor = processor
        self.state = state
        self.name = name
        self.level = level


class WanSelfAttnAdapter(DiTAdapter):
    """A diffusers processor for a Wan *self*-attention that delegates the attention maths to ours.

    Under diffusers' context parallelism (:mod:`freelong.parallel`) it carries the ``_parallel_config`` of the
    processor it replaced (or gets it from ``enable_parallelism``), receives this rank's ``S/N`` tokens, and
    runs our processor on every token for ``heads/N`` heads (Ulysses all-to-all before and after). Handed a
    token shard without that configuration it refuses to run instead of attending within the shard.
    """

    def qkv(self, attn: nn.Module, hidden_states: torch.Tensor, rotary_emb=None, keep_raw: bool = False):
        """``(B, heads, N, d)`` q, k, v with RMS norms and RoPE applied (diffusers' order and dtypes).

        ``keep_raw``: also return a :class:`WanFrameRope` over the un-rotated q/k (or None without RoPE)."""
        if getattr(attn, "fused_projections", False):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query = attn.norm_q(query)
        key = attn.norm_k(key)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
        raw = WanFrameRope(query, key, rotary_emb, self.state.grid) if keep_raw and rotary_emb is not None else None
        if rotary_emb is not None:
            query = wan_rotary(query, *rotary_emb)
            key = wan_rotary(key, *rotary_emb)
        if keep_raw:
            return query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), raw
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
        group = self.parallel_group(hidden_states.shape[1], t * h * w)
        rope = None
        if group is not None and type(self.processor) is TemporalAttnProcessor:
            # plain global attention (direct, RIFLEx): diffusers' own parallel attention, as WanAttnProcessor
            from diffusers.models.attention_dispatch import dispatch_attention_fn

            q, k, v = self.qkv(attn, hidden_states, rotary_emb)
            out = dispatch_attention_fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                        backend=self._attention_backend, parallel_config=self._parallel_config)
            return attn.to_out[1](attn.to_out[0](out.flatten(2, 3).type_as(q)))
        if group is not None:  # Ulysses: every token of the video for this rank's heads
            q, k, v, rope = self.exchange(attn, hidden_states, rotary_emb, group)
        elif getattr(self.processor, "needs_rope", False):
            q, k, v, rope = self.qkv(attn, hidden_states, rotary_emb, keep_raw=True)
        else:
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
            rope=rope,
            frame_index=call.frame_index,
            timesteps=call.timesteps,
        )
        out = self.processor(q, k, v, bias=None, ctx=ctx).transpose(1, 2)
        if group is not None:
            from ...parallel import heads_to_seq

            out = heads_to_seq(out, group)
        out = out.flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))

    def exchange(self, attn: nn.Module, hidden_states: torch.Tensor, rotary_emb, group):
        """Context parallelism (Ulysses): ``(B, heads/N, S, d)`` q, k, v of every token for this rank's heads.

        A processor that re-encodes positions (``needs_rope``, FreeLOC) gets the un-rotated q/k of every token and
        the whole RoPE table (an all-gather of this rank's rows) in its :class:`WanFrameRope`.
        """
        from ...parallel import gather_seq, seq_to_heads

        if not getattr(self.processor, "needs_rope", False) or rotary_emb is None:
            q, k, v = self.qkv(attn, hidden_states, rotary_emb)
            return (*(seq_to_heads(x.transpose(1, 2), group).transpose(1, 2) for x in (q, k, v)), None)
        q, k, v = (seq_to_heads(x.transpose(1, 2), group) for x in self.qkv(attn, hidden_states, None))
        tables = tuple(gather_seq(x, group) for x in rotary_emb)
        rope = WanFrameRope(q, k, tables, self.state.grid)
        q, k = wan_rotary(q, *tables), wan_rotary(k, *tables)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), rope

    def parallel_group(self, tokens: int, grid_tokens: int):
        """The Ulysses group when this call holds a context-parallel shard of the tokens, else None.

        A shard (fewer tokens than the grid) without ``_parallel_config`` is refused: attending within the shard
        would be silently wrong.
        """
        if tokens == grid_tokens:
            return None
        if self._parallel_config is None or getattr(self._parallel_config, "context_parallel_config", None) is None:
            raise RuntimeError(f"{self.name}: got {tokens} of the {grid_tokens} latent tokens (the model is split "
                               f"over processes by context parallelism) but this processor has no _parallel_config; "
                               f"attach methods through Backbone.attach after freelong.parallel."
                               f"enable_context_parallel")
        from ...parallel import ulysses_group

        group = ulysses_group(self._parallel_config)
        if tokens * torch.distributed.get_world_size(group) != grid_tokens:
            raise RuntimeError(f"{self.name}: {tokens} local tokens do not make a 1/"
                               f"{torch.distributed.get_world_size(group)} share of the {grid_tokens} latent tokens")
        return group

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
        if self.state.grid is not None and hidden_states.shape[1] != t * self.state.grid[1] * self.state.grid[2]:
            return self.shard(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        tokens = hidden_states.shape[1] // t
        out = self.inner(attn, hidden_states.reshape(b * t, tokens, -1),
                         encoder_hidden_states.reshape(b * t, length, c), attention_mask, rotary_emb)
        return out.reshape(b, t * tokens, -1)

    def shard(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, rotary_emb=None):
        """Context parallelism: this rank's contiguous share of the frame-major tokens, frames cut at its edges;
        each frame's piece attends to that frame's context."""
        from ...parallel import rank, world_size

        _, h, w = self.state.grid
        rows, per_frame = hidden_states.shape[1], h * w
        if rows * world_size() != encoder_hidden_states.shape[1] * per_frame:
            raise RuntimeError(f"per-frame text: {rows} tokens are neither every latent token nor a 1/{world_size()} "
                               f"share")
        start = rows * rank()
        pieces = []
        for frame in range(start // per_frame, (start + rows - 1) // per_frame + 1):
            lo, hi = max(start, frame * per_frame) - start, min(start + rows, (frame + 1) * per_frame) - start
            pieces.append(self.inner(attn, hidden_states[:, lo:hi], encoder_hidden_states[:, frame], attention_mask,
                                     rotary_emb))
        return torch.cat(pieces, dim=1)


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
        # Under context parallelism diffusers hands this rank's contiguous share of the frame-major rows.
        rows = cos.shape[1]
        offset = 0
        if rows != ppf * tokens:
            from ...parallel import rank, world_size

            if rows * world_size() != ppf * tokens:
                raise RuntimeError(f"rope: {rows} rows are neither all {ppf * tokens} latent tokens nor a 1/"
                                   f"{world_size()} share")
            offset = rows * rank()
        frame = torch.div(torch.arange(offset, offset + rows, device=cos.device), tokens, rounding_mode="floor")
        cos[0, :, 0, :t_dim] = t_cos[frame]
        sin[0, :, 0, :t_dim] = t_sin[frame]
        return cos, sin


class AdapterSlot:
    """One attention module of a diffusers DiT as an attachable layer: ``processor`` / ``set_processor``.

    Setting one of our processors installs the family's ``adapter`` around it (a diffusers processor that
    computes q/k/v as diffusers does and hands them to ours); setting anything else (diffusers' own processor,
    when a handle detaches) puts that object back as it is. Each DiT family names its adapter in a subclass.
    """

    adapter: type

    def __init__(self, name: str, attn: nn.Module, state: DiTCallState, level: int):
        self.layer_name = name
        self.attn = attn
        self.state = state
        self.level = level

    @property
    def processor(self):
        current = self.attn.processor
        return current.processor if isinstance(current, self.adapter) else current

    def set_processor(self, processor) -> None:
        if isinstance(processor, TemporalAttnProcessor):
            processor = self.wrap(processor, self.attn.processor)
        self.attn.set_processor(processor)

    def wrap(self, processor: TemporalAttnProcessor, replaced):
        """Our processor inside the family's adapter, in place of ``replaced``."""
        return self.adapter(processor, self.state, self.layer_name, level=self.level)


class WanSelfAttnSlot(AdapterSlot):
    """One Wan self-attention (``blocks.i.attn1``), our processors inside a :class:`WanSelfAttnAdapter`."""

    adapter = WanSelfAttnAdapter

    def wrap(self, processor: TemporalAttnProcessor, replaced) -> WanSelfAttnAdapter:
        wrapped = super().wrap(processor, replaced)
        for name in ("_attention_backend", "_parallel_config"):  # context parallelism reaches ours too
            if getattr(replaced, name, None) is not None:
                setattr(wrapped, name, getattr(replaced, name))
        return wrapped


def wan_self_attentions(transformer: nn.Module) -> dict[str, nn.Module]:
    """``{"blocks.i.attn1": WanAttention}``: the 3D self-attention of every block."""
    return {f"blocks.{i}.attn1": block.attn1 for i, block in enumerate(transformer.blocks)}


def wan_attention_slots(transformer: nn.Module, state: DiTCallState) -> dict[str, WanSelfAttnSlot]:
    """Every block's self-attention of the live transformer as a :class:`WanSelfAttnSlot` (level = block index)."""
    return {name: WanSelfAttnSlot(name, attn, state, level=i)
            for i, (name, attn) in enumerate(wan_self_attentions(transformer).items())}


__all__ = [
    "AdapterSlot",
    "DiTAdapter",
    "WanSelfAttnSlot",
    "wan_attention_slots",
    "PerFrameCrossAttn",
    "per_frame_text",
    "DiTCallState",
    "RopeFrequencyEdit",
    "WanFrameRope",
    "WanSelfAttnAdapter",
    "wan_rotary",
    "wan_self_attentions",
    "wan_temporal_frequencies",
]
