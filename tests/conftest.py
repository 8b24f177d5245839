"""Shared fixtures: composed Hydra configs and tiny random-weight backbones (built once per session)."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import backbone_fixture

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _deterministic():
    torch.use_deterministic_algorithms(False)
    torch.manual_seed(0)


@pytest.fixture()
def one_thread():
    """Tiny tensors: one thread avoids OpenMP oversubscription on a small shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def compose_cfg():
    """``compose_cfg(*overrides)`` → the app's config, composed exactly as ``run.py`` composes it
    (``helpers.compose_config``, which module-scoped fixtures call directly)."""
    from helpers import compose_config

    return compose_config


lavie_tiny = backbone_fixture("lavie_tiny", scope="session")
# The diffusers families' tiny backbones, one per test module (tests may swap their blocks or attach methods).
animatediff = backbone_fixture("animatediff_tiny")
modelscope = backbone_fixture("modelscope_tiny")


@pytest.fixture()
def make_tables(capsys):
    """Run scripts/make_tables.py's main() in-process: ``make_tables(args)`` -> (returncode, stdout, stderr)."""
    from types import SimpleNamespace

    from scripts.make_tables import main

    def _run(args):
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=rc, stdout=out, stderr=err)

    return _run
