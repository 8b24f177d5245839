"""freelong-bench: training-free long video generation, every method on every backbone through one interface.

    from freelong import load_backbone, get_method, LongVideoPipeline
    pipe = LongVideoPipeline(load_backbone("lavie"), get_method("freelong", window=16))
    video = pipe("a teddy bear walking on the street", num_frames=128, seed=0)   # uint8 (T, H, W, 3)

or inside a diffusers pipeline you already have: ``handle = freelong.enable(pipe, "freelong")``, then ``pipe(...)``.
"""

from .enable import enable, prepare_latents
from .methods import available_methods, get_method, register_method
from .models.base import Backbone, load_backbone
from .pipeline import LongVideoPipeline
from .weights import MissingWeightsError

__all__ = [
    "Backbone",
    "LongVideoPipeline",
    "MissingWeightsError",
    "available_methods",
    "enable",
    "get_method",
    "load_backbone",
    "prepare_latents",
    "register_method",
]
__version__ = "0.1.0"
