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

from engine.analysis.stats import batch_used, clean, layer_step_ms, percentile, sorted_percentile

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
    return out


def time_stats(values: list) -> dict:
    """{mean, median, p95} (ms) of one node's per-step times, and ``samples``: how many were measured."""
    v = clean(values)
    s = sorted(v)
    return {"mean": sum(v) / len(v) if v else None, "median": sorted_percentile(s, 50),
            "p95": sorted_percentile(s, 95), "samples": len(v)}


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


def layer_rows(layers: list, samples: LayerSamples, step_ms: float | None, batch: int, mode: str | None,
               j_per_sample: float | None = None, mem_bytes: dict | None = None) -> list[dict]:
    """One dict per node: the layers (``LayerRow``s, in net order) first, then nodes only the
    samples know. Keys: id, kind, out_shape, params, flops and bwd_flops (per sample), act_bytes, samples,
    fwd_/bwd_ mean/median/p95 _ms, share (of ``step_ms``), fwd_gflops, total_gflops, mem_bytes
    (median per step, or ``mem_bytes[node]`` when given), peak_bytes, energy_est_j_per_sample
    (``j_per_sample`` x share: an estimate, split by time)."""
    by_id = {r.node_id: r for r in layers}
    ids = [r.node_id for r in sorted(by_id.values(), key=lambda r: r.idx)]
    ids += [n for n in samples.order if n not in by_id]
    rows = []
    for nid in ids:
        r = by_id.get(nid)
        f, b = time_stats(samples.fwd.get(nid, [])), time_stats(samples.bwd.get(nid, []))
        flops = r.flops if r else None
        bwd_flops = r.bwd_flops if r else None
        fwd_gf, total_gf = layer_gflops(flops, batch, f["median"], b["median"], mode, bwd_flops)
        share = share_of_step(f["mean"], b["mean"], step_ms)
        if mem_bytes is not None:
            mem = mem_bytes.get(nid)
        else:
            m = percentile(samples.mem.get(nid, []), 50)
            mem = None if m is None else int(round(m))
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
            "peak_bytes": max([x for x in samples.peak.get(nid, []) if x is not None], default=None),
            "energy_est_j_per_sample": j_per_sample * share if j_per_sample is not None and share is not None
            else None,
        })
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
