"""Training: loss, accuracy (train steps and held-out test points) and throughput over steps.
The throughput figure above the plots is ``engine.snapshot_step_stats`` (the exports' samples/s
over the steady steps of the feed's window); the curves draw each step's own rate."""
from __future__ import annotations

import sys

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout

import engine
from app import style
from app.views.base import ElidedLabel, MonitorView, notice_label
from engine import fmt


class TrainingView(MonitorView):
    title = "Training"
    max_hz = 5.0

    def __init__(self, parent=None):
        super().__init__(parent)
        self.notice = notice_label("")
        self.stats = ElidedLabel("")  # elided, not widened: a long header must not push over Feature maps
        self.stats.setObjectName("summary")
        self.glw = pg.GraphicsLayoutWidget()
        self.loss_plot = self.glw.addPlot(row=0, col=0, enableMenu=False)
        self.acc_plot = self.glw.addPlot(row=0, col=1, enableMenu=False)
        self.tput_plot = self.glw.addPlot(row=0, col=2, enableMenu=False)
        for p, title in ((self.loss_plot, "loss"), (self.acc_plot, "accuracy (%)"),
                         (self.tput_plot, "throughput (samples/s)")):
            style.style_plot(p, bottom="step")
            p.setTitle(f"<span style='font-size:9pt'>{title}</span>", color=style.MUTED)
            p.setClipToView(True)
            p.setDownsampling(mode="peak")
        for p in (self.loss_plot, self.acc_plot, self.tput_plot):
            p.getAxis("left").enableAutoSIPrefix(False)
            p.getAxis("left").setWidth(52)
        self.acc_plot.setXLink(self.loss_plot)
        self.tput_plot.setXLink(self.loss_plot)
        self.acc_plot.setYRange(0, 100, padding=0.02)  # a share is read against 0-100, never auto-ranged
        self.acc_plot.enableAutoRange(axis="y", enable=False)
        self.acc_plot.setMouseEnabled(x=True, y=False)
        self.loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen(style.SERIES[0], width=1.6), name="train")
        self.loss_test = self.loss_plot.plot([], [], pen=None, symbol="o", symbolSize=7,
                                             symbolBrush=style.TEST, symbolPen=None, name="test")
        self.acc_curve = self.acc_plot.plot([], [], pen=pg.mkPen(style.SERIES[0], width=1.6))
        self.acc_test = self.acc_plot.plot([], [], pen=None, symbol="o", symbolSize=7,
                                           symbolBrush=style.TEST, symbolPen=None)
        self.tput_curve = self.tput_plot.plot([], [], pen=pg.mkPen(style.SERIES[2], width=1.6))
        self.warm_region = pg.LinearRegionItem(values=(0, 0), movable=False, brush=(255, 255, 255, 14),
                                               pen=pg.mkPen(None))
        self.tput_plot.addItem(self.warm_region)
        top = QHBoxLayout()
        top.setContentsMargins(6, 4, 6, 0)
        top.addWidget(self.stats, 1)
        top.addWidget(QLabel(f"<span style='color:{style.SERIES[0]}'>&#9473;</span> train &nbsp; "
                             f"<span style='color:{style.TEST}'>&#9679;</span> test"))
        self.glw.setMinimumSize(220, 240)  # three readable plots, stacked (see _arrange)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(top)
        lay.addWidget(self.notice)
        lay.addWidget(self.glw, 1)
        self._vertical = False
        self.clear()

    def _arrange(self, vertical: bool) -> None:
        """Three plots side by side in a wide dock, stacked in a narrow one."""
        self._vertical = vertical
        plots = (self.loss_plot, self.acc_plot, self.tput_plot)
        ci = self.glw.ci
        for p in plots:
            ci.removeItem(p)
        for i, p in enumerate(plots):
            if vertical:
                ci.addItem(p, row=i, col=0)
                p.showAxis("bottom", i == len(plots) - 1)
            else:
                ci.addItem(p, row=0, col=i)
                p.showAxis("bottom", True)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        vertical = self.width() < 1.5 * self.height()
        if vertical != self._vertical:
            self._arrange(vertical)

    def clear(self) -> None:
        for c in (self.loss_curve, self.loss_test, self.acc_curve, self.acc_test, self.tput_curve):
            c.setData([], [])
        self.warm_region.setVisible(False)
        self.stats.setText("")
        self.notice.setText("No steps yet: start a run or open a session.")
        self.notice.setVisible(True)

    def point_counts(self) -> dict[str, int]:
        """How many points each curve holds (for tests)."""
        def n(c):
            x = c.xData  # the full data; getData() is clipped to the view
            return 0 if x is None else len(x)
        return {"loss": n(self.loss_curve), "accuracy": n(self.acc_curve), "throughput": n(self.tput_curve),
                "test": n(self.acc_test)}

    def update_snapshot(self, snap) -> None:
        step = snap.column("step")
        if step.size == 0:
            self.clear()
            return
        loss = snap.column("loss")
        acc = snap.column("accuracy") * 100.0
        sps = snap.column("samples_per_s")
        warm = snap.column("warmup") > 0
        self.loss_curve.setData(step, loss, connect="finite")
        self.acc_curve.setData(step, acc, connect="finite")
        self.tput_curve.setData(step, sps)
        evals = [e for e in snap.evals if e.split == "test"]
        if evals:
            self.loss_test.setData([e.step for e in evals], [e.loss for e in evals])
            self.acc_test.setData([e.step for e in evals], [100.0 * e.accuracy for e in evals])
        else:
            self.loss_test.setData([], [])
            self.acc_test.setData([], [])
        if warm.any():
            last_warm = float(step[warm].max())
            self.warm_region.setRegion((float(step.min()) - 0.5, last_warm + 0.5))
            self.warm_region.setVisible(True)
        else:
            self.warm_region.setVisible(False)
        notes = []
        if not np.isfinite(loss).any():
            mode = (snap.info.config or {}).get("mode") if snap.info else None
            notes.append("No loss or accuracy: " + ("benchmark mode runs on random inputs without labels."
                                                   if mode == "benchmark" else "not recorded for these steps."))
        self.notice.setText(" ".join(notes))
        self.notice.setVisible(bool(notes))
        parts = [f"step {int(step[-1])}"]
        lf = loss[np.isfinite(loss)]
        if lf.size:
            parts.append(f"loss {fmt.fmt_num(float(lf[-1]), digits=4)}")
        af = acc[np.isfinite(acc)]
        if af.size:
            parts.append(f"accuracy {fmt.fmt_pct(float(af[-1]) / 100.0)}")
        if evals:
            parts.append(f"test accuracy {fmt.fmt_pct(evals[-1].accuracy)}")
        sps = engine.snapshot_step_stats(snap)["samples_per_s"]
        if sps is not None:
            parts.append(fmt.fmt_rate(sps))
        self.stats.setText(" · ".join(parts))


def main(argv=None) -> int:
    from app.views.sample import preview

    return preview(TrainingView, argv, size=(1100, 420))


if __name__ == "__main__":
    sys.exit(main())
