"""Per-layer energy figures from a replay's raw counter windows (``engine.run.layer_energy``): J per
sample per layer (forward, backward, total) with a 95 % interval, and the coverage against the
run's whole-step energy per sample (``engine.analysis.energy``, as ``run_summary`` reports it).

Per window: energy above idle of one repetition ``(E - P_idle x T) / reps``, over the batch.
``P_idle`` is the mean power of the idle windows (same counter, read the same way). A pass's figure
is the mean over its windows; its uncertainty the half-width of a 95 % Student-t interval of that
mean, combined in quadrature with the idle mean's own 95 % half-width (scaled by the window's
T / reps / batch). Backward = forward+backward minus forward (their uncertainties combined in
quadrature); a layer with nothing to differentiate has a backward of 0 J (no backward work, as
``LayerTimes.bwd_ms`` is 0.0 for it). Where no counter was readable every figure is absent (None).
"""
from __future__ import annotations

import math

# 97.5 % quantiles of Student's t for 1..30 degrees of freedom (two-sided 95 %); beyond 30, 1.96
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t95(df: int) -> float:
    """The two-sided 95 % Student-t factor for ``df`` degrees of freedom (inf for df < 1)."""
    if df < 1:
        return math.inf
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """(mean, sample standard deviation, 95 % half-width of the mean) of ``values``; the spread
    and half-width are None for fewer than two values, everything None for none."""
    n = len(values)
    if not n:
        return None, None, None
    m = sum(values) / n
    if n < 2:
        return m, None, None
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    return m, sd, t95(n - 1) * sd / math.sqrt(n)


def idle_power(data: dict) -> tuple[float | None, float | None]:
    """(mean idle power W, 95 % half-width W) from the replay's idle windows; (None, None) without."""
    ws = [w["joules"] / w["seconds"] for w in data.get("idle") or [] if w.get("seconds")]
    m, _sd, hw = mean_ci(ws)
    return m, hw


def pass_figure(entry: dict, idle_w: float, idle_hw: float | None, batch: int) -> dict:
    """One replayed pass's J/sample: {"j_per_sample", "j_uncertainty" (J), "windows" (J/sample each),
    "timing_j" (the mean timing bound, J), "short" (a window spanned fewer counter updates than asked)}.

    ``j_uncertainty`` = the 95 % interval of the windows' mean, combined in quadrature with the idle
    mean's 95 % half-width (x seconds / reps / batch), plus the bound of where the counter updates
    fell (``edge_s`` of each window x its mean power / reps / batch): an update is seen between
    two reads, so the window's length is known to ``edge_s`` only, and that error scales with the
    whole power (idle included), not only with the layer's share."""
    per, scale, timing = [], [], []
    for w in entry.get("windows") or []:
        if not w.get("reps") or not w.get("seconds"):
            continue
        per.append((w["joules"] - idle_w * w["seconds"]) / w["reps"] / batch)
        scale.append(w["seconds"] / w["reps"] / batch)
        timing.append(w["joules"] / w["seconds"] * (w.get("edge_s") or 0.0) / w["reps"] / batch)
    m, _sd, hw = mean_ci(per)
    if m is not None and idle_hw is not None and hw is not None:
        hw = math.hypot(hw, idle_hw * sum(scale) / len(scale))
    t_j = sum(timing) / len(timing) if timing else None
    if hw is not None and t_j is not None:
        hw += t_j
    return {"j_per_sample": m, "j_uncertainty": hw, "windows": per, "timing_j": t_j,
            "short": any(w.get("updates", 0) < (entry.get("min_updates") or 0) for w in entry.get("windows") or [])}


def _hypot(*vs):
    return None if any(v is None for v in vs) else math.hypot(*vs)


