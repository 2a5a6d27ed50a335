"""Run totals and per-layer rows of a session (or of the records of a run): what the JSON
export, the HTML report and ``layerscope summary`` print.

This module only assembles; each figure is computed by one function elsewhere in
``engine.analysis``: step statistics in ``stats``, per-layer figures in ``layers``, energy in
``energy`` (and ``snapshot`` feeds a live run's state to the same functions). Warm-up steps are
left out of every statistic. Per-layer energy, where given, is an estimate: the run's measured
energy per sample split by each layer's share of the step time.
"""
from __future__ import annotations

from typing import Iterable

from engine.analysis import layers as _layers
from engine.analysis.energy import ENERGY_COUNTERS, power_note as _power_note, primary_energy_source, run_energy as _run_energy
from engine.analysis.layers import TRAIN_FLOP_FACTOR, batch_size  # noqa: F401  (TRAIN_FLOP_FACTOR: public here too)
from engine.analysis.stats import (NS_PER_MS, batch_requested, main_steps, ms_of_ns, ns_total, percentile,
                                   steady_steps as _steady, step_time_stats)
from engine.records import LayerTimes, RunEnded, RunInfo, StepRecord, TelemetryBatch, TelemetryStatus, EvalRecord


class _Records:
    """The slice of the SessionReader interface the summary needs, over an in-memory record list."""

    def __init__(self, records: Iterable):
        self.info: RunInfo | None = None
        self._steps, self._lts, self._tel, self._evals = [], [], [], []
        self._ended = None
        telemetry = None
        for r in records:
            if isinstance(r, RunInfo):
                self.info = r
            elif isinstance(r, StepRecord):
                self._steps.append(r)
            elif isinstance(r, LayerTimes):
                self._lts.append(r)
            elif isinstance(r, TelemetryBatch):
                self._tel.extend(r.samples)
            elif isinstance(r, EvalRecord):
                self._evals.append(r)
            elif isinstance(r, RunEnded):
                self._ended = r
            elif isinstance(r, TelemetryStatus):
                telemetry = r.status
        self.meta = {"status": self._ended.status if self._ended else "running"}
        if telemetry is not None:  # as a session stores it
            self.meta["telemetry"] = telemetry
        if self.info is None:
            self.info = RunInfo(config={}, device={}, versions={}, host="", start_time=0.0)

    @property
    def status(self):
        return self.meta["status"]

    def layers(self):
        return list(self.info.layers)

    def steps(self, phase=None):
        return [s for s in self._steps if phase is None or s.phase == phase]

    def layer_times(self, step_from=None, step_to=None):
        return [lt for lt in self._lts if (step_from is None or lt.step >= step_from)
                and (step_to is None or lt.step <= step_to)]

    def telemetry_series(self):
        seen = {}
        for s in self._tel:
            seen.setdefault((s.source, s.metric), None)
        return list(seen)

    def series(self, source, metric):
        pts = [(s.t, s.value) for s in self._tel if s.source == source and s.metric == metric]
        return [p[0] for p in pts], [p[1] for p in pts]

    def evals(self):
        return list(self._evals)

    def ended(self):
        return self._ended


def as_source(reader_or_records):
    """A SessionReader stays as is; a list of records is wrapped to look like one."""
    if hasattr(reader_or_records, "layer_times") and hasattr(reader_or_records, "steps"):
        return reader_or_records
    return _Records(reader_or_records)


class _StepsOnce:
    """A source whose ``steps()`` is read once (a summary asks for them several times)."""

    def __init__(self, src):
        self._src = src
        self._steps = None

    def steps(self, phase=None):
        if self._steps is None:
            self._steps = self._src.steps()
        return [s for s in self._steps if phase is None or s.phase == phase]

    def __getattr__(self, name):
        return getattr(self._src, name)


def _in_sql(src) -> bool:
    """Whether the per-layer figures come from the session's SQL aggregates (a SessionReader)."""
    return hasattr(src, "node_order_stats")


def _sql_ranks(column: str, n: int) -> set[int]:
    """The ranks of ``n`` sorted values each column's figures read: p5/median/p95 of the layer
    times, the median of bytes, faults and per-step layer sums, none of the peak."""
    if column in ("fwd_ns", "bwd_ns"):
        return _layers.order_ranks(n)
    if column == "peak_bytes":
        return set()
    return _layers.order_ranks(n, (50,))


def _median(n: int, at: dict):
    return _layers.median_from_order(n, at)


