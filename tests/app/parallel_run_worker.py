"""``python -m torch.distributed.run --nproc_per_node 2 tests/app/parallel_run_worker.py [overrides]``: run.py's app
with one extra method, ``fail_on_rank1``: global attention whose second video fails on rank 1 while the environment
variable ``FAIL_SECOND_VIDEO`` is set (tests/app/test_parallel_run.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from freelong.attention.processor import TemporalAttnProcessor
from freelong.methods import Method, register_method

ATTACHES = {"n": 0}


class FailingProcessor(TemporalAttnProcessor):
    def __call__(self, q, k, v, *, bias, ctx):
        raise RuntimeError("injected failure")


@register_method("fail_on_rank1")
@dataclass
class FailOnRank1(Method):
    """Global attention; with FAIL_SECOND_VIDEO set, rank 1's second video raises inside attention."""

    levels = ("attention",)
    window: int | None = None

    def processor(self):
        ATTACHES["n"] += 1
        if os.environ.get("FAIL_SECOND_VIDEO") and os.environ.get("RANK") == "1" and ATTACHES["n"] == 2:
            return FailingProcessor()
        return TemporalAttnProcessor()


if __name__ == "__main__":
    from freelong.app.main import cli

    cli()
