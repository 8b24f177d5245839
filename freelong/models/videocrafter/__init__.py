"""VideoCrafter2 (lvdm): our port of its UNet (``model``, ``blocks``), the checkpoint conversion (``convert``) and the
backbone around them (``backbone``)."""

from .model import VideoCrafterUNet, load_videocrafter_unet_weights

__all__ = ["VideoCrafterUNet", "load_videocrafter_unet_weights"]
