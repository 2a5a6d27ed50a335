"""Training memory per layer and across one step: which layers hold it, and when.

Inputs are the ``LayerTimes`` records the probe wrote on the steps it counted memory
(``engine.run.memory``: ``saved_bytes``, ``out_bytes``, ``memory_events``), from a session
reader or a live snapshot (``last_memory_layer_times``).

- ``layer_memory_table``: per layer the bytes saved for backward (median over the counted
  steps; charged to the layer that created the storage, parameters left out), the output bytes
  (median), and the saved bytes' share of the peak. The peak is the memory timeline's peak of
  the first counted step (``memory_timeline``): on CUDA the caching allocator's allocated bytes
  (everything: weights, gradients, optimizer state, activations); on the CPU the saved-tensor
  model's activation bytes plus the weights, gradients and optimizer state from the parameter
  count (``fixed_bytes``) - the same parts the pre-run estimate adds.
- ``memory_timeline``: allocated bytes across one step, as a step function of (t_ms, bytes)
  points, with a band per layer forward and backward, and the peak with the layers whose
  tensors are alive at that moment. CPU events are placed at the end of the forward or backward
  of the layer they belong to (times from the same step's LayerTimes); CUDA events carry the
  host time the allocator served them.
"""
from __future__ import annotations

from engine.analysis.stats import percentile

FP32 = 4


def _counted(source) -> list:
    """The LayerTimes with memory figures: every counted one of a reader, the latest of a snapshot."""
    if hasattr(source, "iter_layer_times"):
        return [lt for lt in source.iter_layer_times() if lt.saved_bytes or lt.memory_events]
    if hasattr(source, "layer_times"):  # a record list wrapped as a source (analysis.summary.as_source)
        return [lt for lt in source.layer_times() if lt.saved_bytes or lt.memory_events]
    lt = getattr(source, "last_memory_layer_times", None)
    return [lt] if lt is not None else []


def _info(source):
    return getattr(source, "info", None)


def fixed_bytes(info) -> int | None:
    """Weights, gradients and optimizer state of a run in bytes (fp32 parameters; training adds
    gradients and SGD momentum / Adam's two buffers), from its RunInfo; None without layers."""
    if info is None or not info.layers:
        return None
    params = sum(r.params or 0 for r in info.layers)
    cfg = info.config or {}
    total = params * FP32
    if cfg.get("mode", "train") == "train":
        opt = 2 if cfg.get("optimizer") == "adam" else (1 if cfg.get("momentum", 0.9) else 0)
        total += params * FP32 * (1 + opt)
    return total


def memory_timeline(source, step: int | None = None) -> dict | None:
    """One step's memory timeline (see the module): {"step", "source" ("saved-tensor accounting"
    | "cuda allocator history"), "points": [(t_ms, bytes)], "bands": [(node, phase, t0_ms,
    t1_ms)], "peak": {"t": ms, "bytes": int, "alive": [node ids]}, "baseline": bytes the step
    starts with (CPU: 0, activations only)}. ``step``: the step to show (None: the first counted
    one of a reader, the latest of a snapshot). None when no step has one."""
    lts = _counted(source)
    lts = [lt for lt in lts if lt.memory_events and (step is None or lt.step == step)]
    if not lts:
        return None
    lt = lts[0]
    bands = []
    for k, nid in enumerate(lt.node_ids):
        for phase, starts, durs in (("forward", lt.fwd_start_ms, lt.fwd_ms), ("backward", lt.bwd_start_ms, lt.bwd_ms)):
            t0 = starts[k] if k < len(starts) else None
            d = durs[k] if k < len(durs) else None
            if t0 is not None and d is not None and (phase == "forward" or d > 0):
                bands.append((nid, phase, float(t0), float(t0 + d)))
    cuda = len(lt.memory_events[0]) == 3
    if cuda:
        timed = [(t, i, owner, d) for i, (t, owner, d) in enumerate(lt.memory_events)]
    else:
        end = {(nid, ph): t1 for nid, ph, _t0, t1 in bands}
        last = max((t1 for *_x, t1 in bands), default=0.0)
        timed = [(end.get((at, ph), last), i, owner, d) for i, (at, ph, owner, d) in enumerate(lt.memory_events)]
    timed.sort(key=lambda e: (e[0], e[1]))
    cur, points, best = 0, [(0.0, 0)], (0.0, 0, {})
    alive: dict = {}
    baseline = 0
    for t, i, owner, d in timed:
        if cuda and i == 0 and owner is None:
            baseline = d
        points.append((t, cur))
        cur += d
        points.append((t, cur))
        if owner is not None:
            alive[owner] = alive.get(owner, 0) + d
        if cur > best[1]:
            best = (t, cur, {n: b for n, b in alive.items() if b > 0})
    if cuda:
        points = points[2:] if len(points) > 2 else points  # start at the baseline, not 0
    order = {nid: k for k, nid in enumerate(lt.node_ids)}
    held = sorted(best[2], key=lambda n: order.get(n, len(order)))
    return {"step": lt.step, "source": lt.memory_source, "points": points, "bands": bands,
            "peak": {"t": best[0], "bytes": best[1], "alive": held, "alive_bytes": {n: best[2][n] for n in held}},
            "baseline": baseline}


def layer_memory_table(source) -> dict:
    """Which layers hold the training memory: {"layers": [{"id", "saved_bytes", "out_bytes",
    "share_of_peak"}] (net order; None where not counted), "steps": counted steps, "peak_bytes",
    "peak_what" (what the peak counts), "saved_total": sum of the layers' saved bytes}."""
    lts = [lt for lt in _counted(source) if lt.saved_bytes]
    info = _info(source)
    ids = [r.node_id for r in sorted(info.layers, key=lambda r: r.idx)] if info is not None and info.layers else []
    saved: dict = {}
    outs: dict = {}
    for lt in lts:
        for k, nid in enumerate(lt.node_ids):
            if nid not in saved:
                saved[nid], outs[nid] = [], []
                if nid not in ids:
                    ids.append(nid)
            saved[nid].append(lt.saved_bytes[k] if k < len(lt.saved_bytes) else None)
            outs[nid].append(lt.out_bytes[k] if k < len(lt.out_bytes) else None)
    tl = memory_timeline(source)
    peak, what = None, None
    if tl is not None:
        if tl["source"] == "cuda allocator history":
            peak, what = tl["peak"]["bytes"], "allocator peak of the step (CUDA)"
        else:
            fixed = fixed_bytes(info)
            if fixed is not None:
                peak = tl["peak"]["bytes"] + fixed
                what = "activation peak (saved-tensor model) + weights, gradients and optimizer state"
    rows = []
    for nid in ids:
        s = percentile(saved.get(nid, []), 50)
        o = percentile(outs.get(nid, []), 50)
        s = None if s is None else int(round(s))
        rows.append({"id": nid, "saved_bytes": s, "out_bytes": None if o is None else int(round(o)),
                     "share_of_peak": s / peak if s is not None and peak else None})
    total = sum(r["saved_bytes"] for r in rows if r["saved_bytes"] is not None) if lts else None
    return {"layers": rows, "steps": [lt.step for lt in lts], "peak_bytes": peak, "peak_what": what,
            "saved_total": total}
