"""A connection being dragged on the canvas from a node's output port (bottom dot) to another
node: the dashed curve that follows the mouse, the highlighted input port of the node under it,
and the ``connect`` it ends in. ``CanvasView`` holds one ``PortLink`` while a drag lasts."""
from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsPathItem

from .items import NodeItem


class PortLink:
    """Drag from ``node``'s output port, starting at ``scene_pos``; ``view`` is the ``CanvasView``."""

    def __init__(self, view, node: NodeItem, scene_pos: QPointF):
        self.view = view
        self.src = node.node_id
        self.target: NodeItem | None = None
        self.item = QGraphicsPathItem()
        self.item.setPen(QPen(view.colors.selected, 2, Qt.DashLine))
        self.item.setZValue(5)
        view.scene().addItem(self.item)
        self.update(view.mapFromScene(scene_pos))

    def update(self, view_pos) -> None:
        """Draw the curve to ``view_pos`` and light the input port of the node there (not the
        Input node, not the source itself)."""
        view = self.view
        src = view.node_item(self.src)
        if src is None:
            return
        a = src.mapToScene(src.out_port())
        b = view.mapToScene(view_pos.toPoint() if hasattr(view_pos, "toPoint") else view_pos)
        path = QPainterPath(a)
        dy = max(30.0, abs(b.y() - a.y()) / 2)
        path.cubicTo(a + QPointF(0, dy), b - QPointF(0, dy), b)
        self.item.setPath(path)
        target = view._node_at(view_pos)
        if target is not None and (target.is_input or target.node_id == self.src):
            target = None
        if target is not self.target:
            if self.target is not None:
                self.target.port_hot = ""
                self.target.update()
            if target is not None:
                target.port_hot = "in"
                target.update()
            self.target = target

    def finish(self, view_pos) -> None:
        """Drop at ``view_pos``: connect to the node there through the model (which may refuse;
        the reason goes to the view's status message)."""
        self.update(view_pos)
        self.view.scene().removeItem(self.item)
        target = self.target
        if target is not None:
            target.port_hot = ""
            target.update()
            why = self.view.model.connect(self.src, target.node_id)
            self.view.status_message.emit(why or f"connected {self.src} to {target.node_id}")

    def cancel(self) -> None:
        """Escape: drop the curve, connect nothing."""
        self.view.scene().removeItem(self.item)
