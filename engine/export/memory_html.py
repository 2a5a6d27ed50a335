"""The HTML report's memory section: which layers hold the training memory (saved for backward,
measured, with their share of the step's peak) and one step's memory timeline with the
forward/backward band of each layer and the peak. Figures from ``engine.analysis.memory``."""
from __future__ import annotations

from engine.analysis.memory import layer_memory_table, memory_timeline
from engine.export.charts import esc, svg_hbars, svg_lines
from engine.fmt import fmt_bytes, fmt_ms, fmt_pct

_FWD, _BWD = "#3b78c4", "#e07b39"


def _bands_svg(bands: list, t_end: float, width: int = 760) -> str:
    """Forward (top row) and backward (bottom row) band of each layer on the step's time axis,
    aligned with ``svg_lines``' plot area (60 px left, 16 px right)."""
    left, right, row = 60, 16, 16
    pw = width - left - right
    span = t_end or 1.0
    out = [f'<svg width="{width}" height="{2 * row + 8}" viewBox="0 0 {width} {2 * row + 8}" '
           'xmlns="http://www.w3.org/2000/svg" role="img">',
           f'<text x="{left - 6}" y="{row - 4}" text-anchor="end">fwd</text>',
           f'<text x="{left - 6}" y="{2 * row - 4}" text-anchor="end">bwd</text>']
    for nid, phase, t0, t1 in bands:
        y = 2 if phase == "forward" else row + 2
        x = left + pw * t0 / span
        w = max(pw * (t1 - t0) / span, 0.5)
        colour = _FWD if phase == "forward" else _BWD
        out.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 3}" fill="{colour}" stroke="#fff" '
                   f'stroke-width="0.5"><title>{esc(nid)} {phase}: {fmt_ms(t0)}–{fmt_ms(t1)} ms</title></rect>')
    out.append("</svg>")
    return "".join(out)


def memory_section(src) -> str:
    """The section's HTML (an <h2> and its charts), or a note when the run counted no memory."""
    parts = ["<h2>Training memory: what each layer holds for backward</h2>"]
    table = layer_memory_table(src)
    if not table["steps"]:
        parts.append("<p class='note'>Not recorded: saved-for-backward bytes are counted on profiled training steps "
                     "(sessions written before this was recorded, inference runs and runs without profiling have "
                     "none).</p>")
        return "".join(parts)
    rows = table["layers"]
    parts.append(svg_hbars([r["id"] for r in rows],
                           [("saved for backward", [r["saved_bytes"] / 2**20 if r["saved_bytes"] else None for r in rows])],
                           "MiB"))
    peak = table["peak_bytes"]
    note = (f"Measured on step{'s' if len(table['steps']) > 1 else ''} {', '.join(map(str, table['steps'][:8]))}"
            f"{' …' if len(table['steps']) > 8 else ''} (median): each storage once, charged to the layer that "
            f"created it; weights left out. Total {fmt_bytes(table['saved_total'])}")
    if peak:
        note += f", {fmt_pct(table['saved_total'] / peak)} of the step's peak {fmt_bytes(peak)} ({table['peak_what']})"
    parts.append(f"<p class='sub'>{esc(note)}.</p>")
    top = sorted((r for r in rows if r["saved_bytes"]), key=lambda r: -r["saved_bytes"])[:5]
    if top:
        parts.append("<table><tr><th>layer</th><th class='n'>saved for backward</th><th class='n'>output</th>"
                     "<th class='n'>share of peak</th></tr>"
                     + "".join(f"<tr><td>{esc(r['id'])}</td><td class='n'>{esc(fmt_bytes(r['saved_bytes']))}</td>"
                               f"<td class='n'>{esc(fmt_bytes(r['out_bytes']))}</td>"
                               f"<td class='n'>{esc(fmt_pct(r['share_of_peak']))}</td></tr>" for r in top)
                     + "</table>")
    tl = memory_timeline(src)
    if tl is not None:
        what = ("the CUDA allocator's history of the step" if tl["source"] == "cuda allocator history"
                else "the saved-tensor model (activations only; outputs freed after their last consumer, saved "
                     "tensors after the backward of their first saver)")
        parts.append(f"<h3>Memory timeline of step {tl['step']}</h3><p class='sub'>{esc('From ' + what)}.</p>")
        pts = tl["points"]
        parts.append(svg_lines([("allocated MiB", [p[0] for p in pts], [p[1] / 2**20 for p in pts])],
                               "ms in the step", "MiB", height=200))
        t_end = max([p[0] for p in pts] + [b[3] for b in tl["bands"]] + [0.0])
        x1 = max(p[0] for p in pts) if pts else t_end
        parts.append(_bands_svg(tl["bands"], x1 if x1 > 0 else t_end))
        pk = tl["peak"]
        alive = ", ".join(f"{n} {fmt_bytes(pk['alive_bytes'][n])}" for n in pk["alive"])
        parts.append(f"<p>Peak {esc(fmt_bytes(pk['bytes']))} at {esc(fmt_ms(pk['t']))} ms; alive then: "
                     f"{esc(alive or 'no layer tensor')}.</p>")
    return "".join(parts)
