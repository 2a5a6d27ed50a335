"""Energy from cumulative counters: J per step and per sample over the steady steps, the run's
primary meter, and why a session holds no power figure.

One method for every consumer (the JSON/CSV/HTML exports, ``layerscope summary`` and the app's
power view): the counter (NVML ``energy_j`` or RAPL, in J, sampled at the telemetry rate) is
linearly interpolated at the start and end of windows of consecutive steps lasting at least
``min_window_s``; a window's energy is the counter difference, its samples those its steps
processed. Inputs are plain lists and step records, so a session reader and a live snapshot feed
the same functions.
"""
from __future__ import annotations

import bisect

ENERGY_COUNTERS = ("energy_j",)


def counter_at(ts: list[float], values: list[float], t: float) -> float | None:
    """A cumulative counter's value at time ``t`` by linear interpolation; None outside the samples."""
    if not len(ts) or t < ts[0] or t > ts[-1]:
        return None
    i = bisect.bisect_left(ts, t)
    if ts[i] == t or i == 0:
        return values[i]
    t0, t1 = ts[i - 1], ts[i]
    return values[i - 1] + (values[i] - values[i - 1]) * (t - t0) / (t1 - t0)


def step_span(step) -> tuple[float, float]:
    """(start, end) of a StepRecord in run seconds: ``t`` is when the step began (before waiting
    for its batch), then ``data_ms`` of waiting and ``step_ms`` of compute."""
    return step.t, step.t + (step.step_ms + (step.data_ms or 0.0)) / 1000.0


def step_samples(step) -> float:
    """Samples the step processed (``samples_per_s`` counts the data wait and the compute)."""
    return step.samples_per_s * (step.step_ms + (step.data_ms or 0.0)) / 1000.0


