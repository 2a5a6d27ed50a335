"""Exports of a session: Chrome trace (Perfetto, chrome://tracing), per-layer CSV, a
self-contained HTML report (inline CSS and SVG, nothing fetched), JSON summary - and the
layer-by-layer comparison of two sessions. All work on stopped, failed or killed runs too.
"""
from __future__ import annotations

import csv
import html
import json
import math
import time
from pathlib import Path

from engine.analysis.summary import as_source, fmt_bytes, layer_summary, run_summary, steady_layer_times, summary

CSV_COLUMNS = ["id", "kind", "out_shape", "params", "flops", "fwd_mean_ms", "fwd_median_ms", "fwd_p95_ms",
               "bwd_mean_ms", "bwd_median_ms", "bwd_p95_ms", "share", "fwd_gflops", "total_gflops",
               "act_bytes", "mem_bytes", "peak_bytes", "energy_est_j_per_sample", "samples"]

# counter tracks in the trace: (metric, track name, unit scale, unit)
_COUNTERS = [("power_w", "power", 1.0, "W"), ("mem_used_bytes", "GPU memory", 1 / 2**20, "MiB"),
             ("gpu_util_pct", "GPU utilisation", 1.0, "%"), ("cpu_pct", "CPU", 1.0, "%"),
             ("rss_bytes", "process RSS", 1 / 2**20, "MiB")]
_TID_STEPS, _TID_FWD, _TID_BWD = 1, 2, 3
DEFAULT_TRACE_STEPS = 2000


def _write_text(path, text: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _title(src) -> str:
    cfg = src.info.config or {}
    net = (cfg.get("net") or {}).get("name") or "net"
    dev = (src.info.device or {}).get("name") or (src.info.device or {}).get("id") or cfg.get("device") or "?"
    return f"{net} ({cfg.get('mode', '?')}, {cfg.get('precision', '?')}, batch {cfg.get('batch_size', '?')}) on {dev}"


# -- trace ------------------------------------------------------------------------------------

def trace_events(reader, step_from: int | None = None, step_to: int | None = None,
                 max_steps: int | None = DEFAULT_TRACE_STEPS) -> dict:
    """The Chrome trace event JSON object: one slice per layer per phase (forward and backward
    tracks) for the profiled steps, a slice per step, counter tracks for telemetry."""
    src = as_source(reader)
    pid = 1
    ev = [{"ph": "M", "pid": pid, "name": "process_name", "args": {"name": f"LayerScope: {_title(src)}"}}]
    for tid, name in ((_TID_STEPS, "steps"), (_TID_FWD, "forward"), (_TID_BWD, "backward")):
        ev.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}})
        ev.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": tid}})
    kinds = {r.node_id: r.kind for r in src.layers()}
    lts = src.layer_times(step_from, step_to)
    total_profiled = len(lts)
    if max_steps is not None and len(lts) > max_steps:
        lts = lts[:max_steps]
    lo = lts[0].step if lts else None
    hi = lts[-1].step if lts else None
    for lt in lts:
        base = lt.t * 1e6
        for k, nid in enumerate(lt.node_ids):
            args = {"step": lt.step, "kind": kinds.get(nid)}
            f, fs = lt.fwd_ms[k], lt.fwd_start_ms[k] if k < len(lt.fwd_start_ms) else None
            if f is not None and fs is not None:
                ev.append({"ph": "X", "pid": pid, "tid": _TID_FWD, "name": nid, "cat": "forward",
                           "ts": round(base + fs * 1000, 3), "dur": round(f * 1000, 3), "args": args})
            b = lt.bwd_ms[k] if k < len(lt.bwd_ms) else None
            bs = lt.bwd_start_ms[k] if k < len(lt.bwd_start_ms) else None
            if b is not None and bs is not None:
                ev.append({"ph": "X", "pid": pid, "tid": _TID_BWD, "name": nid, "cat": "backward",
                           "ts": round(base + bs * 1000, 3), "dur": round(b * 1000, 3), "args": args})
    limited = step_from is not None or step_to is not None or len(lts) < total_profiled
    for s in src.steps():
        if limited and (lo is None or s.step < lo or s.step > hi):
            continue
        start = s.t * 1e6
        if s.data_ms:
            ev.append({"ph": "X", "pid": pid, "tid": _TID_STEPS, "name": "waiting for data", "cat": "data",
                       "ts": round(start, 3), "dur": round(s.data_ms * 1000, 3), "args": {"step": s.step}})
            start += s.data_ms * 1000
        args = {"step": s.step, "phase": s.phase, "loss": s.loss, "accuracy": s.accuracy, "samples_per_s": s.samples_per_s,
                "warmup": s.warmup, "profiled": s.profiled, "data_ms": s.data_ms}
        ev.append({"ph": "X", "pid": pid, "tid": _TID_STEPS, "name": f"{s.phase} step {s.step}", "cat": "step",
                   "ts": round(start, 3), "dur": round(s.step_ms * 1000, 3), "args": _jsonable(args)})
    for source, metric in src.telemetry_series():
        spec = next((c for c in _COUNTERS if c[0] == metric), None)
        if spec is None:
            continue
        _, name, scale, unit = spec
        ts, vs = src.series(source, metric)
        track = f"{name} ({source})"
        for t, v in zip(ts, vs):
            ev.append({"ph": "C", "pid": pid, "name": track, "ts": round(t * 1e6, 1), "args": {unit: v * scale}})
    meta = {"layerscope_session": str(getattr(reader, "path", "")), "status": src.status, "title": _title(src),
            "profiled_steps_total": total_profiled, "profiled_steps_in_trace": len(lts)}
    if lts:
        meta["steps_in_trace"] = [lo, hi]
    return {"traceEvents": ev, "displayTimeUnit": "ms", "otherData": meta}