def layer_energy_figures(data: dict | None, run_j_per_sample: float | None = None,
                         run_energy: dict | None = None) -> dict:
    """Every per-layer energy figure of a replay (``LayerEnergy.data``):

    {"requested": bool (the run replayed, or tried to), "available": bool, "reason": str | None, "simulated": bool, "counter", "idle_w", "idle_w_uncertainty",
    "layers": {node_id: {"fwd_j_per_sample", "bwd_j_per_sample", "j_per_sample", "j_uncertainty",
    "fwd_uncertainty", "bwd_uncertainty", "fwd_rep_ms", "fwd_bwd_rep_ms", "short", "within_noise"}},
    "errors": {node_id: reason}, "sum_j_per_sample", "sum_uncertainty", "run_j_per_sample", "coverage",
    "coverage_above_idle"}. J per sample; uncertainties are 95 % half-widths. ``coverage``: the sum
    over layers / the run's whole-step J/sample (``run_j_per_sample``, from
    ``engine.analysis.energy``); ``coverage_above_idle``: the sum / (the run's J/sample minus the
    idle power times the run's seconds per sample, from ``run_energy``, the run's primary energy
    dict). ``within_noise``: the total's interval includes 0. ``short``: a window spanned fewer
    counter updates than the replay asked. Figures are None where not measured, never 0."""
    data = data or {}
    out = {"requested": bool(data), "available": False, "reason": data.get("reason"), "simulated": bool(data.get("simulated")),
           "counter": data.get("counter"), "idle_w": None, "idle_w_uncertainty": None, "layers": {},
           "errors": dict(data.get("errors") or {}), "sum_j_per_sample": None, "sum_uncertainty": None,
           "run_j_per_sample": run_j_per_sample, "coverage": None, "coverage_above_idle": None,
           "stopped": bool(data.get("stopped"))}
    if not data:
        out["reason"] = "per-layer energy was not measured (run with --layer-energy)"
        return out
    idle_w, idle_hw = idle_power(data)
    if data.get("reason") or idle_w is None:
        out["reason"] = data.get("reason") or "per-layer energy: no idle window was measured"
        return out
    out.update(available=True, idle_w=idle_w, idle_w_uncertainty=idle_hw)
    batch = max(1, int(data.get("batch") or 1))
    passes: dict = {}
    for entry in data.get("layers") or []:
        e = dict(entry, min_updates=data.get("min_updates"))
        passes.setdefault(entry["node_id"], {})[entry["pass"]] = (pass_figure(e, idle_w, idle_hw, batch),
                                                                  entry.get("rep_ms"))
    train = bool(data.get("train"))
    no_bwd = set(data.get("no_backward") or [])
    for node_id, ps in passes.items():
        f, f_ms = ps.get("fwd", ({}, None))
        fb, fb_ms = ps.get("fwd+bwd", ({}, None))
        fj, fu = f.get("j_per_sample"), f.get("j_uncertainty")
        if train and node_id in no_bwd:
            bj, bu, tj, tu = 0.0, 0.0, fj, fu
        elif train:
            tj, tu = fb.get("j_per_sample"), fb.get("j_uncertainty")
            bj = None if tj is None or fj is None else tj - fj
            bu = _hypot(fu, fb.get("j_uncertainty"))
        else:
            bj = bu = None
            tj, tu = fj, fu
        out["layers"][node_id] = {
            "fwd_j_per_sample": fj, "bwd_j_per_sample": bj, "j_per_sample": tj, "j_uncertainty": tu,
            "fwd_uncertainty": fu, "bwd_uncertainty": bu, "fwd_rep_ms": f_ms, "fwd_bwd_rep_ms": fb_ms,
            "short": bool(f.get("short") or fb.get("short")),
            "within_noise": tj is not None and tu is not None and abs(tj) <= tu}
    totals = [r["j_per_sample"] for r in out["layers"].values()]
    if totals and all(v is not None for v in totals):
        out["sum_j_per_sample"] = sum(totals)
        us = [r["j_uncertainty"] for r in out["layers"].values()]
        out["sum_uncertainty"] = math.sqrt(sum(u * u for u in us)) if all(u is not None for u in us) else None
        if run_j_per_sample:
            out["coverage"] = out["sum_j_per_sample"] / run_j_per_sample
        if run_j_per_sample and run_energy and run_energy.get("samples") and run_energy.get("seconds"):
            dynamic = run_j_per_sample - idle_w * run_energy["seconds"] / run_energy["samples"]
            if dynamic > 0:
                out["coverage_above_idle"] = out["sum_j_per_sample"] / dynamic
    return out


def layer_energy_summary(src) -> dict:
    """``layer_energy_figures`` of a session (a SessionReader) or a list of records, with the
    coverage against the run's whole-step J/sample as ``run_summary`` reports it - when the
    replay's counter is the run's primary energy source (else the coverage is None)."""
    from engine.analysis.summary import as_source, run_summary
    from engine.records import LayerEnergy

    data = None
    if hasattr(src, "layer_energy_data"):
        data = src.layer_energy_data()
    elif hasattr(src, "layer_times") and hasattr(src, "steps"):  # a wrapped record list keeps no replay
        return layer_energy_figures(None)
    else:
        src = list(src)
        for r in src:
            if isinstance(r, LayerEnergy):
                data = r.data
        src = as_source(src)
    run_j = run_e = None
    if data and data.get("counter"):
        run = run_summary(src)
        if run["energy_source"] == data.get("counter"):
            run_j, run_e = run["j_per_sample"], run["energy"][run["energy_source"]]
    return layer_energy_figures(data, run_j, run_e)


def layer_energy(reader) -> dict:
    """Per node id: {"fwd_j_per_sample", "bwd_j_per_sample", "j_per_sample", "j_uncertainty", ...}
    (``layer_energy_figures``' ``layers``) of a session; {} where the session holds no replay or
    none could be measured. Join onto ``layer_summary`` rows by ``row["id"]``."""
    return layer_energy_summary(reader)["layers"]


def snapshot_layer_energy(snap) -> dict:
    """``layer_energy_figures`` of a live snapshot (``LiveSnapshot.layer_energy``), its coverage
    against the snapshot's whole-step J/sample of the same counter (``snapshot_energy``)."""
    from engine.analysis.snapshot import snapshot_energy

    data = getattr(snap, "layer_energy", None)
    run_e = None
    if data and data.get("counter"):
        _w, run_e = snapshot_energy(snap, data["counter"])
    return layer_energy_figures(data, (run_e or {}).get("j_per_sample"), run_e)
