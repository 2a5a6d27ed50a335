"""Per-layer statistics and run totals from a session (or from the records of a live run).

Warm-up steps are left out of every statistic. Times are per step of the run's batch; FLOP
rates use the forward FLOPs per sample that PyTorch counted (backward taken as 2x forward).
Per-layer energy, where given, is an estimate: the run's measured energy per sample split by
each layer's share of the step time.
"""
from __future__ import annotations

import math
from typing import Iterable

from engine.run.records import LayerTimes, RunEnded, RunInfo, StepRecord, TelemetryBatch, EvalRecord
from engine.run.telemetry import energy_per_sample, step_samples, step_span

TRAIN_FLOP_FACTOR = 3.0  # forward + backward (~2x forward) per sample


class _Records:
    """The slice of the SessionReader interface the summary needs, over an in-memory record list."""

    def __init__(self, records: Iterable):
        self.info: RunInfo | None = None
        self._steps, self._lts, self._tel, self._evals = [], [], [], []
        self._ended = None
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
        self.meta = {"status": self._ended.status if self._ended else "running"}
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


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (as numpy's default); None for no values."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    k = (len(v) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def _mean(values):
    v = [x for x in values if x is not None]
    return sum(v) / len(v) if v else None


def _int(v):
    return None if v is None else int(round(v))


def _batch(src) -> int | None:
    b = (src.info.config or {}).get("batch_size")
    return int(b) if b else None


def _main_steps(src) -> list[StepRecord]:
    """Steps of the run's own phase (train/infer/benchmark), not test-evaluation batches."""
    return [s for s in src.steps() if s.phase != "test"]


def steady_steps(src) -> list[StepRecord]:
    """The steps statistics are taken over: no warm-up, no test batches (all steps if only warm-up ran)."""
    steps = _main_steps(src)
    steady = [s for s in steps if not s.warmup]
    return steady or steps


def steady_layer_times(src) -> list[LayerTimes]:
    """Profiled steps that were not warm-up (all of them if every one was warm-up)."""
    warm = {s.step for s in _main_steps(src) if s.warmup}
    lts = src.layer_times()
    steady = [lt for lt in lts if lt.step not in warm]
    return steady or lts


def layer_summary(reader_or_records, energy: dict | None = None) -> list[dict]:
    """One dict per node (topological order): shape, params, FLOPs, mean/median/p95 forward and
    backward ms, share of the step time, achieved GFLOP/s, activation and memory bytes."""
    src = as_source(reader_or_records)
    lts = steady_layer_times(src)
    steps = steady_steps(src)
    step_ms = _mean([s.step_ms for s in steps if s.profiled]) or _mean([s.step_ms for s in steps])
    batch = _batch(src) or 1
    mode = (src.info.config or {}).get("mode")
    fwd: dict[str, list] = {}
    bwd: dict[str, list] = {}
    mem: dict[str, list] = {}
    peak: dict[str, list] = {}
    order: list[str] = []
    for lt in lts:
        for k, nid in enumerate(lt.node_ids):
            if nid not in fwd:
                fwd[nid], bwd[nid], mem[nid], peak[nid] = [], [], [], []
                order.append(nid)
            fwd[nid].append(lt.fwd_ms[k] if k < len(lt.fwd_ms) else None)
            bwd[nid].append(lt.bwd_ms[k] if k < len(lt.bwd_ms) else None)
            mem[nid].append(lt.mem_bytes[k] if k < len(lt.mem_bytes) else None)
            peak[nid].append(lt.peak_bytes[k] if k < len(lt.peak_bytes) else None)
    layers = {r.node_id: r for r in src.layers()}
    ids = [r.node_id for r in sorted(layers.values(), key=lambda r: r.idx)]
    ids += [n for n in order if n not in layers]
    j_per_sample = (energy or {}).get("j_per_sample")
    rows = []
    for nid in ids:
        r = layers.get(nid)
        f, b = fwd.get(nid, []), bwd.get(nid, [])
        fmed, bmed = percentile(f, 50), percentile(b, 50)
        fmean, bmean = _mean(f), _mean(b)
        total_mean = (fmean or 0.0) + (bmean or 0.0) if fmean is not None or bmean is not None else None
        flops = r.flops if r else None
        row = {
            "id": nid, "kind": r.kind if r else None,
            "out_shape": list(r.out_shape) if r else None,
            "params": r.params if r else None, "flops": flops,
            "act_bytes": r.act_bytes if r else None,
            "samples": len([x for x in f if x is not None]),
            "fwd_mean_ms": fmean, "fwd_median_ms": fmed, "fwd_p95_ms": percentile(f, 95),
            "bwd_mean_ms": bmean, "bwd_median_ms": bmed, "bwd_p95_ms": percentile(b, 95),
            "share": total_mean / step_ms if total_mean is not None and step_ms else None,
            "fwd_gflops": (flops * batch / (fmed / 1000.0) / 1e9) if flops and fmed else None,
            "total_gflops": None,
            "mem_bytes": _int(percentile(mem.get(nid, []), 50)),
            "peak_bytes": max([x for x in peak.get(nid, []) if x is not None], default=None),
            "energy_est_j_per_sample": None,
        }
        if mode == "train" and flops and fmed and bmed:
            row["total_gflops"] = TRAIN_FLOP_FACTOR * flops * batch / ((fmed + bmed) / 1000.0) / 1e9
        elif flops and fmed and not bmed:
            row["total_gflops"] = row["fwd_gflops"]
        if j_per_sample is not None and row["share"] is not None:
            row["energy_est_j_per_sample"] = j_per_sample * row["share"]
        rows.append(row)
    return rows


ENERGY_COUNTERS = ("energy_j",)


def run_energy(src) -> dict:
    """Energy per step / per sample for each energy counter recorded ({source: dict}); empty if none."""
    steps = steady_steps(src)
    out = {}
    for source, metric in src.telemetry_series():
        if metric not in ENERGY_COUNTERS:
            continue
        ts, vs = src.series(source, metric)
        e = energy_per_sample(ts, vs, steps, span=step_span)
        if e is not None:
            out[source] = e
    return out


def power_note(src) -> str | None:
    """Why no power/energy series is in this session (None when there is one)."""
    series = src.telemetry_series()
    if any(m == "power_w" for _, m in series):
        return None
    tel = ((src.info.device or {}).get("telemetry") or (getattr(src, "meta", None) or {}).get("telemetry"))
    reasons = []
    if isinstance(tel, dict):
        for name in ("nvml", "rapl"):
            st = tel.get(name)
            if isinstance(st, dict) and not st.get("available") and st.get("reason"):
                reasons.append(st["reason"])
    if reasons:
        return "Power was not recorded: " + "; ".join(reasons) + "."
    if not series:
        return "Power was not recorded: this session holds no telemetry."
    return "Power was not recorded: no power source (NVML or RAPL) was readable during this run."


def run_summary(reader_or_records) -> dict:
    """Run totals: identity, status, step time, throughput, loss/accuracy, memory, energy."""
    src = as_source(reader_or_records)
    info = src.info
    cfg = info.config or {}
    net = cfg.get("net") or {}
    main = _main_steps(src)
    steps = steady_steps(src)
    step_ms = [s.step_ms for s in steps]
    samples = sum(step_samples(s) for s in steps)
    busy_s = sum(s.step_ms + (s.data_ms or 0.0) for s in steps) / 1000.0
    energy = run_energy(src)
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
    lts = steady_layer_times(src)
    fwd_sum = [sum(x for x in lt.fwd_ms if x is not None) for lt in lts]
    bwd_sum = [sum(x for x in lt.bwd_ms if x is not None) for lt in lts]
    primary = _primary_energy(energy, info)
    return {
        "net": net.get("name") or cfg.get("net_name"),
        "status": src.status,
        "message": ended.message if ended else "",
        "mode": cfg.get("mode"), "device": (info.device or {}).get("id") or cfg.get("device"),
        "device_name": (info.device or {}).get("name"),
        "precision": cfg.get("precision"), "batch_size": _batch(src),
        "steps": len(main), "steady_steps": len(steps), "warmup_steps": len([s for s in main if s.warmup]),
        "profiled_steps": len(src.layer_times()) if not hasattr(src, "profiled_step_count")
        else src.profiled_step_count(),
        "step_ms_mean": _mean(step_ms), "step_ms_median": percentile(step_ms, 50),
        "step_ms_p95": percentile(step_ms, 95),
        "samples_per_s": samples / busy_s if busy_s else None,
        "layers_fwd_ms_median": percentile(fwd_sum, 50),
        "layers_bwd_ms_median": percentile(bwd_sum, 50) if any(bwd_sum) else None,
        "loss": last_loss, "accuracy": last_acc, "test_accuracy": test_acc,
        "peak_mem_bytes": max(peaks) if peaks else None,
        "rss_max_bytes": max(rss) if rss else None,
        "gpu_mem_max_bytes": max(gpu_mem) if gpu_mem else None,
        "energy": energy,
        "energy_source": primary,
        "j_per_sample": energy[primary]["j_per_sample"] if primary else None,
        "power_note": power_note(src),
        "elapsed_s": (ended.t if ended else (max((s.t for s in main), default=None))),
    }


def _primary_energy(energy: dict, info: RunInfo) -> str | None:
    """The energy source that belongs to the run's device: the GPU's counter for a CUDA run,
    the CPU package for a CPU run."""
    if not energy:
        return None
    dev = str((info.device or {}).get("id") or (info.config or {}).get("device") or "")
    if dev.startswith("cuda"):
        idx = dev.split(":")[1] if ":" in dev else "0"
        for key in (f"nvml:{idx}", *sorted(k for k in energy if k.startswith("nvml"))):
            if key in energy:
                return key
    for key in sorted(energy):
        if key.startswith("rapl") and "package" in key:
            return key
    return sorted(energy)[0]


def summary(reader_or_records) -> dict:
    """Run totals and per-layer rows together (the JSON export and ``layerscope summary``)."""
    src = as_source(reader_or_records)
    run = run_summary(src)
    energy = run["energy"].get(run["energy_source"]) if run["energy_source"] else None
    return {"run": run, "layers": layer_summary(src, energy=energy)}


def fmt_bytes(v, missing: str = "-") -> str:
    """Bytes for people (binary units, one decimal); ``missing`` stands for an absent value."""
    if v is None:
        return missing
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(v) >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v:.0f} B"