def export_trace(reader, path, step_from: int | None = None, step_to: int | None = None,
                 max_steps: int | None = DEFAULT_TRACE_STEPS) -> Path:
    """Write the Chrome trace JSON; at most ``max_steps`` profiled steps (chrome://tracing slows
    down beyond ~100 MB; Perfetto copes with more - pass max_steps=None)."""
    obj = trace_events(reader, step_from, step_to, max_steps)
    return _write_text(path, json.dumps(obj, separators=(",", ":")))


# -- CSV / JSON -------------------------------------------------------------------------------

def export_csv(reader, path) -> Path:
    """Per-layer summary, one row per node (columns: ``CSV_COLUMNS``)."""
    rows = layer_summary(reader, energy=_energy_of(reader))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            out = []
            for c in CSV_COLUMNS:
                v = r.get(c)
                if c == "out_shape" and v is not None:
                    v = "x".join(map(str, v))
                elif isinstance(v, float):
                    v = f"{v:.6g}"
                out.append("" if v is None else v)
            w.writerow(out)
    return p


def _energy_of(reader):
    run = run_summary(reader)
    return run["energy"].get(run["energy_source"]) if run["energy_source"] else None


def export_json(reader, path) -> Path:
    """Run totals, per-layer rows, the config and the list of telemetry series, as one JSON object."""
    src = as_source(reader)
    obj = summary(src)
    obj["config"] = {k: v for k, v in (src.info.config or {}).items() if k != "net"}
    obj["net"] = (src.info.config or {}).get("net")
    obj["device"] = src.info.device
    obj["versions"] = src.info.versions
    obj["host"] = src.info.host
    obj["start_time"] = src.info.start_time
    obj["telemetry_series"] = [{"source": s, "metric": m} for s, m in src.telemetry_series()]
    obj["format"] = "layerscope-summary"
    return _write_text(path, json.dumps(_jsonable(obj), indent=1))


# -- compare ----------------------------------------------------------------------------------

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


