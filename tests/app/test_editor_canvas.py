"""CanvasView driven by real events: drops from the palette, port drags, keys, metrics."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

import engine
from app.editor import CanvasView, EditorModel, PaletteWidget
from app.editor.items import EdgeItem, NodeItem


@pytest.fixture
def editor(qtbot):
    def make(spec=None, size=(1000, 760)):
        model = EditorModel(spec)
        canvas = CanvasView(model)
        palette = PaletteWidget(model)
        qtbot.addWidget(canvas)
        qtbot.addWidget(palette)
        canvas.resize(*size)
        canvas.show()
        qtbot.waitExposed(canvas)
        model.validation()
        return model, canvas, palette
    return make


def kinds_of(model):
    return [n.kind for n in model.spec_view().nodes]


def drop(canvas, palette, kind, view_pos: QPoint):
    """Drag-enter, drag-move and drop the palette's own MIME data at ``view_pos``."""
    mime = palette.tree.mimeData([palette.item_for(kind)])
    vp = canvas.viewport()
    pos = QPointF(view_pos)
    # QPoint constructors: the ones both PySide6 6.11 and 6.12 have
    for ev in (QDragEnterEvent(view_pos, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier),
               QDragMoveEvent(view_pos, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier),
               QDropEvent(pos, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)):
        QApplication.sendEvent(vp, ev)
        assert ev.isAccepted()


def empty_spot(canvas) -> QPoint:
    vp = canvas.viewport()
    for x in range(8, vp.width(), 37):
        for y in range(8, vp.height(), 37):
            if not canvas.items(QPoint(x, y)):
                return QPoint(x, y)
    raise AssertionError("no empty spot on the canvas")


def view_point(canvas, scene_point) -> QPoint:
    return canvas.mapFromScene(scene_point)


def mouse(widget, kind, pos: QPoint, button=Qt.LeftButton, buttons=None):
    buttons = button if buttons is None else buttons
    ev = QMouseEvent(kind, QPointF(pos), QPointF(widget.mapToGlobal(pos)), button, buttons, Qt.NoModifier)
    QApplication.sendEvent(widget, ev)


def test_drops_on_empty_space_build_the_expected_net(editor):
    model, canvas, palette = editor()
    for kind in ("conv2d", "relu", "maxpool2d", "flatten", "linear"):
        drop(canvas, palette, kind, empty_spot(canvas))
    spec = model.spec()
    assert kinds_of(model) == ["conv2d", "relu", "maxpool2d", "flatten", "linear"]
    assert [n.id for n in spec.nodes] == ["conv1", "relu1", "pool1", "flatten1", "fc1"]
    assert all(spec.inputs_of(i) == ([spec.nodes[i - 1].id] if i else ["input"]) for i in range(len(spec.nodes)))
    assert model.validation().ok
    assert canvas.edge_item("relu1", "pool1").label == "16x26x26"


def test_drop_on_an_edge_inserts_there(editor):
    model, canvas, palette = editor(engine.load_preset("lenet5"))
    edge = canvas.edge_item("pool1", "conv2")
    target = view_point(canvas, edge.path.pointAtPercent(0.5))
    assert any(isinstance(i, EdgeItem) for i in canvas.items(target))
    drop(canvas, palette, "batchnorm2d", target)
    spec = model.spec()
    ids = [n.id for n in spec.nodes]
    assert ids[ids.index("pool1") + 1] == "bn1"
    assert spec.inputs_of(ids.index("bn1")) == ["pool1"]
    assert spec.inputs_of(ids.index("conv2")) == ["bn1"]
    assert model.validation().ok
    assert canvas.edge_item("pool1", "bn1") is not None and canvas.edge_item("bn1", "conv2") is not None


def test_drop_on_a_node_inserts_after_it(editor):
    model, canvas, palette = editor(engine.load_preset("lenet5"))
    node = canvas.node_item("fc1")
    drop(canvas, palette, "dropout", view_point(canvas, node.mapToScene(node.box().center())))
    spec = model.spec()
    ids = [n.id for n in spec.nodes]
    assert spec.inputs_of(ids.index("relu3")) == ["drop1"]
    assert spec.inputs_of(ids.index("drop1")) == ["fc1"]


