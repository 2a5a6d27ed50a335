"""Memory timeline: allocated bytes across one profiled step, with a band for each layer's forward
and backward under it, and the peak marked with the layers whose tensors are alive then.

The figure is ``engine.memory_timeline`` (CUDA: the allocator's own history of that step; CPU:
the saved-tensor accounting's model, see ``engine.analysis.memory``); this view only draws it.
"""
from __future__ import annotations

import sys

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QVBoxLayout

import engine
from app import style
from app.views.base import MonitorView, notice_label
from engine import fmt

FWD_COLOUR, BWD_COLOUR = style.SERIES[0], style.SERIES[1]


class MemoryTimelineView(MonitorView):
    title = "Memory timeline"
    max_hz = 1.0

    def __init__(self, parent=None):
        super().__init__(parent)
        self.notice = notice_label("")
        self.glw = pg.GraphicsLayoutWidget()
        self.plot = self.glw.addPlot(row=0, col=0, enableMenu=False)
        self.band_plot = self.glw.addPlot(row=1, col=0, enableMenu=False)
        self.glw.ci.layout.setRowStretchFactor(0, 4)
        self.glw.ci.layout.setRowStretchFactor(1, 1)
        style.style_plot(self.plot)
        self.plot.setLabel("left", "allocated", units="B", color=style.MUTED)
        style.style_plot(self.band_plot, bottom="time in the step (ms)")
        self.band_plot.setXLink(self.plot)
        self.band_plot.getAxis("left").setTicks([[(0.5, "fwd"), (-0.5, "bwd")]])
        self.band_plot.setYRange(-1.1, 1.1, padding=0)
        self.band_plot.setMouseEnabled(x=True, y=False)
        self.plot.getAxis("left").setWidth(60)
        self.band_plot.getAxis("left").setWidth(60)
        self.curve = self.plot.plot([], [], pen=pg.mkPen(style.SERIES[2], width=2), fillLevel=0,
                                    brush=pg.mkBrush(52, 211, 153, 50))
        self.peak_dot = pg.ScatterPlotItem(size=10, brush=pg.mkBrush(style.SERIES[4]), pen=None)
        self.plot.addItem(self.peak_dot)
        self.peak_label = pg.TextItem("", color=style.SERIES[4], anchor=(0, 1))
        self.plot.addItem(self.peak_label)
        self.fwd_bars = pg.BarGraphItem(x0=[], y=[], width=[], height=0.8, brush=FWD_COLOUR, pen=pg.mkPen("#1E2127"))
        self.bwd_bars = pg.BarGraphItem(x0=[], y=[], width=[], height=0.8, brush=BWD_COLOUR, pen=pg.mkPen("#1E2127"))
        self.band_plot.addItem(self.fwd_bars)
        self.band_plot.addItem(self.bwd_bars)
        self._labels: list = []
        self.glw.setMinimumSize(240, 220)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.notice)
        lay.addWidget(self.glw, 1)
        self.timeline = None
        self.clear()

    def clear(self) -> None:
        self.curve.setData([], [])
        self.peak_dot.setData([], [])
        self.peak_label.setText("")
        self.fwd_bars.setOpts(x0=[], y=[], width=[])
        self.bwd_bars.setOpts(x0=[], y=[], width=[])
        for item in self._labels:
            self.band_plot.removeItem(item)
        self._labels = []
        self.timeline = None
        self.plot.setTitle("")
        self.notice.setText("No memory timeline yet: a training run records one on its first profiled step "
                            "(then at most one a second).")
        self.notice.setVisible(True)

    def update_snapshot(self, snap) -> None:
        tl = engine.memory_timeline(snap) if snap is not None and snap.info is not None else None
        if tl is None:
            if self.timeline is None:
                self.clear()
            return
        if self.timeline is not None and tl["step"] == self.timeline["step"] and tl["source"] == self.timeline["source"]:
            return  # the same step: nothing new to draw
        self.clear()
        self.timeline = tl
        self.notice.setVisible(False)
        pts = np.array(tl["points"], dtype=float).reshape(-1, 2)
        self.curve.setData(pts[:, 0], pts[:, 1])
        peak = tl["peak"]
        self.peak_dot.setData([peak["t"]], [peak["bytes"]])
        alive = ", ".join(f"{n} {fmt.fmt_bytes(b)}" for n, b in
                          sorted(peak["alive_bytes"].items(), key=lambda x: -x[1])[:4])
        more = len(peak["alive"]) - 4
        self.peak_label.setText(f"peak {fmt.fmt_bytes(peak['bytes'])}" + (f": {alive}" if alive else "")
                                + (f" +{more} more" if more > 0 else ""))
        self.peak_label.setPos(peak["t"], peak["bytes"])
        for phase, bars, y in (("forward", self.fwd_bars, 0.5), ("backward", self.bwd_bars, -0.5)):
            b = [x for x in tl["bands"] if x[1] == phase]
            bars.setOpts(x0=[x[2] for x in b], width=[max(x[3] - x[2], 1e-6) for x in b], y=[y] * len(b), height=0.8)
        # names on the widest bands only, so they stay readable
        span = max((x[3] for x in tl["bands"]), default=1.0) or 1.0
        for nid, phase, t0, t1 in tl["bands"]:
            if (t1 - t0) / span >= 0.06:
                label = pg.TextItem(nid, color="#E6E8EB", anchor=(0.5, 0.5))
                label.setPos((t0 + t1) / 2, 0.5 if phase == "forward" else -0.5)
                self.band_plot.addItem(label)
                self._labels.append(label)
        what = ("allocator history (CUDA)" if tl["source"] == "cuda allocator history"
                else "saved-tensor model: activations only")
        self.plot.setTitle(f"<span style='font-size:9pt'>step {tl['step']} · {what} · peak "
                           f"{fmt.fmt_bytes(peak['bytes'])} at {fmt.fmt_ms(peak['t'])} ms</span>", color=style.MUTED)
        self.plot.setYRange(0, max(float(pts[:, 1].max()) * 1.25, 1.0))


def main(argv=None) -> int:
    from app.views.sample import preview

    return preview(MemoryTimelineView, argv)


if __name__ == "__main__":
    sys.exit(main())
