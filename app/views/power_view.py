"""Power & energy: GPU power, energy per sample, utilisation, temperature and SM clock (NVML),
CPU package power (RAPL) and CPU load per core (psutil).

Absent is absent: a series this machine or run could not read is not drawn as zeros; its plot
says "not available" and why (the engine's telemetry status reasons).

Energy per sample is ``engine.snapshot_energy``: the counter windows the JSON export sums
(drawn one point per window) and their total, the export's ``j_per_sample`` of that meter.
"""
from __future__ import annotations

import sys

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QScrollArea, QVBoxLayout

import engine
from app import style
from app.views.base import MonitorView, notice_label
from engine import fmt

PANELS = (  # key, title, unit
    ("power", "Power", "W"),
    ("energy", "Energy per sample", "J"),
    ("util", "GPU utilisation", "%"),
    ("temp", "GPU temperature", "°C"),
    ("clock", "SM clock", "MHz"),
    ("cpu", "CPU load per core", "%"),
)
PANEL_MIN_W = 230  # px a panel needs to show its title, axis and a readable curve
PANEL_MIN_H = 150


class PowerView(MonitorView):
    title = "Power and energy"
    max_hz = 2.0

    def __init__(self, parent=None):
        super().__init__(parent)
        self._status: dict = {}
        self.energy_figures: dict[str, dict] = {}  # label -> engine.energy_per_sample dict, as shown
        self.cpu_legend = None
        self.notice = notice_label("")
        self.glw = pg.GraphicsLayoutWidget()
        self.plots = {}
        self.notes = {}
        self.curves: dict[str, dict[str, pg.PlotDataItem]] = {k: {} for k, _, _ in PANELS}
        for i, (key, title, unit) in enumerate(PANELS):
            p = self.glw.addPlot(row=i // 3, col=i % 3, enableMenu=False)
            style.style_plot(p)
            p.setTitle(f"<span style='font-size:9pt'>{title} ({unit})</span>", color=style.MUTED)
            p.setClipToView(True)
            p.setDownsampling(mode="peak")
            note = pg.TextItem("", color=style.MUTED, anchor=(0.5, 0.5))
            note.setParentItem(p.vb)
            self.plots[key] = p
            self.notes[key] = note
            p.vb.sigResized.connect(lambda vb, n=note: n.setPos(vb.width() / 2, vb.height() / 2))
            p.getAxis("left").setWidth(44)
            p.getAxis("bottom").enableAutoSIPrefix(False)
            if unit == "%":  # a share is read against 0-100; auto-range made 99.2-100 look like a swing
                p.setYRange(0, 100, padding=0.01)
                p.enableAutoRange(axis="y", enable=False)
                p.setMouseEnabled(x=True, y=False)
        # six panels reflow to the dock's width (3, 2 or 1 per row) and scroll vertically when the
        # rows need more height than the dock has, so no panel is ever cut off out of reach
        self._cols = 3
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.glw)
        self.scroll.setMinimumSize(PANEL_MIN_W, PANEL_MIN_H)
        self.glw.setMinimumHeight(2 * PANEL_MIN_H)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.notice)
        lay.addWidget(self.scroll, 1)
        self.clear()

    def columns(self) -> int:
        """Panels per row now (3 in a wide dock, down to 1 in a narrow one)."""
        return self._cols

    def _arrange(self, cols: int) -> None:
        self._cols = cols
        ci = self.glw.ci
        for key, _t, _u in PANELS:
            ci.removeItem(self.plots[key])
        for i, (key, _t, _u) in enumerate(PANELS):
            ci.addItem(self.plots[key], row=i // cols, col=i % cols)
        rows = -(-len(PANELS) // cols)
        self.glw.setMinimumHeight(rows * PANEL_MIN_H)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        cols = max(1, min(3, self.scroll.viewport().width() // PANEL_MIN_W))
        if cols != self._cols:
            self._arrange(cols)

    def set_telemetry_status(self, status: dict | None) -> None:
        """The engine's ``telemetry_status()`` (or a session's recorded one): reasons for absent sources."""
        self._status = dict(status or {})
        if self._drawn is not None:
            self.update_snapshot(self._drawn)

    def _reason(self, source: str) -> str:
        st = self._status.get(source)
        if isinstance(st, dict) and not st.get("available") and st.get("reason"):
            return st["reason"]
        return ""

    def _metric_reason(self, source: str, metric: str) -> str:
        """Why one metric of a source is absent (the status's per-metric reason), else the source's."""
        st = self._status.get(source)
        ms = ((st.get("metrics") or {}).get(metric) if isinstance(st, dict) else None) or {}
        return ms.get("reason", "") if not ms.get("available", True) else self._reason(source)

    def clear(self) -> None:
        for key, curves in self.curves.items():
            for c in curves.values():
                c.setData([], [])
                c.setVisible(False)
            self._note(key, "no data yet")
        self.notice.setVisible(False)

    def _note(self, key: str, text: str) -> None:
        note = self.notes[key]
        plot = self.plots[key]
        for name in ("left", "bottom"):  # an empty plot shows no made-up 0..1 scale
            plot.getAxis(name).setStyle(showValues=not text)
        if text:
            note.setHtml(f"<div style='text-align:center;color:{style.MUTED}'>{text}</div>")
            vb = self.plots[key].vb
            note.setTextWidth(max(120.0, vb.width() - 16))
            note.setPos(vb.width() / 2, vb.height() / 2)
        note.setVisible(bool(text))

    def _curve(self, key: str, name: str, colour: str) -> pg.PlotDataItem:
        c = self.curves[key].get(name)
        if c is None:
            c = self.plots[key].plot([], [], pen=pg.mkPen(colour, width=1.6), name=name)
            self.curves[key][name] = c
        return c

    def _show(self, key: str, series: dict[str, np.ndarray]) -> None:
        """Draw (t, value) arrays by name in one panel; hide the ones not in ``series``."""
        for name, c in self.curves[key].items():
            if name not in series:
                c.setVisible(False)
        for i, (name, arr) in enumerate(sorted(series.items())):
            c = self._curve(key, name, style.SERIES[i % len(style.SERIES)])
            c.setData(arr[:, 0], arr[:, 1], connect="finite")
            c.setVisible(True)

    def available(self) -> dict[str, bool]:
        """Which panels show data now (for tests and the status bar)."""
        return {k: any(c.isVisible() for c in self.curves[k].values()) for k, _, _ in PANELS}

    def update_snapshot(self, snap) -> None:
        if snap.telemetry_status is not None:  # a live run's own sampler status (TelemetryStatus)
            self._status = dict(snap.telemetry_status)
        tel = snap.telemetry
        info = snap.info
        dev = str(((info.device or {}).get("id") if info else "") or "")
        on_gpu = dev.startswith("cuda")
        nvml = {src for (src, _m) in tel if src.startswith("nvml")}
        gpu_src = f"nvml:{dev.split(':')[1] if ':' in dev else '0'}" if on_gpu else (sorted(nvml)[0] if nvml else "")
        notes = []
        if not nvml:
            why = self._reason("nvml")
            if not on_gpu and info is not None:
                gpu_why = f"this run is on {dev or 'the CPU'}"
                notes.append(f"GPU series: {gpu_why}" + (f" ({why})." if why else "."))
            else:
                gpu_why = "NVML was not readable"
                notes.append(f"GPU series: {why or 'NVML series were not recorded'}.")
        else:
            gpu_why = ""
        rapl_why = self._reason("rapl")
        if rapl_why and not any(src.startswith("rapl") for (src, _m) in tel):
            notes.append(f"CPU package power: {rapl_why}.")
        gpu_energy_why = self._metric_reason("nvml", "energy_j") if nvml else ""
        if gpu_energy_why and (gpu_src, "energy_j") not in tel:
            notes.append(f"{gpu_energy_why}.")

        def gpu_metric(metric):
            arr = tel.get((gpu_src, metric))
            return {gpu_src.replace("nvml:", "GPU "): arr} if arr is not None else {}

        power = gpu_metric("power_w")
        for (src, m), arr in tel.items():
            if src.startswith("rapl") and m == "power_w":
                power[f"CPU {src.split(':', 1)[-1]} (RAPL)"] = arr
        self._show("power", power)
        if power:
            self._note("power", "")
        else:
            self._note("power", "not available<br>" + (gpu_why + (", no RAPL" if rapl_why else "")
                                                        if gpu_why else self._metric_reason("nvml", "power_w")
                                                        or "no power source was readable"))

        energy_series = {}
        self.energy_figures = {}
        counters = [(gpu_src, "GPU")] if gpu_src else []
        counters += [(src, f"CPU {src.split(':', 1)[-1]}") for (src, m) in tel if src.startswith("rapl") and m == "energy_j"]
        for src, label in counters:
            windows, total = engine.snapshot_energy(snap, src)
            if windows:
                energy_series[label] = np.array([(w["end"], w["j_per_sample"]) for w in windows], dtype=float)
            if total is not None:
                self.energy_figures[label] = total
        title = "Energy per sample (J)"
        if self.energy_figures:
            title += " · " + ", ".join(f"{label} {fmt.fmt_num(e['j_per_sample'])} J"
                                       for label, e in sorted(self.energy_figures.items()))
        self.plots["energy"].setTitle(f"<span style='font-size:9pt'>{title}</span>", color=style.MUTED)
        self._show("energy", energy_series)
        if energy_series:
            self._note("energy", "")
        elif any(tel.get((s, "energy_j")) is not None for s, _ in counters):
            self._note("energy", "waiting for a window of at least 1 s")
        else:
            self._note("energy", "not available<br>" + ((self._metric_reason("nvml", "energy_j") if on_gpu else rapl_why)
                                                         or "no energy counter was recorded"))

        for key, metric in (("util", "gpu_util_pct"), ("temp", "temp_c"), ("clock", "sm_clock_mhz")):
            series = gpu_metric(metric) if gpu_src else {}
            self._show(key, series)
            if series:
                self._note(key, "")
            elif gpu_src:
                self._note(key, "not available<br>" + (self._metric_reason("nvml", metric)
                                                       or "this GPU does not report it through NVML"))
            else:
                self._note(key, "not available<br>" + (gpu_why or "no GPU telemetry"))

        cores = {}
        for (src, m), arr in tel.items():
            if src == "psutil" and m.startswith("cpu_pct:"):
                cores[f"core {int(m.split(':')[1]):02d}"] = arr
        if len(cores) > 16:  # many-core machines: the overall load reads better than a tangle
            cores = {"all cores": tel[("psutil", "cpu_pct")]} if ("psutil", "cpu_pct") in tel else {}
        self._show("cpu", cores)
        if cores and self.cpu_legend is None:
            self.cpu_legend = self.plots["cpu"].addLegend(offset=(-4, 4), labelTextColor=style.TEXT,
                                                          brush="#15171ACC", colCount=4)
            for name, c in sorted(self.curves["cpu"].items()):
                self.cpu_legend.addItem(c, name)
        if not cores:
            notes.append(f"CPU load: {self._reason('psutil') or 'not recorded yet (sampled once a second)'}.")
        self._note("cpu", "" if cores else "not available")
        self.notice.setText(" ".join(notes))
        self.notice.setVisible(bool(notes))


def main(argv=None) -> int:
    from app.views.sample import preview

    return preview(PowerView, argv, size=(1000, 560))


if __name__ == "__main__":
    sys.exit(main())
