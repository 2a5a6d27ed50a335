"""LayerScope's engine: everything that computes. Never imports Qt.

Importing ``engine`` is cheap: torch is loaded only when a torch-using name is first used,
so the desktop app can show its window before paying for torch.
"""
from __future__ import annotations

import importlib

from .errors import LayerScopeError, Problem, SpecError
from .registry import FAMILIES, LayerKind, Param, get_kind, kinds
from .spec import INPUT_ID, InputSpec, NetSpec, Node, dumps, from_dict, load, loads, save
from .presets import load_preset, preset_names, resolve_net

__version__ = "0.1.0"

# name -> submodule, imported on first use (these pull in torch)
_LAZY = {
    "analyze": "graph", "build_model": "graph", "NetInfo": "graph", "LayerInfo": "graph",
    "LayerNet": "graph",
    "open_session": "session", "SessionReader": "session", "SessionWriter": "session",
    "SessionError": "session", "Telemetry": "telemetry", "telemetry_status": "telemetry",
    "layer_summary": "summary", "run_summary": "summary", "compare": "export",
    "Run": "run", "RunConfig": "run", "RunResult": "run", "LiveFeed": "live", "LiveSnapshot": "live",
    "list_devices": "devices", "resolve_device": "devices", "DeviceInfo": "devices",
}


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


__all__ = ["LayerScopeError", "Problem", "SpecError", "FAMILIES", "LayerKind", "Param", "get_kind",
           "kinds", "INPUT_ID", "InputSpec", "NetSpec", "Node", "dumps", "from_dict", "load", "loads",
           "save", "load_preset", "preset_names", "resolve_net", *_LAZY]
