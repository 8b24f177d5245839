"""``python -m eval VIDEOS... --dims fast --out results.json``."""

import sys

from .cli import main

sys.exit(main())
