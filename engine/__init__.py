"""LayerScope's engine: everything that computes. Never imports Qt.

Importing ``engine`` is cheap: torch is loaded only when a torch-using name is first used,
so the desktop app can show its window before paying for torch.
"""
from __future__ import annotations

import importlib

from engine.errors import LayerScopeError, Problem, SpecError
from engine.net.registry import FAMILIES, LayerKind, Param, get_kind, kinds
from engine.net.spec import INPUT_ID, InputSpec, NetSpec, Node, dumps, from_dict, load, loads, save
from engine.net.presets import load_preset, preset_names, resolve_net

__version__ = "0.1.0"

# name -> submodule, imported on first use (these pull in torch)
_LAZY = {
    "analyze": "net.graph", "build_model": "net.graph", "NetInfo": "net.graph", "LayerInfo": "net.graph",
    "LayerNet": "net.graph",
    "open_session": "session.store", "SessionReader": "session.store", "SessionWriter": "session.store",
    "SessionError": "session.store", "Telemetry": "run.telemetry", "telemetry_status": "run.telemetry",
    "layer_summary": "analysis.summary", "run_summary": "analysis.summary", "compare": "export.formats",
    "Run": "run.loop", "RunConfig": "run.config", "RunResult": "run.config", "LiveFeed": "run.live",
    "LiveSnapshot": "run.live",
    "list_devices": "run.devices", "resolve_device": "run.devices", "DeviceInfo": "run.devices",
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
