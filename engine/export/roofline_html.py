"""The roofline section of the HTML report: a log-log plot (inline SVG, hover titles, nothing
fetched) of every layer's forward and backward pass against the measured ceilings, and a table
of intensity, achieved rate, % of roof and bound. Figures from ``engine.analysis.roofline``."""
from __future__ import annotations

import math

from engine.export.charts import _PALETTE, esc
from engine.fmt import fmt_bytes, fmt_num, fmt_pct

_FAMILY_ORDER = ("convolution", "linear", "pooling", "normalisation", "activation", "merge", "regularisation",
                 "other")


def _colour(family: str) -> str:
    k = _FAMILY_ORDER.index(family) if family in _FAMILY_ORDER else len(_FAMILY_ORDER) - 1
    return _PALETTE[k % len(_PALETTE)]


def _g(v) -> str:
    return fmt_num(v / 1e9 if v is not None else None)


def svg_roofline(r: dict, width: int = 760, height: int = 360) -> str:
    """Log-log: x arithmetic intensity (FLOP/byte), y achieved FLOP/s; the roof min(peak,
    intensity x bandwidth) solid, main-memory bandwidth dashed; one point per layer and pass
    (circle forward, square backward) coloured by family."""
    pts = [(lay, name, lay[name]) for lay in r["layers"] for name in ("fwd", "bwd")
           if lay[name] and lay[name]["intensity"] and lay[name]["achieved_flop_s"]]
    peak, bw, dram = r["peak_flop_s"], r["bandwidth_bytes_s"], r.get("dram_bandwidth_bytes_s")
    if not pts or not peak or not bw:
        return ""
    xs = [p[2]["intensity"] for p in pts] + [peak / bw]
    ys = [p[2]["achieved_flop_s"] for p in pts] + [peak]
    x0, x1 = 10 ** math.floor(math.log10(min(xs)) - 0.3), 10 ** math.ceil(math.log10(max(xs)) + 0.3)
    y0, y1 = 10 ** math.floor(math.log10(min(ys))), 10 ** math.ceil(math.log10(peak) + 0.2)
    left, right, top, bottom = 70, 40, 12, 40
    pw, ph = width - left - right, height - top - bottom

    def X(v):
        return left + pw * (math.log10(v) - math.log10(x0)) / (math.log10(x1) - math.log10(x0))

    def Y(v):
        return top + ph - ph * (math.log10(v) - math.log10(y0)) / (math.log10(y1) - math.log10(y0))

    out = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'xmlns="http://www.w3.org/2000/svg" role="img">']
    for e in range(int(round(math.log10(x0))), int(round(math.log10(x1))) + 1):
        x = X(10 ** e)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#e3e7ec"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 22}" text-anchor="middle">{fmt_num(10.0 ** e)}</text>')
    for e in range(int(round(math.log10(y0))), int(round(math.log10(y1))) + 1):
        y = Y(10 ** e)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e3e7ec"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_num(10.0 ** e / 1e9)}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">arithmetic intensity '
               '(FLOP/byte)</text>')
    out.append(f'<text x="14" y="{top + ph / 2:.1f}" transform="rotate(-90 14 {top + ph / 2:.1f})" '
               'text-anchor="middle">GFLOP/s</text>')

    def roof(b, dash, label):
        ridge = peak / b
        xa = x0
        ya = max(y0, xa * b)
        xa = ya / b
        xr = min(ridge, x1)
        seg = [f"{X(xa):.1f},{Y(xa * b):.1f}", f"{X(xr):.1f},{Y(min(peak, xr * b)):.1f}"]
        if ridge < x1:
            seg.append(f"{X(x1):.1f},{Y(peak):.1f}")
        out.append(f'<polyline fill="none" stroke="#333" stroke-width="1.5" {dash} points="{" ".join(seg)}">'
                   f'<title>{esc(label)}</title></polyline>')

    roof(bw, "", f"roof: peak {_g(peak)} GFLOP/s, bandwidth {_g(bw)} GB/s (best copy, cache included)")
    if dram and dram < bw:
        roof(dram, 'stroke-dasharray="5,4"', f"main memory {_g(dram)} GB/s")
    for lay, name, p in pts:
        x, y = X(p["intensity"]), Y(p["achieved_flop_s"])
        tip = (f"{lay['id']} ({lay['kind']}) {'forward' if name == 'fwd' else 'backward'}: {fmt_num(p['intensity'])} "
               f"FLOP/byte, {_g(p['achieved_flop_s'])} GFLOP/s, {fmt_pct(p['pct_of_roof'])} of roof, {p['bound']}")
        c = _colour(lay["family"])
        shape = (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5"' if name == "fwd"
                 else f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8"')
        out.append(f'{shape} fill="{c}" fill-opacity="0.85" stroke="#fff"><title>{esc(tip)}</title>'
                   f'{"</circle>" if name == "fwd" else "</rect>"}')
    out.append("</svg>")
    fams = [f for f in _FAMILY_ORDER if any(lay["family"] == f for lay, _, _ in pts)]
    legend = ('<div class="legend">' + "".join(f'<span><i style="background:{_colour(f)}"></i>{esc(f)}</span>'
                                              for f in fams)
              + "<span>circle: forward, square: backward; solid: the roof, dashed: main memory</span></div>")
    return legend + "".join(out)


def roofline_section(src) -> str:
    """``<h2>Roofline</h2>``, the ceilings and their source, the plot and the per-layer table."""
    from engine.analysis.roofline import roofline

    r = roofline(src)
    parts = ["<h2>Roofline</h2>"]
    if not r["peak_flop_s"]:
        parts.append(f"<p class='note'>No roofline: ceilings {esc(r['ceilings_source'])}.</p>")
        return "".join(parts)
    parts.append(f"<p class='sub'>Ceilings {esc(r['ceilings_source'])}: peak {_g(r['peak_flop_s'])} GFLOP/s "
                 f"(matmul, {esc(r['precision'])}), bandwidth {_g(r['bandwidth_bytes_s'])} GB/s (best copy, cache "
                 f"included; main memory {_g(r['dram_bandwidth_bytes_s'])} GB/s). Bytes: weights + inputs + outputs "
                 f"at the run's precision, batch {esc(r['batch'])}. Overhead-bound: below "
                 f"{fmt_pct(r['overhead_fraction'])} of the roof.</p>")
    if r["above_roof_note"]:
        note = r["above_roof_note"]
        parts.append(f"<p class='note'>{esc(note[0].upper() + note[1:])}</p>")
    parts.append(svg_roofline(r))
    heads = ["node", "kind", "pass", "FLOP/byte", "bytes", "GFLOP/s", "roof GFLOP/s", "% of roof", "bound"]
    t = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in heads) + "</tr>"]
    for lay in r["layers"]:
        for name in ("fwd", "bwd"):
            p = lay[name]
            if p is None:
                continue
            cells = [lay["id"], lay["kind"] or "", name, fmt_num(p["intensity"]), fmt_bytes(p["bytes"]),
                     _g(p["achieved_flop_s"]), _g(p["roof_flop_s"]), fmt_pct(p["pct_of_roof"]), p["bound"] or "-"]
            t.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    t.append("</table>")
    parts.append("".join(t))
    return "".join(parts)
