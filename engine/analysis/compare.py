"""Session B against session A, layer by layer: speed-ups, throughput and energy ratios."""
from __future__ import annotations

from engine.analysis.summary import as_source, layer_summary, run_summary


def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def compare(a, b) -> dict:
    """Session B against session A: per-layer speed-up (A's median ms / B's, > 1 means B is faster),
    step-time speed-up, throughput ratio (B / A) and energy-per-sample ratio (B / A, < 1 means B
    uses less energy per sample). Layers are matched by node id; unmatched ones have None ratios."""
    sa, sb = as_source(a), as_source(b)
    ra, rb = run_summary(sa), run_summary(sb)
    la = {r["id"]: r for r in layer_summary(sa)}
    lb = {r["id"]: r for r in layer_summary(sb)}
    ids = list(la) + [i for i in lb if i not in la]
    layers = []
    for i in ids:
        x, y = la.get(i, {}), lb.get(i, {})

        def tot(r):
            f, bw = r.get("fwd_median_ms"), r.get("bwd_median_ms")
            return None if f is None and bw is None else (f or 0.0) + (bw or 0.0)

        layers.append({"id": i, "kind": x.get("kind") or y.get("kind"),
                       "a_fwd_ms": x.get("fwd_median_ms"), "b_fwd_ms": y.get("fwd_median_ms"),
                       "a_bwd_ms": x.get("bwd_median_ms"), "b_bwd_ms": y.get("bwd_median_ms"),
                       "fwd_speedup": _ratio(x.get("fwd_median_ms"), y.get("fwd_median_ms")),
                       "bwd_speedup": _ratio(x.get("bwd_median_ms"), y.get("bwd_median_ms")),
                       "speedup": _ratio(tot(x), tot(y)), "in_a": i in la, "in_b": i in lb})
    ea, eb = ra["j_per_sample"], rb["j_per_sample"]
    note = None
    if ea is None or eb is None:
        missing = [n for n, e, r in (("A", ea, ra), ("B", eb, rb)) if e is None]
        note = (f"energy per sample not available for {' and '.join(missing)}"
                + "".join(f" ({r['power_note']})" for n, e, r in (("A", ea, ra), ("B", eb, rb))
                          if e is None and r["power_note"]))
    elif ra["energy_source"].split(":")[0] != rb["energy_source"].split(":")[0]:
        note = (f"energy compares different meters: A {ra['energy_source']}, B {rb['energy_source']} "
                "(GPU board energy against CPU package energy)")

    def ident(r, path):
        return {"path": str(path), "net": r["net"], "device": r["device"], "device_name": r["device_name"],
                "mode": r["mode"], "precision": r["precision"], "batch_size": r["batch_size"], "status": r["status"],
                "step_ms_median": r["step_ms_median"], "samples_per_s": r["samples_per_s"],
                "j_per_sample": r["j_per_sample"], "energy_source": r["energy_source"]}

    return {"a": ident(ra, getattr(a, "path", "")), "b": ident(rb, getattr(b, "path", "")),
            "step_speedup": _ratio(ra["step_ms_median"], rb["step_ms_median"]),
            "throughput_ratio": _ratio(rb["samples_per_s"], ra["samples_per_s"]),
            "energy_per_sample_ratio": _ratio(eb, ea), "energy_note": note, "layers": layers}
