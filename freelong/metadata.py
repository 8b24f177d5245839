"""What every result records so a number can be reproduced: versions, device, git commit, memory."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
from functools import lru_cache
from importlib import metadata as importlib_metadata
from typing import Any

import torch

from .weights import REPO_ROOT

PACKAGES = ("freelong-bench", "torch", "diffusers", "transformers", "numpy", "hydra-core", "omegaconf",
            "imageio", "imageio-ffmpeg", "safetensors", "huggingface_hub")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["cuda"] = torch.version.cuda or "none"
    return out


@lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in open("/proc/cpuinfo").read().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)"


def available_devices() -> list[str]:
    """The devices this machine has, as ``device=`` accepts them."""
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def check_device(device: str) -> None:
    """Raise :class:`~freelong.errors.DeviceUnavailableError` (one line) unless ``device`` exists here."""
    from .errors import DeviceUnavailableError

    name = str(device)
    if name == "auto":
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceUnavailableError(f"device must be auto, cpu, cuda[:N] or mps, got {name!r}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceUnavailableError(f"device must be auto, cpu, cuda[:N] or mps, got {name!r}")
    here = available_devices()
    ok = dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_available()
                              and (dev.index or 0) < torch.cuda.device_count()) or (dev.type == "mps" and "mps" in here)
    if not ok:
        raise DeviceUnavailableError(f"device={name} is not available on this machine; available: {', '.join(here)}")


def resolve_device(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """``auto`` picks CUDA when present; ``auto`` dtype is fp16 on CUDA and fp32 elsewhere."""
    check_device(device)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if dtype == "auto":
        dt = torch.float16 if dev.type == "cuda" else torch.float32
    else:
        dt = getattr(torch, dtype)
    return dev, dt


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, Any]:
    """CUDA max allocated since the last reset, or the process's peak RSS on CPU (monotonic)."""
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20, "memory_kind": "cuda_max_allocated"}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_mb": rss_kb / 1024, "memory_kind": "process_peak_rss"}
