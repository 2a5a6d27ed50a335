"""Self-contained SVG charts for the HTML report (inline, no script, nothing fetched)."""
from __future__ import annotations

import html
import math

from engine.fmt import fmt_num as _fmt

_PALETTE = ["#3b78c4", "#e07b39", "#4c9a52", "#b94a6b", "#7a5bb5", "#8c7a3a", "#2a9d9d"]


def esc(v) -> str:
    """Text made safe inside HTML and SVG (quotes too)."""
    return html.escape(str(v), quote=True)


def _finite(v) -> float | None:
    """``v`` when it is a finite number, else None (a stored inf or NaN draws as nothing)."""
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _nice_max(v: float) -> float:
    if not math.isfinite(v) or v <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def svg_hbars(labels: list[str], series: list[tuple[str, list]], unit: str, width: int = 760) -> str:
    """Horizontal stacked bars, one row per label; ``series`` = [(name, values)] (None = 0 width)."""
    row_h, left, right, top = 16, 150, 70, 8
    series = [(name, [_finite(v) for v in vals]) for name, vals in series]
    h = top + row_h * len(labels) + 24
    totals = [sum((s[1][i] or 0) for s in series) for i in range(len(labels))]
    vmax = _nice_max(max(totals, default=0) or 1)
    plot_w = width - left - right
    out = [f'<svg width="{width}" height="{h}" viewBox="0 0 {width} {h}" xmlns="http://www.w3.org/2000/svg" role="img">']
    for k in range(5):
        x = left + plot_w * k / 4
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{h - 20}" stroke="#e3e7ec"/>')
        out.append(f'<text x="{x:.1f}" y="{h - 6}" text-anchor="middle">{_fmt(vmax * k / 4)} {unit if k == 4 else ""}</text>')
    for i, lab in enumerate(labels):
        y = top + i * row_h
        out.append(f'<text x="{left - 6}" y="{y + 11}" text-anchor="end">{esc(lab[:24])}</text>')
        x = left
        for j, (name, vals) in enumerate(series):
            v = vals[i] or 0
            w = plot_w * v / vmax
            if w > 0:
                out.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{row_h - 4}" '
                           f'fill="{_PALETTE[j % len(_PALETTE)]}"><title>{esc(lab)} {esc(name)}: {_fmt(v)} {unit}</title></rect>')
            x += w
        out.append(f'<text x="{x + 4:.1f}" y="{y + 11}">{_fmt(totals[i])}</text>')
    out.append("</svg>")
    return _legend([s[0] for s in series]) + "".join(out)


def _legend(names) -> str:
    if len(names) < 2:
        return ""
    return '<div class="legend">' + "".join(
        f'<span><i style="background:{_PALETTE[j % len(_PALETTE)]}"></i>{esc(n)}</span>' for j, n in enumerate(names)) + "</div>"


def _thin(xs, ys, n=800):
    """At most ~2n points, keeping each bucket's min and max so spikes survive."""
    if len(xs) <= 2 * n:
        return xs, ys
    step = len(xs) / n
    ox, oy = [], []
    for b in range(n):
        i0, i1 = int(b * step), int((b + 1) * step)
        seg = list(range(i0, max(i1, i0 + 1)))
        lo = min(seg, key=lambda i: ys[i])
        hi = max(seg, key=lambda i: ys[i])
        for i in sorted({lo, hi}):
            ox.append(xs[i])
            oy.append(ys[i])
    return ox, oy


def svg_lines(series: list[tuple[str, list, list]], xlabel: str, ylabel: str, width: int = 760, height: int = 220) -> str:
    """A line chart of one or more (name, xs, ys) series sharing axes."""
    clean = []
    for n, xs, ys in series:  # only points with a finite x and y are drawn
        pts = [(x, y) for x, y in zip(xs, ys) if _finite(x) is not None and _finite(y) is not None]
        if pts:
            clean.append((n, [p[0] for p in pts], [p[1] for p in pts]))
    series = [(n, *_thin(xs, ys)) for n, xs, ys in clean]
    if not series:
        return ""
    left, right, top, bottom = 60, 16, 10, 34
    xs_all = [x for _, xs, _ in series for x in xs]
    ys_all = [y for _, _, ys in series for y in ys if y is not None and math.isfinite(y)]
    x0, x1 = min(xs_all), max(xs_all)
    x1 = x1 if x1 > x0 else x0 + 1
    y0 = min(0.0, min(ys_all, default=0.0))
    y1 = _nice_max(max(ys_all, default=1.0)) if max(ys_all, default=1.0) > 0 else 1.0
    pw, ph = width - left - right, height - top - bottom
    out = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" role="img">']
    for k in range(5):
        y = top + ph - ph * k / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e3e7ec"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(y0 + (y1 - y0) * k / 4)}</text>')
        x = left + pw * k / 4
        out.append(f'<text x="{x:.1f}" y="{height - 18}" text-anchor="middle">{_fmt(x0 + (x1 - x0) * k / 4)}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 3}" text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text x="12" y="{top + ph / 2:.1f}" transform="rotate(-90 12 {top + ph / 2:.1f})" '
               f'text-anchor="middle">{esc(ylabel)}</text>')
    for j, (name, xs, ys) in enumerate(series):
        pts = " ".join(f"{left + pw * (x - x0) / (x1 - x0):.1f},{top + ph - ph * (y - y0) / (y1 - y0):.1f}"
                       for x, y in zip(xs, ys) if y is not None and math.isfinite(y))
        out.append(f'<polyline fill="none" stroke="{_PALETTE[j % len(_PALETTE)]}" stroke-width="1.5" points="{pts}">'
                   f'<title>{esc(name)}</title></polyline>')
    out.append("</svg>")
    return _legend([s[0] for s in series]) + "".join(out)

