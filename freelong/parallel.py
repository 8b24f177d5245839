"""One video over several processes: diffusers' context parallelism (Ulysses) with every method.

A DiT's self-attention over ``T'*H'*W'`` tokens is split over ``N`` processes (one per GPU) by diffusers'
context parallelism: ``transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=N))``
shards the token sequence at the first block and the RoPE tables, every attention processor that carries
the ``_parallel_config`` does its attention over the whole sequence, and the output is gathered after
``proj_out``. Every rank runs the same sampling loop on the same (full) latents.

Our methods need all frames at once (FreeLong's 3D FFT blend, FreeLong++'s band fusion, FreeNoise's window
fusion, sliding windows): the Wan adapter (:class:`freelong.models.wan.attention.WanSelfAttnAdapter`) does the
Ulysses exchange itself (:func:`seq_to_heads`): one all-to-all per q, k and v turns ``(B, S/N, H, D)`` local
tokens into ``(B, S, H/N, D)`` — every token of the video for ``H/N`` heads — the method runs unchanged on
those heads (its maths is per head), and one all-to-all (:func:`heads_to_seq`) brings the output back. That is
exactly the communication of diffusers' own Ulysses attention; no method adds more. Methods that leave
attention alone (direct, RIFLEx) run diffusers' own processor and its parallel attention.

Only Ulysses: ring attention needs the log-sum-exp of the native backend (refused on the CPU) and splits
frames between ranks, which the methods cannot take. ``heads % N == 0`` and ``T'*H'*W' % N == 0``.

Run: ``python -m torch.distributed.run --nproc_per_node N run.py model=... parallel.context=N``, or from
Python::

    from freelong import parallel
    parallel.init_process_group()                    # from torchrun's environment
    backbone = load_backbone("wan2_1_t2v_14b", device=parallel.local_device())
    parallel.enable_context_parallel(backbone, parallel.world_size())
    video = LongVideoPipeline(backbone, method)(prompt, ...)   # same result on every rank
    if parallel.is_main_process(): write_video(...)

Only rank 0 writes files (:func:`is_main_process`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

# Families whose denoiser has a diffusers context-parallel plan (``_cp_plan``) our adapters cooperate with.
CONTEXT_PARALLEL_FAMILIES = ("wan",)


# ----------------------------------------------------------------------------------------------
# Process group
# ----------------------------------------------------------------------------------------------
def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a plain single process): the one process that writes videos and records."""
    return rank() == 0


def launched_world_size() -> int:
    """The number of processes ``torch.distributed.run`` started (``WORLD_SIZE``; 1 outside it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def init_process_group(backend: str | None = None, timeout_s: float = 1800.0) -> None:
    """Join the process group ``torch.distributed.run`` set up (its ``RANK``/``WORLD_SIZE``/``MASTER_*``).

    ``nccl`` on CUDA, ``gloo`` on the CPU. A collective that waits longer than ``timeout_s`` (a rank that died)
    raises instead of hanging. Does nothing when the group exists already.
    """
    if is_distributed():
        return
    if "RANK" not in os.environ:
        raise ValueError("parallel.context > 1 needs one process per rank: launch with "
                         "python -m torch.distributed.run --nproc_per_node N run.py ... parallel.context=N")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (identity in one process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ----------------------------------------------------------------------------------------------
# Checks (before any weight is read) and enabling
# ----------------------------------------------------------------------------------------------
def check_context_parallel(model_cfg: Mapping[str, Any], degree: int, key: str = "parallel.context") -> None:
    """Raise ValueError naming ``key`` when the model a config describes cannot be split over ``degree`` ranks."""
    degree = int(degree)
    if degree < 1:
        raise ValueError(f"{key} must be a positive integer, got {degree}")
    if degree == 1:
        return
    family = model_cfg.get("family")
    if family not in CONTEXT_PARALLEL_FAMILIES:
        raise ValueError(f"{key}={degree}: model {model_cfg.get('name')} (family {family}) cannot be split over "
                         f"processes; diffusers' context parallelism covers the families "
                         f"{', '.join(CONTEXT_PARALLEL_FAMILIES)}")
    unet = model_cfg.get("unet") or {}
    heads = unet.get("num_attention_heads")
    if heads is not None and int(heads) % degree:
        raise ValueError(f"{key}={degree} must divide the attention heads of {model_cfg.get('name')} ({heads}): "
                         f"Ulysses gives each rank heads/{key} heads")


def check_token_split(num_tokens: int, degree: int, key: str = "parallel.context") -> None:
    """The token sequence ``T'*H'*W'`` must split evenly over the ranks."""
    if degree > 1 and num_tokens % degree:
        raise ValueError(f"{key}={degree} must divide the number of latent tokens T'*H'*W' = {num_tokens}; "
                         f"change num_frames, height or width")


def context_parallel_config(model: torch.nn.Module):
    """diffusers' ``ContextParallelConfig`` of a parallelised model, else None."""
    config = getattr(model, "_parallel_config", None)
    return getattr(config, "context_parallel_config", None) if config is not None else None


def context_degree(model: torch.nn.Module) -> int:
    """Ranks the model's token sequence is split over (1 when it is not parallelised)."""
    cp = context_parallel_config(model)
    return int(cp.ring_degree * cp.ulysses_degree) if cp is not None else 1