def residual_spec():
    return engine.from_dict({
        "format": "layerscope-net", "version": 1,
        "input": {"channels": 3, "height": 8, "width": 8, "classes": 4},
        "nodes": [{"id": "conv1", "kind": "conv2d", "params": {"out_channels": 8, "padding": 1}},
                  {"id": "relu1", "kind": "relu"},
                  {"id": "conv2", "kind": "conv2d", "params": {"out_channels": 8, "padding": 1}},
                  {"id": "add1", "kind": "add", "inputs": ["conv2", "conv2"]},
                  {"id": "flatten1", "kind": "flatten"},
                  {"id": "fc1", "kind": "linear", "params": {"out_features": 4}}]})


def test_port_drag_connects_a_skip_into_add(editor):
    spec = residual_spec()
    spec.nodes[3].inputs = ["conv2"]
    model, canvas, _ = editor(spec)
    assert model.validation().node_problems("add1")
    assert canvas.node_item("add1").problems
    src = canvas.node_item("relu1")
    dst = canvas.node_item("add1")
    vp = canvas.viewport()
    start = view_point(canvas, src.mapToScene(src.out_port()))
    end = view_point(canvas, dst.mapToScene(dst.box().center()))
    mouse(vp, QEvent.MouseButtonPress, start)
    assert canvas.linking
    mid = (start + end) / 2
    mouse(vp, QEvent.MouseMove, mid, Qt.NoButton, Qt.LeftButton)
    mouse(vp, QEvent.MouseMove, end, Qt.NoButton, Qt.LeftButton)
    assert dst.port_hot == "in"
    mouse(vp, QEvent.MouseButtonRelease, end, Qt.LeftButton, Qt.NoButton)
    assert not canvas.linking
    assert model.spec().node("add1").inputs == ["conv2", "relu1"]
    v = model.validation()
    assert v.ok, v.problems
    assert not canvas.node_item("add1").problems
    assert canvas.edge_item("relu1", "add1").label == "8x8x8"


def test_invalid_nodes_are_marked_with_the_message(editor):
    model, canvas, _ = editor(engine.load_preset("lenet5"))
    item = canvas.node_item("conv2")
    model.set_param("conv2", "kernel", 20)
    model.validation()
    assert canvas.node_item("conv2") is item  # params changed, structure did not: updated in place
    assert any("kernel 20" in p for p in item.problems)
    assert "kernel 20" in item.toolTip()
    assert not canvas.node_item("conv1").problems
    assert canvas.edge_item("pool1", "conv2").label == "6x14x14"
    assert canvas.edge_item("conv2", "relu2").label == ""  # unknown, not made up
    model.undo()
    model.validation()
    assert not item.problems


def test_keys_delete_duplicate_undo_redo(editor):
    model, canvas, _ = editor(engine.load_preset("lenet5"))
    original = engine.dumps(model.spec())
    canvas.setFocus()
    model.select("relu1")
    QTest.keyClick(canvas, Qt.Key_Delete)
    assert "relu1" not in [n.id for n in model.spec().nodes]
    after_delete = engine.dumps(model.spec())
    model.select("conv2")
    QTest.keyClick(canvas, Qt.Key_D, Qt.ControlModifier)
    assert "conv3" in [n.id for n in model.spec().nodes]
    QTest.keyClick(canvas, Qt.Key_Z, Qt.ControlModifier)
    assert engine.dumps(model.spec()) == after_delete
    QTest.keyClick(canvas, Qt.Key_Z, Qt.ControlModifier)
    assert engine.dumps(model.spec()) == original
    QTest.keyClick(canvas, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert engine.dumps(model.spec()) == after_delete
    assert canvas.node_item("relu1") is None


def test_copy_paste_with_keys(editor):
    model, canvas, _ = editor(engine.load_preset("lenet5"))
    canvas.setFocus()
    canvas.node_item("fc2").setSelected(True)
    canvas.node_item("relu4").setSelected(True)
    assert canvas.selected_ids() == ["fc2", "relu4"]
    QTest.keyClick(canvas, Qt.Key_C, Qt.ControlModifier)
    model.select("relu4")
    QTest.keyClick(canvas, Qt.Key_V, Qt.ControlModifier)
    spec = model.spec()
    ids = [n.id for n in spec.nodes]
    assert ids[-3:] == ["fc4", "relu5", "fc3"]
    assert spec.inputs_of(ids.index("fc4")) == ["relu4"]
    assert model.validation().ok


def test_delete_key_removes_a_selected_edge(editor):
    model, canvas, _ = editor(residual_spec())
    canvas.scene().clearSelection()
    edge = [e for e in canvas.edges() if e.src == "conv2" and e.dst == "add1"][0]
    edge.setSelected(True)
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key_Delete)
    spec = model.spec()
    assert spec.inputs_of([n.id for n in spec.nodes].index("add1")) == ["conv2"]
    assert model.validation().node_problems("add1")


