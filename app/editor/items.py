"""The canvas's graphics items: ``NodeItem`` (a layer or the net input as a box with an input
port on top and an output port below) and ``EdgeItem`` (a connection routed orthogonally,
labelled with the per-sample shape it carries). Both read colours, fonts and the other items
from the ``CanvasView`` that owns them and report node moves back to it.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPainterPathStroker, QPen, QPolygonF
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem

import engine
from engine import INPUT_ID

from . import theme
from .layout import COL_GAP, NODE_H, NODE_W, ROW_GAP

if TYPE_CHECKING:
    from .canvas import CanvasView

PORT_R = 4.5

_svg_cache: dict[str, QSvgRenderer] = {}


def _svg(kind: str, family: str) -> QSvgRenderer | None:
    path = theme.icon_path(kind, family)
    if not path:
        return None
    if path not in _svg_cache:
        _svg_cache[path] = QSvgRenderer(path)
    return _svg_cache[path]



def rounded_polyline(points: list[tuple[float, float]], radius: float = 8.0) -> QPainterPath:
    """An orthogonal path through ``points`` with rounded corners."""
    path = QPainterPath(QPointF(*points[0]))
    for i in range(1, len(points) - 1):
        (x0, y0), (x1, y1), (x2, y2) = points[i - 1], points[i], points[i + 1]
        d1 = math.hypot(x1 - x0, y1 - y0)
        d2 = math.hypot(x2 - x1, y2 - y1)
        r = min(radius, d1 / 2, d2 / 2)
        if r < 0.5:
            path.lineTo(x1, y1)
            continue
        a = (x1 - (x1 - x0) / d1 * r, y1 - (y1 - y0) / d1 * r)
        b = (x1 + (x2 - x1) / d2 * r, y1 + (y2 - y1) / d2 * r)
        path.lineTo(*a)
        path.quadTo(x1, y1, *b)
    path.lineTo(*points[-1])
    return path


class NodeItem(QGraphicsItem):
    """One layer (or the net input) as a rounded box with an input port on top and an output port below."""

    def __init__(self, canvas: CanvasView, node_id: str):
        super().__init__()
        self.canvas = canvas
        self.node_id = node_id
        self.kind_name = ""
        self.family = "input"
        self.params_text = ""
        self.metric = ""
        self.fill: QColor | None = None
        self.problems: list[str] = []
        self.opaque_op: str | None = None  # an imported op with no layer kind: read-only, drawn dashed
        self.port_hot = ""  # "in" / "out" while the mouse is over a port or a link targets it
        self.setFlags(QGraphicsItem.ItemIsSelectable | QGraphicsItem.ItemSendsGeometryChanges
                      | (QGraphicsItem.ItemIsMovable if node_id != INPUT_ID else QGraphicsItem.GraphicsItemFlag(0)))
        self.setAcceptHoverEvents(True)
        self.setZValue(2)

    @property
    def is_input(self) -> bool:
        return self.node_id == INPUT_ID

    def boundingRect(self) -> QRectF:
        return QRectF(-3, -PORT_R - 3, NODE_W + 6, NODE_H + 2 * PORT_R + 6)

    def box(self) -> QRectF:
        return QRectF(0, 0, NODE_W, NODE_H)

    def out_port(self) -> QPointF:
        return QPointF(NODE_W / 2, NODE_H)

    def in_port(self) -> QPointF:
        return QPointF(NODE_W / 2, 0)

    def port_at(self, local: QPointF) -> str:
        for name, p in (("out", self.out_port()), ("in", self.in_port())):
            if name == "in" and self.is_input:
                continue
            if (local - p).manhattanLength() <= PORT_R * 2.6:
                return name
        return ""

    def set_content(self, kind_name: str, family: str, params_text: str) -> None:
        if (kind_name, family, params_text) != (self.kind_name, self.family, self.params_text):
            self.kind_name, self.family, self.params_text = kind_name, family, params_text
            self.update()

    def set_problems(self, problems: list[str]) -> None:
        if problems != self.problems:
            self.problems = problems
            self._update_tooltip()
            self.update()

    def set_metric(self, text: str, fill: QColor | None) -> None:
        if text != self.metric or fill != self.fill:
            self.metric, self.fill = text, fill
            self.update()

    def _update_tooltip(self) -> None:
        kind = engine.get_kind(self.kind_name)
        head = f"<b>{self.node_id}</b> &nbsp;{self.kind_name}"
        body = kind.help if kind else ("the net input" if self.is_input else "")
        if self.opaque_op is not None:
            head = f"<b>{self.node_id}</b> &nbsp;{self.opaque_op}"
            body = "imported op with no LayerScope layer kind: read-only (it runs from the model's file)"
        tip = f"{head}<br>{body}"
        if self.problems:
            tip += "".join(f"<br><span style='color:{theme.ERROR_COLOR}'>{p}</span>" for p in self.problems)
        self.setToolTip(tip)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        c = self.canvas.colors
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        accent = theme.family_color(self.family)
        box = self.box()
        fill = self.fill if self.fill is not None else theme.mix(c.node, accent, 0.10 if c.dark else 0.06)
        text = theme.readable_text(fill) if self.fill is not None else c.text
        muted = theme.mix(text, fill, 0.38)
        selected = self.isSelected()
        painter.setRenderHint(QPainter.Antialiasing)
        if self.problems:
            pen = QPen(c.error, 2.2)
        elif selected:
            pen = QPen(c.selected, 2.2)
        else:
            pen = QPen(c.node_border, 1.0)
        painter.setPen(pen)
        painter.setBrush(fill)
        painter.drawRoundedRect(box, 7, 7)
        # family accent: a stripe on the left edge, clipped to the rounded box
        clip = QPainterPath()
        clip.addRoundedRect(box.adjusted(1, 1, -1, -1), 6, 6)
        painter.save()
        painter.setClipPath(clip)
        painter.fillRect(QRectF(0, 0, 5, NODE_H), accent)
        painter.restore()
        if self.opaque_op is not None and not self.problems and not selected:
            # read-only imported op: a dashed outline says it cannot be edited here
            painter.setPen(QPen(theme.mix(c.node_border, c.text, 0.45), 1.3, Qt.DashLine))
            painter.setBrush(Qt.NoBrush)
            painter.drawRoundedRect(box.adjusted(2, 2, -2, -2), 6, 6)
        if selected and self.problems:
            painter.setPen(QPen(c.selected, 1.2, Qt.DashLine))
            painter.setBrush(Qt.NoBrush)
            painter.drawRoundedRect(box.adjusted(-4, -4, 4, 4), 9, 9)
        if lod >= 0.3:
            renderer = _svg(self.kind_name if not self.is_input else "input", self.family)
            if renderer is not None:
                renderer.render(painter, QRectF(12, 5, 16, 16))
            font = QFont(self.canvas.font())
            font.setPointSizeF(9.5)
            font.setBold(True)
            painter.setFont(font)
            painter.setPen(text)
            fm = QFontMetricsF(font)
            small = QFont(self.canvas.font())
            small.setPointSizeF(8.0)
            sfm = QFontMetricsF(small)
            painter.drawText(QRectF(34, 3, NODE_W - 40, 20), Qt.AlignLeft | Qt.AlignVCenter,
                             fm.elidedText(self.node_id, Qt.ElideMiddle, NODE_W - 42))
            metric_w = 0.0
            if self.metric:
                mfont = QFont(small)
                mfont.setBold(True)
                painter.setFont(mfont)
                painter.setPen(text)
                metric_w = QFontMetricsF(mfont).horizontalAdvance(self.metric) + 8
                painter.drawText(QRectF(12, 23, NODE_W - 20, 17), Qt.AlignRight | Qt.AlignVCenter, self.metric)
            avail = NODE_W - 20 - metric_w
            painter.setFont(small)
            painter.setPen(muted)
            kind_text = "" if self.is_input else sfm.elidedText(self.kind_name, Qt.ElideRight, avail)
            painter.drawText(QRectF(12, 23, avail, 17), Qt.AlignLeft | Qt.AlignVCenter, kind_text)
            rest = avail - (sfm.horizontalAdvance(kind_text) + 8 if kind_text else 0)
            if self.params_text and rest > 12:
                painter.setPen(text)
                painter.drawText(QRectF(NODE_W - 8 - metric_w - rest, 23, rest, 17), Qt.AlignLeft | Qt.AlignVCenter,
                                 sfm.elidedText(self.params_text, Qt.ElideRight, rest))
        else:
            font = QFont(self.canvas.font())
            font.setPointSizeF(15)
            font.setBold(True)
            painter.setFont(font)
            painter.setPen(text)
            painter.drawText(box.adjusted(10, 0, -4, 0), Qt.AlignLeft | Qt.AlignVCenter,
                             QFontMetricsF(font).elidedText(self.node_id, Qt.ElideRight, NODE_W - 14))
        # ports
        for name, p in (("in", self.in_port()), ("out", self.out_port())):
            if name == "in" and self.is_input:
                continue
            hot = self.port_hot == name
            painter.setPen(QPen(c.selected if hot else c.edge, 1.4))
            painter.setBrush(c.selected if hot else c.background)
            r = PORT_R + (1.5 if hot else 0)
            painter.drawEllipse(p, r, r)
        if self.problems:
            painter.setPen(Qt.NoPen)
            painter.setBrush(c.error)
            painter.drawEllipse(QPointF(NODE_W - 2, 2), 7, 7)
            painter.setPen(QColor("white"))
            bold = QFont(self.canvas.font())
            bold.setBold(True)
            bold.setPointSizeF(8)
            painter.setFont(bold)
            painter.drawText(QRectF(NODE_W - 9, -5, 14, 14), Qt.AlignCenter, "!")

    def hoverMoveEvent(self, event) -> None:
        hot = self.port_at(event.pos())
        if hot != self.port_hot and not self.canvas.linking:
            self.port_hot = hot
            self.setCursor(Qt.CrossCursor if hot == "out" else Qt.ArrowCursor)
            self.update()
        super().hoverMoveEvent(event)

    def hoverLeaveEvent(self, event) -> None:
        if self.port_hot and not self.canvas.linking:
            self.port_hot = ""
            self.update()
        super().hoverLeaveEvent(event)

    def itemChange(self, change, value):
        if change == QGraphicsItem.ItemPositionHasChanged:
            self.canvas._on_node_moved(self)
        elif change == QGraphicsItem.ItemSelectedHasChanged:
            self.update()
        return super().itemChange(change, value)


class EdgeItem(QGraphicsItem):
    """A connection src -> dst with the shape of the tensor it carries."""

    def __init__(self, canvas: CanvasView, src: str, dst: str, slot: int, slots: int):
        super().__init__()
        self.canvas = canvas
        self.src, self.dst, self.slot, self.slots = src, dst, slot, slots
        self.label = ""
        self.vertical = False  # labels on gutters and lane climbs run along the line
        self.align_left = False  # label ends at label_pos instead of starting there
        self.hot = False
        self.path = QPainterPath()
        self.label_pos = QPointF()
        self._shape = QPainterPath()
        self._bounds = QRectF()
        self.setFlags(QGraphicsItem.ItemIsSelectable)
        self.setAcceptHoverEvents(True)
        self.setZValue(1)

    def set_label(self, text: str) -> None:
        if text != self.label:
            self.prepareGeometryChange()
            self.label = text
            self._update_bounds()
            self.update()

    def set_hot(self, hot: bool) -> None:
        if hot != self.hot:
            self.hot = hot
            self.update()

    def update_path(self) -> None:
        items = self.canvas._nodes
        if self.src not in items or self.dst not in items:
            return
        s = items[self.src].sceneBoundingRect().adjusted(3, PORT_R + 3, -3, -PORT_R - 3)
        t = items[self.dst].sceneBoundingRect().adjusted(3, PORT_R + 3, -3, -PORT_R - 3)
        sx, sy = s.center().x(), s.bottom() + PORT_R
        tx, ty = t.center().x() + (self.slot - (self.slots - 1) / 2) * 14, t.top() - PORT_R
        rows = ty - sy
        vertical = False
        align_left = False
        if rows >= 4:
            if rows <= ROW_GAP * 1.5:
                ym = sy + rows / 2
                pts = [(sx, sy), (tx, ty)] if abs(sx - tx) < 2 else [(sx, sy), (sx, ym), (tx, ym), (tx, ty)]
                lab = (max(sx, tx) + 6, ym) if abs(sx - tx) < 20 else (tx + 6, ym + (ty - ym) / 2)
                if self.slots > 1 and abs(sx - tx) < 20:
                    # a skip edge arrives beside it at this height: label on the left instead
                    lab = (min(sx, tx) - 6, ym)
                    align_left = True
            elif abs(s.center().x() - t.center().x()) < 2:
                # same column, rows apart: run down the gutter beside the column
                gx = s.right() + COL_GAP * 0.42
                y1, y2 = sy + ROW_GAP * 0.45, ty - ROW_GAP * 0.45
                pts = [(sx, sy), (sx, y1), (gx, y1), (gx, y2), (tx, y2), (tx, ty)]
                lab = (gx, (y1 + y2) / 2)
                vertical = True
            else:
                ym = ty - ROW_GAP * 0.5
                pts = [(sx, sy), (sx, ym), (tx, ym), (tx, ty)]
                lab = (sx + 6, sy + ROW_GAP / 2)
        else:
            # the target is beside or above (the next lane): climb in the space between
            y1, y2 = sy + ROW_GAP * 0.45, ty - ROW_GAP * 0.45
            if t.left() > s.right():
                gx = t.left() - 18
            elif t.right() < s.left():
                gx = (t.right() + s.left()) / 2
            else:
                gx = max(s.right(), t.right()) + COL_GAP * 0.42
            pts = [(sx, sy), (sx, y1), (gx, y1), (gx, y2), (tx, y2), (tx, ty)]
            lab = (gx, (y1 + y2) / 2)
            vertical = True
        self.prepareGeometryChange()
        self.vertical = vertical
        self.align_left = align_left
        self.path = rounded_polyline(pts, 9)
        self.label_pos = QPointF(*lab)
        stroker = QPainterPathStroker()
        stroker.setWidth(14)
        self._shape = stroker.createStroke(self.path)
        self._update_bounds()

    def _label_rect(self) -> QRectF:
        """Where the label's background goes, in scene units (a vertical label is centred on the line)."""
        if not self.label:
            return QRectF()
        fm = QFontMetricsF(self.canvas.label_font)
        w = fm.horizontalAdvance(self.label) + 8
        h = fm.height() + 2
        if self.vertical:
            return QRectF(self.label_pos.x() - h / 2, self.label_pos.y() - w / 2, h, w)
        if self.align_left:
            return QRectF(self.label_pos.x() - w + 2, self.label_pos.y() - h / 2, w, h)
        return QRectF(self.label_pos.x() - 2, self.label_pos.y() - h / 2, w, h)

    def _update_bounds(self) -> None:
        self._bounds = self._shape.boundingRect().united(self._label_rect()).adjusted(-6, -6, 6, 6)

    def boundingRect(self) -> QRectF:
        return self._bounds

    def shape(self) -> QPainterPath:
        return self._shape

    def paint(self, painter: QPainter, option, widget=None) -> None:
        c = self.canvas.colors
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        hot = self.hot or self.isSelected()
        color = c.edge_hot if hot else c.edge
        painter.setRenderHint(QPainter.Antialiasing)
        painter.setPen(QPen(color, 2.6 if hot else 1.5, Qt.SolidLine, Qt.RoundCap, Qt.RoundJoin))
        painter.setBrush(Qt.NoBrush)
        painter.drawPath(self.path)
        end = self.path.pointAtPercent(1.0)
        painter.setPen(Qt.NoPen)
        painter.setBrush(color)
        painter.drawPolygon(QPolygonF([end, end + QPointF(-4.5, -8), end + QPointF(4.5, -8)]))
        if self.label and lod >= 0.35:
            rect = self._label_rect()
            bg = QColor(c.label_bg)
            bg.setAlpha(215)
            painter.setBrush(bg)
            painter.drawRoundedRect(rect, 3, 3)
            painter.setFont(self.canvas.label_font)
            painter.setPen(c.edge_hot if hot else c.muted)
            if self.vertical:
                painter.save()
                painter.translate(rect.center())
                painter.rotate(-90)
                painter.drawText(QRectF(-rect.height() / 2, -rect.width() / 2, rect.height(), rect.width()),
                                 Qt.AlignCenter, self.label)
                painter.restore()
            else:
                painter.drawText(rect.adjusted(4, 0, 0, 0), Qt.AlignLeft | Qt.AlignVCenter, self.label)
