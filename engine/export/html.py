"""The HTML report: one self-contained file (inline CSS and SVG, nothing fetched) with the run's
config, device, per-layer table and charts of layer time, memory, power (or why there is none)
and loss. Every figure comes from ``engine.analysis.summary``; every number is formatted by
``engine.fmt``."""
from __future__ import annotations

import json
import time
from pathlib import Path

from engine.analysis.energy import availability_rows
from engine.analysis.summary import as_source, summary, telemetry_status
from engine.export.charts import esc as _esc, svg_hbars, svg_lines
from engine.export.common import title as _title, write_text as _write_text
from engine.export.roofline_html import roofline_section
from engine.export.memory_html import memory_section
from engine.fmt import fmt_bytes as _fmt_bytes, fmt_num as _fmt, fmt_pct as _fmt_pct

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


def _kv_table(pairs) -> str:
    return "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in pairs) + "</table>"


def _spread(p5, p95) -> str:
    """A layer's spread across steps, "p5–p95" in ms (a dash when not measured)."""
    return _fmt(None) if p5 is None and p95 is None else f"{_fmt(p5)}–{_fmt(p95)}"


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
    parts.append(memory_section(src))
    parts.append("<h2>Power</h2>")
    power = [(src_name, *src.series(src_name, m)) for src_name, m in src.telemetry_series() if m == "power_w"]
    if power:
        parts.append(svg_lines(power, "seconds since start", "W"))
        for name, e in run["energy"].items():
            parts.append(f"<p>{_esc(name)}: {_fmt(e['j_per_sample'])} J per sample, {_fmt(e['j_per_step'])} J per step, "
                         f"average {_fmt(e['avg_power_w'])} W over {_fmt(e['seconds'])} s of steady steps "
                         f"({e['windows']} windows of at least 1 s).</p>")
    if run["power_note"]:
        parts.append(f"<p class='note'>{_esc(run['power_note'])}</p>")
    avail = availability_rows(telemetry_status(src))
    if avail:
        parts.append("<details><summary>Telemetry: what was read, and why not</summary><table><tr><th>source</th>"
                     "<th>metric</th><th>available</th><th>reason</th></tr>"
                     + "".join(f"<tr><td>{_esc(r['source'])}</td><td>{_esc(r['metric'])}</td>"
                               f"<td>{'yes' if r['available'] else 'no'}</td><td>{_esc(r['reason'])}</td></tr>"
                               for r in avail) + "</table></details>")
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
                 "over the step time. GFLOP/s at the median time (training: forward + backward FLOPs as counted)."
                 + (" Energy per layer is an estimate: the measured energy per sample split by time share." if run["j_per_sample"] else "")
                 + "</p>")
    faults = any(r.get("fault_share") is not None for r in rows)
    if faults:
        parts.append("<p class='sub'>p5–p95: the spread of the layer's time across steps. Faults: the share of the "
                     "layer's median forward time its minor page faults cost (fresh memory touched for the first "
                     "time); <b>alloc-bound</b>: mostly that, not compute, so its time moves with the allocation "
                     f"pattern. Page faults: {_esc(_fmt(run['fault_ms']))} ms per step, "
                     f"{_esc(_fmt_pct(run['fault_share'], sep=''))} of the step time.</p>")
    else:
        parts.append("<p class='sub'>p5–p95: the spread of the layer's time across steps.</p>")
    if run.get("fault_advice"):
        parts.append(f"<p class='note'>{_esc(run['fault_advice'])}</p>")
    if run.get("probe_hooks"):  # how the layers were timed (native stamps, Python hooks, device events)
        parts.append(f"<p class='sub'>Per-layer probe: {_esc(run['probe_hooks'])}.</p>")
    heads = [("node", ""), ("kind", ""), ("output", ""), ("params", "n"), ("MFLOPs", "n"), ("fwd mean", "n"),
             ("fwd med", "n"), ("fwd p5–p95", "n")]
    if train:
        heads += [("bwd mean", "n"), ("bwd med", "n"), ("bwd p5–p95", "n")]
    heads += [("share", "n"), ("GFLOP/s", "n"), ("act", "n")]
    if faults:
        heads += [("faults", "n")]
    if run["j_per_sample"]:
        heads += [("mJ/sample (est.)", "n")]
    t = ["<table><tr>" + "".join(f"<th class='{c}'>{_esc(h)}</th>" for h, c in heads) + "</tr>"]
    for r in rows:
        cells = [r["id"], r["kind"] or "", "x".join(map(str, r["out_shape"] or [])), _fmt(r["params"]),
                 _fmt(r["flops"] / 1e6 if r["flops"] is not None else None), _fmt(r["fwd_mean_ms"]),
                 _fmt(r["fwd_median_ms"]), _spread(r["fwd_p5_ms"], r["fwd_p95_ms"])]
        if train:
            cells += [_fmt(r["bwd_mean_ms"]), _fmt(r["bwd_median_ms"]), _spread(r["bwd_p5_ms"], r["bwd_p95_ms"])]
        cells += [_fmt_pct(r["share"], sep=""), _fmt(r["total_gflops"]),
                  _fmt_bytes(r["act_bytes"])]
        if faults:
            cells.append(_fmt_pct(r.get("fault_share"), sep="") + (" alloc-bound" if r.get("alloc_bound") else ""))
        if run["j_per_sample"]:
            e = r["energy_est_j_per_sample"]
            cells.append(_fmt(e * 1000 if e is not None else None))
        t.append("<tr>" + "".join(f"<td class='{c}'>{_esc(v)}</td>" for v, (_, c) in zip(cells, heads)) + "</tr>")
    t.append("</table>")
    parts.append("".join(t))
    parts.append(roofline_section(src))
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

