"""The per-layer roofline of one run: achieved FLOP/s against arithmetic intensity (FLOPs per byte
moved), log-log, under the run's measured ceilings: the memory slope (bandwidth x intensity) and
the flat compute roof (peak FLOP/s at the run's precision).

It draws the dict of ``engine.roofline`` and computes nothing: every layer with FLOPs is a point
coloured by its family, forward as a disc and backward as a triangle; hovering gives the exact
numbers (intensity, GFLOP/s, the bound class and % of roof); a click emits
``layer_clicked(id)`` so the window selects the layer everywhere.

Run alone on a session: ``python -m app.views.roofline_view RUN.lsession [--screenshot PNG]``.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QToolTip, QVBoxLayout, QWidget

from app import style
from app.editor.theme import FAMILY_COLORS, FAMILY_TITLES
from app.views.base import ElidedLabel, notice_label, show_or_shoot, standalone_app
from engine import fmt

SYMBOLS = {"fwd": "o", "bwd": "t1"}  # a disc, a triangle pointing up
PASS_TITLES = {"fwd": "forward", "bwd": "backward"}
GIGA = 1e9  # the plot's y axis is in GFLOP/s
PICK_PX = 10  # a hover or click within this many pixels of a point is on it


def roofline_points(data: dict) -> list[dict]:
    """One entry per measured (layer, pass) of an ``engine.roofline`` dict with an intensity and
    an achieved rate (layers without FLOPs or without a time have none): ``{"id", "kind",
    "family", "pass" ("fwd"|"bwd"), "intensity" (FLOP/byte), "flops_per_s" (the point's
    ``achieved_flop_s``), "bound", "pct_of_roof", "point" (the dict's own point)}``."""
    out = []
    for ly in data.get("layers") or []:
        for ps in ("fwd", "bwd"):
            p = ly.get(ps)
            if not isinstance(p, dict):
                continue
            x, y = p.get("intensity"), p.get("achieved_flop_s")
            if x is None or y is None or x <= 0 or y <= 0:
                continue
            out.append({"id": ly["id"], "kind": ly.get("kind", ""), "family": ly.get("family", ""), "pass": ps,
                        "intensity": x, "flops_per_s": y, "bound": p.get("bound"),
                        "pct_of_roof": p.get("pct_of_roof"), "point": p})
    return out


class RooflineView(QWidget):
    """Draws one ``engine.roofline`` dict (``set_roofline``); ``clear()`` empties it."""

    title = "Roofline"
    layer_clicked = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.data: dict | None = None
        self.points: list[dict] = []
        self.selected = ""
        self.head = ElidedLabel("")
        self.head.setObjectName("summary")
        self.notice = notice_label("No roofline yet: open a session or finish a run with per-layer times.")
        self.legend = QLabel("")
        self.legend.setTextFormat(Qt.RichText)  # "&nbsp;" and the colour spans, even with no family entry first
        self.legend.setWordWrap(True)
        self.legend.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.legend.setContentsMargins(6, 0, 6, 2)
        self.plot_widget = pg.PlotWidget(enableMenu=False)
        self.plot = self.plot_widget.getPlotItem()
        style.style_plot(self.plot, left="achieved GFLOP/s", bottom="arithmetic intensity (FLOP per byte moved)")
        self.plot.setLogMode(x=True, y=True)
        for name in ("left", "bottom"):
            self.plot.getAxis(name).enableAutoSIPrefix(False)
        self.plot.setMouseEnabled(x=True, y=True)
        self.memory_line = pg.PlotDataItem(pen=pg.mkPen(style.MUTED, width=2))
        self.compute_line = pg.PlotDataItem(pen=pg.mkPen(style.MUTED, width=2))
        self.plot.addItem(self.memory_line)
        self.plot.addItem(self.compute_line)
        self.roof_labels = [pg.TextItem(color=style.MUTED, anchor=(0, 1)), pg.TextItem(color=style.MUTED, anchor=(1, 1))]
        for t in self.roof_labels:
            self.plot.addItem(t)
        self.scatter = pg.ScatterPlotItem(size=10, pxMode=True)
        self.plot.addItem(self.scatter)
        self.ring = pg.ScatterPlotItem(size=18, pxMode=True, brush=None, pen=pg.mkPen(style.TEXT, width=2))
        self.plot.addItem(self.ring)
        self.plot_widget.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.plot_widget.scene().sigMouseClicked.connect(self._on_mouse_clicked)
        self.plot_widget.setMinimumSize(260, 160)
        top = QHBoxLayout()
        top.setContentsMargins(6, 4, 6, 0)
        top.addWidget(self.head, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(top)
        lay.addWidget(self.notice)
        lay.addWidget(self.plot_widget, 1)
        lay.addWidget(self.legend)
        self.clear()

    def clear(self) -> None:
        self.data, self.points = None, []
        self.scatter.setData([])
        self.ring.setData([])
        self.memory_line.setData([], [])
        self.compute_line.setData([], [])
        for t in self.roof_labels:
            t.setText("")
        self.head.setText("")
        self.legend.setText("")
        self.notice.setVisible(True)

    def set_roofline(self, data: dict, title: str = "") -> None:
        """Draw an ``engine.roofline`` dict; ``title`` names the run in the header."""
        self.clear()
        self.data = data
        self.points = roofline_points(data)
        note = data.get("above_roof_note")
        self.notice.setVisible(not self.points or bool(note))
        if not self.points:
            self.notice.setText("No layer of this run has FLOPs and a measured time: nothing to place on the roofline.")
        elif note:
            self.notice.setText(note[0].upper() + note[1:])  # the engine's sentence on layers over the roof
        spots = []
        for i, p in enumerate(self.points):
            color = FAMILY_COLORS.get(p["family"], "#94A3B8")
            spots.append({"pos": (math.log10(p["intensity"]), math.log10(p["flops_per_s"] / GIGA)), "data": i,
                          "symbol": SYMBOLS[p["pass"]], "brush": pg.mkBrush(color),
                          "pen": pg.mkPen(style.TEXT if p["pass"] == "fwd" else color, width=1)})
        self.scatter.setData(spots)
        self._draw_ceilings()
        peak, bw = data.get("peak_flop_s"), data.get("bandwidth_bytes_s")
        what = " ".join(str(data[k]) for k in ("device", "precision") if data.get(k))
        self.head.setText((title + ": " if title else "") + (f"{what}, " if what else "")
                          + f"{len(self.points)} points; compute roof {fmt.fmt_rate(peak / 1e9 if peak else None, 'GFLOP/s')}, "
                          + f"memory {fmt.fmt_bandwidth(bw)}"
                          + (f" ({data['ceilings_source']})" if data.get("ceilings_source") else ""))
        fams = [f for f in FAMILY_COLORS if any(p["family"] == f for p in self.points)]
        entries = [f"<span style='color:{FAMILY_COLORS[f]}'>&#9632;</span> {FAMILY_TITLES.get(f, f)}" for f in fams]
        if self.points:
            entries += ["● forward", "▲ backward"]
        self.legend.setText(" &nbsp; ".join(entries))
        if self.selected:
            self.select_layer(self.selected, emit=False)

    def _draw_ceilings(self) -> None:
        peak, bw = (self.data or {}).get("peak_flop_s"), (self.data or {}).get("bandwidth_bytes_s")
        xs = [p["intensity"] for p in self.points]
        lo, hi = (min(xs) / 4, max(xs) * 4) if xs else (0.01, 1000.0)
        if peak and bw:
            ridge = peak / bw
            lo, hi = min(lo, ridge / 8), max(hi, ridge * 8)
            self.memory_line.setData([lo, ridge], [bw * lo / GIGA, peak / GIGA])
            self.compute_line.setData([ridge, hi], [peak / GIGA, peak / GIGA])
            self.roof_labels[0].setText(f"memory {fmt.fmt_bandwidth(bw)}")
            self.roof_labels[0].setPos(math.log10(lo), math.log10(bw * lo / GIGA))
            self.roof_labels[1].setText(f"compute {fmt.fmt_rate(peak / 1e9, 'GFLOP/s')}")
            self.roof_labels[1].setPos(math.log10(hi), math.log10(peak / GIGA))
        ys = [p["flops_per_s"] for p in self.points] + ([peak] if peak else [])
        if ys:
            self.plot.setXRange(math.log10(lo), math.log10(hi), padding=0.02)
            self.plot.setYRange(math.log10(min(ys) / 3 / GIGA), math.log10(max(ys) * 2 / GIGA), padding=0.02)

    def point_index_at(self, scene_pos) -> int | None:
        """Index into ``points`` of the point within PICK_PX pixels of ``scene_pos``; None when none."""
        if not self.points or not self.plot.sceneBoundingRect().contains(scene_pos):
            return None
        best, best_d = None, PICK_PX
        for spot in self.scatter.points():
            sp = self.plot.vb.mapViewToScene(spot.pos())
            d = math.hypot(sp.x() - scene_pos.x(), sp.y() - scene_pos.y())
            if d <= best_d:
                best, best_d = spot.data(), d
        return best

    def hover_text(self, i: int) -> str:
        p = self.points[i]
        pt = p["point"]
        roof = pt.get("roof_flop_s")
        return (f"<b>{p['id']}</b> ({p['kind']}), {PASS_TITLES[p['pass']]}<br>"
                f"{fmt.fmt_flops(pt.get('flops'))}FLOP over {fmt.fmt_bytes(pt.get('bytes'))} moved in "
                f"{fmt.fmt_ms(pt.get('ms'))} ms per step<br>"
                f"intensity {fmt.fmt_num(p['intensity'])} FLOP/byte<br>"
                f"achieved {fmt.fmt_rate(p['flops_per_s'] / 1e9, 'GFLOP/s')} of a roof of "
                f"{fmt.fmt_rate(roof / 1e9 if roof else None, 'GFLOP/s')} ({fmt.fmt_pct(p['pct_of_roof'])})<br>"
                f"{p['bound'] or 'not classed'}")

    def _on_mouse_moved(self, scene_pos) -> None:
        i = self.point_index_at(scene_pos)
        if i is None:
            QToolTip.hideText()
            return
        view_pos = self.plot_widget.mapFromScene(scene_pos)
        QToolTip.showText(self.plot_widget.mapToGlobal(view_pos + QPointF(12, 12).toPoint()), self.hover_text(i),
                          self.plot_widget)

    def _on_mouse_clicked(self, event) -> None:
        i = self.point_index_at(event.scenePos())
        if i is not None:
            self.select_layer(self.points[i]["id"])

    def select_layer(self, node_id: str, emit: bool = True) -> None:
        """Ring the layer's points; ``layer_clicked`` when ``emit``."""
        self.selected = node_id or ""
        pos = [(math.log10(p["intensity"]), math.log10(p["flops_per_s"] / GIGA)) for p in self.points
               if p["id"] == self.selected]
        self.ring.setData(pos=np.array(pos, float).reshape(-1, 2))
        if emit and self.selected:
            self.layer_clicked.emit(self.selected)


def main(argv=None) -> int:
    import argparse


    import engine

    ap = argparse.ArgumentParser(prog="python -m app.views.roofline_view", description="A run's per-layer roofline.")
    ap.add_argument("session")
    ap.add_argument("--screenshot", metavar="PNG")
    args = ap.parse_args(argv)
    try:
        data = engine.roofline(args.session)
    except engine.LayerScopeError as e:  # bad input: one line, exit 2, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    app = standalone_app()
    view = RooflineView()
    view.set_roofline(data, title=args.session)
    return show_or_shoot(app, view, (900, 560), args.screenshot)


if __name__ == "__main__":
    sys.exit(main())
