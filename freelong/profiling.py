"""Measuring speed and memory: per-layer timers, resettable peak RSS, and a live-tensor memory tracker.

- :class:`LayerTimer` times chosen submodules with forward hooks (synchronising CUDA around each
  call), e.g. every temporal attention layer grouped by UNet level, so a step's cost can be split
  into "temporal attention" and "everything else".
- :class:`PeakRSS` reads the process's peak resident set size (Linux ``VmHWM``) and resets it
  through ``/proc/self/clear_refs``, so one process can measure the peak of each run in turn.
- :class:`TensorMemoryTracker` is a dispatch mode that counts the bytes of tensor storages created
  inside it while they are alive: the quantity CUDA's ``max_memory_allocated`` reports, measured on
  any device. On the ``meta`` device nothing is computed, so the activation memory of the full-size
  model at 512 frames can be measured on a laptop; there SDPA is charged as the fused GPU kernels
  allocate (output + log-sum-exp), not as the reference maths that materialises the attention matrix.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MB = 2**20


# ----------------------------------------------------------------------------------------------
# Time
# ----------------------------------------------------------------------------------------------
def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LayerTimer:
    """Wall time spent inside selected modules, accumulated per key.

    ``LayerTimer(model, select)`` where ``select(name, module)`` returns a key (e.g. ``"temporal L1"``)
    or None. Use as a context manager; read :attr:`seconds` (wall clock), :attr:`cpu_seconds` (process
    CPU time: on a shared CPU machine with one torch thread, the work done, whatever the contention)
    and :attr:`calls`; :meth:`reset` between runs. Hooks synchronise CUDA, so time a separate pass when
    exact end-to-end timings matter on GPU.
    """

    def __init__(self, model: nn.Module, select: Callable[[str, nn.Module], str | None],
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._handles = []
        self._start: dict[int, tuple[float, float]] = {}
        for name, module in model.named_modules():
            key = select(name, module)
            if key is not None:
                self._handles.append(module.register_forward_pre_hook(self._pre))
                self._handles.append(module.register_forward_hook(self._make_post(key)))

    def _pre(self, module: nn.Module, args) -> None:
        synchronize(self.device)
        self._start[id(module)] = (time.perf_counter(), time.process_time())

    def _make_post(self, key: str):
        def post(module: nn.Module, args, output) -> None:
            synchronize(self.device)
            wall, cpu = self._start.pop(id(module))
            self.seconds[key] += time.perf_counter() - wall
            self.cpu_seconds[key] += time.process_time() - cpu
            self.calls[key] += 1

        return post

    def reset(self) -> None:
        self.seconds.clear()
        self.cpu_seconds.clear()
        self.calls.clear()

    def total(self) -> float:
        return float(sum(self.seconds.values()))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> LayerTimer:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


# ----------------------------------------------------------------------------------------------
# Resident memory (CPU)
# ----------------------------------------------------------------------------------------------
class PeakRSS:
    """Peak resident set size of this process, resettable on Linux (``/proc/self/clear_refs``)."""

    STATUS = Path("/proc/self/status")
    CLEAR = Path("/proc/self/clear_refs")

    @classmethod
    def _field_mb(cls, name: str) -> float | None:
        try:
            for line in cls.STATUS.read_text().splitlines():
                if line.startswith(name + ":"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    @classmethod
    def resettable(cls) -> bool:
        return cls.CLEAR.exists() and cls._field_mb("VmHWM") is not None

    @classmethod
    def current_mb(cls) -> float | None:
        return cls._field_mb("VmRSS")

    @classmethod
    def peak_mb(cls) -> float | None:
        peak = cls._field_mb("VmHWM")
        if peak is None:  # not Linux: the lifetime peak is all there is
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak

    @classmethod
    def reset(cls) -> bool:
        """Set the peak to the current RSS; False where the OS cannot (the peak is then lifetime)."""
        gc.collect()
        try:
            cls.CLEAR.write_text("5")
            return True
        except OSError:
            return False


def release_freed_memory_eagerly() -> bool:
    """Ask glibc to return freed blocks of 1 MiB and more to the OS at once.

    By default glibc's mmap threshold grows as large blocks are freed, so freed activations stay in
    the heap and RSS stops tracking live memory. Fixing the threshold makes peak RSS a fair measure
    of each run's memory. Returns False where glibc's ``mallopt`` is unavailable.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 1 << 20) == 1
    ok &= libc.mallopt(m_trim_threshold, 1 << 20) == 1
    return bool(ok)


