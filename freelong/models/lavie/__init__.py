"""LaVie (Vchitect/LaVie base): our port of its UNet (``model``, ``blocks``) and its backbone (``backbone``)."""

from .model import LAVIE_BASE_CONFIG, LAVIE_OVERRIDES, LaVieUNet, load_lavie_unet_weights

__all__ = ["LAVIE_BASE_CONFIG", "LAVIE_OVERRIDES", "LaVieUNet", "load_lavie_unet_weights"]