# -- HTML -------------------------------------------------------------------------------------

_PALETTE = ["#3b78c4", "#e07b39", "#4c9a52", "#b94a6b", "#7a5bb5", "#8c7a3a", "#2a9d9d"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;color:#1d2430;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde3ea;padding-bottom:4px}
.sub{color:#5b6573;margin:0 0 16px}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:8px}
.card{background:#f4f6f9;border-radius:6px;padding:8px 10px}.card b{display:block;font-size:18px}.card span{color:#5b6573;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:12.5px}th,td{padding:3px 6px;border-bottom:1px solid #e6e9ee;text-align:left}
th{background:#f4f6f9;position:sticky;top:0}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff6e0;border-left:3px solid #e0a800;padding:6px 10px}.status-failed{color:#b3261e}
svg{display:block;margin:6px 0 12px}svg text{font:11px system-ui,sans-serif;fill:#333}
details{margin:6px 0}pre{background:#f4f6f9;padding:8px;overflow:auto;font-size:12px}
.legend span{display:inline-block;margin-right:14px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
"""


def _esc(v) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v, digits=3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}" if a < 1 else f"{v:.{max(digits - int(math.log10(a)) - 1, 0)}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _fmt_bytes(v) -> str:
    return fmt_bytes(v, missing="–")


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def svg_hbars(labels: list[str], series: list[tuple[str, list]], unit: str, width: int = 760) -> str:
    """Horizontal stacked bars, one row per label; ``series`` = [(name, values)] (None = 0 width)."""
    row_h, left, right, top = 16, 150, 70, 8
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
        out.append(f'<text x="{left - 6}" y="{y + 11}" text-anchor="end">{_esc(lab[:24])}</text>')
        x = left
        for j, (name, vals) in enumerate(series):
            v = vals[i] or 0
            w = plot_w * v / vmax
            if w > 0:
                out.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{row_h - 4}" '
                           f'fill="{_PALETTE[j % len(_PALETTE)]}"><title>{_esc(lab)} {_esc(name)}: {_fmt(v)} {unit}</title></rect>')
            x += w
        out.append(f'<text x="{x + 4:.1f}" y="{y + 11}">{_fmt(totals[i])}</text>')
    out.append("</svg>")
    return _legend([s[0] for s in series]) + "".join(out)


def _legend(names) -> str:
    if len(names) < 2:
        return ""
    return '<div class="legend">' + "".join(
        f'<span><i style="background:{_PALETTE[j % len(_PALETTE)]}"></i>{_esc(n)}</span>' for j, n in enumerate(names)) + "</div>"


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
    series = [(n, *_thin(xs, ys)) for n, xs, ys in series if xs]
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
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 3}" text-anchor="middle">{_esc(xlabel)}</text>')
    out.append(f'<text x="12" y="{top + ph / 2:.1f}" transform="rotate(-90 12 {top + ph / 2:.1f})" '
               f'text-anchor="middle">{_esc(ylabel)}</text>')
    for j, (name, xs, ys) in enumerate(series):
        pts = " ".join(f"{left + pw * (x - x0) / (x1 - x0):.1f},{top + ph - ph * (y - y0) / (y1 - y0):.1f}"
                       for x, y in zip(xs, ys) if y is not None and math.isfinite(y))
        out.append(f'<polyline fill="none" stroke="{_PALETTE[j % len(_PALETTE)]}" stroke-width="1.5" points="{pts}">'
                   f'<title>{_esc(name)}</title></polyline>')
    out.append("</svg>")
    return _legend([s[0] for s in series]) + "".join(out)


def _kv_table(pairs) -> str:
    return "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in pairs) + "</table>"


def html_report(reader) -> str:
    """The HTML report as a string (see ``export_html``)."""
    src = as_source(reader)
    s = summary(src)
    run, rows = s["run"], s["layers"]
    info = src.info
    cfg = {k: v for k, v in (info.config or {}).items() if k != "net"}
    train = any(r["bwd_median_ms"] for r in rows)
    status_cls = "status-failed" if run["status"] == "failed" else ""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>LayerScope: {_esc(_title(src))}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>LayerScope report: {_esc(run['net'] or 'net')}</h1>",
             f"<p class='sub'>{_esc(_title(src))} · status <b class='{status_cls}'>{_esc(run['status'])}</b>"
             + (f" ({_esc(run['message'])})" if run["message"] else "")
             + f" · recorded {_esc(time.strftime('%Y-%m-%d %H:%M', time.localtime(info.start_time or 0)))} on {_esc(info.host)}</p>"]
    cards = [("step time (median)", f"{_fmt(run['step_ms_median'])} ms"),
             ("throughput", f"{_fmt(run['samples_per_s'])} samples/s"),
             ("steps", f"{run['steps']} ({run['warmup_steps']} warm-up, {run['profiled_steps']} profiled)"),
             ("energy per sample", f"{_fmt(run['j_per_sample'])} J ({run['energy_source']})" if run["j_per_sample"] else "not measured"),
             ("final loss", _fmt(run["loss"])), ("test accuracy", _fmt(run["test_accuracy"])),
             ("peak memory", _fmt_bytes(run["peak_mem_bytes"] or run["gpu_mem_max_bytes"])),
             ("process RSS (max)", _fmt_bytes(run["rss_max_bytes"]))]
    parts.append("<div class='grid'>" + "".join(f"<div class='card'><span>{_esc(k)}</span><b>{_esc(v)}</b></div>"
                                               for k, v in cards) + "</div>")
    if run["status"] == "running":
        parts.append("<p class='note'>This session never recorded an end (the run was still going or its process "
                     "was killed); it shows everything written up to then.</p>")
    labels = [r["id"] for r in rows]
    parts.append("<h2>Time per layer (median ms per step)</h2>")
    if any(r["fwd_median_ms"] for r in rows):
        series = [("forward", [r["fwd_median_ms"] for r in rows])]
        if train:
            series.append(("backward", [r["bwd_median_ms"] for r in rows]))
        parts.append(svg_hbars(labels, series, "ms"))
    else:
        parts.append("<p class='note'>No profiled step was recorded.</p>")
    parts.append("<h2>Memory per layer</h2>")
    mem_series = [("activation (output)", [r["act_bytes"] / 2**20 if r["act_bytes"] else None for r in rows])]
    if any(r["peak_bytes"] for r in rows):
        mem_series.append(("allocator peak", [r["peak_bytes"] / 2**20 if r["peak_bytes"] else None for r in rows]))
    parts.append(svg_hbars(labels, mem_series, "MiB") if any(v for _, vs in mem_series for v in vs)
                 else "<p class='note'>No memory figures recorded.</p>")
    parts.append("<h2>Power</h2>")
    power = [(src_name, *src.series(src_name, m)) for src_name, m in src.telemetry_series() if m == "power_w"]
    if power:
        parts.append(svg_lines(power, "seconds since start", "W"))
        for name, e in run["energy"].items():
            parts.append(f"<p>{_esc(name)}: {_fmt(e['j_per_sample'])} J per sample, {_fmt(e['j_per_step'])} J per step, "
                         f"average {_fmt(e['avg_power_w'])} W over {_fmt(e['seconds'])} s of steady steps "
                         f"({e['windows']} windows of at least 1 s).</p>")
    else:
        parts.append(f"<p class='note'>{_esc(run['power_note'])}</p>")
    steps = [x for x in src.steps() if x.phase != "test"]
    loss = [(x.step, x.loss) for x in steps if x.loss is not None]
    parts.append("<h2>Loss and accuracy</h2>")
    if loss:
        parts.append(svg_lines([("loss", [p[0] for p in loss], [p[1] for p in loss])], "step", "loss"))
        acc = [(x.step, x.accuracy) for x in steps if x.accuracy is not None]
        if acc:
            parts.append(svg_lines([("accuracy", [p[0] for p in acc], [p[1] for p in acc])], "step", "accuracy", height=160))
    else:
        parts.append("<p class='note'>No loss recorded (inference or benchmark run).</p>")
    parts.append("<h2>Step time</h2>")
    if steps:
        parts.append(svg_lines([("step ms", [x.step for x in steps], [x.step_ms for x in steps])], "step", "ms", height=180))
    parts.append("<h2>Per-layer summary</h2><p class='sub'>Warm-up steps excluded. Share: layer forward+backward time "
                 "over the step time. GFLOP/s at the median time (training: 3x forward FLOPs)."
                 + (" Energy per layer is an estimate: the measured energy per sample split by time share." if run["j_per_sample"] else "")
                 + "</p>")
    heads = [("node", ""), ("kind", ""), ("output", ""), ("params", "n"), ("MFLOPs", "n"), ("fwd mean", "n"),
             ("fwd med", "n"), ("fwd p95", "n")]
    if train:
        heads += [("bwd mean", "n"), ("bwd med", "n"), ("bwd p95", "n")]
    heads += [("share", "n"), ("GFLOP/s", "n"), ("act", "n")]
    if run["j_per_sample"]:
        heads += [("mJ/sample (est.)", "n")]
    t = ["<table><tr>" + "".join(f"<th class='{c}'>{_esc(h)}</th>" for h, c in heads) + "</tr>"]
    for r in rows:
        cells = [r["id"], r["kind"] or "", "x".join(map(str, r["out_shape"] or [])), _fmt(r["params"]),
                 _fmt(r["flops"] / 1e6 if r["flops"] is not None else None), _fmt(r["fwd_mean_ms"]),
                 _fmt(r["fwd_median_ms"]), _fmt(r["fwd_p95_ms"])]
        if train:
            cells += [_fmt(r["bwd_mean_ms"]), _fmt(r["bwd_median_ms"]), _fmt(r["bwd_p95_ms"])]
        cells += [f"{r['share'] * 100:.1f}%" if r["share"] is not None else "–", _fmt(r["total_gflops"]),
                  _fmt_bytes(r["act_bytes"])]
        if run["j_per_sample"]:
            e = r["energy_est_j_per_sample"]
            cells.append(_fmt(e * 1000 if e is not None else None))
        t.append("<tr>" + "".join(f"<td class='{c}'>{_esc(v)}</td>" for v, (_, c) in zip(cells, heads)) + "</tr>")
    t.append("</table>")
    parts.append("".join(t))
    parts.append("<h2>Run</h2>")
    dev = info.device or {}
    parts.append(_kv_table([("device", f"{dev.get('name') or ''} ({dev.get('id') or cfg.get('device')})"),
                            *[(k, v) for k, v in (info.versions or {}).items()], ("host", info.host)]))
    parts.append("<details><summary>Run configuration</summary><pre>" + _esc(json.dumps(cfg, indent=1, default=str))
                 + "</pre></details>")
    parts.append("<details><summary>Net</summary><pre>" + _esc(json.dumps((info.config or {}).get("net"), indent=1))
                 + "</pre></details>")
    parts.append(f"<p class='sub'>Written by LayerScope from {_esc(getattr(reader, 'path', 'a live run'))}.</p></body></html>")
    return "".join(parts)


def export_html(reader, path) -> Path:
    """One self-contained HTML file: config, device, per-layer table, charts of layer time, memory,
    power (or why there is none) and loss. Inline CSS and SVG; it fetches nothing."""
    return _write_text(path, html_report(reader))


EXPORTERS = {"trace": (export_trace, ".trace.json"), "csv": (export_csv, ".csv"), "html": (export_html, ".html"),
             "json": (export_json, ".json")}
