"""Backbones behind one interface (:mod:`.base`): our ports of LaVie and VideoCrafter2, and diffusers' own video UNets
and Wan around diffusers' modules; one folder per family (``lavie``, ``videocrafter``, ``diffusers_unet``, ``wan``)."""

from .base import Backbone, build_backbone, load_backbone, register_family

__all__ = ["Backbone", "build_backbone", "load_backbone", "register_family"]
