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
    "analyze": "net.analyze", "build_model": "net.model", "NetInfo": "net.analyze", "LayerInfo": "net.analyze",
    "LayerNet": "net.model", "PlanStep": "net.model", "id_problem": "net.spec", "INPUT_FIELDS": "net.spec",
    "open_session": "session", "SessionReader": "session", "SessionWriter": "session",
    "list_sessions": "session", "SessionEntry": "session",
    "SessionError": "session", "Telemetry": "run.telemetry", "telemetry_status": "run.telemetry",
    "layer_summary": "analysis.summary", "run_summary": "analysis.summary", "summary": "analysis.summary",
    "compare": "analysis.compare", "EXPORTERS": "export", "layer_step_ms": "analysis.stats",
    "samples_per_s": "analysis.stats",
    "layer_totals": "analysis.layers", "snapshot_layer_rows": "analysis.snapshot", "node_metrics": "analysis.snapshot",
    "layer_memory": "analysis.snapshot", "snapshot_energy": "analysis.snapshot",
    "snapshot_step_stats": "analysis.snapshot",
    "fmt": "fmt",
    "Run": "run.loop", "RunConfig": "run.config", "RunResult": "run.config", "LiveFeed": "run.live",
    "LiveSnapshot": "run.live",
    "list_devices": "run.devices", "resolve_device": "run.devices", "DeviceInfo": "run.devices",
    "runs_dir": "paths", "cache_dir": "paths", "data_dir": "paths",
    "RunInfo": "records", "StepRecord": "records",
    "latest_checkpoint": "net.checkpoint", "load_model": "net.checkpoint",
    "run_checkpoint_folder": "net.checkpoint", "checkpoint_run": "net.checkpoint",
    "get_dataset": "data", "canonical_name": "data", "sample_predictions": "data.loading",
    "download": "data.download", "is_downloaded": "data.download",
    "dataset_note": "data", "can_download": "data",
    "memory_estimate": "run.limits", "fit_problem": "run.limits",
    "ddp_summary": "analysis.distributed", "rank_timeline": "analysis.distributed",
    "RemoteRun": "remote.client", "RemoteError": "remote.wire", "parse_address": "remote.wire",
    "read_study": "sweep.study", "is_study": "sweep.study", "Study": "sweep.study", "StudyConfig": "sweep.study",
    "run_sweep": "sweep.runner", "SweepProgress": "sweep.runner", "CPU_ALLOCATORS": "run.allocator",
    "parse_axis": "sweep.axes", "check_axes": "sweep.axes", "allocator_problem": "run.allocator",
    "layer_memory_table": "analysis.memory", "memory_timeline": "analysis.memory",
    "layer_energy_summary": "analysis.layer_energy", "snapshot_layer_energy": "analysis.layer_energy",
    "LayerEnergy": "records",
    **{name: "records" for name in ("EvalRecord", "FeatureMap", "LayerRow", "LayerTimes", "LogRecord",
                                        "RunEnded", "StateChanged", "TelemetryBatch", "TelemetrySample",
                                        "TelemetryStatus")},
    "compare_runs": "analysis.compare", "study_runs": "analysis.compare", "family_of": "analysis.compare",
    "export_comparison": "export.compare_html",
    "roofline": "analysis.roofline", "measure_ceilings": "run.ceilings", "Ceilings": "run.ceilings",
    "to_pytorch_source": "net.export_code", "export_net": "net.export_code", "EXPORT_FORMATS": "net.export_code",
    "onnx_available": "net.export_onnx",
    "import_model": "net.imported", "ImportedNet": "net.imported", "is_import_source": "net.imported",
    "run_faults": "analysis.layers", "FAULT_ADVICE_SHARE": "analysis.layers",
}
_MODULES = {"fmt"}  # names that are submodules themselves, not attributes of one


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    module = importlib.import_module(f".{mod}", __name__)
    value = module if name in _MODULES else getattr(module, name)
    globals()[name] = value
    return value


__all__ = ["LayerScopeError", "Problem", "SpecError", "FAMILIES", "LayerKind", "Param", "get_kind",
           "kinds", "INPUT_ID", "InputSpec", "NetSpec", "Node", "dumps", "from_dict", "load", "loads",
           "save", "load_preset", "preset_names", "resolve_net", *_LAZY]
