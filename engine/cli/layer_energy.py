"""Printing the per-layer energy replay of a session (``layerscope summary``, ``layerscope profile
--layer-energy``): the figures come from ``engine.analysis.layer_energy``."""
from __future__ import annotations

from engine.cli.output import print_table
from engine.fmt import fmt_num, fmt_pct


def _pm(v, u) -> str:
    return fmt_num(v) if u is None or v is None else f"{fmt_num(v)} ± {fmt_num(u)}"


def print_layer_energy(le: dict, names: list[str] | None = None) -> None:
    """Print ``layer_energy_summary``'s figures: one line with the reason when nothing was measured,
    else a table (J per sample, 95 % intervals) and the coverage line. ``names``: node order."""
    if not le.get("available"):
        if le.get("requested"):
            print(f"layer energy: {le['reason']}")
        return
    sim = " (SIMULATED counter: a known test profile, not a measurement)" if le.get("simulated") else ""
    print(f"\nlayer energy{sim}: each layer replayed alone, counter {le['counter']}, idle "
          f"{_pm(le['idle_w'], le['idle_w_uncertainty'])} W subtracted; ± is a 95 % interval")
    rows = le["layers"]
    order = [n for n in (names or []) if n in rows] + [n for n in rows if n not in (names or [])]
    train = any(r["bwd_j_per_sample"] is not None for r in rows.values())
    head = ["node", "fwd J/sample"] + (["bwd J/sample"] if train else []) + ["J/sample", "±", "note"]
    table = []
    for n in order:
        r = rows[n]
        note = ", ".join(t for t, on in (("short window", r["short"]), ("within noise", r["within_noise"])) if on)
        table.append([n, fmt_num(r["fwd_j_per_sample"])] + ([fmt_num(r["bwd_j_per_sample"])] if train else [])
                     + [fmt_num(r["j_per_sample"]), fmt_num(r["j_uncertainty"]), note])
    print_table(table, head, right=set(range(1, len(head) - 1)))
    for n, why in (le.get("errors") or {}).items():
        print(f"  {n}: not measured ({why})")
    line = f"sum over layers: {_pm(le['sum_j_per_sample'], le['sum_uncertainty'])} J/sample"
    if le.get("coverage") is not None:
        line += (f" = {fmt_pct(le['coverage'])} of the run's whole-step {fmt_num(le['run_j_per_sample'])} J/sample "
                 f"({le['counter']})")
        if le.get("coverage_above_idle") is not None:
            line += f"; {fmt_pct(le['coverage_above_idle'])} of it above idle"
    else:
        line += "; coverage: the run has no whole-step energy per sample from the same counter"
    print(line)
    if le.get("stopped"):
        print("layer energy: the replay was stopped early; layers after the last shown were not measured")
