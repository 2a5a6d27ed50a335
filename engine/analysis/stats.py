"""Step statistics: percentiles, which steps count, step time and throughput.

Warm-up steps and test-evaluation batches are left out of every statistic (all steps count
when only warm-up ran). Inputs are lists of ``StepRecord`` (a session's ``steps()`` or a live
snapshot's ``steps``), so a finished session and a running view get the same figure.
"""
from __future__ import annotations

import math
from typing import Iterable


_INF = math.inf


def clean(values: Iterable) -> list[float]:
    """The measured values: None, NaN and infinities dropped."""
    return [x for x in values if x is not None and -_INF < x < _INF]  # NaN fails both comparisons


def percentile(values: Iterable, q: float) -> float | None:
    """Linear-interpolated percentile (as numpy's default) of the measured values; None for none."""
    return sorted_percentile(sorted(clean(values)), q)


def percentile_ranks(n: int, q: float) -> tuple[int, int, float]:
    """The one percentile method: the q-th percentile of ``n`` sorted values lies between the
    values of 0-based ranks ``lo`` and ``hi`` (linear interpolation, numpy's default), at
    ``weight`` of the way from the first to the second. Python lists and the session's SQL
    aggregates (``SessionReader.node_order_stats``) both read the values at these ranks."""
    k = (n - 1) * q / 100.0
    lo = math.floor(k)
    return lo, math.ceil(k), k - lo


def interpolate(lo_value: float, hi_value: float, weight: float) -> float:
    """The percentile between the values at the ranks ``percentile_ranks`` gave."""
    return lo_value + (hi_value - lo_value) * weight


def sorted_percentile(v: list, q: float) -> float | None:
    """``percentile`` of values already cleaned and sorted (one sort serves several percentiles)."""
    if not v:
        return None
    lo, hi, w = percentile_ranks(len(v), q)
    return interpolate(v[lo], v[hi], w)


NS_PER_MS = 1_000_000


def ns_total(values_ms: Iterable) -> int:
    """Exact sum of the measured times (ms), each taken to whole ns as a session stores it.

    Layer means and per-step layer sums are this exact integer sum over the count (``ms_of_ns``),
    so a session's SQL ``sum()`` of its ns columns and a list of ms floats give the same figure
    whatever the order or the SQLite version."""
    return sum(int(round(x * NS_PER_MS)) for x in clean(values_ms))


def ms_of_ns(total_ns: int, n: int = 1) -> float | None:
    """``total_ns / n`` in ms (a mean when n > 1); None for n == 0."""
    return total_ns / n / NS_PER_MS if n else None


def mean(values: Iterable) -> float | None:
    """Arithmetic mean of the measured values; None for none."""
    v = clean(values)
    return sum(v) / len(v) if v else None


def main_steps(steps: Iterable) -> list:
    """Steps of the run's own phase (train/infer/benchmark), not test-evaluation batches."""
    return [s for s in steps if s.phase != "test"]


def steady_steps(steps: Iterable) -> list:
    """The steps statistics are taken over: no warm-up, no test batches (all main steps if only
    warm-up ran)."""
    main = main_steps(steps)
    steady = [s for s in main if not s.warmup]
    return steady or main


def layer_step_ms(steps: Iterable) -> float | None:
    """Mean step time (ms) the per-layer share is taken of: the steady profiled steps (the steps
    the layer times come from), all steady steps when none was profiled."""
    steady = steady_steps(steps)
    return mean([s.step_ms for s in steady if s.profiled]) or mean([s.step_ms for s in steady])


def samples_per_s(steps: Iterable) -> float | None:
    """Throughput of the steady steps: samples processed over the time spent waiting for data
    and computing (samples/s); None when no time was spent."""
    steady = steady_steps(steps)
    # ``step_samples`` of each step, inlined (the same arithmetic, without a call per step)
    samples = sum(s.samples_per_s * (s.step_ms + (s.data_ms or 0.0)) / 1000.0 for s in steady)
    busy_s = sum(s.step_ms + (s.data_ms or 0.0) for s in steady) / 1000.0
    return samples / busy_s if busy_s else None


def step_time_stats(steps: Iterable) -> dict:
    """{step_ms_mean, step_ms_median, step_ms_p95 (ms), samples_per_s} over the steady steps."""
    steps = list(steps)
    ms = [s.step_ms for s in steady_steps(steps)]
    v = sorted(clean(ms))  # one sort for both percentiles (a long session has 100k steps)
    return {"step_ms_mean": mean(ms), "step_ms_median": sorted_percentile(v, 50), "step_ms_p95": sorted_percentile(v, 95),
            "samples_per_s": samples_per_s(steps)}


def batch_used(info) -> int | None:
    """Samples per step a run really used, from its RunInfo: ``config["batch_used"]`` (the batch
    asked for, capped to a smaller train split), else ``config["batch_size"]`` (sessions recorded
    before the cap was); None when neither is a whole number >= 1."""
    cfg = (info.config if info is not None else None) or {}
    for key in ("batch_used", "batch_size"):
        b = cfg.get(key)
        if isinstance(b, (int, float)) and not isinstance(b, bool) and b >= 1 and b == int(b):
            return int(b)
    return None


def batch_requested(info) -> int | None:
    """The batch a run asked for (``config["batch_size"]``); None when not recorded."""
    b = ((info.config if info is not None else None) or {}).get("batch_size")
    return int(b) if isinstance(b, (int, float)) and not isinstance(b, bool) and b >= 1 and b == int(b) else None
