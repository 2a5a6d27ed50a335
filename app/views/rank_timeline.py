"""A data-parallel run, rank by rank: one step of every rank on a shared time axis, forward and
backward per layer above, each gradient bucket's all-reduce below, and the ranks' figures
(step time, all-reduce, exposed communication, overlap, straggler steps) in a table.

Everything drawn comes from ``engine.rank_timeline`` and ``engine.ddp_summary``; this widget only
lays it out. Hover a slice for its layer (or bucket and the layers it carries) and exact times.
"""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QTableWidget, QTableWidgetItem, QToolTip,
                               QVBoxLayout, QWidget)

from app import style
from engine import fmt

COLORS = {"forward": style.FWD, "backward": style.BWD, "all-reduce": style.TEST}
LANE = {"forward": 0.0, "backward": 0.0, "all-reduce": 0.42}  # compute lane, then the all-reduce lane
HEIGHT = 0.36


class RankTimelineView(QWidget):
    """``set_study(summary, timeline)``: the dicts of ``engine.ddp_summary`` / ``engine.rank_timeline``.
    ``step_requested(int)`` asks the owner for another step's timeline."""

    step_requested = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Data-parallel run: ranks")
        self._slices: list[tuple[int, dict]] = []  # (row, slice) as drawn, for hover
        top = QHBoxLayout()
        top.addWidget(QLabel("Step"))
        self.step_combo = QComboBox()
        self.step_combo.setToolTip("Which step to draw (every rank's profiled steps)")
        self.step_combo.activated.connect(lambda i: self.step_requested.emit(int(self.step_combo.itemData(i))))
        top.addWidget(self.step_combo)
        top.addStretch(1)
        top.addWidget(QLabel(" ".join(f"<span style='color:{c}'>&#9632;</span> {k}" for k, c in COLORS.items())))
        self.plot = pg.PlotWidget(enableMenu=False)
        style.style_plot(self.plot.getPlotItem(), bottom="ms from the step's compute start")
        self.plot.getPlotItem().invertY(True)
        self.plot.setMouseEnabled(x=True, y=False)
        self.plot.scene().sigMouseMoved.connect(self._hover)
        self.table = QTableWidget(0, 9)
        self.table.setHorizontalHeaderLabels(["rank", "device", "step ms", "samples/s", "all-reduce ms", "exposed ms",
                                              "overlap", "comm/compute", "slowest in (steps)"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setMaximumHeight(150)
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.table)
        lay.addWidget(self.caption)

    def set_study(self, summary: dict, timeline: dict) -> None:
        steps = [s["step"] for s in summary.get("steps", [])]
        self.step_combo.blockSignals(True)
        self.step_combo.clear()
        for s in steps:
            self.step_combo.addItem(str(s), s)
        if timeline.get("step") in steps:
            self.step_combo.setCurrentIndex(steps.index(timeline["step"]))
        self.step_combo.blockSignals(False)
        self._fill_table(summary)
        self.set_timeline(timeline)
        buckets = summary.get("buckets") or []
        self.caption.setText(f"{summary.get('world_size')} ranks; "
                             + (f"{len(buckets)} gradient buckets (rank 0): " + "; ".join(
                                 f"#{b['bucket']} {fmt.fmt_bytes(b['bytes'])} [{', '.join(b['nodes'])}]"
                                 for b in buckets) if buckets else "no all-reduce recorded"))

    def _fill_table(self, summary: dict) -> None:
        ranks = summary.get("ranks", [])
        self.table.setRowCount(len(ranks))
        counts = summary.get("straggler_steps", {})
        for i, r in enumerate(ranks):
            ov = r.get("overlap")
            cells = [str(r.get("rank")), r.get("device") or "", fmt.fmt_num(r.get("step_ms")),
                     fmt.fmt_num(r.get("samples_per_s")), fmt.fmt_num(r.get("allreduce_ms")),
                     fmt.fmt_num(r.get("exposed_ms")), "–" if ov is None else f"{ov:.0%}",
                     fmt.fmt_num(r.get("comm_compute_ratio")), str(counts.get(r.get("rank"), 0))]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j >= 2:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()

    def set_timeline(self, timeline: dict) -> None:
        plot = self.plot.getPlotItem()
        plot.clear()
        self._slices = []
        ranks = timeline.get("ranks", [])
        for row, r in enumerate(ranks):
            for kind in COLORS:
                sl = [s for s in r["slices"] if s["kind"] == kind]
                if not sl:
                    continue
                x0 = [s["start_ms"] for s in sl]
                w = [max(1e-3, s["end_ms"] - s["start_ms"]) for s in sl]
                y = [row + LANE[kind] - 0.2 + HEIGHT / 2 for _ in sl]
                color = QColor(COLORS[kind])
                color.setAlpha(200)
                bars = pg.BarGraphItem(x0=x0, width=w, y=y, height=HEIGHT, brush=color, pen=pg.mkPen(style.BASE))
                plot.addItem(bars)
                self._slices.extend((row, s) for s in sl)
        ax = plot.getAxis("left")
        ax.setTicks([[(i + 0.2, f"rank {r['rank']}") for i, r in enumerate(ranks)]])
        plot.setYRange(-0.3, max(1, len(ranks)) - 0.1, padding=0)
        plot.setTitle(f"step {timeline.get('step')}", color=style.MUTED)

    def slice_at(self, x: float, y: float) -> dict | None:
        """The drawn slice under data point (x ms, y row), or None."""
        for row, s in self._slices:
            top = row + LANE[s["kind"]] - 0.2
            if top <= y <= top + HEIGHT and s["start_ms"] <= x <= s["end_ms"]:
                return s
        return None

    def _hover(self, pos: QPointF) -> None:
        vb = self.plot.getPlotItem().vb
        if not vb.sceneBoundingRect().contains(pos):
            return
        p = vb.mapSceneToView(pos)
        s = self.slice_at(p.x(), p.y())
        if s is None:
            QToolTip.hideText()
            return
        text = (f"{s['kind']}: {s['label']}\n{fmt.fmt_num(s['start_ms'])} → {fmt.fmt_num(s['end_ms'])} ms "
                f"({fmt.fmt_num(s['end_ms'] - s['start_ms'])} ms)")
        QToolTip.showText(self.plot.mapToGlobal(self.plot.mapFromScene(pos).toPoint()), text, self.plot,
                          QRectF().toRect())
