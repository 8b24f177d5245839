"""The Hydra entry point (``python run.py``, the ``freelong-run`` console script) and user-facing errors.

A config with ``analysis.task`` set runs that analysis (found through the ``freelong.tasks`` entry points:
``snr_vs_length``, ``attention_maps``, or a plugin's) instead of plain generation. Errors the user can fix —
a bad value, missing weights, an unavailable device — are printed as one line (``error: ...``) with exit
status 2, never as a traceback; composition errors keep Hydra's own message and status 1. Videos that
failed while the others were made (:mod:`.failures`) are one line with status 1.

Under ``python -m torch.distributed.run`` (``parallel.context=N``) an error on any rank is one line naming the
rank (``error: rank 1 of 2: ...``) and that rank exits at once with status 1 (2 for a user error), so the
launcher stops the others, which would otherwise wait in their collectives; ranks other than 0 write no Hydra
files and log to the console only.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from ..errors import ConfigError, MissingWeightsError, WeightChecksumError
from ..models.spec import CONF_DIR
from .config import register_configs
from .failures import GenerationFailed
from .plugins import TASKS, in_multirun

USER_ERRORS = (ConfigError, MissingWeightsError, WeightChecksumError)


def run_task(cfg: DictConfig) -> Any:
    """Run the analysis named by ``cfg.analysis.task``."""
    try:
        task = TASKS.get(str(cfg.analysis.get("task")))
    except ValueError as err:
        raise ConfigError(f"analysis.task: {err}") from None
    return task(cfg)


def dispatch(cfg: DictConfig) -> Any:
    """Generation, or the analysis the config names."""
    if cfg.analysis.get("task"):
        return run_task(cfg)
    from .runner import run

    return run(cfg)


def launched_rank() -> int | None:
    """This process's rank under ``torch.distributed.run`` with more than one process, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
        return int(os.environ["RANK"])
    return None


PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")


def lost_peer(err: BaseException | None) -> bool:
    """Whether an error (or its cause) is a collective that lost another rank (gloo's socket errors, NCCL's)."""
    import torch.distributed as dist

    while err is not None:
        if isinstance(err, getattr(dist, "DistNetworkError", ())) or any(m in str(err) for m in PEER_LOST):
            return True
        err = err.__cause__
    return False


def end_rank(rank: int, err: BaseException, status: int) -> None:
    """One line on stderr, then exit this rank at once (no collective waits in destructors or atexit)."""
    from .failures import RankFailed

    world = os.environ.get("WORLD_SIZE")
    if lost_peer(err):  # the consequence of another rank's end, which printed the cause: not a second error line
        print(f"rank {rank} of {world} stopped: another rank ended the job", file=sys.stderr, flush=True)
        os._exit(status)
    text = str(err) if isinstance(err, RankFailed) else (
        f"rank {rank} of {world}: {err if isinstance(err, USER_ERRORS) else repr(err)}")
    print(f"error: {text}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)


def main(cfg: DictConfig) -> None:
    rank = launched_rank()
    if rank is not None:  # one video on several processes: any failure ends this rank, and so the job
        if rank > 0:  # rank 0 tells the progress; the others only warn
            import logging

            logging.getLogger("freelong").setLevel(logging.WARNING)
        try:
            dispatch(cfg)
        except USER_ERRORS as err:
            end_rank(rank, err, 2)
        except Exception as err:
            end_rank(rank, err, 1)
        return
    try:
        dispatch(cfg)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except GenerationFailed as err:  # the other videos were written; exit non-zero so the cluster shows it
        print(f"error: {err}", file=sys.stderr)
        if in_multirun():
            raise  # Hydra marks this job failed, runs the others, and exits non-zero at the end
        raise SystemExit(1) from None


def cli() -> None:
    """``freelong-run [group=option ...] [key=value ...]``: the same app as ``python run.py``."""
    register_configs()
    if launched_rank():  # ranks > 0 of a parallel run: no .hydra/ files, no log file (rank 0 writes them)
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(main)()


__all__ = ["TASKS", "cli", "dispatch", "main", "run_task"]