def enable_context_parallel(target: Any, degree: int) -> None:
    """Split a denoiser over ``degree`` ranks (Ulysses) with diffusers' ``enable_parallelism``.

    ``target``: a :class:`~freelong.models.base.Backbone` (its ``unet``), a diffusers pipeline (its ``transformer``
    and ``transformer_2``, for ``freelong.enable``) or the denoiser itself. The process group must exist with exactly
    ``degree`` ranks. Refuses (ValueError, one line) a denoiser without a diffusers context-parallel plan, and head
    counts ``degree`` does not divide. Methods attached before or after cooperate (their processors carry the
    parallel config of the one they replace).
    """
    if degree == 1:
        return
    if not isinstance(target, torch.nn.Module) and not hasattr(target, "unet"):  # a pipeline
        denoisers = [getattr(target, a) for a in ("transformer", "transformer_2")
                     if isinstance(getattr(target, a, None), torch.nn.Module)]
        if not denoisers:
            raise ValueError(f"parallel.context={degree}: {type(target).__name__} has no transformer to split")
        for model in denoisers:
            _enable(model, type(model).__name__, degree)
        return
    model = target if isinstance(target, torch.nn.Module) else target.unet
    _enable(model, getattr(target, "name", type(model).__name__), degree)


def _enable(model: torch.nn.Module, name: str, degree: int) -> None:
    from diffusers import ContextParallelConfig

    if getattr(model, "_cp_plan", None) is None:
        raise ValueError(f"parallel.context={degree}: {name}'s denoiser ({type(model).__name__}) has no "
                         f"diffusers context-parallel plan; families that have one: "
                         f"{', '.join(CONTEXT_PARALLEL_FAMILIES)}")
    heads = getattr(model.config, "num_attention_heads", None)
    if heads is not None and heads % degree:
        raise ValueError(f"parallel.context={degree} must divide the attention heads of {name} ({heads})")
    if world_size() != degree:
        raise ValueError(f"parallel.context={degree} needs {degree} processes in the group, found {world_size()} "
                         f"(launch: python -m torch.distributed.run --nproc_per_node {degree} ...)")
    if context_degree(model) == degree:
        return
    _cpu_device_count_workaround()
    model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree))


def _cpu_device_count_workaround() -> None:
    """diffusers takes ``rank % torch.accelerator.device_count()``, which divides by zero on a CPU-only machine."""
    if torch.accelerator.device_count() == 0:
        torch.accelerator.device_count = lambda: 1


# ----------------------------------------------------------------------------------------------
# Ulysses exchange (what our processors add around their maths)
# ----------------------------------------------------------------------------------------------
def ulysses_group(parallel_config: Any):
    """The process group of a diffusers ``ParallelConfig``'s Ulysses mesh; ValueError for ring attention."""
    cp = parallel_config.context_parallel_config
    if cp.ring_degree > 1:
        raise ValueError("our attention processors need every frame of the video at once: use Ulysses "
                         "(ContextParallelConfig(ulysses_degree=N)), not ring attention")
    return cp._ulysses_mesh.get_group()


def seq_to_heads(x: torch.Tensor, group) -> torch.Tensor:
    """``(B, S/N, H, D)`` local tokens, all heads → ``(B, S, H/N, D)`` all tokens, this rank's heads (all-to-all)."""
    n = dist.get_world_size(group)
    b, length, heads, d = x.shape
    send = x.reshape(b, length, n, heads // n, d).permute(2, 0, 1, 3, 4).contiguous()  # (N, B, S/N, H/N, D)
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)  # recv[j]: rank j's tokens for this rank's heads
    return recv.permute(1, 0, 2, 3, 4).reshape(b, n * length, heads // n, d)


def heads_to_seq(x: torch.Tensor, group) -> torch.Tensor:
    """The inverse of :func:`seq_to_heads`: ``(B, S, H/N, D)`` → ``(B, S/N, H, D)``."""
    n = dist.get_world_size(group)
    b, seq, heads, d = x.shape
    send = x.reshape(b, n, seq // n, heads, d).transpose(0, 1).contiguous()  # (N, B, S/N, H/N, D)
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)  # recv[j]: this rank's tokens for rank j's heads
    return recv.permute(1, 2, 0, 3, 4).reshape(b, seq // n, n * heads, d)


def gather_seq(x: torch.Tensor, group, dim: int = 1) -> torch.Tensor:
    """Every rank's contiguous share of the sequence (``dim``), concatenated in rank order (all-gather)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


# ----------------------------------------------------------------------------------------------
# Communication volume (computed; scripts/benchmark.py --comm)
# ----------------------------------------------------------------------------------------------
def ulysses_bytes_per_layer(tokens: int, heads: int, head_dim: int, degree: int, batch: int = 1,
                            bytes_per_element: int = 2) -> int:
    """Bytes one rank sends in one attention layer call: four all-to-alls (q, k, v in, the output back).

    Each moves the rank's ``B*S/N*H*D`` elements, of which ``(N-1)/N`` leave the rank.
    """
    if degree <= 1:
        return 0
    local = batch * tokens // degree * heads * head_dim
    return 4 * local * (degree - 1) // degree * bytes_per_element


def gather_bytes_per_call(tokens: int, channels: int, degree: int, batch: int = 1, bytes_per_element: int = 2) -> int:
    """Bytes one rank sends when diffusers all-gathers the ``proj_out`` output (``channels`` per token)."""
    if degree <= 1:
        return 0
    return batch * tokens // degree * channels * (degree - 1) * bytes_per_element


__all__ = [
    "CONTEXT_PARALLEL_FAMILIES",
    "broadcast_object",
    "check_context_parallel",
    "check_token_split",
    "context_degree",
    "context_parallel_config",
    "enable_context_parallel",
    "gather_bytes_per_call",
    "gather_seq",
    "heads_to_seq",
    "init_process_group",
    "is_distributed",
    "is_main_process",
    "launched_world_size",
    "local_device",
    "rank",
    "seq_to_heads",
    "ulysses_bytes_per_layer",
    "ulysses_group",
    "world_size",
]
