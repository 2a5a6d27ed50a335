"""The window's layout at ordinary sizes: every dock and view brought to the front at 1280×800 (and
1920×1080), after a real run has filled the views' headers, with default and user-squeezed docks,
must leave every visible widget at least its minimum size hint; a clipping layout is never saved and
a saved one that clips is dropped at start-up."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QLabel, QWidget

from app.window_layout import squeezed_widgets

RUN_TIMEOUT = 180_000


def _settle(qtbot, ms: int = 80) -> None:
    qtbot.wait(ms)


def _problems_with_each_dock_in_front(qtbot, window) -> dict[str, list[str]]:
    out = {}
    for name, dock in window.docks.items():
        dock.raise_()
        _settle(qtbot)
        assert dock.isVisible() and not dock.visibleRegion().isEmpty(), name
        out[name] = window.layout_problems()
    return out


def _run(qtbot, window, steps: int = 3) -> None:
    window.run_panel.apply(steps=steps, batch_size=8, dataset="synthetic", device="cpu")
    window.run_panel.set_feature_layer("conv1")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT) as blocker:
        assert window.start_run(warmup=1)
    assert blocker.args[0] == "completed", blocker.args


def test_squeezed_widgets_reports_a_label_below_its_minimum(qtbot):
    from PySide6.QtWidgets import QVBoxLayout

    root = QWidget()
    lay = QVBoxLayout(root)
    label = QLabel("a long line of text that needs some room " * 3)
    label.setObjectName("long")
    lay.addWidget(label)
    qtbot.addWidget(root)
    root.show()
    root.resize(root.minimumSizeHint())
    _settle(qtbot)
    assert squeezed_widgets(root) == []
    root.setFixedWidth(80)  # a parent forced narrower than its layout's minimum squeezes the label
    _settle(qtbot)
    problems = squeezed_widgets(root)
    assert any("QLabel 'long'" in p for p in problems), problems


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_every_view_fits_at_ordinary_sizes_after_a_run(qtbot, window, size):
    window.resize(*size)
    _settle(qtbot, 200)
    _run(qtbot, window)
    # a long header (a held-out test accuracy joins it) must elide, not widen the dock over its neighbour
    window.training_view.stats.setText("step 1234 · loss 2.3026 · accuracy 10.0 % · test accuracy 9.8 % · "
                                       "12,345 samples/s")
    _settle(qtbot)
    problems = _problems_with_each_dock_in_front(qtbot, window)
    assert all(not p for p in problems.values()), problems
    training, features = window.docks["training"], window.docks["features"]
    assert training.geometry().right() < features.geometry().left()
    assert window.training_view.stats.toolTip().endswith("samples/s")
    # Memory: two plots with room each, the legend a line above them, not a box over the curves
    window.docks["memory"].raise_()
    _settle(qtbot)
    assert window.memory_view.glw.width() >= 240
    assert window.memory_view.legend.isVisible() and "RSS" in window.memory_view.legend.text()
    # Power & energy: every panel reachable (reflowed to the width, scrolled vertically)
    window.docks["power"].raise_()
    _settle(qtbot)
    pv = window.power_view
    assert pv.columns() * 230 <= pv.scroll.viewport().width() or pv.columns() == 1
    assert pv.glw.width() <= pv.scroll.viewport().width()
    # Layer table: the measured times are the first columns after the name, in view without scrolling
    window.docks["table"].raise_()
    _settle(qtbot)
    table = window.table_view.table
    header = [table.model().headerData(c, Qt.Horizontal) for c in range(table.model().columnCount())]
    for title in ("Fwd ms", "Bwd ms"):
        c = header.index(title)
        assert table.columnViewportPosition(c) + table.columnWidth(c) <= table.viewport().width(), title


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_user_squeezed_docks_keep_their_minimum_sizes(qtbot, window, size):
    window.resize(*size)
    _settle(qtbot, 200)
    _run(qtbot, window)
    d = window.docks
    window.resizeDocks([d["run"], d["palette"]], [40, 40], Qt.Horizontal)
    window.resizeDocks([d["features"], d["training"], d["time"]], [30, 30, 30], Qt.Horizontal)
    window.resizeDocks([d["time"]], [40], Qt.Vertical)
    _settle(qtbot, 200)
    problems = _problems_with_each_dock_in_front(qtbot, window)
    assert all(not p for p in problems.values()), problems
    assert d["features"].width() >= 240


def test_opening_and_closing_a_session_leaves_the_run_dock_whole(qtbot, window):
    window.resize(1280, 800)
    _settle(qtbot, 200)
    _run(qtbot, window)
    width = window.docks["run"].width()
    assert window.open_session(str(window.sessions.last_session))
    _settle(qtbot, 200)
    assert window.layout_problems() == []
    window.close_session()
    _settle(qtbot, 200)
    assert window.layout_problems() == []
    assert window.docks["run"].width() >= min(width, window.run_panel.minimumSizeHint().width())


def test_the_window_fits_the_screen(qtbot, window):
    from app.main_window import MainWindow
    from app.window_layout import DEFAULT_SIZE

    free = window.screen().availableGeometry()
    fresh = MainWindow(window.settings)
    qtbot.addWidget(fresh)
    assert fresh.width() <= min(DEFAULT_SIZE[0], free.width())
    assert fresh.height() <= min(DEFAULT_SIZE[1], free.height())
    fresh.shutdown()


def test_a_clipping_layout_is_not_saved_and_a_clipping_saved_one_is_dropped(qtbot, window, monkeypatch):
    from app.main_window import MainWindow

    window.resize(1280, 800)
    _settle(qtbot, 200)
    window.settings.save_window(window.saveGeometry(), window.saveState())
    assert window.settings.window_state() is not None
    clipped = ["QLabel 'Profile every' in Run: 60x20 < minimum 90x20"]
    monkeypatch.setattr(window, "layout_problems", lambda: clipped)
    window.close()
    assert window.settings.window_state() is None  # the clipped layout was not kept, nor an older one

    # a saved state that clips a widget once every view is built is replaced by the default layout
    window.settings.save_window(window.saveGeometry(), window.saveState())
    calls = []

    def problems_once(self):
        calls.append(1)
        return clipped if len(calls) == 1 else squeezed_widgets(self)

    monkeypatch.setattr(MainWindow, "layout_problems", problems_once)
    second = MainWindow(window.settings)
    qtbot.addWidget(second)
    assert second._restored
    second.show()
    qtbot.waitUntil(lambda: second.is_ready, timeout=120_000)
    assert calls and not second._restored
    assert any("using the default layout" in text for _level, text in second.log_view.lines)
    _settle(qtbot, 200)
    assert squeezed_widgets(second) == []
    second.shutdown()


@pytest.fixture
def canvas_of(qtbot):
    from app.editor import CanvasView, EditorModel

    def make(spec, size):
        model = EditorModel(spec)
        canvas = CanvasView(model)
        qtbot.addWidget(canvas)
        canvas.resize(*size)
        canvas.show()
        qtbot.waitExposed(canvas)
        model.validation()
        canvas.fit_view()
        _settle(qtbot)
        return model, canvas
    return make


def _viewport_rect(canvas):
    return canvas.viewport().geometry()


def test_a_big_net_stays_readable_with_a_minimap_and_legends_beside_the_nodes(qtbot, canvas_of):
    import engine
    from app.editor.canvas import READABLE_SCALE

    # the canvas of the main window at 1280x800 is about 700x290
    model, canvas = canvas_of(engine.load_preset("resnet18"), (700, 290))
    assert canvas.transform().m11() >= READABLE_SCALE  # node names stay readable
    assert not canvas.net_fits() and canvas._minimap.isVisible()
    canvas.set_node_metrics({nid: {"time_ms": float(i + 1)} for i, nid in
                             enumerate(n.id for n in model.spec_view().nodes)}, color_by="time")
    _settle(qtbot)
    vp = _viewport_rect(canvas)
    for overlay in (canvas._legend, canvas._minimap):
        assert overlay.isVisible() and not overlay.geometry().intersects(vp)  # beside the nodes, not on them
    # a double-click on the minimap zooms to the nearest node at 100 % and selects it
    last = model.spec_view().nodes[-1].id
    centre = canvas.node_item(last).sceneBoundingRect().center()
    s, ox, oy = canvas._minimap._transform()
    qtbot.mouseDClick(canvas._minimap, Qt.LeftButton, pos=QPoint(int(centre.x() * s + ox), int(centre.y() * s + oy)))
    _settle(qtbot)
    assert canvas.transform().m11() == 1.0 and model.selected() == last
    seen = canvas.mapToScene(canvas.viewport().rect()).boundingRect()
    assert seen.contains(canvas.node_item(last).sceneBoundingRect())


def test_small_net_fits_whole_without_minimap(qtbot, canvas_of):
    import engine

    _model, canvas = canvas_of(engine.load_preset("lenet5"), (700, 400))
    assert canvas.net_fits() and not canvas._minimap.isVisible()


def test_empty_net_hint_is_below_the_input_node(qtbot, canvas_of):
    from engine import INPUT_ID

    model, canvas = canvas_of(None, (700, 290))
    if model.spec_view().nodes:
        model.remove_nodes([n.id for n in model.spec_view().nodes])
    _settle(qtbot)
    assert canvas._hint.isVisible()
    item = canvas.node_item(INPUT_ID)
    node = canvas.mapFromScene(item.sceneBoundingRect()).boundingRect().translated(_viewport_rect(canvas).topLeft())
    assert not canvas._hint.geometry().intersects(node)
    text = canvas._hint.fontMetrics().boundingRect(canvas._hint.text().splitlines()[0])
    assert canvas._hint.geometry().height() >= text.height()


def test_properties_panel_fits_a_narrow_dock_for_every_kind_and_names_the_net(qtbot):
    import engine
    from app.editor import EditorModel, PropertyPanel

    spec = engine.load_preset("resnet18")
    extra = engine.load_preset("alexnet")
    model = EditorModel(spec)
    panel = PropertyPanel(model)
    qtbot.addWidget(panel)
    panel.resize(230, 420)  # the Properties dock's width in the default layout at 1280x800
    panel.show()
    qtbot.waitExposed(panel)
    kinds = {}
    for net in (spec, extra):
        for n in net.nodes:
            kinds.setdefault(n.kind, n.id)
    scroll = panel.findChild(QWidget, "qt_scrollarea_viewport")
    for kind, nid in kinds.items():
        if model.node(nid) is None:  # an alexnet-only kind: add one to this net
            nid = model.add_node(kind)
        model.select(nid)
        _settle(qtbot, 30)
        assert squeezed_widgets(panel) == [], kind
        inner = scroll.findChild(QWidget)
        assert inner.width() <= scroll.width(), kind  # nothing runs off the right edge
    # with nothing selected the panel names the net: the spec's "name", one undo step
    model.select("")
    _settle(qtbot, 30)
    assert panel.name_edit.isVisible() and panel.name_edit.text() == spec.name
    panel.name_edit.setText("my resnet")
    panel.name_edit.editingFinished.emit()
    assert model.spec_view().name == "my resnet"
    model.undo()
    assert model.spec_view().name == spec.name
    assert panel.name_edit.text() == spec.name
