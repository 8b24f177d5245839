"""The job behind ``run.py``: check → build backbone and method → generate → (evaluate) → record → log.

A run directory holds ``config.yaml`` (resolved), ``videos/<stem>.mp4`` with a ``videos/<stem>.json``
record per video, and ``results.jsonl`` (:mod:`.records`). Files are written atomically; a re-run with
the same ``hydra.run.dir`` (or sweep dir) skips videos whose record matches the job, so an interrupted run
or sweep resumes where it stopped.

A video that fails (CUDA out of memory, any error) is recorded as ``status: failed`` and the job goes on
(:mod:`.failures`); a re-run retries exactly the failed and missing videos, and :class:`GenerationFailed` at
the end makes the process exit non-zero. ``shard=i num_shards=N`` makes every N-th video (:mod:`.sharding`).

``parallel.context=N`` (under ``python -m torch.distributed.run --nproc_per_node N``) makes each video on N
processes (:mod:`freelong.parallel`): every rank runs the same loop, rank 0 decides which videos are done and is
the only one that decodes, writes, scores, records and logs; a failure on any rank ends the job
(:class:`~.failures.RankFailed`) since the others wait for it in their collectives.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from .. import parallel
from ..errors import ConfigError
from ..metadata import peak_memory, reset_peak_memory, resolve_device
from ..video_io import write_video
from .config import method_from_config
from .eval_hook import is_pending
from .failures import GenerationFailed, RankFailed, failure_record, release_memory
from .plugins import REPORTS, in_multirun
from .prompt_suites import prompt_source
from .records import STATUS_DONE, Job, RunRecords, job_key, make_jobs, read_records, sampling_settings
from .setup import build, check_config, check_prompts_fit
from .sharding import job_device, select_shard

log = logging.getLogger("freelong")


def make_evaluator(cfg: DictConfig, device: torch.device, random_init: bool):
    """The per-video scorer for ``eval=...`` (None for ``eval=none``)."""
    if cfg.eval.name == "none":
        return None
    from .eval_hook import build_run_evaluator

    return build_run_evaluator(cfg.eval, device=device, random_init=random_init)


def make_logger(cfg: DictConfig, run_dir: Path):
    """The experiment logger for ``logger=...`` (None for ``logger=none``)."""
    if cfg.logger.name == "none":
        return None
    from .wandb_logger import build_logger

    return build_logger(cfg, run_dir)


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> Path:
    """Generate every (prompt, seed) of the config into the run directory; return its path.

    ``run_dir`` defaults to Hydra's output directory (``hydra.run.dir`` / the sweep subdir), or a
    timestamped folder under ``paths.output_root`` when called outside Hydra.
    """
    try:
        method = method_from_config(cfg.method, cfg.model)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    # Everything that can be missing is checked before anything heavy is loaded: values and prompts, the
    # backbone's weights (cheap path lookups), then the evaluation networks, then the backbone itself.
    prompts = check_config(cfg)
    check_prompts_fit(prompts, cfg.num_frames)
    split = int(cfg.parallel.context) > 1
    if split:  # one video on N processes: join torch.distributed.run's group before anything heavy
        parallel.init_process_group()
    main = parallel.is_main_process()
    evaluate = (make_evaluator(cfg, resolve_device(job_device(cfg.device), cfg.dtype)[0], bool(cfg.model.random_init))
                if main else None)
    setup = build(cfg, prompts, run_dir)
    backbone, device, dtype = setup.backbone, setup.device, setup.dtype
    pipe = setup.pipeline(method)
    recorder = RunRecords(setup.run_dir)
    env = setup.environment()
    jobs = select_shard(make_jobs(setup.prompts, cfg.seed, cfg.num_seeds), cfg.shard, cfg.num_shards)
    log.info("run dir %s: %d video(s), %s on %s, %d frames %dx%d", setup.run_dir, len(jobs), method.describe(),
             backbone.name, cfg.num_frames, cfg.height, cfg.width)
    logger = make_logger(cfg, setup.run_dir) if main else None
    failed: list[str] = []
    batched = getattr(evaluate, "batched", False)  # eval.backend=official: one VBench process at the end
    try:
        for job in jobs:
            key = job_key(cfg, job, dtype)
            done = None if cfg.overwrite or not main else recorder.finished(job, key)
            done = parallel.broadcast_object(done) if split else done  # every rank skips what rank 0 skips
            if done is not None:
                if batched and is_pending(done.get("scores")):  # a stopped run's placeholder: score it now
                    evaluate.queue(recorder.video(job), (done["scores"].get("meta") or {}).get("frames"))
                log.info("skip %s (already generated)", job.stem)
                continue
            reset_peak_memory(device)
            try:  # one failing video (e.g. CUDA OOM) is recorded and the job goes on (.failures)
                record = generate_one(cfg, job, key, pipe, method, env, evaluate, recorder, device)
            except Exception as err:
                log.error("video %s failed: %s", job.stem, err)
                if split:  # no failure record: the cause may be another rank; the video stays missing (resume)
                    raise RankFailed(parallel.rank(), parallel.world_size(), job.stem, err) from err
                recorder.save(job, failure_record(err, {
                    "prompt": job.prompt, "prompt_index": job.index, "seed": job.seed, **env,
                    "method": method.name, "method_params": method.params(), **sampling_settings(cfg),
                    "experiment": cfg.task_name, "job_key": key, "shard": [cfg.shard, cfg.num_shards]}))
                failed.append(job.stem)
                release_memory(device)
                continue
            if logger is not None:  # outside the try: a logger error is not a failed video
                logger.log_video(record, recorder.video(job))
        if batched:
            finish_batched(evaluate, recorder)
        # a sweep writes one report at its end (analysis.report.ReportCallback)
        if cfg.report and main and not in_multirun():
            log.info("report: %s", REPORTS.get("html")([setup.run_dir], setup.run_dir / "report"))
    finally:
        if logger is not None:  # always closed, also when a video fails
            logger.finish(recorder.records())
    if failed:  # the others were written; the process exits non-zero (.main) so the cluster shows it
        raise GenerationFailed(setup.run_dir, failed, len(jobs))
    return setup.run_dir


def finish_batched(evaluate: Any, recorder: RunRecords) -> None:
    """Score every queued video in one go and write the scores over their placeholders (in records and jsonl)."""
    scored = evaluate.finish()
    for stem, record in read_records(recorder.run_dir).items():
        if is_pending(record.get("scores")) and str(recorder.run_dir / record["video"]) in scored:
            recorder.save_stem(stem, {**record, "scores": scored[str(recorder.run_dir / record["video"])]})


def generate_one(cfg: DictConfig, job: Job, key: str, pipe: Any, method: Any, env: dict[str, Any],
                 evaluate: Any, recorder: RunRecords, device: torch.device) -> dict[str, Any]:
    """Generate, write, score and record one video (the body of the run loop); its record.

    On a rank other than 0 of a parallel run: only the denoising (rank 0 decodes and writes); None.
    """
    t0 = time.perf_counter()
    main = parallel.is_main_process()
    video = pipe(job.prompt, cfg.num_frames, cfg.height, cfg.width, cfg.num_inference_steps,
                 cfg.guidance_scale, job.seed, negative_prompt=cfg.negative_prompt, sampler=cfg.sampler,
                 eta=cfg.eta, output_type="np" if main else "latent")
    if not main:
        return None
    wall = time.perf_counter() - t0
    write_video(recorder.video(job), video, fps=cfg.fps)
    record = {
        "video": f"videos/{job.stem}.mp4",
        "prompt": job.prompt,
        "prompt_index": job.index,
        "prompt_source": prompt_source(cfg.prompts),
        "seed": job.seed,
        **env,
        "family": str(cfg.model.family),  # tables group by it (a name's prefix is not its family: wan2_2_* is wan)
        "method": method.name,
        "method_params": pipe.effective_method.params(),
        **sampling_settings(cfg),
        "fps": cfg.fps,
        "wall_time_s": wall,
        "timings": pipe.stats.as_dict(),
        **peak_memory(device),
        "experiment": cfg.task_name,
        "tags": list(cfg.tags),
        "shard": [cfg.shard, cfg.num_shards],
        "parallel_context": parallel.world_size(),
        "job_key": key,
        "status": STATUS_DONE,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if evaluate is not None:
        record["scores"] = evaluate(recorder.video(job), video, prompt=job.prompt_text)
    recorder.save(job, record)
    log.info("wrote %s (%.1fs)", recorder.video(job), wall)
    return record