def test_moving_a_node_with_the_mouse_is_recorded(editor):
    model, canvas, _ = editor(engine.load_preset("lenet5"))
    item = canvas.node_item("fc1")
    before = model.positions()["fc1"]
    vp = canvas.viewport()
    start = view_point(canvas, item.mapToScene(QPointF(40, 12)))
    end = start + QPoint(60, 25)
    mouse(vp, QEvent.MouseButtonPress, start)
    mouse(vp, QEvent.MouseMove, start + QPoint(20, 8), Qt.NoButton, Qt.LeftButton)
    mouse(vp, QEvent.MouseMove, end, Qt.NoButton, Qt.LeftButton)
    mouse(vp, QEvent.MouseButtonRelease, end, Qt.LeftButton, Qt.NoButton)
    after = model.positions()["fc1"]
    assert after != before and after == (item.pos().x(), item.pos().y())
    model.undo()
    assert model.positions()["fc1"] == before
    assert (item.pos().x(), item.pos().y()) == before


def test_metrics_colour_nodes_and_show_time(editor):
    model, canvas, _ = editor(engine.load_preset("lenet5"))
    canvas.set_node_metrics({"conv1": {"time_ms": 0.2, "mem_bytes": 1000}, "conv2": {"time_ms": 2.0}},
                            color_by="time")
    hi, lo = canvas.node_item("conv2"), canvas.node_item("conv1")
    assert hi.metric == "2.00 ms" and lo.metric == "0.200 ms"  # engine.fmt.fmt_ms, as the views
    assert hi.fill is not None and lo.fill is not None and hi.fill != lo.fill
    assert canvas.node_item("fc1").fill is None and canvas.node_item("fc1").metric == ""
    assert canvas._legend.isVisible()
    canvas.set_node_metrics({"conv1": {"mem_bytes": 3 << 20}}, color_by="memory")
    assert canvas.node_item("conv1").metric == "3.0 MiB"
    canvas.clear_metrics()
    assert hi.fill is None and hi.metric == "" and not canvas._legend.isVisible()


def test_resnet18_fits_legibly(editor):
    model, canvas, _ = editor(engine.load_preset("resnet18"), size=(1100, 800))
    canvas.fit_view()
    assert len([i for i in canvas.scene().items() if isinstance(i, NodeItem)]) == 70  # 69 + input
    visible = canvas.mapToScene(canvas.viewport().rect()).boundingRect()
    assert visible.contains(canvas.scene().itemsBoundingRect())
    assert canvas.transform().m11() >= 0.55  # 9.5 pt ids stay >= 7 px tall


def test_selection_follows_the_model_and_back(editor):
    model, canvas, _ = editor(engine.load_preset("lenet5"))
    model.select("pool2")
    assert canvas.node_item("pool2").isSelected()
    canvas.scene().clearSelection()
    canvas.node_item("fc2").setSelected(True)
    assert model.selected() == "fc2"
