"""Per-layer time: forward and backward stacked as horizontal bars (mean over the recent window),
next to a heat strip of node x step, on one shared row axis so each bar lines up with its row.
The figures (means, share, GFLOP/s) are ``engine.snapshot_layer_rows``: those of the exports."""
from __future__ import annotations

import sys

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QToolTip, QVBoxLayout

import engine
from app import style
from app.views.base import ElidedLabel, MonitorView, notice_label
from engine import fmt

SORTS = ("Net order", "Total time", "Forward", "Backward")


class LayerTimeView(MonitorView):
    title = "Layer time"
    max_hz = 5.0

    def __init__(self, parent=None):
        super().__init__(parent)
        self._order = np.zeros(0, dtype=int)
        self._rows: list[dict] = []
        self._heat = np.zeros((0, 0))
        self._heat_steps = np.zeros(0)
        self._ids: tuple = ()

        top = QHBoxLayout()
        top.setContentsMargins(6, 4, 6, 0)
        top.addWidget(QLabel("Sort"))
        self.sort_combo = QComboBox()
        self.sort_combo.addItems(SORTS)
        self.sort_combo.setToolTip("Order of the rows (the heat strip follows)")
        self.sort_combo.currentIndexChanged.connect(lambda _: self.refresh_now())
        top.addWidget(self.sort_combo)
        self.summary = ElidedLabel("")
        self.summary.setObjectName("summary")
        top.addStretch(1)
        legend = QLabel(f"<span style='color:{style.FWD}'>&#9632;</span> forward &nbsp; "
                        f"<span style='color:{style.BWD}'>&#9632;</span> backward")
        top.addWidget(legend)

        self.notice = notice_label("No layer times yet: start a run or open a session.")
        self.glw = pg.GraphicsLayoutWidget()
        self.glw.ci.setContentsMargins(2, 2, 6, 2)
        self.bars_plot = self.glw.addPlot(row=0, col=0, enableMenu=False)
        self.heat_plot = self.glw.addPlot(row=0, col=1, enableMenu=False)
        self.glw.ci.layout.setColumnStretchFactor(0, 3)
        self.glw.ci.layout.setColumnStretchFactor(1, 2)
        style.style_plot(self.bars_plot, bottom="mean time per step (ms)")
        style.style_plot(self.heat_plot, bottom="step", grid=False)
        self.heat_plot.setToolTip("")
        for p in (self.bars_plot, self.heat_plot):
            p.invertY(True)
            p.setMouseEnabled(x=False, y=True)
            p.vb.setMouseMode(p.vb.PanMode)
        self.heat_plot.setYLink(self.bars_plot)
        self.heat_plot.getAxis("left").setStyle(showValues=False)
        self.heat_plot.getAxis("left").setWidth(4)
        self.bars_plot.getAxis("left").setWidth(70)
        self.fwd_bars = pg.BarGraphItem(x0=[0], y=[0], height=0.72, width=[0], brush=style.FWD, pen=None)
        self.bwd_bars = pg.BarGraphItem(x0=[0], y=[0], height=0.72, width=[0], brush=style.BWD, pen=None)
        self.bars_plot.addItem(self.fwd_bars)
        self.bars_plot.addItem(self.bwd_bars)
        self.heat_img = pg.ImageItem()
        self.heat_img.setColorMap(pg.colormap.get("inferno"))
        self.heat_plot.addItem(self.heat_img)
        self.bars_plot.scene().sigMouseMoved.connect(self._on_mouse_moved)

        self.glw.setMinimumSize(260, 160)  # the bars with their names and a strip of the heat map
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(top)
        self.summary.setContentsMargins(6, 0, 6, 0)
        lay.addWidget(self.summary)
        lay.addWidget(self.notice)
        lay.addWidget(self.glw, 1)
        self.clear()

    # -- data ------------------------------------------------------------------------------------
    def clear(self) -> None:
        self._rows = []
        self._ids = ()
        self._order = np.zeros(0, dtype=int)
        self.fwd_bars.setVisible(False)
        self.bwd_bars.setVisible(False)
        self.heat_img.clear()
        self.bars_plot.getAxis("left").setTicks([[]])
        self.summary.setText("")
        self.notice.setVisible(True)

    def refresh_now(self) -> None:
        if self._drawn is not None:
            self.update_snapshot(self._drawn)

    def rows(self) -> list[dict]:
        """The rows as drawn (display order): id, kind, fwd_ms, bwd_ms (means, NaN where not
        measured), total_ms, share and gflops (forward, at the median time), fwd_p5_ms/fwd_p95_ms
        (the spread across steps) and alloc_bound, each taken as is from ``engine.snapshot_layer_rows``."""
        nan = float("nan")
        out = []
        for i in self._order:
            r = self._rows[i]
            f, b = r["fwd_mean_ms"], r["bwd_mean_ms"]
            out.append({"id": r["id"], "kind": r["kind"] or "", "fwd_ms": nan if f is None else f,
                        "bwd_ms": nan if b is None else b, "total_ms": (f or 0.0) + (b or 0.0),
                        "share": r["share"], "gflops": r["fwd_gflops"],
                        "fwd_p5_ms": r["fwd_p5_ms"], "fwd_p95_ms": r["fwd_p95_ms"],
                        "alloc_bound": r.get("alloc_bound")})
        return out

    def update_snapshot(self, snap) -> None:
        index = {nid: i for i, nid in enumerate(snap.node_ids)}
        rows = [r for r in engine.snapshot_layer_rows(snap) if r["id"] in index]
        n = len(rows)
        if n == 0 or snap.profiled_steps == 0 or all(r["fwd_mean_ms"] is None for r in rows):
            self.clear()
            if snap.info is not None:
                cfg = snap.info.config or {}
                if cfg.get("profile_every") == 0:
                    self.notice.setText("Per-layer profiling is off for this run (profile every 0 steps).")
                else:
                    self.notice.setText("Waiting for the first profiled step after warm-up…")
            return
        self.notice.setVisible(False)
        ids = tuple(r["id"] for r in rows)
        f0 = np.array([r["fwd_mean_ms"] or 0.0 for r in rows])
        b0 = np.array([r["bwd_mean_ms"] or 0.0 for r in rows])
        has_bwd = any(r["bwd_mean_ms"] is not None for r in rows)
        total = f0 + b0
        self._rows = rows
        key = self.sort_combo.currentIndex()
        if key == 1:
            order = np.argsort(-total, kind="stable")
        elif key == 2:
            order = np.argsort(-f0, kind="stable")
        elif key == 3:
            order = np.argsort(-b0, kind="stable")
        else:
            order = np.arange(n)
        self._order = order
        y = np.arange(n, dtype=float)
        self.fwd_bars.setOpts(x0=np.zeros(n), y=y, width=f0[order], height=0.72)
        self.bwd_bars.setOpts(x0=f0[order], y=y, width=b0[order], height=0.72)
        self.fwd_bars.setVisible(True)
        self.bwd_bars.setVisible(has_bwd)
        if ids != self._ids or key != getattr(self, "_last_key", None):
            axis = self.bars_plot.getAxis("left")
            axis.setTicks([[(float(k), ids[i]) for k, i in enumerate(order)]])
            # pyqtgraph drops tick labels that do not fit: make room for the longest id
            axis.setWidth(min(170, 16 + 7 * max(len(i) for i in ids)))
            self._ids = ids
            self._last_key = key
            # a big net shows as many rows as can be read (about 16 px each); drag to scroll
            fit = max(6, int(self.bars_plot.vb.height() / 16)) if self.bars_plot.vb.height() > 0 else n
            self.bars_plot.setYRange(-0.6, min(n, fit) - 0.4, padding=0)
            self.bars_plot.setLimits(yMin=-0.6, yMax=n - 0.4)
        self.bars_plot.setXRange(0, max(float(total.max()), 1e-6) * 1.05, padding=0)

        heat = np.nan_to_num(np.asarray(snap.heat_fwd, float)) + np.nan_to_num(np.asarray(snap.heat_bwd, float))
        steps = np.asarray(snap.heat_steps, float)
        if heat.size and steps.size:
            heat = heat[[index[ids[i]] for i in order]]
            self._heat, self._heat_steps = heat, steps
            hi = float(np.percentile(heat, 99)) if heat.size else 1.0
            self.heat_img.setImage(heat, levels=(0.0, max(hi, 1e-6)), autoLevels=False)
            gap = float(np.median(np.diff(steps))) if steps.size > 1 else 1.0
            x0 = steps[0] - gap / 2
            width = (steps[-1] - steps[0]) + gap
            self.heat_img.setRect(QRectF(x0, -0.5, width, n))
            self.heat_plot.setXRange(x0, x0 + width, padding=0)
        tot_f, tot_b = engine.layer_totals(rows)
        step_ms = engine.layer_step_ms(snap.steps)
        text = f"layers: fwd {fmt.fmt_ms(tot_f)} ms"
        if tot_b is not None:
            text += f" + bwd {fmt.fmt_ms(tot_b)} ms"
        if step_ms:
            text += f" of a {fmt.fmt_ms(step_ms)} ms step"
        text += f" · mean of {max(r['samples'] for r in rows)} profiled steps"
        alloc = [r["id"] for r in rows if r.get("alloc_bound")]
        if alloc:
            text += f" · {len(alloc)} mostly allocator cost ({', '.join(alloc[:3])}{'…' if len(alloc) > 3 else ''})"
        self.summary.setText(text)

    # -- hover -----------------------------------------------------------------------------------
    def tooltip_for_row(self, k: int) -> str:
        r = self._rows[self._order[k]]
        lines = [f"<b>{r['id']}</b> <span style='color:{style.MUTED}'>{r['kind'] or ''}</span>",
                 f"forward: {fmt.fmt_ms(r['fwd_mean_ms'])} ms"]
        if r["fwd_p5_ms"] is not None:
            lines.append(f"forward across steps: median {fmt.fmt_ms(r['fwd_median_ms'])} ms, "
                         f"p5–p95 {fmt.fmt_ms(r['fwd_p5_ms'])}–{fmt.fmt_ms(r['fwd_p95_ms'])} ms")
        if r.get("minor_faults") is not None:
            line = f"page faults: {fmt.fmt_count(r['minor_faults'])}"
            if r.get("alloc_share") is not None:
                line += f" (≈ {fmt.fmt_pct(r['alloc_share'])} of the median time)"
            if r.get("alloc_bound"):
                line += " · <b>mostly allocator cost</b>: this time lands on whichever layer allocates next"
            lines.append(line)
        if r["bwd_mean_ms"] is not None:
            lines.append(f"backward: {fmt.fmt_ms(r['bwd_mean_ms'])} ms")
        if r["share"] is not None:
            lines.append(f"share of step: {fmt.fmt_pct(r['share'])}")
        if r["fwd_gflops"] is not None:
            lines.append(f"forward: {fmt.fmt_rate(r['fwd_gflops'], 'GFLOP/s')} (at the median time)")
        return "<br>".join(lines)

    def _on_mouse_moved(self, pos: QPointF) -> None:
        if not self._rows:
            return
        for plot in (self.bars_plot, self.heat_plot):
            if plot.sceneBoundingRect().contains(pos):
                p = plot.vb.mapSceneToView(pos)
                k = int(round(p.y()))
                if 0 <= k < len(self._order):
                    text = self.tooltip_for_row(k)
                    if plot is self.heat_plot and self._heat_steps.size:
                        j = int(np.argmin(np.abs(self._heat_steps - p.x())))
                        text += f"<br>step {int(self._heat_steps[j])}: {fmt.fmt_ms(float(self._heat[k, j]))} ms"
                    QToolTip.showText(self.glw.mapToGlobal(self.glw.mapFromScene(pos)), text, self.glw)
                    return
        QToolTip.hideText()


def main(argv=None) -> int:
    from app.views.sample import preview

    return preview(LayerTimeView, argv)


if __name__ == "__main__":
    sys.exit(main())
