"""Backbones: re-implemented UNets of LaVie (and VideoCrafter2), assembled behind one interface."""

from .base import Backbone, build_backbone, load_backbone, register_family

__all__ = ["Backbone", "build_backbone", "load_backbone", "register_family"]
