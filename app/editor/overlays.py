"""What the canvas draws over or under the graph, outside the scene: the metric colour
legend, the minimap, the empty-net drop hint and the dot grid, where they are placed (``OverlayStrip``),
plus how a node metric is written."""
from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRect, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QLinearGradient, QPainter, QPen
from PySide6.QtWidgets import QLabel, QWidget

from engine import INPUT_ID, fmt

from . import theme

METRIC_KEYS = {"time": "time_ms", "memory": "mem_bytes", "flops": "gflops", "speedup": "speedup"}
METRIC_TITLES = {"time": "time per step", "memory": "memory", "flops": "GFLOP/s",
                 "speedup": "speed-up against the baseline"}


def metric_text(key: str, value) -> str:
    if value is None:
        return ""
    if key == "time_ms":
        return f"{fmt.fmt_ms(value)} ms"
    if key == "mem_bytes":
        return fmt.fmt_bytes(value)
    if key == "speedup":  # a comparison's per-layer speed-up (app.views.compare_view)
        return f"{fmt.fmt_num(value)}×"
    return fmt.fmt_rate(value, "GFLOP/s")


class MetricLegend(QWidget):
    """Colour scale for node metrics, pinned to the view's bottom-left corner: the title (wrapped
    onto as many lines as it needs), the gradient, its end values; a diverging scale (a speed-up)
    also has 1x in the middle and a "slower <- 1x -> faster" line."""

    PAD = 10

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setAttribute(Qt.WA_TransparentForMouseEvents)
        self.title = ""
        self.lo = self.hi = ""
        self.diverging = False
        self.resize(230, 46)
        self.hide()

    def _font(self, size: float) -> QFont:
        f = QFont(self.font())
        f.setPointSizeF(size)
        return f

    def title_height(self) -> int:
        """Pixels the title needs, wrapped to the legend's width."""
        fm = QFontMetrics(self._font(8))
        r = fm.boundingRect(QRect(0, 0, max(20, self.width() - 2 * self.PAD), 1000),
                            int(Qt.AlignLeft | Qt.TextWordWrap), self.title)
        return max(16, r.height())

    def set_scale(self, title: str, lo: str, hi: str, diverging: bool = False) -> None:
        self.title, self.lo, self.hi, self.diverging = title, lo, hi, diverging
        rows = 14 * (2 if diverging else 1)
        self.resize(self.width(), 3 + self.title_height() + 2 + 8 + rows + 4)
        self.update()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        pal = self.palette()
        bg = QColor(pal.color(pal.ColorRole.Base))
        bg.setAlpha(230)
        p.setPen(QPen(pal.color(pal.ColorRole.Mid), 1))
        p.setBrush(bg)
        p.drawRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), 6, 6)
        p.setPen(pal.color(pal.ColorRole.Text))
        p.setFont(self._font(8))
        w = self.width() - 2 * self.PAD
        th = self.title_height()
        p.drawText(QRectF(self.PAD, 3, w, th), Qt.AlignLeft | Qt.AlignVCenter | Qt.TextWordWrap, self.title)
        bar = QRectF(self.PAD, 3 + th + 2, w, 8)
        grad = QLinearGradient(bar.topLeft(), bar.topRight())
        for t in (0.0, 0.25, 0.5, 0.75, 1.0):
            grad.setColorAt(t, theme.speedup_color(2.0 ** (2 * t - 1)) if self.diverging else theme.cost_color(t))
        p.setPen(Qt.NoPen)
        p.setBrush(grad)
        p.drawRoundedRect(bar, 3, 3)
        p.setPen(pal.color(pal.ColorRole.Text))
        p.setFont(self._font(7.5))
        y = bar.bottom() + 1
        p.drawText(QRectF(self.PAD, y, w / 2, 14), Qt.AlignLeft | Qt.AlignVCenter, self.lo)
        p.drawText(QRectF(self.PAD + w / 2, y, w / 2, 14), Qt.AlignRight | Qt.AlignVCenter, self.hi)
        if self.diverging:
            p.drawText(QRectF(self.PAD, y, w, 14), Qt.AlignHCenter | Qt.AlignVCenter, "1×")
            p.drawText(QRectF(self.PAD, y + 14, w, 14), Qt.AlignHCenter | Qt.AlignVCenter, SPEEDUP_LEGEND)


SPEEDUP_LEGEND = "slower ← 1× → faster"


class DropHint(QLabel):
    """The empty-net hint across the view ("drag layers here"); clicks and drops pass through it."""

    def __init__(self, parent: QWidget, color: QColor):
        super().__init__("Drag layers here from the palette\n(or double-click one)", parent)
        self.setAlignment(Qt.AlignCenter)
        self.setAttribute(Qt.WA_TransparentForMouseEvents)
        self.setStyleSheet(f"color: {color.name()}; font-size: 13pt;")
        self.hide()


def draw_dot_grid(painter: QPainter, rect: QRectF, color: QColor, step: int = 24) -> None:
    """Dots every ``step`` scene units over ``rect``; skipped when that would be 20000 dots or more."""
    painter.setPen(QPen(color, 1.4))
    x0 = math.floor(rect.left() / step) * step
    y0 = math.floor(rect.top() / step) * step
    pts = []
    y = y0
    while y < rect.bottom():
        x = x0
        while x < rect.right():
            pts.append(QPointF(x, y))
            x += step
        y += step
    if len(pts) < 20000:
        painter.drawPoints(pts)


