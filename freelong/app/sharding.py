"""Sharded sweeps: ``shard=i num_shards=N`` splits a job's videos (prompt x seed) into N disjoint parts.

A paper-scale run (4 methods x 200 prompts x 128 frames) is many processes, not one: with
``shard='range(8)' num_shards=8`` every method becomes 8 Hydra jobs, each its own directory and its
own SLURM array task (submitit launcher) or joblib worker. Shard ``i`` takes the videos whose
position in the job list is ``i mod N`` (:func:`shard_indices`): the shards are disjoint, together
they are the whole list, their sizes differ by at most one, and a video lands in the same shard every
time, so each shard resumes on its own. Video stems and ``job_key`` do not depend on the shard, so the
union of the shards is the unsharded run, video for video.

``device=cuda:free`` gives every concurrent job on one machine its own GPU (:class:`GpuClaim`): the
process takes an exclusive lock on the first GPU that nobody else holds and keeps it for its lifetime
(a joblib worker runs many jobs, always on the same GPU); ``hydra.launcher.n_jobs`` = number of GPUs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from ..errors import DeviceUnavailableError

T = TypeVar("T")
FREE_GPU = "cuda:free"
LOCK_DIR_ENV = "FREELONG_GPU_LOCK_DIR"

log = logging.getLogger("freelong")


def check_shard(shard: int, num_shards: int) -> None:
    """ValueError naming the key unless ``0 <= shard < num_shards``."""
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive integer, got {num_shards!r}")
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < num_shards:
        raise ValueError(f"shard must be an integer in [0, num_shards={num_shards}), got {shard!r}")


def shard_indices(num_items: int, shard: int, num_shards: int) -> list[int]:
    """Positions ``shard, shard + N, shard + 2N, ...`` below ``num_items``: shard ``shard`` of ``num_shards``."""
    check_shard(shard, num_shards)
    return list(range(shard, num_items, num_shards))


def select_shard(items: Sequence[T], shard: int, num_shards: int) -> list[T]:
    """The items of one shard, in their original order."""
    return [items[i] for i in shard_indices(len(items), shard, num_shards)]


# ---------------------------------------------------------------------------------------------------
# One GPU per concurrent job on a multi-GPU machine
# ---------------------------------------------------------------------------------------------------


def gpu_ids() -> list[str]:
    """A machine-wide name per visible GPU (its UUID), so jobs that see different CUDA_VISIBLE_DEVICES agree."""
    import torch

    out = []
    for i in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        out.append(str(uuid) if uuid else f"{socket.gethostname()}-{visible[i] if i < len(visible) else i}")
    return out


class GpuClaim:
    """Exclusive ``flock`` on one GPU's lock file, held until :meth:`release` or the process exits."""

    def __init__(self, lock_dir: str | os.PathLike | None = None):
        default = Path(tempfile.gettempdir()) / f"freelong-gpu-locks-{os.getuid()}"
        self.lock_dir = Path(lock_dir or os.environ.get(LOCK_DIR_ENV) or default)
        self.index: int | None = None
        self._fd: int | None = None

    def claim(self, ids: Sequence[str], timeout_s: float = 24 * 3600, poll_s: float = 5.0) -> int:
        """Index (into ``ids``) of the GPU this process holds; waits while every GPU is taken."""
        if self.index is not None:
            return self.index
        if not ids:
            raise DeviceUnavailableError(f"device={FREE_GPU} needs CUDA, but no GPU is visible")
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        waited = False
        while True:
            for i, uid in enumerate(ids):
                fd = os.open(self.lock_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", uid) + ".lock"), os.O_CREAT | os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                os.ftruncate(fd, 0)
                os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())
                self.index, self._fd = i, fd
                return i
            if time.monotonic() >= deadline:
                raise DeviceUnavailableError(f"device={FREE_GPU}: all {len(ids)} GPU(s) are held by other jobs "
                                   f"(locks in {self.lock_dir}); lower hydra.launcher.n_jobs to the number of GPUs")
            if not waited:
                log.warning("all %d GPU(s) are taken by other jobs; waiting for one to free up", len(ids))
                waited = True
            time.sleep(poll_s)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
        self.index, self._fd = None, None


_PROCESS_CLAIM = GpuClaim()


def check_job_device(device: str) -> None:
    """:func:`freelong.metadata.check_device`, also for ``cuda:free`` (needs CUDA; claims nothing yet)."""
    from ..metadata import check_device

    if device != FREE_GPU:
        check_device(device)
        return
    import torch

    if not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device={FREE_GPU} needs CUDA, but no GPU is visible on this machine")


def job_device(device: str) -> str:
    """``cuda:free`` → ``cuda:<the GPU this process holds>``; any other value unchanged."""
    if device != FREE_GPU:
        return device
    index = _PROCESS_CLAIM.claim(gpu_ids())
    log.info("device=%s: this process holds cuda:%d", FREE_GPU, index)
    return f"cuda:{index}"