# ----------------------------------------------------------------------------------------------
# Live tensor bytes (any device, including meta)
# ----------------------------------------------------------------------------------------------
def _efficient_sdpa_meta(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """SDPA on meta tensors charged like CUDA's fused kernels: output + log-sum-exp, no L x L matrix."""
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device)
    lead = query.shape[:-2]
    q, k, v = (t.reshape(-1, *t.shape[-3:]) if t.ndim > 4 else t for t in (query, key, value))
    if q.ndim == 3:
        q, k, v = q[None], k[None], v[None]
    bias = None
    if attn_mask is not None:
        bias = attn_mask.reshape(-1, *attn_mask.shape[-3:]) if attn_mask.ndim > 4 else attn_mask
        bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    out = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, True, scale=scale)[0]
    return out.reshape(*lead, query.shape[-2], value.shape[-1])


class TensorMemoryTracker(TorchDispatchMode):
    """Peak bytes of the tensor storages allocated inside the block and still alive.

    Storages that existed before (weights, inputs) are not counted: add them yourself. A storage is
    alive while any tensor object that views it is; views and in-place results share its count.
    ``fused_sdpa_on_meta=True`` charges SDPA on meta tensors as the fused CUDA kernels allocate.
    """

    def __init__(self, fused_sdpa_on_meta: bool = True):
        super().__init__()
        self.fused_sdpa_on_meta = fused_sdpa_on_meta
        self.current = 0
        self.peak = 0
        self._live: dict[int, list[int]] = {}  # storage key -> [nbytes, tensor refs]
        self._patch = None

    def __enter__(self):
        if self.fused_sdpa_on_meta:
            original = F.scaled_dot_product_attention

            def sdpa(query, key, value, *args, **kwargs):
                if query.device.type == "meta":
                    return _efficient_sdpa_meta(query, key, value, *args, **kwargs)
                return original(query, key, value, *args, **kwargs)

            self._patch = original
            F.scaled_dot_product_attention = sdpa
        return super().__enter__()

    def __exit__(self, *exc):
        if self._patch is not None:
            F.scaled_dot_product_attention = self._patch
            self._patch = None
        return super().__exit__(*exc)

    @property
    def peak_mb(self) -> float:
        return self.peak / MB

    def reset_peak(self) -> None:
        self.peak = self.current

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = t.untyped_storage()._cdata
            entry = self._live.get(key)
            if entry is None:
                if key in inputs:  # a view of something that existed before: not ours
                    continue
                entry = self._live[key] = [t.untyped_storage().nbytes(), 0]
                self.current += entry[0]
                self.peak = max(self.peak, self.current)
            entry[1] += 1
            weakref.finalize(t, self._release, key)
        return out


@contextlib.contextmanager
def track_tensor_memory(fused_sdpa_on_meta: bool = True) -> Iterator[TensorMemoryTracker]:
    with TensorMemoryTracker(fused_sdpa_on_meta) as tracker:
        yield tracker


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    seen, total = set(), 0
    for t in [*module.parameters(), *module.buffers()]:
        key = t.untyped_storage()._cdata
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


__all__ = [
    "MB",
    "LayerTimer",
    "PeakRSS",
    "TensorMemoryTracker",
    "module_bytes",
    "release_freed_memory_eagerly",
    "synchronize",
    "track_tensor_memory",
]
