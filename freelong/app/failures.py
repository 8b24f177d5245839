"""Contained failures: one video that fails (CUDA out of memory, a NaN check, a bug) never stops its job.

The run loop (:mod:`.runner`) wraps each video in a ``try``; on an error it writes that video's sidecar with
``status: "failed"``, the error and the settings it was generated with (:func:`failure_record`), frees
the accelerator memory the failed attempt held (:func:`release_memory`) and goes on with the next video.
A re-run of the job treats failed records as not done (:meth:`.records.RunRecords.finished`), so it
retries exactly the failed and missing videos. When the loop is over, :class:`GenerationFailed` is raised
if anything failed, so the process (one SLURM array task, one joblib job) exits non-zero and the cluster
shows the job as failed.
"""

from __future__ import annotations

import gc
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .records import STATUS_DONE, STATUS_FAILED, is_failed

MAX_ERROR_CHARS = 2000
TRACEBACK_LINES = 30


class GenerationFailed(RuntimeError):
    """Some videos of a job failed; each one's sidecar holds its error. The others were written."""

    def __init__(self, run_dir: Path, failed: list[str], total: int):
        self.run_dir, self.failed, self.total = Path(run_dir), list(failed), total
        shown = ", ".join(failed[:5]) + (f", ... (+{len(failed) - 5})" if len(failed) > 5 else "")
        super().__init__(f"{len(failed)} of {total} video(s) failed in {run_dir} ({shown}); their errors are in "
                         f"videos/<stem>.json; re-run the same command to retry only those")


class RankFailed(RuntimeError):
    """Under ``parallel.context=N`` one rank failed: the other ranks wait in its collectives, so the job ends.

    Videos written before stay (atomic writes); a re-run of the same command resumes after them.
    """

    def __init__(self, rank: int, world: int, stem: str, err: BaseException):
        self.rank, self.world, self.stem = rank, world, stem
        super().__init__(f"rank {rank} of {world} failed on video {stem} ({describe_error(err)}); the job ends, the "
                         f"videos written so far are kept; re-run the same command to resume")


def describe_error(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def is_out_of_memory(err: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(err, oom) or "out of memory" in str(err).lower()


def failure_record(err: BaseException, base: dict[str, Any]) -> dict[str, Any]:
    """The sidecar of a failed video: ``base`` (its identity and settings) + status, error, traceback tail."""
    tb = traceback.format_exception(type(err), err, err.__traceback__)
    lines = "".join(tb).rstrip().splitlines()[-TRACEBACK_LINES:]
    return {
        **base,
        "status": STATUS_FAILED,
        "error": describe_error(err),
        "error_type": type(err).__name__,
        "out_of_memory": is_out_of_memory(err),
        "traceback": lines,
        "failed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def release_memory(device: torch.device) -> None:
    """Drop what a failed attempt left behind (its tensors go with the traceback frames) before the next video."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


__all__ = ["STATUS_DONE", "STATUS_FAILED", "GenerationFailed", "RankFailed", "failure_record", "is_failed",
           "is_out_of_memory", "release_memory"]
