"""Session B against session A, layer by layer: speed-ups, throughput and energy ratios.

Runs at the same batch size are compared per step. When the batch sizes differ (the batch each
run really used, ``stats.batch_used``), a per-step time says more about the batch than about the
layer, so every time is divided by its run's batch and the speed-ups are per sample
(``basis == "per sample"``). Throughput (samples/s) and energy per sample are per sample anyway.
"""
from __future__ import annotations

from engine.analysis.summary import as_source, layer_summary, run_summary


def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def _per(v, batch):
    return None if v is None else v / batch


def _energy_note(ra: dict, rb: dict) -> str | None:
    """Why energy per sample cannot be compared, each distinct reason said once."""
    ea, eb = ra["j_per_sample"], rb["j_per_sample"]
    if ea is None or eb is None:
        missing = [(n, r) for n, e, r in (("A", ea, ra), ("B", eb, rb)) if e is None]
        note = f"energy per sample not available for {' and '.join(n for n, _ in missing)}"
        reasons = [r["power_note"] for _, r in missing if r["power_note"]]
        if len(reasons) == 2 and reasons[0] == reasons[1]:
            reasons = reasons[:1]
            return f"{note} ({reasons[0]})"
        if len(reasons) == 2:
            return f"{note} (A: {reasons[0]}; B: {reasons[1]})"
        return note + (f" ({reasons[0]})" if reasons else "")
    if ra["energy_source"].split(":")[0] != rb["energy_source"].split(":")[0]:
        return (f"energy compares different meters: A {ra['energy_source']}, B {rb['energy_source']} "
                "(GPU board energy against CPU package energy)")
    return None


def compare(a, b) -> dict:
    """Session B against session A.

    Per layer (matched by node id; unmatched ones have None ratios): ``a_ms``/``b_ms`` (median
    forward + backward, ms per step, or per sample when the batches differ), ``speedup`` = A / B
    (> 1 means B is faster), ``fwd_speedup``/``bwd_speedup`` on the same basis, and the raw
    per-step medians ``a_fwd_ms`` ... ``b_bwd_ms``. Run: ``basis`` ("per step" | "per sample"),
    ``step_speedup`` (on that basis), ``throughput_ratio`` (B / A, samples/s),
    ``energy_per_sample_ratio`` (B / A, < 1 means B uses less energy per sample) and
    ``energy_note`` (why energy cannot be compared, once; None when it can).
    """
    sa, sb = as_source(a), as_source(b)
    ra, rb = run_summary(sa), run_summary(sb)
    ba, bb = ra["batch_size"], rb["batch_size"]
    per_sample = ba is not None and bb is not None and ba != bb
    da, db = (ba, bb) if per_sample else (1, 1)
    la = {r["id"]: r for r in layer_summary(sa)}
    lb = {r["id"]: r for r in layer_summary(sb)}
    ids = list(la) + [i for i in lb if i not in la]

    def tot(r):
        f, bw = r.get("fwd_median_ms"), r.get("bwd_median_ms")
        return None if f is None and bw is None else (f or 0.0) + (bw or 0.0)

    layers = []
    for i in ids:
        x, y = la.get(i, {}), lb.get(i, {})
        a_ms, b_ms = _per(tot(x), da), _per(tot(y), db)
        layers.append({"id": i, "kind": x.get("kind") or y.get("kind"),
                       "a_fwd_ms": x.get("fwd_median_ms"), "b_fwd_ms": y.get("fwd_median_ms"),
                       "a_bwd_ms": x.get("bwd_median_ms"), "b_bwd_ms": y.get("bwd_median_ms"),
                       "a_ms": a_ms, "b_ms": b_ms,
                       "fwd_speedup": _ratio(_per(x.get("fwd_median_ms"), da), _per(y.get("fwd_median_ms"), db)),
                       "bwd_speedup": _ratio(_per(x.get("bwd_median_ms"), da), _per(y.get("bwd_median_ms"), db)),
                       "speedup": _ratio(a_ms, b_ms), "in_a": i in la, "in_b": i in lb})

    def ident(r, path):
        return {"path": str(path), "net": r["net"], "device": r["device"], "device_name": r["device_name"],
                "mode": r["mode"], "precision": r["precision"], "batch_size": r["batch_size"], "status": r["status"],
                "step_ms_median": r["step_ms_median"], "samples_per_s": r["samples_per_s"],
                "j_per_sample": r["j_per_sample"], "energy_source": r["energy_source"]}

    return {"a": ident(ra, getattr(a, "path", "")), "b": ident(rb, getattr(b, "path", "")),
            "basis": "per sample" if per_sample else "per step",
            "step_speedup": _ratio(_per(ra["step_ms_median"], da), _per(rb["step_ms_median"], db)),
            "throughput_ratio": _ratio(rb["samples_per_s"], ra["samples_per_s"]),
            "energy_per_sample_ratio": _ratio(rb["j_per_sample"], ra["j_per_sample"]),
            "energy_note": _energy_note(ra, rb), "layers": layers}
