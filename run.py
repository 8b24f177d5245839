"""freelong-bench entry point: ``python run.py [group=option ...] [key=value ...]`` (Hydra).

Examples::

    python run.py                                   # smoke run: tiny random-init LaVie, FreeLong
    python run.py method=freelong model=lavie       # the real thing (needs weights, see README)
    python run.py -m method=direct,freelong method.window=8,16 model=lavie_tiny
    python run.py experiment=snr_vs_length          # an analysis (analysis.task) instead of generation
"""

import sys

import hydra
from omegaconf import DictConfig

from freelong.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from freelong.job_failures import GenerationFailed
    from freelong.runner import ConfigError, run
    from freelong.weights import MissingWeightsError

    try:
        if cfg.analysis.get("task"):  # experiment=snr_vs_length / attention_maps: an analysis, not plain generation
            from analysis import run_task

            run_task(cfg)
        else:
            run(cfg)
    except (ConfigError, MissingWeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except GenerationFailed as err:  # the other videos were written; exit non-zero so the cluster shows it
        print(f"error: {err}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra marks this job failed, runs the others, and exits non-zero at the end
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