def _sql_node_stats(reader) -> tuple[list, dict]:
    """(node order, ``layers.node_stats``) of a session from its SQL aggregates (stored by the
    writer, or computed from the rows once): only the values at the ranks the percentiles read
    leave SQLite, so memory does not grow with the session."""
    fault_ns = reader.aggregates(_sql_ranks)["fault_ns"]  # one pass for every column below
    median_ranks = lambda n: _layers.order_ranks(n, (50,))  # noqa: E731
    agg = {c: reader.node_order_stats(c, ranks) for c, ranks in
           (("fwd_ns", _layers.order_ranks), ("bwd_ns", _layers.order_ranks), ("mem_bytes", median_ranks),
            ("peak_bytes", lambda n: ()), ("minor_faults", median_ranks))}
    order = list(agg["fwd_ns"])
    stats = {}
    for nid in order:
        f, b, m, p, flt = (agg[c].get(nid) or {"n": 0, "sum": 0, "max": None, "at": {}}
                           for c in ("fwd_ns", "bwd_ns", "mem_bytes", "peak_bytes", "minor_faults"))
        med = _median(m["n"], m["at"])
        stats[nid] = {"fwd": _layers.time_stats_from_order(f["n"], f["sum"], f["at"]),
                      "bwd": _layers.time_stats_from_order(b["n"], b["sum"], b["at"]),
                      "mem": None if med is None else int(round(med)), "peak": p["max"],
                      "faults": _median(flt["n"], flt["at"]), "fault_ns": fault_ns}
    return order, stats


def _sql_step_sum_medians(reader) -> tuple[float | None, float | None]:
    """(median forward, median backward ms) of the per-step layer sums, from the SQL aggregates;
    the backward one None when every step summed to 0 (no backward)."""
    from engine.session.aggregates import value_at

    out = []
    for c in ("step_fwd_ns", "step_bwd_ns"):
        st = reader.aggregates(_sql_ranks)["steps"][c]
        n = st["n"]
        at = {r: value_at(st, r) for r in _sql_ranks(c, n)} if n else {}
        med = None
        if n:  # as ``percentile`` of the sums in ms: the two neighbours in ms, then interpolated
            lo, hi, w = _layers.percentile_ranks(n, 50)
            med = _layers.interpolate(at[lo] / NS_PER_MS, at[hi] / NS_PER_MS, w)
        out.append((med, bool(n and (st["max"] or st["min"]))))
    (fwd, _), (bwd, any_bwd) = out
    return fwd, (bwd if any_bwd else None)


def steady_steps(src) -> list[StepRecord]:
    """The steps statistics are taken over (see ``stats.steady_steps``) of a session or record list."""
    return _steady(as_source(src).steps())


def steady_layer_times(src) -> list[LayerTimes]:
    """Profiled steps that were not warm-up (all of them if every one was warm-up)."""
    src = as_source(src)
    return _layers.steady_layer_times(src.steps(), src.layer_times())


def layer_summary(reader_or_records, energy: dict | None = None) -> list[dict]:
    """One dict per node (topological order): shape, params, FLOPs, mean/median/p95 forward and
    backward ms, share of the step time, achieved GFLOP/s, activation and memory bytes
    (``engine.analysis.layers.layer_rows``). ``energy``: the run's primary energy dict, for the
    per-layer estimate."""
    src = as_source(reader_or_records)
    j = (energy or {}).get("j_per_sample")
    if not _in_sql(src):
        return _layers.summary_layer_rows(src.info, src.steps(), src.layer_times(), j)
    info, steps = src.info, src.steps()
    order, stats = _sql_node_stats(src)
    return _layers.rows_from_stats(info.layers, order, stats, _layers.layer_step_ms(steps),
                                   batch_size(info) or 1, (info.config or {}).get("mode"), j)


def _counters(src) -> dict:
    return {source: src.series(source, metric) for source, metric in src.telemetry_series()
            if metric in ENERGY_COUNTERS}


def run_energy(src) -> dict:
    """Energy per step / per sample for each energy counter recorded ({source: dict}); empty if none."""
    src = as_source(src)
    return _run_energy(_counters(src), steady_steps(src))


def telemetry_status(src) -> dict | None:
    """The telemetry status stored with the run (``Telemetry.status()`` of its sampler: per source
    and per metric, available or why not); None when the session has none."""
    src = as_source(src)
    tel = ((src.info.device or {}).get("telemetry") or (getattr(src, "meta", None) or {}).get("telemetry"))
    return tel if isinstance(tel, dict) else None


def power_note(src, energy: dict | None = None) -> str | None:
    """Why this run has no energy figure for its device, with the reasons its telemetry status
    gave per metric (``engine.analysis.energy.power_note``); None when it has one. ``energy``:
    ``run_energy(src)`` when already computed."""
    src = as_source(src)
    tel = telemetry_status(src)
    device = (src.info.device or {}).get("id") or (src.info.config or {}).get("device")
    energy = run_energy(src) if energy is None else energy
    if primary_energy_source(energy, device) is not None:
        return None
    series = src.telemetry_series()
    note = _power_note(series, tel, device)
    if note is None and device:
        return ("Energy was not measured: the energy counter was recorded, but the steady steps "
                "did not span a window of at least 1 s.")
    return note


def _device(info) -> str | None:
    return (info.device or {}).get("id") or (info.config or {}).get("device")


