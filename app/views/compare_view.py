"""The comparison view: two or more runs (sessions, or a study's configurations) side by side,
layer by layer and per sample.

It draws the dict of ``engine.compare_runs`` and computes nothing itself: per-layer speed-up
bars against the baseline on a log2 axis (1x in the middle, faster to the right), a heat map of
layers x configurations (the same speed-ups, green faster, red slower), a totals table (step
time, throughput, energy per sample, peak memory and, when the run spent a large share of its
time in page faults, the advice) and "where the time went": one stacked bar per configuration,
milliseconds per sample by layer family plus data loading and the optimizer. Hovering any of
them gives the exact numbers (``engine.fmt``); a click on a layer emits ``layer_clicked(id)``
(the window selects it on the canvas and in the layer table); choosing a configuration in
"Canvas" emits ``config_chosen(label)`` (the window colours the canvas by its speed-ups).

Run alone on sessions: ``python -m app.views.compare_view A.lsession B.lsession [--screenshot PNG]``.
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QSizePolicy, QSplitter,
                               QTableWidget, QTableWidgetItem, QToolTip, QVBoxLayout, QWidget)

from app import style
from app.editor.theme import FAMILY_COLORS, FAMILY_TITLES, SPEEDUP_FASTER, SPEEDUP_NEUTRAL, SPEEDUP_SLOWER
from app.views.base import ElidedLabel, notice_label, show_or_shoot, standalone_app
from engine import fmt

BAR_SPAN = 0.8  # of a layer's row, shared by the bars of the configurations other than the baseline
DATA_COLOR = "#64748B"
OPTIMIZER_COLOR = "#E11D48"
OTHER_COLOR = "#A3A3A3"
ALLREDUCE_COLOR = "#22D3EE"  # a data-parallel rank's exposed gradient all-reduce
SLOWER, NEUTRAL, FASTER = SPEEDUP_SLOWER, SPEEDUP_NEUTRAL, SPEEDUP_FASTER  # the canvas uses the same
TOTAL_COLUMNS = (  # key in a compare_runs "runs" entry, title, formatter
    ("label", "Configuration", str),
    ("device", "Device", str),
    ("precision", "Precision", str),
    ("batch", "Batch", fmt.fmt_int),
    ("step_ms", "Step ms", fmt.fmt_ms),
    ("samples_per_s", "Samples/s", lambda v: fmt.fmt_rate(v, "")),
    ("j_per_sample", "J/sample", lambda v: fmt.fmt_num(v)),
    ("peak_mem_bytes", "Peak memory", fmt.fmt_bytes),
    ("rss_max_bytes", "Process RSS", fmt.fmt_bytes),
    ("fault_share", "Page faults", fmt.fmt_pct),
    ("advice", "Advice", lambda v: v or ""),
)


NO_COMMON_LAYERS = ("These runs have no layer in common (no two share a layer id): there are no per-layer "
                    "speed-ups to draw; the totals and the time by family compare them.")


def speedup_text(v) -> str:
    """A speed-up as "2.31×" ("–" when absent)."""
    return fmt.fmt_num(v, missing=fmt.DASH) + ("×" if v is not None else "")


def _log2(v) -> float | None:
    return math.log2(v) if v is not None and v > 0 else None


class CompareView(QWidget):
    """Draws one ``engine.compare_runs`` dict (``set_comparison``); ``clear()`` empties it."""

    title = "Comparison"
    layer_clicked = Signal(str)       # a layer's node id: select it everywhere
    config_chosen = Signal(str)       # a configuration's label: colour the canvas by its speed-ups
    baseline_requested = Signal(str)  # a configuration's label: compare again against it

    EMPTY_NOTICE = ("No comparison yet: select two or more runs in the session browser, "
                    "File ▸ Compare…, or drop session files on the window.")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.data: dict | None = None
        self.labels: list[str] = []       # every configuration, in the dict's order
        self.others: list[str] = []       # those with speed-up bars (all but the baseline)
        self.layer_ids: list[str] = []    # the rows, top to bottom (net order)
        self.selected = ""
        self.speed_bars: dict[str, pg.BarGraphItem] = {}
        self.family_bars: dict[str, pg.BarGraphItem] = {}
        self._setting = False

        top = QHBoxLayout()
        top.setContentsMargins(6, 4, 6, 0)
        top.addWidget(QLabel("Baseline"))
        self.baseline_combo = QComboBox()
        self.baseline_combo.setToolTip("The configuration every speed-up is measured against (1×)")
        self.baseline_combo.currentIndexChanged.connect(self._on_baseline)
        top.addWidget(self.baseline_combo)
        top.addWidget(QLabel("Canvas"))
        self.canvas_combo = QComboBox()
        self.canvas_combo.setToolTip("Colour the canvas by this configuration's per-layer speed-up")
        self.canvas_combo.currentIndexChanged.connect(self._on_canvas_config)
        top.addWidget(self.canvas_combo)
        self.summary = ElidedLabel("")
        self.summary.setObjectName("summary")
        top.addWidget(self.summary, 1)

        self.notice = notice_label(self.EMPTY_NOTICE)
        self.totals = QTableWidget(0, len(TOTAL_COLUMNS))
        self.totals.setHorizontalHeaderLabels([t for _k, t, _f in TOTAL_COLUMNS])
        self.totals.verticalHeader().setVisible(False)
        self.totals.verticalHeader().setDefaultSectionSize(21)
        self.totals.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.totals.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.totals.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.totals.horizontalHeader().setStretchLastSection(True)
        self.totals.setMinimumHeight(60)

        self.glw = pg.GraphicsLayoutWidget()
        self.glw.ci.setContentsMargins(2, 2, 6, 2)
        self.bars_plot = self.glw.addPlot(row=0, col=0, enableMenu=False)
        self.heat_plot = self.glw.addPlot(row=0, col=1, enableMenu=False)
        self.family_plot = self.glw.addPlot(row=0, col=2, enableMenu=False)
        lay = self.glw.ci.layout
        for col, stretch in enumerate((5, 2, 3)):
            lay.setColumnStretchFactor(col, stretch)
        style.style_plot(self.bars_plot, bottom="speed-up, log scale (baseline 1×)")
        style.style_plot(self.heat_plot, bottom="config #", grid=False)
        style.style_plot(self.family_plot, left="ms per sample", bottom="config #")
        for p in (self.bars_plot, self.heat_plot):
            p.invertY(True)
            p.setMouseEnabled(x=False, y=True)
            p.vb.setMouseMode(p.vb.PanMode)
        self.family_plot.setMouseEnabled(x=False, y=False)
        self.heat_plot.setYLink(self.bars_plot)
        self.heat_plot.getAxis("left").setStyle(showValues=False)
        self.heat_plot.getAxis("left").setWidth(4)
        self.bars_plot.getAxis("left").setWidth(80)
        self.one_line = pg.InfiniteLine(pos=0, angle=90, pen=pg.mkPen(style.TEXT, width=1, style=Qt.DashLine))
        self.bars_plot.addItem(self.one_line)
        self.select_band = pg.LinearRegionItem(orientation="horizontal", movable=False,
                                               brush=pg.mkBrush(76, 141, 255, 50), pen=pg.mkPen(None))
        self.select_band.setZValue(-10)
        self.select_band.setVisible(False)
        self.bars_plot.addItem(self.select_band)
        self.heat_img = pg.ImageItem()
        self.heat_plot.addItem(self.heat_img)
        self.glw.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.glw.scene().sigMouseClicked.connect(self._on_mouse_clicked)
        self.glw.setMinimumSize(300, 160)
        self.family_legend = QLabel("")
        self.family_legend.setWordWrap(True)
        self.family_legend.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.family_legend.setContentsMargins(6, 0, 6, 2)
        plots = QWidget()
        pl = QVBoxLayout(plots)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.setSpacing(0)
        pl.addWidget(self.glw, 1)
        pl.addWidget(self.family_legend)

        split = QSplitter(Qt.Vertical)
        split.addWidget(self.totals)
        split.addWidget(plots)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 4)
        split.setChildrenCollapsible(False)
        self.split = split
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(self.notice)
        layout.addWidget(split, 1)
        self.clear()

    # -- public ------------------------------------------------------------------------------------
    def clear(self) -> None:
        self.data = None
        self.labels, self.others, self.layer_ids = [], [], []
        self._fill_combos()
        self.totals.setRowCount(0)
        for item in self.speed_bars.values():
            self.bars_plot.removeItem(item)
        for item in self.family_bars.values():
            self.family_plot.removeItem(item)
        self.speed_bars, self.family_bars = {}, {}
        self.heat_img.clear()
        self.summary.setText("")
        self.family_legend.setText("")
        self.notice.setVisible(True)
        self.notice.setText(self.EMPTY_NOTICE)
        self.select_band.setVisible(False)
        for plot in (self.bars_plot, self.heat_plot):
            plot.setVisible(True)

    def set_comparison(self, data: dict) -> None:
        """Draw an ``engine.compare_runs`` dict (see that function for the fields)."""
        self.clear()
        self.data = data
        runs = data.get("runs") or []
        self.labels = [r["label"] for r in runs]
        base = data.get("baseline")
        self.others = [lb for lb in self.labels if lb != base]
        self.layer_ids = [ly["id"] for ly in data.get("layers") or []]
        self.notice.setVisible(not self.layer_ids)
        if not self.layer_ids:  # nothing per layer to draw: say so instead of two empty plots
            self.notice.setText(NO_COMMON_LAYERS)
        for plot in (self.bars_plot, self.heat_plot):
            plot.setVisible(bool(self.layer_ids))
        self._fill_combos()
        self._fill_totals(runs)
        if self.layer_ids:
            self._draw_speedups()
            self._draw_heat()
        self._draw_families()
        only = {k: v for k, v in (data.get("only_in") or {}).items() if v}
        text = f"{len(runs)} configurations, {len(self.layer_ids)} common layers; per sample, against {base}"
        if only:
            text += "; only in " + "; ".join(f"{k}: {', '.join(v)}" for k, v in only.items())
        self.summary.setText(text)
        if self.selected in self.layer_ids:
            self.select_layer(self.selected, emit=False)

    def speedups(self, label: str) -> dict[str, float | None]:
        """{layer id: speed-up of configuration ``label`` against the baseline}, from the dict."""
        if self.data is None or label not in self.labels:
            return {}
        k = self.labels.index(label)
        return {ly["id"]: ly["per_run"][k].get("speedup") for ly in self.data.get("layers") or []}

    def canvas_config(self) -> str:
        return self.canvas_combo.currentData() or ""

    def select_layer(self, node_id: str, emit: bool = True) -> None:
        """Highlight ``node_id``'s row (bars and heat map); ``layer_clicked`` when ``emit``."""
        self.selected = node_id or ""
        if self.selected in self.layer_ids:
            r = self.layer_ids.index(self.selected)
            self.select_band.setRegion((r - 0.5, r + 0.5))
            self.select_band.setVisible(True)
        else:
            self.select_band.setVisible(False)
        if emit and self.selected:
            self.layer_clicked.emit(self.selected)

    # -- drawing -----------------------------------------------------------------------------------
    def _color(self, label: str) -> str:
        k = self.others.index(label) if label in self.others else 0
        return style.SERIES[k % len(style.SERIES)]

    def _fill_combos(self) -> None:
        self._setting = True
        try:
            self.baseline_combo.clear()
            self.canvas_combo.clear()
            for lb in self.labels:
                self.baseline_combo.addItem(lb, lb)
            for lb in self.others:
                self.canvas_combo.addItem(lb, lb)
            base = (self.data or {}).get("baseline")
            if base in self.labels:
                self.baseline_combo.setCurrentIndex(self.labels.index(base))
            self.baseline_combo.setEnabled(len(self.labels) > 1)
            self.canvas_combo.setEnabled(bool(self.others))
        finally:
            self._setting = False

    def _fill_totals(self, runs: list[dict]) -> None:
        self.totals.setRowCount(len(runs))
        for r, run in enumerate(runs):
            for c, (key, _title, f) in enumerate(TOTAL_COLUMNS):
                v = run.get(key)
                text = f(v) if v is not None else ("" if key == "advice" else fmt.DASH)
                item = QTableWidgetItem(f"#{r + 1} {text}" if key == "label" else text)
                item.setTextAlignment((Qt.AlignLeft if key in ("label", "device", "precision", "advice")
                                       else Qt.AlignRight) | Qt.AlignVCenter)
                if key == "label" and run.get("session"):
                    item.setToolTip(str(run["session"]))
                if key == "label" and run["label"] in self.others:  # the colour of its speed-up bars
                    item.setForeground(pg.mkColor(self._color(run["label"])))
                if key == "advice" and v:
                    item.setToolTip(str(v))
                    item.setForeground(pg.mkColor(style.WARN))
                self.totals.setItem(r, c, item)
        self.totals.resizeColumnsToContents()
        # every configuration's row in view (up to 8; more scroll)
        rows_h = self.totals.horizontalHeader().height() + 21 * min(len(runs), 8) + 4
        self.totals.setMinimumHeight(min(rows_h, 21 * 3 + 30))
        self.split.setSizes([rows_h, max(200, self.split.height() - rows_h)])

    def _draw_speedups(self) -> None:
        n = len(self.layer_ids)
        k = max(1, len(self.others))
        h = BAR_SPAN / k
        widest = 1.0
        for j, label in enumerate(self.others):
            sp = self.speedups(label)
            ys, ws = [], []
            for r, lid in enumerate(self.layer_ids):
                x = _log2(sp.get(lid))
                if x is None:
                    continue
                ys.append(r - BAR_SPAN / 2 + h * (j + 0.5))
                ws.append(x)
                widest = max(widest, abs(x))
            bars = pg.BarGraphItem(x0=np.zeros(len(ys)), y=np.array(ys, float), height=h * 0.9,
                                   width=np.array(ws, float), brush=self._color(label), pen=None)
            self.bars_plot.addItem(bars)
            self.speed_bars[label] = bars
        span = math.ceil(widest)
        self.bars_plot.getAxis("bottom").setTicks([[(e, f"{2.0 ** e:g}×") for e in range(-span, span + 1)]])
        self.bars_plot.getAxis("left").setTicks([list(enumerate(self.layer_ids))])
        self.bars_plot.setXRange(-span - 0.1, span + 0.1, padding=0)
        self.bars_plot.setYRange(-0.5, max(n, 1) - 0.5, padding=0.02)

    def _draw_heat(self) -> None:
        n, m = len(self.layer_ids), len(self.labels)
        if not n or not m:
            return
        grid = np.full((n, m), np.nan)
        for c, label in enumerate(self.labels):
            sp = self.speedups(label)
            for r, lid in enumerate(self.layer_ids):
                x = _log2(sp.get(lid))
                if x is not None:
                    grid[r, c] = x
        finite = grid[np.isfinite(grid)]
        lim = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
        cmap = pg.ColorMap([0.0, 0.5, 1.0], [SLOWER, NEUTRAL, FASTER])
        lut = cmap.getLookupTable(0.0, 1.0, 256, alpha=True)
        scaled = np.where(np.isfinite(grid), (grid + lim) / (2 * lim) * 255.0, np.nan)
        rgba = np.zeros((n, m, 4), dtype=np.ubyte)
        ok = np.isfinite(scaled)
        rgba[ok] = lut[np.clip(scaled[ok], 0, 255).astype(int)]
        self.heat_img.setImage(rgba, levels=None)
        self.heat_img.setRect(-0.5, -0.5, m, n)
        self.heat_plot.getAxis("bottom").setTicks([[(c, f"#{c + 1}") for c in range(m)]])
        self.heat_plot.setXRange(-0.5, m - 0.5, padding=0)
        self.heat_grid = grid

    def _family_segments(self) -> list[tuple[str, str, str]]:
        """(key, title, colour) of each stacked segment, bottom to top: the families present, then
        data loading and the optimizer."""
        fams: list[str] = []
        for f in (self.data or {}).get("families") or []:
            for name in f.get("by_family") or {}:
                if name not in fams:
                    fams.append(name)
        order = list(FAMILY_COLORS)
        fams.sort(key=lambda x: order.index(x) if x in order else len(order))
        segs = [(f, FAMILY_TITLES.get(f, f), FAMILY_COLORS.get(f, "#94A3B8")) for f in fams]
        segs += [("data", "Data loading", DATA_COLOR)]
        if any(f.get("allreduce_ms_per_sample") for f in (self.data or {}).get("families") or []):
            segs.append(("allreduce", "All-reduce (exposed)", ALLREDUCE_COLOR))
        segs.append(("optimizer", "Optimizer", OPTIMIZER_COLOR))
        if any(f.get("other_ms_per_sample") for f in (self.data or {}).get("families") or []):
            segs.append(("other", "Other (between layers)", OTHER_COLOR))
        return segs

    def family_values(self) -> dict[str, list[float | None]]:
        """{segment key: ms per sample of each configuration (dict order)}, as the dict gives them."""
        out: dict[str, list] = {}
        fam_rows = {f["label"]: f for f in (self.data or {}).get("families") or []}
        for key, _t, _c in self._family_segments():
            vals = []
            for lb in self.labels:
                f = fam_rows.get(lb) or {}
                if key == "data":
                    vals.append(f.get("data_ms_per_sample"))
                elif key == "allreduce":
                    vals.append(f.get("allreduce_ms_per_sample"))
                elif key == "optimizer":
                    vals.append(f.get("optimizer_ms_per_sample"))
                elif key == "other":
                    vals.append(f.get("other_ms_per_sample"))
                else:
                    vals.append((f.get("by_family") or {}).get(key))
            out[key] = vals
        return out

    def _draw_families(self) -> None:
        m = len(self.labels)
        if not m:
            return
        bottom = np.zeros(m)
        values = self.family_values()
        for key, _title, color in self._family_segments():
            h = np.array([v if v is not None else 0.0 for v in values[key]], float)
            bars = pg.BarGraphItem(x=np.arange(m), y0=bottom.copy(), height=h, width=0.6, brush=color,
                                   pen=pg.mkPen(style.PLOT_BG, width=1))
            self.family_plot.addItem(bars)
            self.family_bars[key] = bars
            bottom += h
        self.family_plot.getAxis("bottom").setTicks([[(c, f"#{c + 1}") for c in range(m)]])
        self.family_legend.setText("where the time went: " + " &nbsp; ".join(
            f"<span style='color:{color}'>&#9632;</span> {title}" for _k, title, color in self._family_segments()))
        self.family_plot.setXRange(-0.6, m - 0.4, padding=0)
        self.family_plot.setYRange(0, float(bottom.max()) * 1.05 if bottom.max() > 0 else 1.0, padding=0)
        self._family_tops = bottom

    # -- hover and click ---------------------------------------------------------------------------
    def _row_at(self, plot, scene_pos) -> tuple[int, float] | None:
        if not plot.sceneBoundingRect().contains(scene_pos):
            return None
        p = plot.vb.mapSceneToView(scene_pos)
        r = int(round(p.y()))
        return (r, p.x()) if 0 <= r < len(self.layer_ids) else None

    def hover_text(self, scene_pos) -> str:
        """The tooltip for a point of the plots (scene coordinates); "" over nothing."""
        if self.data is None:
            return ""
        layers = self.data.get("layers") or []
        for plot in (self.bars_plot, self.heat_plot):
            hit = self._row_at(plot, scene_pos)
            if hit is None:
                continue
            r, x = hit
            ly = layers[r]
            if plot is self.heat_plot:
                c = int(round(x))
                cols = [c] if 0 <= c < len(self.labels) else []
            else:
                cols = list(range(len(self.labels)))
            lines = [f"<b>{ly['id']}</b> ({ly.get('kind', '')})"]
            for c in cols:
                pr = ly["per_run"][c]
                lines.append(f"{self.labels[c]}: {speedup_text(pr.get('speedup'))}, "
                             f"{fmt.fmt_ms(pr.get('ms_per_sample'))} ms/sample "
                             f"(fwd {fmt.fmt_ms(pr.get('fwd_ms_per_sample'))}, "
                             f"bwd {fmt.fmt_ms(pr.get('bwd_ms_per_sample'))}), "
                             f"share {fmt.fmt_pct(pr.get('share'))}"
                             + (f", {fmt.fmt_num(pr['j_per_sample'])} J/sample" if pr.get("j_per_sample") else ""))
            return "<br>".join(lines)
        if self.family_plot.sceneBoundingRect().contains(scene_pos):
            p = self.family_plot.vb.mapSceneToView(scene_pos)
            c = int(round(p.x()))
            if not 0 <= c < len(self.labels):
                return ""
            values = self.family_values()
            lines = [f"<b>{self.labels[c]}</b>: ms per sample"]
            total = 0.0
            for key, title, _color in reversed(self._family_segments()):
                v = values[key][c]
                if v is not None:
                    total += v
                lines.append(f"{title}: {fmt.fmt_ms(v)}")
            lines.append(f"total: {fmt.fmt_ms(total)}")
            return "<br>".join(lines)
        return ""

    def _on_mouse_moved(self, scene_pos) -> None:
        text = self.hover_text(scene_pos)
        if text:
            view_pos = self.glw.mapFromScene(scene_pos)
            QToolTip.showText(self.glw.mapToGlobal(view_pos + QPointF(12, 12).toPoint()), text, self.glw)
        else:
            QToolTip.hideText()

    def layer_at(self, scene_pos) -> str:
        """The layer under a point of the bars or heat map (scene coordinates); "" elsewhere."""
        for plot in (self.bars_plot, self.heat_plot):
            hit = self._row_at(plot, scene_pos)
            if hit is not None:
                return self.layer_ids[hit[0]]
        return ""

    def _on_mouse_clicked(self, event) -> None:
        lid = self.layer_at(event.scenePos())
        if lid:
            self.select_layer(lid)

    def _on_baseline(self, _=None) -> None:
        if self._setting or self.data is None:
            return
        label = self.baseline_combo.currentData()
        if label and label != self.data.get("baseline"):
            self.baseline_requested.emit(label)

    def _on_canvas_config(self, _=None) -> None:
        if not self._setting and self.canvas_config():
            self.config_chosen.emit(self.canvas_config())


def main(argv=None) -> int:
    import argparse


    import engine

    ap = argparse.ArgumentParser(prog="python -m app.views.compare_view", description="Compare recorded runs.")
    ap.add_argument("sessions", nargs="+", help="two or more .lsession files, or a study folder")
    ap.add_argument("--baseline", help="label of the baseline run")
    ap.add_argument("--screenshot", metavar="PNG")
    args = ap.parse_args(argv)
    sources, labels = args.sessions, None
    try:
        if len(sources) == 1 and os.path.isdir(sources[0]):
            sources, labels = engine.study_runs(sources[0])
        comparison = engine.compare_runs(sources, baseline=args.baseline, labels=labels)
    except engine.LayerScopeError as e:  # bad input: one line, exit 2, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    app = standalone_app()
    view = CompareView()
    view.set_comparison(comparison)
    return show_or_shoot(app, view, (1200, 560), args.screenshot)


if __name__ == "__main__":
    sys.exit(main())
