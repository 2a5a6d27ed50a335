"""A comparison (``engine.analysis.compare.compare_runs``) as a self-contained HTML page (inline CSS
and SVG, nothing fetched, no script) or as CSV (one row per layer and run).

The page holds the runs' totals, per-layer speed-up bars on a log axis with the baseline at 1x,
a layers x runs heat map of the speed-up (each cell also gives ms per sample), the stacked
"where the time went" bars per run, and the layer table. Every figure is the comparison's own;
numbers are formatted by ``engine.fmt``.
"""
from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

from engine.export.charts import _PALETTE, esc, svg_hbars
from engine.export.common import write_text
from engine.fmt import fmt_bytes, fmt_num, fmt_pct

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1200px;color:#1d2430;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde3ea;padding-bottom:4px}
.sub{color:#5b6573;margin:0 0 16px}
table{border-collapse:collapse;font-size:12.5px}th,td{padding:3px 6px;border-bottom:1px solid #e6e9ee;text-align:left}
th{background:#f4f6f9}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff6e0;border-left:3px solid #e0a800;padding:6px 10px}
svg{display:block;margin:6px 0 12px}svg text{font:11px system-ui,sans-serif;fill:#333}
.legend span{display:inline-block;margin-right:14px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
td.heat{text-align:center;font-variant-numeric:tabular-nums;min-width:70px}
"""


def _x(v) -> str:
    return f"{v:.2f}x" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def _log_extent(values) -> float:
    """Half-width of the log10 axis: covers every finite speed-up, at least 2x either side."""
    vals = [abs(math.log10(v)) for v in values if isinstance(v, (int, float)) and v > 0 and math.isfinite(v)]
    return max(math.log10(2), *vals) * 1.05 if vals else math.log10(2)


def svg_speedup_bars(c: dict, width: int = 900) -> str:
    """Per layer, one bar per run other than the baseline: its speed-up on a log axis, the
    baseline's 1x in the middle (right of it: faster than the baseline)."""
    others = [k for k, r in enumerate(c["runs"]) if r["label"] != c["baseline"]]
    layers = c["layers"]
    if not layers or not others:
        return ""
    ext = _log_extent([p["per_run"][k]["speedup"] for p in layers for k in others])
    bar_h, left, right, top = 10, 150, 30, 8
    group = bar_h * len(others) + 6
    h = top + group * len(layers) + 30
    pw = width - left - right
    mid = left + pw / 2

    def xpos(v):
        return mid + (pw / 2) * max(-1.0, min(1.0, math.log10(v) / ext))

    out = [f'<svg width="{width}" height="{h}" viewBox="0 0 {width} {h}" xmlns="http://www.w3.org/2000/svg" role="img">']
    ticks = sorted({10 ** (s * e) for e in range(0, int(ext) + 2) for s in (1, -1)} | {2.0, 0.5})
    for t in ticks:
        if abs(math.log10(t)) <= ext:
            x = xpos(t)
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{h - 22}" stroke="{"#555" if t == 1 else "#e3e7ec"}"/>')
            out.append(f'<text x="{x:.1f}" y="{h - 8}" text-anchor="middle">{fmt_num(t)}x</text>')
    for i, lay in enumerate(layers):
        y0 = top + i * group
        out.append(f'<text x="{left - 6}" y="{y0 + group / 2 + 3:.1f}" text-anchor="end">{esc(lay["id"][:22])}</text>')
        for j, k in enumerate(others):
            v = lay["per_run"][k]["speedup"]
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                continue
            x = xpos(v)
            y = y0 + j * bar_h
            out.append(f'<rect x="{min(x, mid):.1f}" y="{y:.1f}" width="{abs(x - mid):.1f}" height="{bar_h - 2}" '
                       f'fill="{_PALETTE[j % len(_PALETTE)]}"><title>{esc(lay["id"])} {esc(c["runs"][k]["label"])}: '
                       f'{_x(v)} ({fmt_num(lay["per_run"][k]["ms_per_sample"])} ms/sample)</title></rect>')
    out.append("</svg>")
    legend = '<div class="legend">' + "".join(
        f'<span><i style="background:{_PALETTE[j % len(_PALETTE)]}"></i>{esc(c["runs"][k]["label"])}</span>'
        for j, k in enumerate(others)) + "</div>"
    return legend + "".join(out)


def _heat_colour(v) -> str:
    """Green for faster than the baseline, red for slower, white at 1x (log scale, full at 10x)."""
    if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
        return "#f0f0f0"
    t = max(-1.0, min(1.0, math.log10(v)))
    a = abs(t)
    if t >= 0:
        r, g, b = 255 - 180 * a, 255 - 60 * a, 255 - 170 * a
    else:
        r, g, b = 255 - 30 * a, 255 - 170 * a, 255 - 170 * a
    return f"#{int(r):02x}{int(g):02x}{int(b):02x}"


def heat_table(c: dict) -> str:
    """Layers x runs: each cell coloured by the speed-up against the baseline, giving ms per sample."""
    head = "".join(f'<th class="n">{esc(r["label"])}</th>' for r in c["runs"])
    rows = []
    for lay in c["layers"]:
        cells = "".join(
            f'<td class="heat" style="background:{_heat_colour(p["speedup"])}" title="{esc(lay["id"])} '
            f'{esc(r["label"])}: {fmt_num(p["ms_per_sample"])} ms/sample, {_x(p["speedup"])}">'
            f'{fmt_num(p["ms_per_sample"])}<br><small>{_x(p["speedup"])}</small></td>'
            for p, r in zip(lay["per_run"], c["runs"]))
        rows.append(f"<tr><td>{esc(lay['id'])}</td><td>{esc(lay['kind'] or '')}</td>{cells}</tr>")
    return f"<table><tr><th>layer</th><th>kind</th>{head}</tr>{''.join(rows)}</table>"


def time_bars(c: dict) -> str:
    """One stacked bar per run: ms per sample by layer family, data loading and the optimizer
    (or, for inference, the rest of the step)."""
    fams = []
    for x in c["families"]:
        fams += [f for f in x["by_family"] if f not in fams]
    series = [(f, [x["by_family"].get(f) for x in c["families"]]) for f in fams]
    series.append(("data loading", [x["data_ms_per_sample"] for x in c["families"]]))
    if any(x.get("allreduce_ms_per_sample") for x in c["families"]):
        series.append(("all-reduce (exposed)", [x.get("allreduce_ms_per_sample") for x in c["families"]]))
    series.append(("optimizer / rest of step", [x["optimizer_ms_per_sample"] if x["optimizer_ms_per_sample"]
                                                is not None else x["other_ms_per_sample"] for x in c["families"]]))
    return svg_hbars([x["label"] for x in c["families"]], series, "ms/sample", width=900)


def comparison_html(c: dict) -> str:
    """The comparison page as a string (see the module docstring)."""
    runs = c["runs"]
    base = next(r for r in runs if r["label"] == c["baseline"])

    def step_x(r):
        b, v = base["step_ms_per_sample"], r["step_ms_per_sample"]
        return b / v if b and v else None

    tot = "".join(
        f"<tr><td>{esc(r['label'])}</td><td>{esc(r['session'])}</td><td>{esc(r['device_name'] or r['device'])}</td>"
        f"<td>{esc(r['precision'])}</td><td class='n'>{esc(r['batch'])}</td><td>{esc(r['mode'])}</td>"
        f"<td class='n'>{fmt_num(r['step_ms_per_sample'])}</td><td class='n'>{_x(step_x(r))}</td>"
        f"<td class='n'>{fmt_num(r['samples_per_s'])}</td><td class='n'>{fmt_num(r['j_per_sample'])}</td>"
        f"<td class='n'>{fmt_bytes(r['peak_mem_bytes'])}</td><td>{esc(r['status'])}</td></tr>" for r in runs)
    totals = ("<table><tr><th>run</th><th>session</th><th>device</th><th>precision</th><th class='n'>batch</th>"
              "<th>mode</th><th class='n'>step ms/sample</th><th class='n'>speed-up</th><th class='n'>samples/s</th>"
              f"<th class='n'>J/sample</th><th class='n'>peak memory</th><th>status</th></tr>{tot}</table>")
    notes = []
    for label, ids in c["only_in"].items():
        notes.append(f"Only in {esc(label)}: {esc(', '.join(ids))}.")
    for r in runs:
        if r.get("advice"):
            share = f" ({fmt_pct(r['fault_share'])} of its time in page faults)" if r.get("fault_share") else ""
            notes.append(f"{esc(r['label'])}{share}: {esc(r['advice'])}")
    if any(r["j_per_sample"] is None for r in runs):
        why = sorted({r["power_note"] for r in runs if r["j_per_sample"] is None and r["power_note"]})
        notes.append("Energy not measured for " + esc(", ".join(r["label"] for r in runs if r["j_per_sample"] is None))
                     + (": " + esc(" ".join(why)) if why else "."))
    head = "".join(f"<th class='n'>{esc(r['label'])} fwd</th><th class='n'>bwd</th><th class='n'>x</th>"
                   "<th class='n'>share</th>" for r in runs)
    body = "".join(
        f"<tr><td>{esc(lay['id'])}</td><td>{esc(lay['kind'] or '')}</td><td>{esc(lay['family'])}</td>"
        + "".join(f"<td class='n'>{fmt_num(p['fwd_ms_per_sample'])}</td><td class='n'>{fmt_num(p['bwd_ms_per_sample'])}"
                  f"</td><td class='n'>{_x(p['speedup'])}</td><td class='n'>{fmt_pct(p['share'])}</td>"
                  for p in lay["per_run"]) + "</tr>" for lay in c["layers"])
    table = f"<table><tr><th>layer</th><th>kind</th><th>family</th>{head}</tr>{body}</table>"
    made = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>LayerScope comparison</title><style>{_CSS}</style></head>
<body><h1>LayerScope comparison: {len(runs)} runs</h1>
<p class="sub">Baseline: {esc(c['baseline'])}. Every time is per sample (median per step / batch used);
speed-up = baseline / run, above 1x is faster than the baseline. Written {esc(made)}.</p>
{''.join(f'<p class="note">{n}</p>' for n in notes)}
<h2>Totals</h2>{totals}
<h2>Speed-up per layer (log axis, baseline 1x)</h2>{svg_speedup_bars(c)}
<h2>Layers x runs (ms per sample, coloured by speed-up)</h2>{heat_table(c)}
<h2>Where the time went (ms per sample)</h2>{time_bars(c)}
<h2>Per layer (ms per sample)</h2>{table}
</body></html>
"""


CSV_COLUMNS = ("id", "kind", "family", "run", "baseline", "fwd_ms_per_sample", "bwd_ms_per_sample", "ms_per_sample",
               "speedup", "fwd_speedup", "bwd_speedup", "share", "j_per_sample", "mem_bytes")


def comparison_csv(c: dict) -> str:
    """One row per layer and run (``CSV_COLUMNS``); empty cells where a figure is absent."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for lay in c["layers"]:
        for p, r in zip(lay["per_run"], c["runs"]):
            w.writerow([lay["id"], lay["kind"], lay["family"], r["label"], int(r["label"] == c["baseline"]),
                        *["" if p[k] is None else p[k] for k in CSV_COLUMNS[5:]]])
    return buf.getvalue()


def export_comparison(c: dict, path) -> Path:
    """Write the comparison to ``path``: HTML for ``.html``/``.htm``, CSV for ``.csv``."""
    p = Path(path)
    text = comparison_csv(c) if p.suffix.lower() == ".csv" else comparison_html(c)
    return write_text(p, text)
