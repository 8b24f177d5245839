"""Our temporal-attention processors inside diffusers' own video UNets, through diffusers' processor API.

diffusers' motion modules (AnimateDiff's ``AnimateDiffTransformer3D``, ModelScope's
``TransformerTemporalModel``) are ``BasicTransformerBlock``s whose ``attn1``/``attn2`` attend over
frames. Each such ``Attention`` becomes one :class:`TemporalSlot`: installing one of our processors
sets a :class:`TemporalProcessorAdapter` (a diffusers ``AttnProcessor``-compatible callable) that
projects q/k/v with the layer's own weights and hands them to our processor; restoring puts
diffusers' processor object back (the very same object). Spatial and cross attention are never touched.

Positions: AnimateDiff's blocks add a sinusoidal table to the normed hidden states before *both*
attentions (``pos_embed``). While any of a block's attentions runs one of our processors, the block's
``pos_embed`` is set aside and the processor receives the table as ``ctx.positions``
(:class:`LinearPositions`), so global attention adds absolute positions and windowed branches
window-local ones. Beyond the table's length (32 for the v1-5-2/v1-5-3 adapters) the table is
extended by its own formula (:class:`SinusoidalTable`; see the position policy in docs/models.md).
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...attention.context import CallContext, TemporalAttentionContext
from ...attention.kernels import global_attention
from ...attention.maps import global_attention_probs
from ...attention.processor import TemporalAttnProcessor

log = logging.getLogger("freelong")

TEMPORAL_MODULES = ("AnimateDiffTransformer3D", "TransformerTemporalModel")
_CALL: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("freelong_diffusers_call", default=None)


@contextmanager
def calling(call: CallContext | None) -> Iterator[None]:
    """Make ``call`` (step index, ...) visible to the adapters during one UNet forward."""
    token = _CALL.set(call)
    try:
        yield
    finally:
        _CALL.reset(token)


def sinusoid(idx: torch.Tensor, dim: int) -> torch.Tensor:
    """diffusers' ``SinusoidalPositionalEmbedding`` formula at positions ``idx``: ``(n, dim)`` fp32."""
    pos = idx.to(torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=idx.device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(len(idx), dim, device=idx.device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class SinusoidalTable:
    """Rows of a block's stored table ``pe (1, L, C)``; positions ``>= L`` by the same formula.

    Within the table the stored rows are used as they are (so results equal diffusers' to the bit
    where diffusers runs at all); beyond it, :func:`sinusoid` continues it (logged once per table).
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self._warned = False

    @property
    def max_len(self) -> int:
        return int(self.module.pe.shape[1])

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        pe = self.module.pe[0]
        n = int(idx.max()) + 1 if len(idx) else 0
        if n <= self.max_len:
            return pe[idx.to(pe.device)]
        if not self._warned:
            log.info("frame positions up to %d exceed the motion module's %d-entry table: extended by its "
                     "sinusoidal formula (positions >= %d were never trained)", n - 1, self.max_len, self.max_len)
            self._warned = True
        ext = torch.cat([pe, sinusoid(torch.arange(self.max_len, n, device=pe.device), pe.shape[1]).to(pe.dtype)])
        return ext[idx.to(pe.device)]


class LinearPositions:
    """:class:`~freelong.attention.FramePositions` of one attention: ``W_q p, W_k p, W_v p`` per head.

    The projections are linear, so ``to_q(h + p) = to_q(h) + W_q p`` (a projection bias belongs to
    ``to_q(h)``, not to the offset).
    """

    def __init__(self, table: SinusoidalTable, attn: nn.Module):
        self.table = table
        self.attn = attn

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn = self.attn
        w = attn.to_q.weight
        p = self.table(idx).to(device=w.device, dtype=w.dtype)
        heads = attn.heads

        def proj(lin: nn.Linear) -> torch.Tensor:
            return F.linear(p, lin.weight).view(len(idx), heads, -1).transpose(0, 1)

        return proj(attn.to_q), proj(attn.to_k), proj(attn.to_v)


class DiffusersNativeProcessor(TemporalAttnProcessor):
    """Stands for diffusers' own processor of a slot (what ``slot.processor`` returns when none of ours is set).

    Installing it restores ``original`` on the attention. Called as one of ours (e.g. wrapped by the
    attention-map analysis) it is what diffusers computes: global attention at absolute positions.
    """

    def __init__(self, original: Any):
        self.original = original

    def __call__(self, q, k, v, *, bias, ctx):
        return global_attention(q, k, v, bias, ctx.positions)

    def attention_probs(self, q, k, bias, ctx) -> dict[str, torch.Tensor]:
        return {"attn": global_attention_probs(q, k, bias, ctx.tokens_per_frame, ctx.positions)}

    def __repr__(self) -> str:
        return f"DiffusersNativeProcessor({type(self.original).__name__})"


class TemporalModuleState:
    """Per temporal transformer: the video shape of the current call (read by a forward pre-hook)."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.frame_shape: tuple[int, int, int] | None = None
        self.batch = 1
        self._hook = None
        self._users = 0

    def _pre_hook(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        num_frames = kwargs.get("num_frames", args[4] if len(args) > 4 else 1)
        bt, _, h, w = hidden.shape
        self.frame_shape = (int(num_frames), int(h), int(w))
        self.batch = bt // int(num_frames)

    def acquire(self) -> None:
        if self._users == 0:
            self._hook = self.module.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        self._users += 1

    def release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._hook is not None:
            self._hook.remove()
            self._hook = None


class BlockState:
    """Per motion ``BasicTransformerBlock``: its ``pos_embed`` is set aside while one of ours runs in it."""

    def __init__(self, block: nn.Module):
        self.block = block
        self.pos_embed = getattr(block, "pos_embed", None)
        self.table = SinusoidalTable(self.pos_embed) if self.pos_embed is not None else None
        self._users = 0

    def acquire(self) -> None:
        if self._users == 0 and self.pos_embed is not None:
            self.block.pos_embed = None
        self._users += 1

    def release(self) -> None:
        self._users -= 1
        if self._users == 0 and self.pos_embed is not None:
            self.block.pos_embed = self.pos_embed


class TemporalSlot:
    """One temporal self-attention of a diffusers video UNet, attachable like our ``TemporalAttention``."""

    def __init__(self, name: str, attn: nn.Module, block: BlockState, module: TemporalModuleState, level: int):
        self.layer_name = name
        self.attn = attn
        self.block = block
        self.module = module
        self.level = level
        self.positions = LinearPositions(block.table, attn) if block.table is not None else None

    @property
    def heads(self) -> int:
        return int(self.attn.heads)

    @property
    def processor(self) -> TemporalAttnProcessor:
        current = self.attn.processor
        if isinstance(current, TemporalProcessorAdapter):
            return current.processor
        return DiffusersNativeProcessor(current)

    def set_processor(self, processor: TemporalAttnProcessor) -> None:
        ours = isinstance(self.attn.processor, TemporalProcessorAdapter)
        if isinstance(processor, DiffusersNativeProcessor):
            self.attn.set_processor(processor.original)
            if ours:
                self.block.release()
                self.module.release()
            return
        self.attn.set_processor(TemporalProcessorAdapter(processor, self))
        if not ours:
            self.block.acquire()
            self.module.acquire()

    def __repr__(self) -> str:
        return f"TemporalSlot({self.layer_name}, level={self.level}, processor={self.processor!r})"


class TemporalProcessorAdapter:
    """A diffusers attention processor that runs one of our temporal processors.

    ``hidden_states``: ``(B*H*W, T, C)`` (the block's normed states, without positions); q/k/v are
    projected with the attention's own ``to_q``/``to_k``/``to_v`` and reshaped to our
    ``(B*H*W, heads, T, d)``; the output goes through ``to_out`` as diffusers' ``AttnProcessor2_0``.
    """

    def __init__(self, processor: TemporalAttnProcessor, slot: TemporalSlot):
        attn = slot.attn
        extras = [n for n in ("spatial_norm", "group_norm", "norm_q", "norm_k") if getattr(attn, n, None) is not None]
        if extras:  # AttnProcessor2_0 steps this adapter does not reproduce
            raise NotImplementedError(f"{slot.layer_name}: temporal attention with {', '.join(extras)} is unsupported")
        self.processor = processor
        self.slot = slot

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError(f"{self.slot.layer_name}: temporal self-attention got a context or a mask")
        rows, frames, _ = hidden_states.shape
        heads = attn.heads
        q = attn.to_q(hidden_states).view(rows, frames, heads, -1).transpose(1, 2)
        k = attn.to_k(hidden_states).view(rows, frames, heads, -1).transpose(1, 2)
        v = attn.to_v(hidden_states).view(rows, frames, heads, -1).transpose(1, 2)
        state = self.slot.module
        frame_shape = state.frame_shape
        if frame_shape is None or frame_shape[0] != frames or rows != state.batch * frame_shape[1] * frame_shape[2]:
            raise RuntimeError(f"{self.slot.layer_name}: called outside its temporal transformer's forward")
        call = _CALL.get() or CallContext()
        ctx = TemporalAttentionContext(
            frame_shape=frame_shape, batch=state.batch, level=self.slot.level, name=self.slot.layer_name,
            step_index=call.step_index, num_steps=call.num_steps, extra=call.extra, positions=self.slot.positions,
            frame_index=call.frame_index, timesteps=call.timesteps,
        )
        out = self.processor(q, k, v, bias=None, ctx=ctx)
        out = out.transpose(1, 2).reshape(rows, frames, -1).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def block_level(name: str, num_levels: int) -> int:
    """UNet resolution level of a module path (0 = highest resolution, as our UNets count).

    ``down_blocks.i`` run at level ``i``, ``up_blocks.j`` at ``num_levels - 1 - j``, the mid block at
    the deepest level, ModelScope's ``transformer_in`` (right after ``conv_in``) at level 0.
    """
    parts = name.split(".")
    if parts[0] == "down_blocks":
        return int(parts[1])
    if parts[0] == "up_blocks":
        return num_levels - 1 - int(parts[1])
    if parts[0] == "mid_block":
        return num_levels - 1
    return 0


def diffusers_temporal_level(name: str, module: nn.Module) -> str | None:
    """``"L<level>"`` for a diffusers temporal self-attention module path (``model.`` prefix allowed), else None.

    Module paths only carry the level through :func:`block_level`, which needs the level count; the
    processor installed on a slot knows it, so this reads it from there (None while none of ours is set).
    """
    proc = getattr(module, "processor", None)
    if isinstance(proc, TemporalProcessorAdapter):
        return f"L{proc.slot.level}"
    return None


def find_temporal_slots(model: nn.Module, num_levels: int) -> tuple[dict[str, TemporalSlot], dict[str, nn.Module]]:
    """Every temporal self-attention (attn1/attn2 of each motion block) and every motion block, by module path."""
    slots: dict[str, TemporalSlot] = {}
    blocks: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if type(module).__name__ not in TEMPORAL_MODULES:
            continue
        state = TemporalModuleState(module)
        for i, block in enumerate(module.transformer_blocks):
            bname = f"{name}.transformer_blocks.{i}"
            blocks[bname] = block
            bstate = BlockState(block)
            for which in ("attn1", "attn2"):
                attn = getattr(block, which, None)
                if attn is None:
                    continue
                if getattr(attn, "is_cross_attention", False):
                    continue  # a text cross-attention is not temporal
                slots[f"{bname}.{which}"] = TemporalSlot(f"{bname}.{which}", attn, bstate, state,
                                                         block_level(name, num_levels))
    return slots, blocks


__all__ = [
    "DiffusersNativeProcessor",
    "LinearPositions",
    "SinusoidalTable",
    "TemporalProcessorAdapter",
    "TemporalSlot",
    "block_level",
    "diffusers_temporal_level",
    "calling",
    "find_temporal_slots",
    "sinusoid",
]
