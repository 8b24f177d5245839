"""freelong-bench entry point: ``python run.py [group=option ...] [key=value ...]`` (Hydra).

Examples::

    python run.py                                   # smoke run: tiny random-init LaVie, FreeLong
    python run.py method=freelong model=lavie       # the real thing (needs weights, see README)
    python run.py -m method=direct,freelong method.window=8,16 model=lavie_tiny
    python run.py experiment=snr_vs_length          # an analysis (analysis.task) instead of generation

The app itself is :mod:`freelong.app.main` (also installed as the ``freelong-run`` console script).
"""

from freelong.app.main import cli

if __name__ == "__main__":
    cli()
