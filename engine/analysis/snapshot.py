"""The figures of a live run, from a ``LiveSnapshot``, through the same functions as the exports.

A snapshot holds the last profiled steps as node x step matrices (``heat_fwd``/``heat_bwd``,
the LayerTimes in the feed's window are their last ``profiled_steps`` columns) and the step
history as columns; here they become the plain per-node samples and step records that
``engine.analysis.layers``, ``stats`` and ``energy`` take. So a view of a run and an export of
its session agree on every figure whenever both see the same steps: a run shorter than the
feed's window (``LiveFeed(window=50)``; the step history keeps 3000).
"""
from __future__ import annotations

import math

from engine.analysis.energy import energy_per_sample, energy_windows
from engine.analysis.layers import LayerSamples, batch_size, layer_rows
from engine.analysis.stats import layer_step_ms, steady_steps, step_time_stats
from engine.run.live import STEP_COLUMNS
from engine.records import StepRecord

_last: list = [None, None]  # (snapshot, rows): the views of one frame share one computation


def samples_from_snapshot(snap) -> LayerSamples:
    """Per-node forward/backward ms of the profiled steps in the feed's window, warm-up steps
    left out (as ``steady_layer_times`` does for a session)."""
    out = LayerSamples(order=list(snap.node_ids))
    heat_f, heat_b = snap.heat_fwd, snap.heat_bwd
    cols = heat_f.shape[1] if heat_f.ndim == 2 else 0
    k = min(int(snap.profiled_steps), cols)
    keep = list(range(cols - k, cols))
    if keep and snap.history.size:
        step_col, warm_col = snap.column("step"), snap.column("warmup")
        warm = {int(s) for s, w in zip(step_col.tolist(), warm_col.tolist()) if w > 0}
        steps = snap.heat_steps.tolist()
        keep = [c for c in keep if int(steps[c]) not in warm] or keep
    fwd = heat_f[:, keep].tolist() if keep else [[] for _ in snap.node_ids]
    bwd = heat_b[:, keep].tolist() if keep else [[] for _ in snap.node_ids]
    for i, nid in enumerate(snap.node_ids):
        out.fwd[nid], out.bwd[nid] = fwd[i], bwd[i]
        out.mem[nid], out.peak[nid] = [], []
    # page faults: those of the latest step that counted them (the probe counts them on at most a
    # few steps a second; the feed keeps only the last LayerTimes, so the last counted one is kept here)
    lt = snap.last_layer_times
    if lt is not None and getattr(lt, "minor_faults", None):
        _faults_seen[:] = [snap.info, lt]
    elif _faults_seen[0] is snap.info and snap.info is not None:
        lt = _faults_seen[1]
    else:
        lt = None
    if lt is not None and getattr(lt, "minor_faults", None):
        for nid, f in zip(lt.node_ids, lt.minor_faults):
            out.faults[nid] = [f]
        out.fault_ns = lt.fault_ns
    return out


_faults_seen: list = [None, None]  # (RunInfo of the run, its last LayerTimes with page faults)


def snapshot_layer_rows(snap) -> list[dict]:
    """``layer_rows`` of a snapshot (net order; the keys of ``engine.layer_summary``). ``mem_bytes``
    is the latest per-layer memory the feed holds; per-layer energy is not estimated live.
    Empty before the run's RunInfo arrived."""
    if _last[0] is snap:
        return _last[1]
    info = snap.info
    if info is None:
        return []
    mem = {}
    for nid, m in zip(snap.node_ids, snap.layer_mem.tolist()):
        mem[nid] = int(round(m)) if math.isfinite(m) else None
    rows = layer_rows(info.layers, samples_from_snapshot(snap), layer_step_ms(snap.steps), batch_size(info) or 1,
                      (info.config or {}).get("mode"), mem_bytes=mem)
    _last[0], _last[1] = snap, rows
    return rows


def layer_memory(snap) -> tuple[dict, str]:
    """({node_id: bytes or None}, what) of each layer of a snapshot: the memory the probes measured
    (allocator growth on CUDA, "measured") while any was, else the activation bytes of the
    layer's output for the run's batch ("activation"). One kind for all layers, never a mix."""
    ids = snap.node_ids
    measured = {nid: (m if math.isfinite(m) else None) for nid, m in zip(ids, snap.layer_mem.tolist())}
    if any(v is not None for v in measured.values()):
        return measured, "measured"
    rows = {r.node_id: r for r in (snap.info.layers if snap.info else [])}
    return {nid: (float(rows[nid].act_bytes) if nid in rows else None) for nid in ids}, "activation"


def node_metrics(snap) -> dict:
    """{node_id: {"time_ms", "mem_bytes", "gflops"}} for colouring the net canvas: mean forward +
    backward ms, the layer's memory as ``layer_memory`` gives it (what the memory view draws) and
    forward GFLOP/s at the median time. A key is absent where the figure is unknown; a node with
    none is left out."""
    if snap is None or snap.info is None:
        return {}
    out = {}
    mem_of, _what = layer_memory(snap)
    for r in snapshot_layer_rows(snap):
        d = {}
        f, b = r["fwd_mean_ms"], r["bwd_mean_ms"]
        if f is not None or b is not None:
            d["time_ms"] = (f or 0.0) + (b or 0.0)
        mem = mem_of.get(r["id"])
        if mem is None and r["id"] not in mem_of and r["act_bytes"] is not None:
            mem = float(r["act_bytes"])
        if mem is not None:
            d["mem_bytes"] = float(mem)
        if r["fwd_gflops"] is not None:
            d["gflops"] = r["fwd_gflops"]
        if d:
            out[r["id"]] = d
    return out


def history_steps(snap) -> list:
    """The snapshot's step history (up to the feed's ``history`` rows) as StepRecords. The
    history keeps no phase or profiled flag: the phase is the run's mode (a run emits no
    test-phase steps; evaluations are EvalRecords)."""
    h = snap.history
    if not h.size:
        return []
    phase = ((snap.info.config if snap.info else None) or {}).get("mode") or "train"
    c = {name: h[:, i].tolist() for i, name in enumerate(STEP_COLUMNS)}
    none = lambda v: None if not math.isfinite(v) else v  # noqa: E731
    return [StepRecord(int(c["step"][i]), c["t"][i], phase, none(c["loss"][i]), none(c["accuracy"][i]),
                       c["step_ms"][i], c["samples_per_s"][i], none(c["data_ms"][i]),
                       None if not math.isfinite(c["epoch"][i]) else int(c["epoch"][i]), c["warmup"][i] > 0)
            for i in range(len(h))]


def snapshot_step_stats(snap) -> dict:
    """``step_time_stats`` of the steps in the feed's window."""
    return step_time_stats(snap.steps)


def snapshot_energy(snap, source: str) -> tuple[list, dict | None]:
    """(windows, total) of one energy counter ("nvml:0", "rapl:package-0") over the steady steps
    of the history: ``energy_windows`` to draw and ``energy_per_sample`` - the figure the JSON
    export reports as that source's energy. ([], None) when the counter is absent or too short."""
    arr = snap.telemetry.get((source, "energy_j"))
    if arr is None or len(arr) < 2:
        return [], None
    ts, vs = arr[:, 0].tolist(), arr[:, 1].tolist()
    steps = steady_steps(history_steps(snap))
    return energy_windows(ts, vs, steps), energy_per_sample(ts, vs, steps)