def run_summary(reader_or_records, *, layers: list | None = None, energy: dict | None = None) -> dict:
    """Run totals: identity, status, step time, throughput, loss/accuracy, memory, energy, and
    the page-fault cost (``layers.run_faults``: fault_ms, fault_share of the median step time,
    fault_fwd_share, fault_advice when it is large).

    ``batch_size`` is the batch the run really used (capped to a smaller train split);
    ``batch_requested`` the one asked for. ``layers`` (``layer_summary``) and ``energy``
    (``run_energy``): when already computed."""
    src = as_source(reader_or_records)
    if not isinstance(src, _StepsOnce):  # the steps are read once for every figure below
        src = _StepsOnce(src)
    info = src.info
    cfg = info.config or {}
    net = cfg.get("net") or {}
    all_steps = src.steps()
    main = main_steps(all_steps)
    steps = _steady(all_steps)
    energy = run_energy(src) if energy is None else energy
    ended = src.ended()
    evals = src.evals()
    test_acc = (ended.extra or {}).get("test_accuracy") if ended else None
    if test_acc is None and evals:
        test_acc = evals[-1].accuracy
    last_loss = next((s.loss for s in reversed(main) if s.loss is not None), None)
    last_acc = next((s.accuracy for s in reversed(main) if s.accuracy is not None), None)
    peaks = [s.peak_mem_bytes for s in main if s.peak_mem_bytes is not None]
    rss = src.series("psutil", "rss_bytes")[1]
    gpu_mem = []
    for source, metric in src.telemetry_series():
        if metric == "mem_used_bytes":
            gpu_mem += src.series(source, metric)[1]
    if _in_sql(src):
        fwd_median, bwd_median = _sql_step_sum_medians(src)
    else:  # exact sums in whole ns, as SQL gives them
        lts = steady_layer_times(src)
        fwd_sum = [ms_of_ns(ns_total(lt.fwd_ms)) for lt in lts]
        bwd_sum = [ms_of_ns(ns_total(lt.bwd_ms)) for lt in lts]
        fwd_median, bwd_median = percentile(fwd_sum, 50), (percentile(bwd_sum, 50) if any(bwd_sum) else None)
    primary = primary_energy_source(energy, _device(info))
    time_stats = step_time_stats(all_steps)
    faults = _layers.run_faults(layer_summary(src) if layers is None else layers, time_stats["step_ms_median"])
    return {
        "net": net.get("name") or cfg.get("net_name"),
        "status": src.status,
        "message": ended.message if ended else "",
        "mode": cfg.get("mode"), "device": (info.device or {}).get("id") or cfg.get("device"),
        "device_name": (info.device or {}).get("name"),
        "precision": cfg.get("precision"), "batch_size": batch_size(info),
        "batch_requested": batch_requested(info),  # differs from batch_size when the dataset capped it
        "steps": len(main), "steady_steps": len(steps), "warmup_steps": len([s for s in main if s.warmup]),
        "profiled_steps": len(src.layer_times()) if not hasattr(src, "profiled_step_count")
        else src.profiled_step_count(),
        **time_stats,
        "layers_fwd_ms_median": fwd_median,
        "layers_bwd_ms_median": bwd_median,
        "loss": last_loss, "accuracy": last_acc, "test_accuracy": test_acc,
        "peak_mem_bytes": max(peaks) if peaks else None,
        "rss_max_bytes": max(rss) if rss else None,
        "gpu_mem_max_bytes": max(gpu_mem) if gpu_mem else None,
        "energy": energy,
        "energy_source": primary,
        # the powercap zones the energy source sums, e.g. ["package-0 (intel-rapl:0)", "package-1 (intel-rapl:1)"]
        "energy_domains": list(((telemetry_status(src) or {}).get("rapl") or {}).get("domains", {}).get(primary) or [])
        if primary and primary.startswith("rapl") else [],
        "j_per_sample": energy[primary]["j_per_sample"] if primary else None,
        "power_note": power_note(src, energy),
        "elapsed_s": (ended.t if ended else (max((s.t for s in main), default=None))),
        "fault_ms": faults["fault_ms"], "fault_share": faults["fault_share"],
        "fault_fwd_share": faults["fault_fwd_share"], "fault_advice": faults["advice"],
        # how the layers were timed ("native", "python (why)", "device events"); None: older sessions
        "probe_hooks": (ended.extra or {}).get("probe_hooks") if ended else None,
    }


def summary(reader_or_records) -> dict:
    """Run totals and per-layer rows together (the JSON export and ``layerscope summary``)."""
    src = _StepsOnce(as_source(reader_or_records))
    energy = run_energy(src)
    primary = primary_energy_source(energy, _device(src.info))
    layers = layer_summary(src, energy=energy.get(primary) if primary else None)
    return {"run": run_summary(src, layers=layers, energy=energy), "layers": layers}

