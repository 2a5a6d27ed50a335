"""Chrome trace export (Perfetto, chrome://tracing): one slice per layer per phase on forward
and backward tracks for the profiled steps, a slice per step, counter tracks for telemetry.

The file is written as the events are made (``iter_trace_events``), reading the session in
chunks, so the export's memory does not grow with the session's length."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

from engine.analysis.summary import as_source
from engine.export.common import jsonable as _jsonable, title as _title

# counter tracks in the trace: (metric, track name, unit scale, unit)
_COUNTERS = [("power_w", "power", 1.0, "W"), ("mem_used_bytes", "GPU memory", 1 / 2**20, "MiB"),
             ("gpu_util_pct", "GPU utilisation", 1.0, "%"), ("cpu_pct", "CPU", 1.0, "%"),
             ("rss_bytes", "process RSS", 1 / 2**20, "MiB")]
_TID_STEPS, _TID_FWD, _TID_BWD = 1, 2, 3
DEFAULT_TRACE_STEPS = 2000


def _profiled(src, step_from, step_to, max_steps) -> tuple[int, int, int | None, int | None, Iterator]:
    """(profiled steps in the range, how many go into the trace, first step, last step, their
    LayerTimes as an iterator): chunked from a session, a slice of a record list."""
    if hasattr(src, "iter_layer_times"):
        total, steps = src.profiled_steps_in(step_from, step_to)
        n = total if max_steps is None else min(total, max_steps)
        lo, hi = (steps(0), steps(n - 1)) if n else (None, None)
        return total, n, lo, hi, src.iter_layer_times(step_from, step_to, limit=n)
    lts = src.layer_times(step_from, step_to)
    total = len(lts)
    if max_steps is not None:
        lts = lts[:max_steps]
    return total, len(lts), (lts[0].step if lts else None), (lts[-1].step if lts else None), iter(lts)


def iter_trace_events(reader, step_from: int | None = None, step_to: int | None = None,
                      max_steps: int | None = DEFAULT_TRACE_STEPS, meta: dict | None = None) -> Iterator[dict]:
    """The trace's events one by one (JSON-safe: NaN and infinities as None); ``meta``, when given,
    is filled with the ``otherData`` object before the first event is yielded."""
    src = as_source(reader)
    pid = 1
    total, n, lo, hi, lts = _profiled(src, step_from, step_to, max_steps)
    if meta is not None:
        meta.update({"layerscope_session": str(getattr(reader, "path", "")), "status": src.status,
                     "title": _title(src), "profiled_steps_total": total, "profiled_steps_in_trace": n})
        if n:
            meta["steps_in_trace"] = [lo, hi]
    yield {"ph": "M", "pid": pid, "name": "process_name", "args": {"name": f"LayerScope: {_title(src)}"}}
    for tid, name in ((_TID_STEPS, "steps"), (_TID_FWD, "forward"), (_TID_BWD, "backward")):
        yield {"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}}
        yield {"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": tid}}
    kinds = {r.node_id: r.kind for r in src.layers()}
    for lt in lts:
        base = lt.t * 1e6
        # a session's layer times are finite (the reader refuses others), so with a finite step
        # start every slice is JSON-safe as made: the walk of ``jsonable`` is only for the rest
        safe = (lambda e: e) if isinstance(base, (int, float)) and math.isfinite(base) and \
            hasattr(reader, "iter_layer_times") else _jsonable
        for k, nid in enumerate(lt.node_ids):
            args = {"step": lt.step, "kind": kinds.get(nid)}
            f, fs = lt.fwd_ms[k], lt.fwd_start_ms[k] if k < len(lt.fwd_start_ms) else None
            if f is not None and fs is not None:
                yield safe({"ph": "X", "pid": pid, "tid": _TID_FWD, "name": nid, "cat": "forward",
                            "ts": round(base + fs * 1000, 3), "dur": round(f * 1000, 3), "args": args})
            b = lt.bwd_ms[k] if k < len(lt.bwd_ms) else None
            bs = lt.bwd_start_ms[k] if k < len(lt.bwd_start_ms) else None
            if b is not None and bs is not None:
                yield safe({"ph": "X", "pid": pid, "tid": _TID_BWD, "name": nid, "cat": "backward",
                            "ts": round(base + bs * 1000, 3), "dur": round(b * 1000, 3), "args": args})
    limited = step_from is not None or step_to is not None or n < total
    steps = src.iter_steps() if hasattr(src, "iter_steps") else src.steps()
    for s in steps:
        if limited and (lo is None or s.step < lo or s.step > hi):
            continue
        start = s.t * 1e6
        if s.data_ms:
            yield _jsonable({"ph": "X", "pid": pid, "tid": _TID_STEPS, "name": "waiting for data", "cat": "data",
                             "ts": round(start, 3), "dur": round(s.data_ms * 1000, 3), "args": {"step": s.step}})
            start += s.data_ms * 1000
        args = {"step": s.step, "phase": s.phase, "loss": s.loss, "accuracy": s.accuracy,
                "samples_per_s": s.samples_per_s, "warmup": s.warmup, "profiled": s.profiled, "data_ms": s.data_ms}
        yield _jsonable({"ph": "X", "pid": pid, "tid": _TID_STEPS, "name": f"{s.phase} step {s.step}", "cat": "step",
                         "ts": round(start, 3), "dur": round(s.step_ms * 1000, 3), "args": args})
    for source, metric in src.telemetry_series():
        spec = next((c for c in _COUNTERS if c[0] == metric), None)
        if spec is None:
            continue
        _, name, scale, unit = spec
        track = f"{name} ({source})"
        points = src.iter_series(source, metric) if hasattr(src, "iter_series") else zip(*src.series(source, metric))
        for t, v in points:
            yield _jsonable({"ph": "C", "pid": pid, "name": track, "ts": round(t * 1e6, 1), "args": {unit: v * scale}})


def trace_events(reader, step_from: int | None = None, step_to: int | None = None,
                 max_steps: int | None = DEFAULT_TRACE_STEPS) -> dict:
    """The Chrome trace event JSON object, in memory (``export_trace`` streams the same to a file):
    one slice per layer per phase (forward and backward tracks) for the profiled steps, a slice
    per step, counter tracks for telemetry."""
    meta: dict = {}
    ev = list(iter_trace_events(reader, step_from, step_to, max_steps, meta))
    return {"traceEvents": ev, "displayTimeUnit": "ms", "otherData": meta}


def write_trace(reader, path, step_from: int | None = None, step_to: int | None = None,
                max_steps: int | None = DEFAULT_TRACE_STEPS) -> dict:
    """Stream the Chrome trace JSON into ``path`` event by event (memory independent of the
    session's length); returns its ``otherData`` (profiled steps in the session and in the trace)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta: dict = {}
    dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    with open(p, "w", encoding="utf-8") as f:
        f.write('{"traceEvents":[')
        buf, first = [], True
        for e in iter_trace_events(reader, step_from, step_to, max_steps, meta):
            buf.append(e)
            if len(buf) == 1024:  # encoded and written 1024 events at a time: the file, not memory, grows
                f.write(("" if first else ",") + dumps(buf)[1:-1])
                buf, first = [], False
        if buf:
            f.write(("" if first else ",") + dumps(buf)[1:-1])
        f.write('],"displayTimeUnit":"ms","otherData":' + dumps(_jsonable(meta)) + "}")
    return meta


def export_trace(reader, path, step_from: int | None = None, step_to: int | None = None,
                 max_steps: int | None = DEFAULT_TRACE_STEPS) -> Path:
    """Write the Chrome trace JSON, streamed (``write_trace``); at most ``max_steps`` profiled steps
    (chrome://tracing slows down beyond ~100 MB; Perfetto copes with more - pass max_steps=None)."""
    write_trace(reader, path, step_from, step_to, max_steps)
    return Path(path)