def energy_windows(ts: list[float], energy_j: list[float], steps: list, *, min_window_s: float = 1.0,
                   span=step_span) -> list[dict]:
    """The windows ``energy_per_sample`` sums, in time order: dicts with ``start``/``end`` (run
    seconds), ``seconds``, ``joules``, ``steps``, ``samples`` and ``j_per_sample``.

    Consecutive steps are grouped into windows lasting at least ``min_window_s`` (a counter read at
    10 Hz is too coarse for one short step). Windows break at a phase change or a gap longer than
    twice the median step (e.g. a test evaluation in between); a short tail joins the window
    before it, so every step counts. A window the counter does not cover (or where it went
    backwards) is left out. Empty when there are fewer than two counter samples or no steps.
    """
    steps = [s for s in steps if s.step_ms and s.step_ms > 0]
    if len(ts) < 2 or not steps:
        return []
    # each step's span once (a long session has 100k steps): lists of indexes into ``steps``
    if span is step_span:  # inlined: the same arithmetic as ``step_span``, without 100k calls
        spans = [(s.t, s.t + (s.step_ms + (s.data_ms or 0.0)) / 1000.0) for s in steps]
    else:
        spans = [span(s) for s in steps]
    first = [sp[0] for sp in spans]
    if all(a <= b for a, b in zip(first, first[1:])):  # recorded in time order: nothing to sort
        starts, ends = first, [sp[1] for sp in spans]
    else:
        order = sorted(range(len(steps)), key=first.__getitem__)  # stable, as sorting the steps was
        steps = [steps[i] for i in order]
        starts = [spans[i][0] for i in order]
        ends = [spans[i][1] for i in order]
    med = sorted(s.step_ms for s in steps)[len(steps) // 2] / 1000.0
    max_gap = max(0.1, 2 * med)
    segments, cur = [], []
    for i, s in enumerate(steps):
        if cur and (s.phase != steps[cur[-1]].phase or starts[i] - ends[cur[-1]] > max_gap):
            segments.append(cur)
            cur = []
        cur.append(i)
    if cur:
        segments.append(cur)
    windows = []
    for seg in segments:
        chunks, cur = [], []
        for i in seg:
            cur.append(i)
            if ends[i] - starts[cur[0]] >= min_window_s:
                chunks.append(cur)
                cur = []
        if cur and chunks:
            chunks[-1].extend(cur)
        for idx in chunks:
            a, b = starts[idx[0]], ends[idx[-1]]
            e0, e1 = counter_at(ts, energy_j, a), counter_at(ts, energy_j, b)
            if e0 is None or e1 is None or e1 < e0:
                continue
            # ``step_samples`` of each step, inlined (the same arithmetic, without 100k calls)
            samples = sum(s.samples_per_s * (s.step_ms + (s.data_ms or 0.0)) / 1000.0 for s in map(steps.__getitem__, idx))
            windows.append({"start": a, "end": b, "seconds": b - a, "joules": e1 - e0, "steps": len(idx),
                            "samples": samples, "j_per_sample": (e1 - e0) / samples if samples else None})
    return windows


def energy_per_sample(ts: list[float], energy_j: list[float], steps: list, *, min_window_s: float = 1.0,
                      span=step_span) -> dict | None:
    """Energy per step and per sample from a cumulative energy counter (J) over the given steps,
    summed over ``energy_windows``: {joules, seconds, steps, samples, windows, j_per_step,
    j_per_sample (J), avg_power_w (W)}. None when no full window is covered by the counter."""
    windows = energy_windows(ts, energy_j, steps, min_window_s=min_window_s, span=span)
    if not windows:
        return None
    secs = sum(w["seconds"] for w in windows)
    joules = sum(w["joules"] for w in windows)
    nsteps = sum(w["steps"] for w in windows)
    samples = sum(w["samples"] for w in windows)
    return {"joules": joules, "seconds": secs, "steps": nsteps, "samples": round(samples),
            "windows": len(windows), "j_per_step": joules / nsteps, "j_per_sample": joules / samples if samples else None,
            "avg_power_w": joules / secs if secs else None}


def run_energy(counters: dict, steps: list) -> dict:
    """``energy_per_sample`` for each energy counter: ``counters`` maps a source ("nvml:0",
    "rapl:package-0") to its (times, joules) lists; ``steps`` are the steady steps. Sources
    without a full window are left out ({} when none has one)."""
    out = {}
    for source, (ts, vs) in counters.items():
        e = energy_per_sample(ts, vs, steps, span=step_span)
        if e is not None:
            out[source] = e
    return out


def primary_energy_source(energy: dict, device_id: str | None) -> str | None:
    """The energy source that belongs to the run's device: the GPU's NVML counter for a CUDA run
    (None when that GPU has none: a CPU package counter is not the GPU's energy), the CPU for any
    other run - ``rapl:packages`` (every package summed) where the machine has several, else the
    package zone, else the first source by name; None when ``energy`` is empty."""
    if not energy:
        return None
    dev = str(device_id or "")
    if dev.startswith("cuda"):
        idx = dev.split(":")[1] if ":" in dev else "0"
        return f"nvml:{idx}" if f"nvml:{idx}" in energy else None
    if "rapl:packages" in energy:
        return "rapl:packages"
    for key in sorted(energy):
        if key.startswith("rapl:package"):
            return key
    return sorted(energy)[0]


def availability_rows(status: dict | None) -> list[dict]:
    """A stored telemetry status (``Telemetry.status()``) as rows for a table: one per source
    ("nvml", "psutil", "rapl") and one per NVML metric and per RAPL recorded source, each
    {"source", "metric" ("" for the source itself), "available": bool, "reason"}. Empty when
    the session stored no status (older sessions)."""
    rows = []
    if not isinstance(status, dict):
        return rows
    for name, st in status.items():
        if not isinstance(st, dict):
            continue
        rows.append({"source": name, "metric": "", "available": bool(st.get("available")),
                     "reason": str(st.get("reason") or "")})
        for metric, ms in (st.get("metrics") or {}).items():
            if isinstance(ms, dict):
                rows.append({"source": name, "metric": metric, "available": bool(ms.get("available")),
                             "reason": str(ms.get("reason") or "")})
        for series, zones in (st.get("domains") or {}).items():
            rows.append({"source": name, "metric": f"{series} energy_j, power_w", "available": True,
                         "reason": "sum of " + " + ".join(map(str, zones)) if len(zones) > 1 else " + ".join(map(str, zones))})
    return rows


def _absent_reasons(status: dict, source: str, metrics: tuple) -> list[str]:
    """The reasons ``status`` (``Telemetry.status()``) gives for ``source`` or its ``metrics`` being absent."""
    st = status.get(source) if isinstance(status, dict) else None
    if not isinstance(st, dict):
        return []
    if not st.get("available"):
        return [st["reason"]] if st.get("reason") else []
    out = []
    for m in metrics:
        ms = (st.get("metrics") or {}).get(m)
        if isinstance(ms, dict) and not ms.get("available") and ms.get("reason") and ms["reason"] not in out:
            out.append(ms["reason"])
    return out


def power_note(series: list[tuple[str, str]], telemetry_status: dict | None,
               device_id: str | None = None) -> str | None:
    """Why the run has no energy figure for its device, in one line; None when it has one.

    ``series``: the (source, metric) pairs recorded; ``telemetry_status``: the run's stored
    ``Telemetry.status()``, whose reasons are quoted per metric, e.g. "GPU energy counter not
    supported by <GPU> (NVML: Not Supported)"; ``device_id``: the run's device. A CUDA run
    needs its GPU's NVML ``energy_j``; any other run a RAPL package counter. Without a device,
    any power series will do (older callers)."""
    recorded = set(series)
    status = telemetry_status if isinstance(telemetry_status, dict) else {}
    dev = str(device_id or "")
    if dev.startswith("cuda"):
        src = f"nvml:{dev.split(':')[1] if ':' in dev else '0'}"
        if (src, "energy_j") in recorded:
            return None
        reasons = _absent_reasons(status, "nvml", ("energy_j", "power_w"))
        if not reasons and "nvml" in status:
            reasons = ["the GPU energy counter (NVML) was not recorded"]
        power = (src, "power_w") in recorded
        head = "GPU energy was not measured" if power else "Power was not recorded"
        tail = "; GPU power was recorded (see the power series)" if power else ""
        if reasons:
            return f"{head}: " + "; ".join(reasons) + tail + "."
    elif dev:
        if any(s.startswith("rapl:package") and m == "energy_j" for s, m in recorded):
            return None
        reasons = _absent_reasons(status, "rapl", ())
        if reasons:
            return "Power was not recorded: " + "; ".join(reasons) + "."
    elif any(m == "power_w" for _, m in series):
        return None
    reasons = []
    for name in ("nvml", "rapl"):
        for r in _absent_reasons(status, name, ("energy_j", "power_w")):
            if r not in reasons:
                reasons.append(r)
    if reasons:
        return "Power was not recorded: " + "; ".join(reasons) + "."
    if not series:
        return "Power was not recorded: this session holds no telemetry."
    return "Power was not recorded: no power source (NVML or RAPL) was readable during this run."
