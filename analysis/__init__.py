"""Analyses beyond plain generation: SNR vs length, temporal attention maps, sweep aggregation.

``run.py`` runs an analysis instead of plain generation when the config sets ``analysis.task``
(the ``experiment=snr_vs_length`` and ``experiment=attention_maps`` configs do); tasks are found through
the ``freelong.tasks`` entry points (``pyproject.toml``), so a plugin can add its own.
``python -m analysis.aggregate SWEEP_DIR`` collects a Hydra multirun into tables and plots.
"""
