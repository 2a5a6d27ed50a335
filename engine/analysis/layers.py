"""Per-layer figures: mean/median/p95 forward and backward ms, share of the step, achieved
FLOP/s, memory - one function per figure, for the exports and the live views alike.

The inputs are per-node lists of per-step samples (``LayerSamples``), which a session's
``LayerTimes`` records and a live snapshot's node x step matrices both give, so a view of a run
and an export of its session compute every figure the same way from the same steps.

Conventions: times are ms per step of the run's batch; achieved FLOP/s are taken at the median
time (a slow outlier step does not drag the rate) from the FLOPs per sample PyTorch counted
(FlopCounterMode, forward and backward each: a layer fed by the net input computes no input
gradient, so its backward is about 1x forward, not 2x); the share is (mean forward + mean backward)
over the mean step time of the steady profiled steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.analysis.stats import (NS_PER_MS, batch_used, clean, interpolate, layer_step_ms, ms_of_ns, ns_total,
                                   percentile, percentile_ranks, sorted_percentile)

# forward + backward (~2x forward) per sample: only for sessions written before backward FLOPs
# were recorded per layer (LayerRow.bwd_flops None), an estimate
TRAIN_FLOP_FACTOR = 3.0


@dataclass
class LayerSamples:
    """Per-node samples over the profiled steps a statistic is taken of: ``order`` lists the node
    ids in the order they were first seen; ``fwd``/``bwd`` (ms), ``mem``/``peak`` (bytes) map a
    node id to one value per step (None where not measured)."""

    order: list = field(default_factory=list)
    fwd: dict = field(default_factory=dict)
    bwd: dict = field(default_factory=dict)
    mem: dict = field(default_factory=dict)
    peak: dict = field(default_factory=dict)
    faults: dict = field(default_factory=dict)  # minor page faults per step (CPU), where counted
    fault_ns: float | None = None  # what one minor fault costs on the run's machine (ns)


def samples_from_layer_times(lts: list) -> LayerSamples:
    """``LayerSamples`` from ``LayerTimes`` records (a session's, or a record list's)."""
    out = LayerSamples()
    for lt in lts:
        for k, nid in enumerate(lt.node_ids):
            if nid not in out.fwd:
                out.fwd[nid], out.bwd[nid], out.mem[nid], out.peak[nid] = [], [], [], []
                out.order.append(nid)
            out.fwd[nid].append(lt.fwd_ms[k] if k < len(lt.fwd_ms) else None)
            out.bwd[nid].append(lt.bwd_ms[k] if k < len(lt.bwd_ms) else None)
            out.mem[nid].append(lt.mem_bytes[k] if k < len(lt.mem_bytes) else None)
            out.peak[nid].append(lt.peak_bytes[k] if k < len(lt.peak_bytes) else None)
            faults = getattr(lt, "minor_faults", None)
            if faults:
                out.faults.setdefault(nid, []).append(faults[k] if k < len(faults) else None)
        if getattr(lt, "fault_ns", None) is not None:
            out.fault_ns = lt.fault_ns
    return out


# the percentiles of a layer's per-step times every table shows: p5..p95 is the spread
TIME_PERCENTILES = {"p5": 5, "median": 50, "p95": 95}


def time_stats(values: list) -> dict:
    """{mean, p5, median, p95} (ms) of one node's per-step times, and ``samples``: how many were
    measured. The mean is exact over the times in whole ns (``stats.ns_total``)."""
    v = clean(values)
    s = sorted(v)
    out = {"mean": ms_of_ns(ns_total(v), len(v))}
    out.update({k: sorted_percentile(s, q) for k, q in TIME_PERCENTILES.items()})
    out["samples"] = len(v)
    return out


def order_ranks(n: int, percentiles=tuple(TIME_PERCENTILES.values())) -> set[int]:
    """The 0-based ranks of ``n`` sorted values that ``percentiles`` read (``stats.percentile_ranks``)."""
    ranks = set()
    for q in percentiles:
        lo, hi, _ = percentile_ranks(n, q)
        ranks.update((lo, hi))
    return ranks


def time_stats_from_order(n: int, total_ns: int | None, at: dict) -> dict:
    """``time_stats`` from a session's aggregates of one node's ns column: ``n`` values measured,
    their exact sum ``total_ns`` and ``at`` {rank: ns} for every rank ``order_ranks(n)`` names."""
    out = {"mean": ms_of_ns(int(total_ns or 0), n)}
    for k, q in TIME_PERCENTILES.items():
        if not n:
            out[k] = None
            continue
        lo, hi, w = percentile_ranks(n, q)
        out[k] = interpolate(at[lo] / NS_PER_MS, at[hi] / NS_PER_MS, w)
    out["samples"] = n
    return out


def median_from_order(n: int, at: dict) -> float | None:
    """The median of n sorted values from {rank: value} (``order_ranks(n, (50,))``)."""
    if not n:
        return None
    lo, hi, w = percentile_ranks(n, 50)
    return interpolate(at[lo], at[hi], w)


def share_of_step(fwd_ms: float | None, bwd_ms: float | None, step_ms: float | None) -> float | None:
    """(forward + backward ms) / step ms, a fraction; None when neither time or no step time is known."""
    if fwd_ms is None and bwd_ms is None:
        return None
    total = (fwd_ms or 0.0) + (bwd_ms or 0.0)
    return total / step_ms if step_ms else None


def achieved_gflops(flops_per_sample: float | None, batch: int, ms: float | None,
                    factor: float = 1.0) -> float | None:
    """GFLOP/s reached: ``factor`` x FLOPs per sample x batch over ``ms``; None when the layer
    counts no FLOPs (pooling, activations) or no time was measured - never a made-up rate."""
    if not flops_per_sample or not ms:
        return None
    if factor == 1.0:
        return flops_per_sample * batch / (ms / 1000.0) / 1e9
    return factor * flops_per_sample * batch / (ms / 1000.0) / 1e9


def layer_gflops(flops_per_sample, batch: int, fwd_median_ms, bwd_median_ms, mode: str | None,
                 bwd_flops_per_sample: float | None = None) -> tuple:
    """(forward GFLOP/s, total GFLOP/s) at the median times. Total: training counts forward +
    backward FLOPs (``bwd_flops_per_sample``, as counted; when not recorded, the estimate
    ``TRAIN_FLOP_FACTOR`` x forward) over forward + backward time; a forward-only layer's total
    is its forward rate; None where a time is missing."""
    fwd = achieved_gflops(flops_per_sample, batch, fwd_median_ms)
    total = None
    if mode == "train" and flops_per_sample and fwd_median_ms and bwd_median_ms:
        if bwd_flops_per_sample is None:
            total = achieved_gflops(flops_per_sample, batch, fwd_median_ms + bwd_median_ms, TRAIN_FLOP_FACTOR)
        else:
            total = achieved_gflops(flops_per_sample + bwd_flops_per_sample, batch, fwd_median_ms + bwd_median_ms)
    elif flops_per_sample and fwd_median_ms and not bwd_median_ms:
        total = fwd
    return fwd, total


def node_stats(samples: LayerSamples) -> dict:
    """{node_id: {"fwd": time_stats, "bwd": time_stats, "mem": median bytes (int) or None,
    "peak": max bytes or None}} of per-node samples (the figures ``rows_from_stats`` lays out)."""
    out = {}
    for nid in samples.order:
        m = percentile(samples.mem.get(nid, []), 50)
        out[nid] = {"fwd": time_stats(samples.fwd.get(nid, [])), "bwd": time_stats(samples.bwd.get(nid, [])),
                    "mem": None if m is None else int(round(m)),
                    "peak": max([x for x in samples.peak.get(nid, []) if x is not None], default=None),
                    "faults": percentile(samples.faults.get(nid, []), 50), "fault_ns": samples.fault_ns}
    return out


ALLOC_BOUND_SHARE = 0.5  # a layer whose page-fault time is at least half its median time is flagged


def allocator_share(faults: float | None, fault_ns: float | None, fwd_median_ms: float | None) -> float | None:
    """The part of a layer's median forward time its minor page faults account for (median faults
    per step x the machine's cost of one fault, over the median ms; may exceed 1 where faults
    overlap compute); None where faults were not counted. On the CPU, fresh activation memory is
    first touched by whichever layer allocates, so such a layer's time is mostly allocator cost
    and moves between runs with the allocation pattern."""
    if faults is None or fault_ns is None or not fwd_median_ms:
        return None
    return faults * fault_ns / 1e6 / fwd_median_ms


def fault_ms(faults: float | None, fault_ns: float | None) -> float | None:
    """What a layer's minor page faults cost per step (ms): median faults per step x the
    machine's cost of one fault (``fault_ns``, measured by the probe: fresh pages touched one by
    one, time over faults taken); None where faults were not counted."""
    if faults is None or fault_ns is None:
        return None
    return faults * fault_ns / 1e6


# a run whose minor page faults take more than this share of its step time gets the advice
FAULT_ADVICE_SHARE = 0.10
def _tuned_env_text() -> str:
    from engine.run.allocator import TUNED_ENV

    return " ".join(f"{k}={v}" for k, v in TUNED_ENV.items())


FAULT_ADVICE = ("{share} of step time ({fwd} of forward time) is minor page faults (freed activations returned "
                "to the OS and faulted in again): run with " + _tuned_env_text() + " or jemalloc/tcmalloc "
                "(compare them: layerscope sweep --cpu-allocator default,tuned)")


def run_faults(rows: list[dict], step_ms: float | None) -> dict:
    """A run's page-fault cost from its layer rows (``rows_from_stats``): {"fault_ms": the
    layers' ``fault_ms`` summed (ms per step), "fault_share": that over ``step_ms`` (the median
    step time), "fault_fwd_share": over the layers' median forward times summed, "advice": a
    sentence when fault_share > ``FAULT_ADVICE_SHARE`` (glibc hands freed activations back to the
    OS and the next step faults them in again), else None}. Every figure None where no fault was
    counted (GPU runs, other OSes, sessions recorded before faults were)."""
    from engine.fmt import fmt_pct

    counted = [r["fault_ms"] for r in rows if r.get("fault_ms") is not None]
    if not counted:
        return {"fault_ms": None, "fault_share": None, "fault_fwd_share": None, "advice": None}
    total = sum(counted)
    fwd = sum(r["fwd_median_ms"] for r in rows if r.get("fwd_median_ms") is not None)
    share = total / step_ms if step_ms else None
    fwd_share = total / fwd if fwd else None
    advice = None
    if share is not None and share > FAULT_ADVICE_SHARE:
        advice = FAULT_ADVICE.format(share=fmt_pct(share, sep=""), fwd=fmt_pct(fwd_share, sep="") if fwd_share is not None else "-")
    return {"fault_ms": total, "fault_share": share, "fault_fwd_share": fwd_share, "advice": advice}


def layer_rows(layers: list, samples: LayerSamples, step_ms: float | None, batch: int, mode: str | None,
               j_per_sample: float | None = None, mem_bytes: dict | None = None) -> list[dict]:
    """``rows_from_stats`` of per-node samples (a session's LayerTimes or a live snapshot's)."""
    return rows_from_stats(layers, samples.order, node_stats(samples), step_ms, batch, mode, j_per_sample,
                           mem_bytes)


_EMPTY = {"mean": None, "median": None, "p5": None, "p95": None, "samples": 0}


def rows_from_stats(layers: list, order: list, stats: dict, step_ms: float | None, batch: int, mode: str | None,
                    j_per_sample: float | None = None, mem_bytes: dict | None = None) -> list[dict]:
    """One dict per node: the layers (``LayerRow``s, in net order) first, then nodes only the
    samples know (``order``). ``stats``: ``node_stats`` (or the same from a session's SQL
    aggregates). Keys: id, kind, out_shape, params, flops and bwd_flops (per sample), act_bytes, samples,
    fwd_/bwd_ mean/median/p5/p95 _ms (p5..p95: the spread across steps), share (of ``step_ms``),
    fwd_gflops, total_gflops, mem_bytes (median per step, or ``mem_bytes[node]`` when given),
    peak_bytes, energy_est_j_per_sample (``j_per_sample`` x share: an estimate, split by time),
    minor_faults (median per step, CPU), fault_ms (``fault_ms``: what those faults cost, ms),
    fault_share (the same over the median forward time, ``allocator_share``; alloc_share is its
    earlier name) and alloc_bound (the share >= ``ALLOC_BOUND_SHARE``; None where faults were not
    counted)."""
    by_id = {r.node_id: r for r in layers}
    ids = [r.node_id for r in sorted(by_id.values(), key=lambda r: r.idx)]
    ids += [n for n in order if n not in by_id]
    rows = []
    for nid in ids:
        r = by_id.get(nid)
        st = stats.get(nid) or {}
        f, b = st.get("fwd") or _EMPTY, st.get("bwd") or _EMPTY
        flops = r.flops if r else None
        bwd_flops = r.bwd_flops if r else None
        fwd_gf, total_gf = layer_gflops(flops, batch, f["median"], b["median"], mode, bwd_flops)
        share = share_of_step(f["mean"], b["mean"], step_ms)
        mem = mem_bytes.get(nid) if mem_bytes is not None else st.get("mem")
        rows.append({
            "id": nid, "kind": r.kind if r else None,
            "out_shape": list(r.out_shape) if r else None,
            "params": r.params if r else None, "flops": flops, "bwd_flops": bwd_flops,
            "act_bytes": r.act_bytes if r else None,
            "samples": f["samples"],
            "fwd_mean_ms": f["mean"], "fwd_median_ms": f["median"], "fwd_p95_ms": f["p95"],
            "bwd_mean_ms": b["mean"], "bwd_median_ms": b["median"], "bwd_p95_ms": b["p95"],
            "share": share, "fwd_gflops": fwd_gf, "total_gflops": total_gf,
            "mem_bytes": mem,
            "peak_bytes": st.get("peak"),
            "energy_est_j_per_sample": j_per_sample * share if j_per_sample is not None and share is not None
            else None,
            "fwd_p5_ms": f["p5"], "bwd_p5_ms": b["p5"],
            "minor_faults": st.get("faults"),
            "alloc_share": allocator_share(st.get("faults"), st.get("fault_ns"), f["median"]),
            "fault_ms": fault_ms(st.get("faults"), st.get("fault_ns")),
        })
        rows[-1]["fault_share"] = rows[-1]["alloc_share"]
        rows[-1]["alloc_bound"] = (rows[-1]["alloc_share"] >= ALLOC_BOUND_SHARE
                                   if rows[-1]["alloc_share"] is not None else None)
    return rows


def steady_layer_times(steps: list, lts: list) -> list:
    """The profiled steps statistics are taken over: ``lts`` (LayerTimes) less those of warm-up
    ``steps`` (all of them if every one was warm-up)."""
    warm = {s.step for s in steps if s.phase != "test" and s.warmup}
    steady = [lt for lt in lts if lt.step not in warm]
    return steady or list(lts)


def batch_size(info) -> int | None:
    """The run's batch size: the one really used (``stats.batch_used``); None when not recorded."""
    return batch_used(info)


def summary_layer_rows(info, steps: list, lts: list, j_per_sample: float | None = None) -> list[dict]:
    """``layer_rows`` of a run from its RunInfo, StepRecords and LayerTimes (warm-up left out)."""
    return layer_rows(info.layers, samples_from_layer_times(steady_layer_times(steps, lts)),
                      layer_step_ms(steps), batch_size(info) or 1, (info.config or {}).get("mode"), j_per_sample)


def layer_totals(rows: list[dict]) -> tuple:
    """(forward ms, backward ms): the sums over ``rows`` of the layers' mean times, each None when
    no layer has that time (an inference run has no backward)."""
    f = [r["fwd_mean_ms"] for r in rows if r["fwd_mean_ms"] is not None]
    b = [r["bwd_mean_ms"] for r in rows if r["bwd_mean_ms"] is not None]
    return (sum(f) if f else None), (sum(b) if b else None)
