"""The net: its JSON spec, the layer kinds (registry), analysis on the meta device, the model.

Importing this package registers the built-in layer kinds (``layers`` imports ``registry``,
never the other way round), and stays torch-free: builders import torch when called.
"""
from engine.net import layers  # noqa: F401  (registers the built-in kinds)
