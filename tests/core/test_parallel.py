"""One video over two CPU processes (gloo, Ulysses): every method equals its one-process run.

``tests/core/parallel_worker.py`` runs under ``python -m torch.distributed.run --nproc_per_node 2`` on the tiny
Wan (9 latent frames x 2 x 3 tokens, 2 heads); see ``docs/context_parallel.md``. The two-rank tests share one
launch of about 35 s on a 2-core CPU, so they are marked slow: ``pytest -m slow tests/core/test_parallel.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from freelong import load_backbone, parallel
from freelong.models.spec import load_model_config

WORKER = Path(__file__).with_name("parallel_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


two_rank = pytest.mark.slow


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("parallel") / "result.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(WORKER), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@two_rank
def test_every_method_on_two_ranks_equals_one_process(two_ranks):
    from tests.core.parallel_worker import METHODS

    assert two_ranks["degree"] == 2
    assert set(two_ranks["split"]) == {*METHODS, "bare", "multi_prompt", "enable"}
    # "bare": diffusers' own processors, one forward; "multi_prompt": FreeLong on a two-prompt video;
    # "enable": FreeLong through freelong.enable in diffusers' own WanPipeline
    for name, ref in two_ranks["reference"].items():
        got = two_ranks["split"][name]
        assert got.shape == ref.shape == (1, 4, 9, 4, 6)
        assert rel(got, ref) < 1e-5, name


@two_rank
def test_methods_differ_from_direct_sampling(two_ranks):
    """The comparison is not vacuous: each attention method's latents are far from direct sampling's.

    (RIFLEx moves the random-init tiny Wan's latents by only ~4e-5; its sharded RoPE is checked row by row below.)
    """
    ref = two_ranks["reference"]
    for name in ("freelong", "freelong_pp", "freenoise", "sliding_window", "freeloc"):
        assert rel(ref[name], ref["direct"]) > 1e-2, name


@two_rank
def test_riflex_rope_edit_on_each_rank_is_its_share_of_the_whole_table(two_ranks):
    assert two_ranks["rope_shards"] == [True, True]


@two_rank
def test_processor_without_parallel_config_is_refused(two_ranks):
    message = two_ranks["refusal"]
    assert "blocks.0.attn1" in message and "27 of the 54" in message and "_parallel_config" in message


@two_rank
def test_methods_attached_before_enable_get_the_configuration(two_ranks):
    assert two_ranks["late_config"]


@two_rank
def test_ulysses_exchange_round_trip(two_ranks):
    assert two_ranks["round_trip"]


def test_unsupported_family_refused_in_one_line():
    with pytest.raises(ValueError, match=r"parallel.context=2: model lavie_tiny \(family lavie\) cannot be split"):
        parallel.check_context_parallel(load_model_config("lavie_tiny"), 2)
    bb = load_backbone("lavie_tiny")
    with pytest.raises(ValueError, match="no diffusers context-parallel plan"):
        parallel.enable_context_parallel(bb, 2)


def test_heads_must_divide():
    cfg = load_model_config("wan_tiny")  # 2 heads
    parallel.check_context_parallel(cfg, 2)
    with pytest.raises(ValueError, match=r"parallel.context=3 must divide the attention heads of wan_tiny \(2\)"):
        parallel.check_context_parallel(cfg, 3)
    with pytest.raises(ValueError, match="parallel.context must be a positive integer"):
        parallel.check_context_parallel(cfg, 0)
    parallel.check_context_parallel(load_model_config("wan2_1_t2v_14b"), 8)  # 40 heads
    with pytest.raises(ValueError, match="must divide the attention heads"):
        parallel.check_context_parallel(load_model_config("wan2_1_t2v_1_3b"), 8)  # 12 heads


def test_single_process_helpers():
    assert not parallel.is_distributed()
    assert parallel.is_main_process() and parallel.rank() == 0 and parallel.world_size() == 1
    assert parallel.broadcast_object({"a": 1}) == {"a": 1}
    parallel.check_token_split(54, 2)
    with pytest.raises(ValueError, match="must divide the number of latent tokens"):
        parallel.check_token_split(27, 2)


def test_communication_volume():
    # Wan2.1-14B, 4x length at 720p: 81 latent frames x 45 x 80 tokens, 40 heads x 128, bf16, 8 ranks.
    tokens = 81 * 45 * 80
    per_layer = parallel.ulysses_bytes_per_layer(tokens, 40, 128, 8)
    assert per_layer == 4 * (tokens // 8) * 40 * 128 * 7 // 8 * 2
    assert parallel.ulysses_bytes_per_layer(tokens, 40, 128, 1) == 0
    assert parallel.gather_bytes_per_call(tokens, 64, 2) == tokens // 2 * 64 * 2
