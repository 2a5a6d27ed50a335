"""Chrome trace export (Perfetto, chrome://tracing): one slice per layer per phase on forward
and backward tracks for the profiled steps, a slice per step, counter tracks for telemetry."""
from __future__ import annotations

import json
from pathlib import Path

from engine.analysis.summary import as_source
from engine.export.common import jsonable as _jsonable, title as _title, write_text as _write_text

# counter tracks in the trace: (metric, track name, unit scale, unit)
_COUNTERS = [("power_w", "power", 1.0, "W"), ("mem_used_bytes", "GPU memory", 1 / 2**20, "MiB"),
             ("gpu_util_pct", "GPU utilisation", 1.0, "%"), ("cpu_pct", "CPU", 1.0, "%"),
             ("rss_bytes", "process RSS", 1 / 2**20, "MiB")]
_TID_STEPS, _TID_FWD, _TID_BWD = 1, 2, 3
DEFAULT_TRACE_STEPS = 2000


def trace_events(reader, step_from: int | None = None, step_to: int | None = None,
                 max_steps: int | None = DEFAULT_TRACE_STEPS) -> dict:
    """The Chrome trace event JSON object: one slice per layer per phase (forward and backward
    tracks) for the profiled steps, a slice per step, counter tracks for telemetry."""
    src = as_source(reader)
    pid = 1
    ev = [{"ph": "M", "pid": pid, "name": "process_name", "args": {"name": f"LayerScope: {_title(src)}"}}]
    for tid, name in ((_TID_STEPS, "steps"), (_TID_FWD, "forward"), (_TID_BWD, "backward")):
        ev.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}})
        ev.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": tid}})
    kinds = {r.node_id: r.kind for r in src.layers()}
    lts = src.layer_times(step_from, step_to)
    total_profiled = len(lts)
    if max_steps is not None and len(lts) > max_steps:
        lts = lts[:max_steps]
    lo = lts[0].step if lts else None
    hi = lts[-1].step if lts else None
    for lt in lts:
        base = lt.t * 1e6
        for k, nid in enumerate(lt.node_ids):
            args = {"step": lt.step, "kind": kinds.get(nid)}
            f, fs = lt.fwd_ms[k], lt.fwd_start_ms[k] if k < len(lt.fwd_start_ms) else None
            if f is not None and fs is not None:
                ev.append({"ph": "X", "pid": pid, "tid": _TID_FWD, "name": nid, "cat": "forward",
                           "ts": round(base + fs * 1000, 3), "dur": round(f * 1000, 3), "args": args})
            b = lt.bwd_ms[k] if k < len(lt.bwd_ms) else None
            bs = lt.bwd_start_ms[k] if k < len(lt.bwd_start_ms) else None
            if b is not None and bs is not None:
                ev.append({"ph": "X", "pid": pid, "tid": _TID_BWD, "name": nid, "cat": "backward",
                           "ts": round(base + bs * 1000, 3), "dur": round(b * 1000, 3), "args": args})
    limited = step_from is not None or step_to is not None or len(lts) < total_profiled
    for s in src.steps():
        if limited and (lo is None or s.step < lo or s.step > hi):
            continue
        start = s.t * 1e6
        if s.data_ms:
            ev.append({"ph": "X", "pid": pid, "tid": _TID_STEPS, "name": "waiting for data", "cat": "data",
                       "ts": round(start, 3), "dur": round(s.data_ms * 1000, 3), "args": {"step": s.step}})
            start += s.data_ms * 1000
        args = {"step": s.step, "phase": s.phase, "loss": s.loss, "accuracy": s.accuracy, "samples_per_s": s.samples_per_s,
                "warmup": s.warmup, "profiled": s.profiled, "data_ms": s.data_ms}
        ev.append({"ph": "X", "pid": pid, "tid": _TID_STEPS, "name": f"{s.phase} step {s.step}", "cat": "step",
                   "ts": round(start, 3), "dur": round(s.step_ms * 1000, 3), "args": _jsonable(args)})
    for source, metric in src.telemetry_series():
        spec = next((c for c in _COUNTERS if c[0] == metric), None)
        if spec is None:
            continue
        _, name, scale, unit = spec
        ts, vs = src.series(source, metric)
        track = f"{name} ({source})"
        for t, v in zip(ts, vs):
            ev.append({"ph": "C", "pid": pid, "name": track, "ts": round(t * 1e6, 1), "args": {unit: v * scale}})
    meta = {"layerscope_session": str(getattr(reader, "path", "")), "status": src.status, "title": _title(src),
            "profiled_steps_total": total_profiled, "profiled_steps_in_trace": len(lts)}
    if lts:
        meta["steps_in_trace"] = [lo, hi]
    # a stored inf (a broken clock, an edited file) must not make the file invalid JSON
    # ("Infinity"): every non-finite number becomes null, as in every other export
    return {"traceEvents": [_jsonable(e) for e in ev], "displayTimeUnit": "ms", "otherData": _jsonable(meta)}


def export_trace(reader, path, step_from: int | None = None, step_to: int | None = None,
                 max_steps: int | None = DEFAULT_TRACE_STEPS) -> Path:
    """Write the Chrome trace JSON; at most ``max_steps`` profiled steps (chrome://tracing slows
    down beyond ~100 MB; Perfetto copes with more - pass max_steps=None)."""
    obj = trace_events(reader, step_from, step_to, max_steps)
    return _write_text(path, json.dumps(obj, separators=(",", ":")))

