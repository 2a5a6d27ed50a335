"""The canvas: the net drawn as a graph of node boxes and shape-labelled edges.

Drop a layer kind from the palette on empty space to append it, on an edge to insert it,
on a node to insert it after that node. Drag from a node's output port (bottom dot) to
another node to connect them (a skip into ``add``/``concat`` is one drag). Items are
rebuilt only when the graph's structure changes; text and colours are updated in place.
The items are in ``items``; the legend, minimap, drop hint, dot grid and their placing in
``overlays``; a connection being dragged in ``linking``.

Run alone: ``python -m app.editor.canvas [preset]``.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QAction, QFont, QKeySequence, QPainter
from PySide6.QtWidgets import QGraphicsScene, QGraphicsView, QWidget

import engine
from engine import INPUT_ID

from . import theme
from .actions import make_canvas_actions
from .edits import structure
from .items import EdgeItem, NodeItem
from .layout import NODE_H, NODE_W
from .linking import PortLink
from .model import EditorModel
from .overlays import METRIC_KEYS, METRIC_TITLES, OverlayStrip, draw_dot_grid, metric_text
from .validation import Validation, opaque_op

KIND_MIME = "application/x-layerscope-kind"
READABLE_SCALE = 0.55  # "fit" zooms out no further: 9.5 pt node ids stay >= 7 px tall


class CanvasView(QGraphicsView):
    """The net as an editable graph. All edits go through ``model`` (undoable)."""

    status_message = Signal(str)       # a short note for the status bar (e.g. why a connection was refused)
    node_double_clicked = Signal(str)

    def __init__(self, model: EditorModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.setScene(QGraphicsScene(self))
        self.colors = theme.CanvasColors(self.palette())
        self.label_font = QFont(self.font())
        self.label_font.setPointSizeF(7.6)
        self.setRenderHints(QPainter.Antialiasing | QPainter.TextAntialiasing)
        self.setDragMode(QGraphicsView.RubberBandDrag)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.SmartViewportUpdate)
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.StrongFocus)
        self.setBackgroundBrush(self.colors.background)
        self._nodes: dict[str, NodeItem] = {}
        self._edges: dict[tuple[str, str, int], EdgeItem] = {}
        self._structure = None
        self._syncing = False
        self._metrics: dict[str, dict] = {}
        self._color_by: str | None = None
        self._hot_edge: EdgeItem | None = None
        self._link: PortLink | None = None  # a connection being dragged from an output port
        self._pan_from = None
        self._space = False
        self._fit_pending = True
        self._overlays = OverlayStrip(self)
        self._legend, self._minimap, self._hint = self._overlays.legend, self._overlays.minimap, self._overlays.hint
        self._actions = make_canvas_actions(self)
        self.scene().selectionChanged.connect(self._on_scene_selection)
        model.spec_changed.connect(self._on_spec_changed)
        model.spec_loaded.connect(self._on_spec_loaded)
        model.validated.connect(self._on_validated)
        model.selection_changed.connect(self._on_model_selection)
        self._on_spec_changed()
        if not model._pending:
            self._on_validated(model.validation())

    # -- public ------------------------------------------------------------------------------------
    @property
    def linking(self) -> bool:
        return self._link is not None

    def node_item(self, node_id: str) -> NodeItem | None:
        return self._nodes.get(node_id)

    def edge_item(self, src: str, dst: str) -> EdgeItem | None:
        for (s, d, _), e in self._edges.items():
            if s == src and d == dst:
                return e
        return None

    def edges(self) -> list[EdgeItem]:
        return list(self._edges.values())

    def selected_ids(self) -> list[str]:
        """Selected node ids in net order (the net input excluded)."""
        order = {n.id: i for i, n in enumerate(self.model.spec_view().nodes)}
        ids = [i.node_id for i in self.scene().selectedItems() if isinstance(i, NodeItem) and not i.is_input]
        return sorted(ids, key=lambda k: order.get(k, 0))

    def edit_actions(self) -> dict[str, QAction]:
        """The canvas's actions (keys: undo, redo, cut, copy, paste, delete, duplicate, select_all,
        fit, relayout, zoom_in, zoom_out, zoom_reset). Put these objects in menus; do not create
        other actions with the same shortcuts, or Qt finds the shortcut ambiguous."""
        return dict(self._actions)

    def set_node_metrics(self, metrics: dict[str, dict], color_by: str | None = "time") -> None:
        """Show measured costs: ``{node_id: {"time_ms", "mem_bytes", "gflops"}}`` (any subset).

        Nodes show the time (or the colour-by metric when no time is given); with
        ``color_by`` in {"time", "memory", "flops"} they are filled on a scale from 0 to the
        largest value with a legend; with "speedup" (x against a baseline, from a comparison) on a
        diverging log2 scale centred at 1x: slower red, faster green, as the comparison heat map.
        """
        self._metrics = {k: dict(v) for k, v in metrics.items()}
        self._color_by = color_by if color_by in METRIC_KEYS else None
        self._apply_metrics()

    def clear_metrics(self) -> None:
        self._metrics = {}
        self._color_by = None
        self._apply_metrics()

    def fit_view(self) -> None:
        """Zoom and centre so the whole net is visible, between READABLE_SCALE and 100 %. A net too
        big to show whole at a readable size (ResNet-18 in a small window) is shown from its start
        at READABLE_SCALE, and the minimap beside the view shows all of it."""
        rect = self.scene().itemsBoundingRect()
        if rect.isEmpty():
            return
        rect = rect.adjusted(-24, -24, 24, 24)
        self._place_overlays(fits=True)  # measure the fit with the side strip the fit itself needs
        self.fitInView(rect, Qt.KeepAspectRatio)
        if self.transform().m11() > 1.0:
            self.resetTransform()
            self.centerOn(rect.center())
        elif self.transform().m11() < READABLE_SCALE:
            self._place_overlays(fits=False)
            self.resetTransform()
            self.scale(READABLE_SCALE, READABLE_SCALE)
            vp = self.viewport().rect()
            self.centerOn(rect.left() + vp.width() / READABLE_SCALE / 2, rect.top() + vp.height() / READABLE_SCALE / 2)
        self._fit_pending = False
        self._place_overlays()

    def zoom_to_node(self, node_id: str) -> None:
        """Show ``node_id`` at 100 % in the middle of the view and select it (the minimap's double-click)."""
        item = self._nodes.get(node_id)
        if item is None:
            return
        self.resetTransform()
        self.centerOn(item.sceneBoundingRect().center())
        if node_id != INPUT_ID:
            self.model.select(node_id)
        self._place_overlays()

    def node_items(self) -> list[NodeItem]:
        return list(self._nodes.values())

    def net_fits(self) -> bool:
        """Whether the whole net is inside the viewport now (else the minimap is shown)."""
        seen = self.mapToScene(self.viewport().rect()).boundingRect()
        return seen.contains(self.scene().itemsBoundingRect())

    def zoom_by(self, factor: float) -> None:
        s = self.transform().m11()
        factor = max(0.08 / s, min(3.0 / s, factor))
        self.scale(factor, factor)
        self._place_overlays()

    def zoom_reset(self) -> None:
        self.resetTransform()
        self._place_overlays()

    def relayout(self) -> None:
        self.model.relayout(self._view_size())
        self.fit_view()

    def delete_selection(self) -> None:
        """Delete the selected nodes and connections (one undo step)."""
        ids = self.selected_ids()
        edges = [(e.src, e.dst) for e in self.scene().selectedItems() if isinstance(e, EdgeItem)]
        edges = [(s, d) for s, d in edges if d not in ids and s not in ids]
        if not ids and not edges:
            return
        stack = self.model.undo_stack()
        stack.beginMacro("Delete")
        try:
            for s, d in edges:
                self.model.disconnect(s, d)
            self.model.remove_nodes(ids)
        finally:
            stack.endMacro()

    # -- building items ----------------------------------------------------------------------------
    def _on_spec_loaded(self) -> None:
        self._fit_pending = True
        if self.isVisible() and self.viewport().width() > 10:
            self._fit_new_net()

    def _fit_new_net(self) -> None:
        self.model.fit_layout(self._view_size())
        self.fit_view()

    def _on_spec_changed(self) -> None:
        spec = self.model.spec_view()
        graph = structure(spec)
        if graph != self._structure:
            self._rebuild(spec)
            self._structure = graph
        self._sync_content(spec)
        self._hint.setVisible(not spec.nodes)
        self._place_overlays()

    def _rebuild(self, spec) -> None:
        scene = self.scene()
        self._syncing = True
        try:
            self._hot_edge = None
            for item in list(self._edges.values()) + list(self._nodes.values()):
                scene.removeItem(item)
            self._nodes.clear()
            self._edges.clear()
            for nid in [INPUT_ID] + [n.id for n in spec.nodes]:
                item = NodeItem(self, nid)
                self._nodes[nid] = item
                scene.addItem(item)
            for i, n in enumerate(spec.nodes):
                refs = [r for r in spec.inputs_of(i) if r in self._nodes]
                for k, r in enumerate(refs):
                    e = EdgeItem(self, r, n.id, k, len(refs))
                    self._edges[(r, n.id, k)] = e
                    scene.addItem(e)
            sel = self.model.selected()
            if sel in self._nodes:
                self._nodes[sel].setSelected(True)
        finally:
            self._syncing = False

    def _sync_content(self, spec) -> None:
        pos = self.model.positions()
        self._syncing = True
        try:
            for nid, item in self._nodes.items():
                if nid == INPUT_ID:
                    inp = spec.input
                    item.set_content("input", "input",
                                     f"{inp.channels}x{inp.height}x{inp.width}  {inp.classes} classes")
                else:
                    node = spec.node(nid)
                    kind = engine.get_kind(node.kind)
                    op = opaque_op(node)
                    item.opaque_op = op  # read-only: an imported op with no layer kind, its op name shown
                    if op is not None:
                        item.set_content(node.kind, "imported", op)
                    else:
                        item.set_content(node.kind, kind.family if kind else "input",
                                         theme.key_params_text(kind, node.params))
                    if not item.toolTip():
                        item._update_tooltip()
                p = pos.get(nid)
                if p is not None and (item.pos().x(), item.pos().y()) != tuple(p):
                    item.setPos(*p)
            for e in self._edges.values():
                e.update_path()
        finally:
            self._syncing = False
        self._apply_metrics()
        self._update_scene_rect()

    def _update_scene_rect(self) -> None:
        r = self.scene().itemsBoundingRect()
        m = max(400.0, max(r.width(), r.height()) * 0.5)
        self.scene().setSceneRect(r.adjusted(-m, -m, m, m))

    def _on_validated(self, v: Validation) -> None:
        for nid, item in self._nodes.items():
            item.set_problems(v.node_problems(nid))
        for e in self._edges.values():
            e.set_label(theme.shape_text(v.shapes.get(e.src)))

    def _apply_metrics(self) -> None:
        key = METRIC_KEYS.get(self._color_by) if self._color_by else None
        values = [m.get(key) for m in self._metrics.values() if key and m.get(key) is not None]
        hi = max(values) if values else 0.0
        # a speed-up diverges around 1x on a log scale (red slower, green faster); costs run 0 -> max
        span = theme.speedup_span(values) if key == "speedup" else 0.0
        for nid, item in self._nodes.items():
            m = self._metrics.get(nid, {})
            shown = "time_ms" if m.get("time_ms") is not None else key
            text = metric_text(shown, m.get(shown)) if shown else ""
            fill = None
            if key == "speedup" and m.get(key) is not None and m[key] > 0:
                fill = theme.speedup_color(m[key], span)
            elif key and key != "speedup" and m.get(key) is not None and hi > 0:
                fill = theme.cost_color(m[key] / hi)
            item.set_metric(text, fill)
        if values and key == "speedup":
            self._legend.set_scale(METRIC_TITLES[self._color_by], metric_text(key, 2.0 ** -span),
                                   metric_text(key, 2.0 ** span), diverging=True)
        elif values:
            # colours run from zero to the largest value, so the scale starts at 0
            self._legend.set_scale(METRIC_TITLES[self._color_by], "0", metric_text(key, hi))
        self._legend.setVisible(bool(values))
        self._place_overlays()

    # -- selection ---------------------------------------------------------------------------------
    def _on_scene_selection(self) -> None:
        if self._syncing:
            return
        sel = [i for i in self.scene().selectedItems() if isinstance(i, NodeItem)]
        current = self.model.selected()
        if any(i.node_id == current for i in sel):
            return
        self.model.select(sel[-1].node_id if sel else "")

    def _on_model_selection(self, node_id: str) -> None:
        item = self._nodes.get(node_id)
        if item is not None and item.isSelected():
            return
        self._syncing = True
        try:
            self.scene().clearSelection()
            if item is not None:
                item.setSelected(True)
                self.ensureVisible(item, 40, 40)
        finally:
            self._syncing = False

    # -- geometry ----------------------------------------------------------------------------------
    def _on_node_moved(self, item: NodeItem) -> None:
        if self._syncing:
            return
        for e in self._edges.values():
            if e.src == item.node_id or e.dst == item.node_id:
                e.update_path()

    def _view_size(self) -> tuple[float, float]:
        vp = self.viewport()
        return (float(vp.width()), float(vp.height()))

    def _place_overlays(self, fits: bool | None = None) -> None:
        self._overlays.place(fits)

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        if self._minimap.isVisible():
            self._minimap.update()

    def viewportEvent(self, event) -> bool:
        if event.type() == QEvent.Resize:
            self._place_overlays()
        return super().viewportEvent(event)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._place_overlays()
        if self.viewport().width() > 10:
            self.model.layout_view = self._view_size()
        if self._fit_pending and self.isVisible():
            self._fit_new_net()
        self._place_overlays()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._fit_pending:
            self._fit_new_net()

    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:
        painter.fillRect(rect, self.colors.background)
        if self.transform().m11() >= 0.45:  # zoomed further out the dots are noise
            draw_dot_grid(painter, rect, self.colors.grid)

    # -- drops from the palette --------------------------------------------------------------------
    def _edge_at(self, view_pos) -> EdgeItem | None:
        for item in self.items(view_pos.toPoint() if hasattr(view_pos, "toPoint") else view_pos):
            if isinstance(item, EdgeItem):
                return item
            if isinstance(item, NodeItem):
                return None
        return None

    def _node_at(self, view_pos) -> NodeItem | None:
        for item in self.items(view_pos.toPoint() if hasattr(view_pos, "toPoint") else view_pos):
            if isinstance(item, NodeItem):
                return item
        return None

    def _set_hot_edge(self, edge: EdgeItem | None) -> None:
        if self._hot_edge is not None and self._hot_edge is not edge:
            self._hot_edge.set_hot(False)
        self._hot_edge = edge
        if edge is not None:
            edge.set_hot(True)

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasFormat(KIND_MIME):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasFormat(KIND_MIME):
            self._set_hot_edge(self._edge_at(event.position()))
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragLeaveEvent(self, event) -> None:
        self._set_hot_edge(None)
        event.accept()

    def dropEvent(self, event) -> None:
        mime = event.mimeData()
        if not mime.hasFormat(KIND_MIME):
            event.ignore()
            return
        kind = bytes(mime.data(KIND_MIME)).decode("utf-8")
        self._set_hot_edge(None)
        event.acceptProposedAction()
        self.drop_kind(kind, event.position())
        self.setFocus()

    def drop_kind(self, kind: str, view_pos) -> str | None:
        """What a drop of ``kind`` at ``view_pos`` does: insert on an edge, after a node, or append."""
        if kind == INPUT_ID:
            self.model.select(INPUT_ID)
            return None
        if engine.get_kind(kind) is None:
            self.status_message.emit(f"unknown layer kind '{kind}'")
            return None
        scene_pos = self.mapToScene(view_pos.toPoint() if hasattr(view_pos, "toPoint") else view_pos)
        pos = (scene_pos.x() - NODE_W / 2, scene_pos.y() - NODE_H / 2)
        edge = self._edge_at(view_pos)
        node = self._node_at(view_pos)
        if edge is not None:
            nid = self.model.add_node(kind, insert_on_edge=(edge.src, edge.dst), pos=pos)
        elif node is not None:
            nid = self.model.add_node(kind, after=node.node_id)
        else:
            nid = self.model.add_node(kind, pos=pos)
        self.status_message.emit(f"added {nid}")
        return nid

    # -- mouse: port links, panning, moving --------------------------------------------------------
    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MiddleButton or (self._space and event.button() == Qt.LeftButton):
            self._pan_from = event.position()
            self.viewport().setCursor(Qt.ClosedHandCursor)
            event.accept()
            return
        if event.button() == Qt.LeftButton:
            node = self._node_at(event.position())
            if node is not None and node.port_at(node.mapFromScene(self.mapToScene(event.position().toPoint()))) == "out":
                self._link = PortLink(self, node, self.mapToScene(event.position().toPoint()))
                event.accept()
                return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        if self._pan_from is not None:
            d = event.position() - self._pan_from
            self._pan_from = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - int(d.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - int(d.y()))
            event.accept()
            return
        if self._link is not None:
            self._link.update(event.position())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        if self._pan_from is not None and event.button() in (Qt.MiddleButton, Qt.LeftButton):
            self._pan_from = None
            self.viewport().setCursor(Qt.OpenHandCursor if self._space else Qt.ArrowCursor)
            event.accept()
            return
        if self._link is not None and event.button() == Qt.LeftButton:
            link, self._link = self._link, None
            link.finish(event.position())
            event.accept()
            return
        super().mouseReleaseEvent(event)
        if event.button() == Qt.LeftButton:
            self._commit_moves()

    def mouseDoubleClickEvent(self, event) -> None:
        node = self._node_at(event.position())
        if node is not None:
            self.node_double_clicked.emit(node.node_id)
        super().mouseDoubleClickEvent(event)

    def _commit_moves(self) -> None:
        pos = self.model.positions()
        moves = {nid: (item.pos().x(), item.pos().y()) for nid, item in self._nodes.items()
                 if nid in pos and (item.pos().x(), item.pos().y()) != tuple(pos[nid])}
        if moves:
            self.model.move_nodes(moves)

    def wheelEvent(self, event) -> None:
        if event.modifiers() & Qt.ShiftModifier or event.angleDelta().x():
            super().wheelEvent(event)  # pan
            return
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(1.15 ** steps)
        event.accept()

    def keyPressEvent(self, event) -> None:
        # the actions' shortcuts normally fire first; this covers a window that is not active
        pressed = QKeySequence(event.keyCombination())
        for action in self._actions.values():
            if action.isEnabled() and any(s.matches(pressed) == QKeySequence.ExactMatch for s in action.shortcuts()):
                action.trigger()
                event.accept()
                return
        if event.key() == Qt.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(Qt.OpenHandCursor)
            event.accept()
            return
        if event.key() == Qt.Key_Escape and self._link is not None:
            link, self._link = self._link, None
            link.cancel()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:
        if event.key() == Qt.Key_Space and not event.isAutoRepeat():
            self._space = False
            self.viewport().setCursor(Qt.ArrowCursor)
            event.accept()
            return
        super().keyReleaseEvent(event)

    # -- actions -----------------------------------------------------------------------------------
    def _select_all(self) -> None:
        for item in self._nodes.values():
            if not item.is_input:
                item.setSelected(True)

    def sizeHint(self) -> QSize:
        return QSize(900, 700)


def main(argv=None) -> int:
    from ._preview import preview

    return preview(lambda model: CanvasView(model), argv, size=(1100, 800))


if __name__ == "__main__":
    raise SystemExit(main())
