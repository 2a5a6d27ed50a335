"""Palette, property panel and problems list wired to one EditorModel."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

import engine
from app.editor import KIND_MIME, CanvasView, EditorModel, PaletteWidget, ProblemsList, PropertyPanel


@pytest.fixture
def lenet(qapp):
    return EditorModel(engine.load_preset("lenet5"))


@pytest.fixture
def panel(qtbot, lenet):
    p = PropertyPanel(lenet)
    qtbot.addWidget(p)
    p.show()
    return p


def test_palette_groups_every_kind_by_family(qtbot):
    pal = PaletteWidget()
    qtbot.addWidget(pal)
    assert pal.families() == list(engine.FAMILIES)
    for name, kind in engine.kinds().items():
        item = pal.item_for(name)
        assert item is not None, name
        assert item.parent().data(0, Qt.UserRole + 2) == kind.family
        assert kind.help in item.toolTip(0)
        assert not item.icon(0).isNull(), f"no icon for {name}"
        mime = pal.tree.mimeData([item])
        assert bytes(mime.data(KIND_MIME)).decode() == name
    assert pal.item_for("input").parent().data(0, Qt.UserRole + 2) == "input"


def test_palette_double_click_appends_and_input_selects(qtbot, lenet):
    pal = PaletteWidget(lenet)
    qtbot.addWidget(pal)
    pal.tree.itemDoubleClicked.emit(pal.item_for("softmax"), 0)
    assert lenet.spec().nodes[-1].kind == "softmax"
    pal.tree.itemDoubleClicked.emit(pal.item_for("input"), 0)
    assert lenet.selected() == "input"


def test_palette_filter_hides_other_kinds(qtbot):
    pal = PaletteWidget()
    qtbot.addWidget(pal)
    QTest.keyClicks(pal.filter, "pool")
    assert not pal.item_for("maxpool2d").isHidden()
    assert pal.item_for("relu").isHidden()
    pal.filter.clear()
    assert not pal.item_for("relu").isHidden()


def test_input_form_takes_its_bounds_from_the_engine(panel, lenet):
    lenet.select("input")
    assert set(panel.editors) == set(engine.INPUT_FIELDS)
    for name, (lo, hi) in engine.INPUT_FIELDS.items():
        spin = panel.editors[name].spin
        assert (spin.minimum(), spin.maximum()) == (lo, hi), name


def test_form_is_generated_from_the_schema(panel, lenet):
    lenet.select("conv2")
    kind = engine.get_kind("conv2d")
    assert set(panel.editors) == {p.name for p in kind.params}
    spin = panel.editors["out_channels"].spin
    assert (spin.minimum(), spin.maximum()) == (1, 65536)
    assert spin.value() == 16
    assert panel.editors["bias"].box.isChecked()
    assert panel.editors["padding"].combo.currentText() == "number"
    assert panel.id_edit.text() == "conv2"
    assert "output" in panel.facts.text() and "16x10x10" in panel.facts.text()


def test_property_edit_revalidates_and_marks_the_node(qtbot, lenet, panel):
    canvas = CanvasView(lenet)
    problems = ProblemsList(lenet)
    qtbot.addWidget(canvas)
    qtbot.addWidget(problems)
    lenet.select("conv2")
    assert problems.can_run() == (True, "")
    panel.editors["kernel"].h.setValue(20)
    assert lenet.spec().node("conv2").params["kernel"] == 20
    ok, reason = problems.can_run()
    assert not ok and reason.startswith("conv2: kernel 20 is larger")
    assert any("kernel 20" in p for p in canvas.node_item("conv2").problems)
    assert "kernel 20" in panel.problems.text() and panel.problems.isVisibleTo(panel)
    rows = [problems.item(i).text() for i in range(problems.count())]
    assert any(r.startswith("conv2: kernel 20") for r in rows)
    # clicking the problem selects its node
    lenet.select("fc1")
    item = next(problems.item(i) for i in range(problems.count()) if problems.item(i).text().startswith("conv2"))
    problems.itemClicked.emit(item)
    assert lenet.selected() == "conv2"
    lenet.undo()
    assert problems.can_run() == (True, "")


def test_pair_choice_float_and_bool_editors(panel, lenet):
    lenet.select("conv1")
    kernel = panel.editors["kernel"]
    kernel.split.setChecked(True)
    kernel.w.setValue(3)
    assert lenet.spec().node("conv1").params["kernel"] == [5, 3]
    padding = panel.editors["padding"]
    padding.combo.setCurrentIndex(padding.combo.findText("same"))
    assert lenet.spec().node("conv1").params["padding"] == "same"
    assert not padding.spin.isEnabled()
    panel.editors["bias"].box.setChecked(False)
    assert lenet.spec().node("conv1").params["bias"] is False
    assert lenet.validation().ok
    lenet.add_node("dropout", after="fc1")
    lenet.select("drop1")
    panel.editors["p"].spin.setValue(0.25)
    assert lenet.spec().node("drop1").params["p"] == 0.25


def test_reset_returns_a_param_to_its_default(qtbot, panel, lenet):
    lenet.select("conv1")
    qtbot.waitUntil(lambda: panel._resets["padding"].isVisibleTo(panel), timeout=2000)  # conv1 pads by 2
    assert not panel._resets["stride"].isVisibleTo(panel)  # not set: nothing to reset

    panel._resets["padding"].click()
    assert "padding" not in lenet.spec().node("conv1").params
    assert panel.editors["padding"].spin.value() == 0
    assert not panel._resets["padding"].isVisibleTo(panel)


def test_renaming_through_the_id_field(panel, lenet):
    lenet.select("fc3")
    panel.id_edit.setText("logits")
    panel.id_edit.editingFinished.emit()
    assert lenet.spec().node("logits") is not None
    assert lenet.selected() == "logits"
    panel.id_edit.setText("fc1")
    panel.id_edit.editingFinished.emit()
    assert panel.id_error.isVisibleTo(panel) and "already used" in panel.id_error.text()
    assert lenet.spec().node("logits") is not None


def test_input_item_edits_the_input_spec(panel, lenet):
    lenet.select("input")
    assert set(panel.editors) == {"channels", "height", "width", "classes"}
    assert panel.editors["height"].spin.value() == 28
    panel.editors["classes"].spin.setValue(5)
    assert lenet.spec().input.classes == 5
    v = lenet.validation()
    assert not v.ok and v.node_problems("fc3")
    lenet.undo()
    assert panel.editors["classes"].spin.value() == 10


def test_panel_follows_undo_of_a_deleted_node(panel, lenet):
    lenet.select("relu2")
    lenet.remove_nodes(["relu2"])
    assert panel.node_id() == "" and panel.empty.isVisibleTo(panel)
    lenet.undo()
    lenet.select("relu2")
    assert panel.node_id() == "relu2"


def test_editor_preview_entry_point_builds_and_shows_the_summary(qtbot, lenet):
    """``python -m app.editor`` builds palette, canvas, problems and properties with the batch summary."""
    from PySide6.QtWidgets import QLabel

    from app.editor.__main__ import _make

    root = _make(lenet)
    qtbot.addWidget(root)
    texts = [w.text() for w in root.findChildren(QLabel)]
    assert any("params 61.7 k" in t and "activations" in t for t in texts), texts
