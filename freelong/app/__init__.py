"""The app layer on top of the core library: the Hydra run loop and everything a user touches.

- :mod:`.config` — structured-config schemas (Hydra ConfigStore) and the checks that run before any heavy work;
- :mod:`.setup` — prompts, device, backbone and pipeline of a run (shared by generation and the analyses);
- :mod:`.records` — the one record store: jobs, job fingerprints, resumable per-video records, every reader
  of ``results.jsonl``;
- :mod:`.runner` — ``run(cfg)``: generate → evaluate → record → log;
- :mod:`.eval_hook`, :mod:`.wandb_logger` — per-video scoring and the experiment logger;
- :mod:`.main` — the Hydra entry point (``run.py``, the ``freelong-run`` console script), user-facing errors.

This is the only package that imports Hydra; the core (``freelong`` minus ``app``) never imports it.
"""