class Minimap(QWidget):
    """The whole net in miniature, beside the view (in the canvas's side strip, never over nodes):
    the part the view shows is outlined; a click or drag there moves the view, a double-click zooms
    to the nearest node at 100 % and selects it. Shown when the net does not fit the view."""

    def __init__(self, canvas):
        super().__init__(canvas)
        self.canvas = canvas
        self.setToolTip("Overview: click or drag to move the view, double-click a node to zoom to it")
        self.setCursor(Qt.PointingHandCursor)
        self.hide()

    def _net_rect(self) -> QRectF:
        return self.canvas.scene().itemsBoundingRect().adjusted(-12, -12, 12, 12)

    def _transform(self):
        """(scale, x offset, y offset) from scene to this widget, the net centred and aspect kept."""
        r = self._net_rect()
        if r.isEmpty():
            return None
        s = min((self.width() - 8) / r.width(), (self.height() - 8) / r.height())
        ox = (self.width() - r.width() * s) / 2 - r.left() * s
        oy = (self.height() - r.height() * s) / 2 - r.top() * s
        return s, ox, oy

    def to_scene(self, pos) -> QPointF | None:
        t = self._transform()
        if t is None:
            return None
        s, ox, oy = t
        return QPointF((pos.x() - ox) / s, (pos.y() - oy) / s)

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        pal = self.palette()
        bg = QColor(pal.color(pal.ColorRole.Base))
        p.setPen(QPen(pal.color(pal.ColorRole.Mid), 1))
        p.setBrush(bg)
        p.drawRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), 6, 6)
        t = self._transform()
        if t is None:
            return
        s, ox, oy = t
        p.setPen(Qt.NoPen)
        for item in self.canvas.node_items():
            r = item.sceneBoundingRect()
            colour = item.fill if item.fill is not None else QColor(self.canvas.colors.muted)
            p.setBrush(colour)
            p.drawRect(QRectF(r.left() * s + ox, r.top() * s + oy, max(2.0, r.width() * s), max(2.0, r.height() * s)))
        seen = self.canvas.mapToScene(self.canvas.viewport().rect()).boundingRect()
        p.setPen(QPen(pal.color(pal.ColorRole.Highlight), 1.5))
        p.setBrush(Qt.NoBrush)
        p.drawRect(QRectF(seen.left() * s + ox, seen.top() * s + oy, seen.width() * s, seen.height() * s))

    def mousePressEvent(self, event) -> None:
        self._move_to(event.position())

    def mouseMoveEvent(self, event) -> None:
        if event.buttons() & Qt.LeftButton:
            self._move_to(event.position())

    def mouseDoubleClickEvent(self, event) -> None:
        at = self.to_scene(event.position())
        if at is None:
            return
        nearest = min(self.canvas.node_items(), default=None,
                      key=lambda i: (i.sceneBoundingRect().center() - at).manhattanLength())
        if nearest is not None:
            self.canvas.zoom_to_node(nearest.node_id)

    def _move_to(self, pos) -> None:
        at = self.to_scene(pos)
        if at is not None:
            self.canvas.centerOn(at)
            self.update()


SIDE_W = 160  # px: the strip beside the viewport holding the metric legend and the minimap
SIDE_GAP = 8


class OverlayStrip:
    """The view's overlays and where they go: the metric legend and the minimap in a strip beside
    the viewport (a right viewport margin, opened only while either is shown, so they never cover
    a node), the empty-net drop hint below the Input node. They are children of the view, not of
    the viewport, so scrolling does not move them. ``view`` is the ``CanvasView``."""

    def __init__(self, view):
        self.view = view
        self.legend = MetricLegend(view)
        self.legend.resize(SIDE_W, 46)
        self.minimap = Minimap(view)
        self.hint = DropHint(view, view.colors.muted)
        self._placing = False

    def place(self, fits: bool | None = None) -> None:
        """Open or close the strip and place the legend at its bottom, the minimap above it.
        ``fits``: whether the net fits the view (measured now when None)."""
        if self._placing:  # setViewportMargins resizes the viewport, which asks to place again
            return
        self._placing = True
        view = self.view
        try:
            spec_nodes = len(view.node_items()) > 1
            if fits is None:
                fits = not spec_nodes or view.net_fits()
            show_map = spec_nodes and not fits
            strip = SIDE_W + 2 * SIDE_GAP if (show_map or self.legend.isVisibleTo(view)) else 0
            if view.viewportMargins().right() != strip:
                view.setViewportMargins(0, 0, strip, 0)
            g = view.viewport().geometry()
            x = g.right() + 1 + SIDE_GAP
            self.legend.move(x, g.bottom() - self.legend.height() - SIDE_GAP)
            map_bottom = (self.legend.y() - SIDE_GAP) if self.legend.isVisibleTo(view) else g.bottom() - SIDE_GAP
            self.minimap.setGeometry(x, g.top() + SIDE_GAP, SIDE_W, max(40, map_bottom - g.top() - SIDE_GAP))
            self.minimap.setVisible(show_map)
            if show_map:
                self.minimap.update()
            self._place_hint(g)
        finally:
            self._placing = False

    def _place_hint(self, g) -> None:
        """The empty-net hint goes below the Input node, never over it."""
        item = self.view.node_item(INPUT_ID)
        top = g.top()
        if item is not None:
            top = max(top, self.view.mapFromScene(item.sceneBoundingRect().bottomLeft()).y() + g.top() + 16)
        self.hint.setGeometry(g.left(), top, g.width(), max(60, g.bottom() - top))
        self.hint.setAlignment(Qt.AlignHCenter | Qt.AlignTop)
