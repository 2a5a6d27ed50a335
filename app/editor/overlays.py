"""What the canvas draws over or under the graph, outside the scene: the metric colour
legend, the empty-net drop hint and the dot grid, plus how a node metric is written."""
from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QLinearGradient, QPainter, QPen
from PySide6.QtWidgets import QLabel, QWidget

from engine import fmt

from . import theme

METRIC_KEYS = {"time": "time_ms", "memory": "mem_bytes", "flops": "gflops"}
METRIC_TITLES = {"time": "time per step", "memory": "memory", "flops": "GFLOP/s"}


def metric_text(key: str, value) -> str:
    if value is None:
        return ""
    if key == "time_ms":
        return f"{fmt.fmt_ms(value)} ms"
    if key == "mem_bytes":
        return fmt.fmt_bytes(value)
    return fmt.fmt_rate(value, "GFLOP/s")


class MetricLegend(QWidget):
    """Colour scale for node metrics, pinned to the view's bottom-left corner."""

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setAttribute(Qt.WA_TransparentForMouseEvents)
        self.title = ""
        self.lo = self.hi = ""
        self.resize(230, 46)
        self.hide()

    def set_scale(self, title: str, lo: str, hi: str) -> None:
        self.title, self.lo, self.hi = title, lo, hi
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
        f = QFont(self.font())
        f.setPointSizeF(8)
        p.setFont(f)
        p.drawText(QRectF(10, 3, self.width() - 20, 16), Qt.AlignLeft | Qt.AlignVCenter, self.title)
        bar = QRectF(10, 21, self.width() - 20, 8)
        grad = QLinearGradient(bar.topLeft(), bar.topRight())
        for t in (0.0, 0.25, 0.5, 0.75, 1.0):
            grad.setColorAt(t, theme.cost_color(t))
        p.setPen(Qt.NoPen)
        p.setBrush(grad)
        p.drawRoundedRect(bar, 3, 3)
        p.setPen(pal.color(pal.ColorRole.Text))
        f.setPointSizeF(7.5)
        p.setFont(f)
        p.drawText(QRectF(10, 30, 100, 14), Qt.AlignLeft | Qt.AlignVCenter, self.lo)
        p.drawText(QRectF(self.width() - 110, 30, 100, 14), Qt.AlignRight | Qt.AlignVCenter, self.hi)


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
