"""Memory: device and process memory over time, each layer's memory (the bytes it holds for
backward, measured, with their share of the step's peak, where the run counted them), and one
step's memory timeline in a second tab (``MemoryTimelineView``).

GPU runs show the memory the caching allocator has allocated and reserved (the engine's
``torch:<device>`` telemetry), the allocator peak of each step and the GPU memory in use (NVML);
CPU runs show the process RSS and the system memory in use (psutil). A series that was not recorded is not
drawn, and the note above the plots says which ones and why.
"""
from __future__ import annotations

import sys

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QTabWidget, QVBoxLayout, QWidget

import engine
from app import style
from app.views.base import MonitorView, notice_label
from app.views.memory_timeline_view import MemoryTimelineView
from engine import fmt


class MemoryView(MonitorView):
    title = "Memory"
    max_hz = 2.0

    SERIES = (  # key, label, colour
        ("gpu_used", "GPU memory used (NVML)", style.SERIES[0]),
        ("reserved", "allocator reserved", style.SERIES[4]),
        ("allocated", "allocator allocated", style.SERIES[6]),
        ("peak", "allocator peak per step", style.SERIES[1]),
        ("rss", "RSS", style.SERIES[2]),
        ("sys", "system used", style.SERIES[3]),
    )

    def __init__(self, parent=None):
        super().__init__(parent)
        self.notice = notice_label("")
        self.glw = pg.GraphicsLayoutWidget()
        self.time_plot = self.glw.addPlot(row=0, col=0, enableMenu=False)
        self.layer_plot = self.glw.addPlot(row=0, col=1, enableMenu=False)
        self.glw.ci.layout.setColumnStretchFactor(0, 1)
        self.glw.ci.layout.setColumnStretchFactor(1, 1)
        style.style_plot(self.time_plot, bottom="time since start (s)")
        self.time_plot.setLabel("left", "memory", units="B", color=style.MUTED)
        self.time_plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.time_plot.setClipToView(True)
        self.time_plot.setDownsampling(mode="peak")
        # the legend is a line above the plots, not a box inside one: inside, it covered the curves
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.RichText)
        self.legend.setContentsMargins(6, 0, 6, 0)
        self.curves = {}
        for key, label, colour in self.SERIES:
            c = self.time_plot.plot([], [], pen=pg.mkPen(colour, width=2), name=label)
            self.curves[key] = c
        style.style_plot(self.layer_plot)
        self.layer_plot.setLabel("bottom", "activation memory", units="B", color=style.MUTED)
        self.layer_plot.invertY(True)
        self.layer_plot.setMouseEnabled(x=False, y=True)
        self.layer_plot.getAxis("left").setWidth(64)
        self.bars = pg.BarGraphItem(x0=[0], y=[0], height=0.7, width=[0], brush=style.SERIES[5], pen=None)
        self.layer_plot.addItem(self.bars)
        # side by side needs about 2 x 240 px; a narrower dock stacks the two plots
        self.glw.setMinimumSize(240, 230)  # the tab bar above takes ~30 px of what the dock gives
        self._vertical = False
        # tab 1: memory over the run and per layer; tab 2: one step's timeline
        over = QWidget()
        over_lay = QVBoxLayout(over)
        over_lay.setContentsMargins(0, 0, 0, 0)
        over_lay.addWidget(self.legend)
        over_lay.addWidget(self.glw, 1)
        self.timeline_view = MemoryTimelineView()
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(over, "Run && layers")
        self.tabs.addTab(self.timeline_view, "Step timeline")
        # explicit, so the dock is sized for the tab bar too (its hint alone left it short)
        self.tabs.setMinimumHeight(self.tabs.minimumSizeHint().height())
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.notice)
        lay.addWidget(self.tabs, 1)
        self._ids = ()
        self._rows_shown = 0  # per-layer rows in view (a big net scrolls)
        self.clear()

    def _arrange(self, vertical: bool) -> None:
        self._vertical = vertical
        ci = self.glw.ci
        ci.removeItem(self.time_plot)
        ci.removeItem(self.layer_plot)
        ci.addItem(self.time_plot, row=0, col=0)
        ci.addItem(self.layer_plot, row=1 if vertical else 0, col=0 if vertical else 1)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        vertical = self.width() < 560
        if vertical != self._vertical:
            self._arrange(vertical)

    def _show_legend(self) -> None:
        self.legend.setText(" &nbsp; ".join(f"<span style='color:{colour}'>&#9473;</span> {label}"
                                            for key, label, colour in self.SERIES if key in self._legend_keys))
        self.legend.setVisible(bool(self._legend_keys))

    def clear(self) -> None:
        for c in self.curves.values():
            c.setData([], [])
            c.setVisible(False)
        self._legend_keys = set()
        self._show_legend()
        self.bars.setVisible(False)
        self.layer_plot.getAxis("left").setTicks([[]])
        self._ids = ()
        self.saved_shown = False
        self.timeline_view.clear()
        self.notice.setText("No memory data yet: start a run or open a session.")

    def _set(self, key: str, x, y) -> bool:
        c = self.curves[key]
        ok = bool(x is not None and len(x) > 0 and np.isfinite(y).any())
        if ok:
            c.setData(x, y, connect="finite")
            if key not in self._legend_keys:
                self._legend_keys.add(key)
                self._show_legend()
        elif key in self._legend_keys:
            self._legend_keys.discard(key)
            self._show_legend()
        c.setVisible(ok)
        return ok

    @staticmethod
    def _torch_source(snap, device_id: str) -> str | None:
        """The ``torch:<device>`` telemetry source of the run's device (any torch one if ids differ)."""
        sources = sorted({src for src, _m in snap.telemetry if src.startswith("torch:")})
        if f"torch:{device_id}" in sources:
            return f"torch:{device_id}"
        return sources[0] if sources else None

    def shown_series(self) -> set[str]:
        return set(self._legend_keys)

    def update_snapshot(self, snap) -> None:
        info = snap.info
        dev = (info.device or {}) if info else {}
        kind = dev.get("kind") or str(dev.get("id") or "").split(":")[0]
        notes = []
        gpu = [v for (src, m), v in snap.telemetry.items() if src.startswith("nvml") and m == "mem_used_bytes"]
        self._set("gpu_used", gpu[0][:, 0] if gpu else None, gpu[0][:, 1] if gpu else None)
        torch_src = self._torch_source(snap, str(dev.get("id") or ""))
        alloc = snap.series(torch_src, "allocated_bytes") if torch_src else None
        resv = snap.series(torch_src, "reserved_bytes") if torch_src else None
        has_alloc = self._set("allocated", alloc[:, 0] if alloc is not None else None,
                              alloc[:, 1] if alloc is not None else None)
        has_resv = self._set("reserved", resv[:, 0] if resv is not None else None,
                             resv[:, 1] if resv is not None else None)
        t = snap.column("t")
        peak = snap.column("peak_mem_bytes")
        has_peak = self._set("peak", t, peak)
        rss = snap.series("psutil", "rss_bytes")
        self._set("rss", rss[:, 0] if rss is not None else None, rss[:, 1] if rss is not None else None)
        sysm = snap.series("psutil", "sys_mem_used_bytes")
        self._set("sys", sysm[:, 0] if sysm is not None else None, sysm[:, 1] if sysm is not None else None)
        if kind == "cuda":
            if not gpu:
                notes.append("GPU memory in use: not recorded (NVML not readable for this run).")
            if not has_peak:
                notes.append("Allocator peak: not recorded yet.")
            if not (has_alloc or has_resv):
                notes.append("Allocated/reserved memory: not recorded for this run (no torch allocator "
                             "telemetry in it).")
        elif info is not None:
            notes.append(f"{dev.get('id') or 'cpu'} run: GPU allocator series do not apply; showing process RSS "
                         "and system memory.")
        if rss is None and info is not None:
            notes.append("Process memory: not recorded (psutil unavailable or telemetry off).")
        # per-layer memory: the bytes each layer holds for backward where the run counted them
        # (engine.layer_memory_table), else allocator growth on CUDA, activation bytes elsewhere
        ids = snap.node_ids
        table = engine.layer_memory_table(snap) if info is not None else None
        saved = {r["id"]: r["saved_bytes"] for r in table["layers"]} if table and table["steps"] else None
        self.saved_shown = saved is not None
        if saved is not None:
            mem_of, what_kind = saved, "saved"
        else:
            mem_of, what_kind = engine.layer_memory(snap) if info is not None else ({}, "measured")
        mem = np.array([mem_of.get(nid) for nid in ids], dtype=float)
        if len(ids) and np.isfinite(mem).any():
            n = len(ids)
            self.bars.setOpts(x0=np.zeros(n), y=np.arange(n, dtype=float), width=np.nan_to_num(mem), height=0.7)
            self.bars.setVisible(True)
            if ids != self._ids:
                self.layer_plot.getAxis("left").setTicks([[(float(i), nid) for i, nid in enumerate(ids)]])
                self.layer_plot.getAxis("left").setWidth(min(170, 16 + 7 * max(len(i) for i in ids)))
                self._ids = ids
                # as many rows as can be read; drag to scroll through a big net
                h = self.layer_plot.vb.height()
                fit = max(6, int(h / 16)) if h > 0 else n
                self.layer_plot.setYRange(-0.6, min(n, fit) - 0.4, padding=0)
                self.layer_plot.setLimits(yMin=-0.6, yMax=n - 0.4)
                self._rows_shown = min(n, fit)
            total = float(np.nansum(mem))
            what = ("allocator growth" if kind == "cuda" and what_kind == "measured" else "activation bytes")
            if what_kind == "saved":  # the peak's parts: engine.analysis.memory (the table's tooltip says)
                what = "saved for backward"
                if table["peak_bytes"]:
                    what += f" · {fmt.fmt_pct(total / table['peak_bytes'])} of peak {fmt.fmt_bytes(table['peak_bytes'])}"
            self.layer_plot.setLabel("bottom", "saved for backward" if what_kind == "saved" else "activation memory",
                                     units="B", color=style.MUTED)
            more = (f" · {self._rows_shown} of {n} layers, drag to scroll" if self._rows_shown < n else "")
            self.layer_plot.setTitle(f"<span style='font-size:9pt'>{what} · total {fmt.fmt_bytes(total)}{more}</span>",
                                     color=style.MUTED)
        self.notice.setText(" ".join(notes))
        self.notice.setVisible(bool(notes))
        if self.tabs.currentWidget() is self.timeline_view or self.timeline_view.timeline is None:
            self.timeline_view.update_snapshot(snap)


def main(argv=None) -> int:
    from app.views.sample import preview

    return preview(MemoryView, argv)


if __name__ == "__main__":
    sys.exit(main())
