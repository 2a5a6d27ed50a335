"""EditorModel: edits, undo/redo, naming, clipboard, validation of partly broken nets, layout."""
from __future__ import annotations

import subprocess
import sys

import pytest

import engine
from app.editor import EditorModel
from app.editor.layout import NODE_H, NODE_W, layered_layout


def chain(model):
    spec = model.spec_view()
    return [(n.id, n.kind, spec.inputs_of(i)) for i, n in enumerate(spec.nodes)]


@pytest.fixture
def lenet(qapp):
    return EditorModel(engine.load_preset("lenet5"))


def test_importing_the_editor_does_not_import_torch():
    code = "import sys, app.editor; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": ""}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_appending_builds_a_chain_with_auto_names(qapp):
    m = EditorModel()
    assert not m.validation().ok
    for kind in ("conv2d", "relu", "conv2d", "flatten", "linear"):
        m.add_node(kind)
    assert [n.id for n in m.spec().nodes] == ["conv1", "relu1", "conv2", "flatten1", "fc1"]
    assert all(n.inputs is None for n in m.spec().nodes)  # a plain chain stays a plain list
    v = m.validation()
    assert v.ok, v.problems
    assert v.shapes["conv1"] == (16, 26, 26)
    assert m.selected() == "fc1"


def test_names_continue_the_highest_number(lenet):
    assert lenet.add_node("conv2d") == "conv3"
    assert lenet.add_node("relu") == "relu5"
    assert lenet.add_node("linear") == "fc4"


def test_insert_on_edge_and_after_node(lenet):
    nid = lenet.add_node("dropout", insert_on_edge=("conv1", "relu1"))
    assert chain(lenet)[:3] == [("conv1", "conv2d", ["input"]), (nid, "dropout", ["conv1"]),
                                ("relu1", "relu", [nid])]
    bn = lenet.add_node("batchnorm2d", after="conv2")
    ids = [n.id for n in lenet.spec().nodes]
    assert ids[ids.index("conv2") + 1] == bn
    assert lenet.spec().inputs_of(ids.index("relu2")) == [bn]
    assert lenet.validation().ok


def test_remove_bridges_the_gap(lenet):
    lenet.remove_nodes(["relu1", "pool1"])
    spec = lenet.spec()
    assert [n.id for n in spec.nodes][:2] == ["conv1", "conv2"]
    assert spec.inputs_of(1) == ["conv1"]
    assert lenet.validation().ok


def residual_model():
    m = EditorModel()
    m.set_input_spec(channels=3, height=8, width=8, classes=4)
    m.add_node("conv2d", params={"out_channels": 8, "padding": 1})
    m.add_node("relu")
    m.add_node("conv2d", params={"out_channels": 8, "padding": 1})
    m.add_node("add")
    m.add_node("flatten")
    m.add_node("linear", params={"out_features": 4})
    return m


def test_connect_a_skip_into_add_and_refuse_cycles(qapp):
    m = residual_model()
    v = m.validation()
    assert not v.ok and v.node_problems("add1"), "add with one input must be flagged"
    assert m.connect("relu1", "add1") is None
    assert m.spec().node("add1").inputs == ["conv2", "relu1"]
    assert m.validation().ok
    assert "cycle" in m.connect("add1", "conv1")
    assert m.connect("conv1", "conv1") is not None
    assert m.connect("fc1", "input") is not None


def test_undo_redo_restores_specs_exactly(qapp):
    m = EditorModel(engine.load_preset("resnet18"))
    history = [engine.dumps(m.spec())]
    m.add_node("dropout", insert_on_edge=("layer1_0_add", "layer1_0_relu2"))
    m.set_param("layer2_0_conv1", "out_channels", 96)
    m.remove_nodes(["layer3_0_relu1"])
    m.rename_node("fc", "classifier")
    m.set_input_spec(height=160, width=160)
    m.connect("maxpool", "layer1_1_add")
    history.append(engine.dumps(m.spec()))
    assert m.is_dirty()
    steps = m.undo_stack().index()
    for _ in range(steps):
        m.undo()
    assert engine.dumps(m.spec()) == history[0]
    assert not m.is_dirty()
    for _ in range(steps):
        m.redo()
    assert engine.dumps(m.spec()) == history[1]


def test_consecutive_edits_of_one_field_are_one_undo_step(lenet):
    start = lenet.undo_stack().index()
    for n in (8, 12, 20):
        lenet.set_param("conv1", "out_channels", n)
    assert lenet.undo_stack().index() == start + 1
    lenet.set_param("conv1", "kernel", 3)
    assert lenet.undo_stack().index() == start + 2
    lenet.undo()
    lenet.undo()
    assert lenet.spec().node("conv1").params["out_channels"] == 6


def test_rename_moves_references_and_refuses_bad_ids(qapp):
    m = EditorModel(engine.load_preset("resnet18"))
    m.select("maxpool")
    assert m.rename_node("maxpool", "pool") is None
    spec = m.spec()
    assert spec.node("layer1_0_conv1").inputs == ["pool"]
    assert "pool" in spec.node("layer1_0_add").inputs
    assert m.selected() == "pool"
    assert "pool" in m.positions()
    assert m.rename_node("pool", "conv1") is not None   # taken
    assert m.rename_node("pool", "2x") is not None      # not an identifier
    assert m.rename_node("pool", "input") is not None   # reserved
    assert m.validation().ok


def test_broken_net_keeps_shapes_of_its_valid_part(lenet):
    lenet.set_param("conv2", "kernel", 20)
    v = lenet.validation()
    assert not v.ok
    assert any("kernel 20 is larger" in msg for msg in v.node_problems("conv2"))
    assert v.shapes["pool1"] == (6, 14, 14)
    assert "conv2" not in v.shapes and "fc1" not in v.shapes
    assert v.reason.startswith("conv2: kernel 20")
    assert not lenet.can_run()[0]


def test_structural_and_shape_problems_are_reported_together(lenet):
    lenet.set_param("conv2", "kernel", 20)
    lenet.add_node("add", after="fc1")   # an add with a single input: a structural problem
    v = lenet.validation()
    nodes = {p.node for p in v.problems}
    assert {"conv2", "add1"} <= nodes
    assert v.shapes["pool1"] == (6, 14, 14)


def test_input_spec_edit_revalidates(lenet):
    lenet.set_input_spec(classes=5)
    v = lenet.validation()
    assert not v.ok and v.node_problems("fc3")
    lenet.set_param("fc3", "out_features", 5)
    assert lenet.validation().ok


def test_input_fields_and_ids_follow_the_engine_rules(lenet):
    with pytest.raises(ValueError, match="unknown input field"):
        lenet.set_input_spec(depth=3)
    # the editor asks the engine; the engine's loader gives the same verdict on a file
    assert lenet.rename_node("conv1", "9lives") == engine.id_problem("9lives", ())
    assert lenet.rename_node("conv1", "input") == engine.id_problem("input", ())
    assert "already used" in lenet.rename_node("conv1", "conv2")
    bad = lenet.spec().to_dict()
    bad["nodes"][0]["id"] = "9lives"
    with pytest.raises(engine.SpecError) as e:
        engine.from_dict(bad)
    assert engine.id_problem("9lives", ()) in [p.message for p in e.value.problems]


def test_summary_counts_lenet(lenet):
    s = lenet.summary(batch_size=2, precision="fp16")
    assert s.complete
    assert s.params == 61706  # LeNet-5 (padded conv1): 156 + 2416 + 48120 + 10164 + 850
    info = lenet.validation().info
    assert s.activation_bytes == 2 * 2 * sum(layer.out_numel for layer in info.layers)
    assert s.flops == 2 * s.flops_per_sample > 0
    assert s.input_bytes == 2 * 2 * 28 * 28
    lenet.set_param("conv2", "kernel", 20)
    partial = lenet.summary(2, "fp16")
    assert not partial.complete and 0 < partial.params < s.params


def test_copy_paste_renames_and_wires(lenet):
    assert lenet.copy_nodes(["conv2", "relu2"])
    new = lenet.paste(anchor="relu2")
    assert new == ["conv3", "relu5"]
    spec = lenet.spec()
    ids = [n.id for n in spec.nodes]
    assert ids[ids.index("relu2") + 1:ids.index("relu2") + 3] == ["conv3", "relu5"]
    assert spec.inputs_of(ids.index("conv3")) == ["relu2"]
    assert spec.inputs_of(ids.index("pool2")) == ["relu5"]
    assert spec.node("conv3").params == spec.node("conv2").params
    assert lenet.validation().ok
    assert lenet.validation().shapes["conv3"] == (16, 6, 6)


def test_paste_ignores_foreign_clipboard(lenet):
    from PySide6.QtGui import QGuiApplication

    QGuiApplication.clipboard().setText("hello")
    before = engine.dumps(lenet.spec())
    assert lenet.paste() == []
    assert engine.dumps(lenet.spec()) == before


def test_duplicate_inserts_a_copy_after(lenet):
    assert lenet.duplicate(["relu1"]) == ["relu5"]
    spec = lenet.spec()
    assert spec.inputs_of([n.id for n in spec.nodes].index("pool1")) == ["relu5"]
    assert lenet.validation().ok


def test_dirty_follows_the_undo_stack(lenet):
    seen = []
    lenet.dirty_changed.connect(seen.append)
    lenet.set_param("fc1", "out_features", 100)
    assert lenet.is_dirty() and seen[-1] is True
    lenet.undo()
    assert not lenet.is_dirty() and seen[-1] is False
    lenet.set_param("fc1", "out_features", 100)
    lenet.mark_clean()
    assert not lenet.is_dirty()


def test_moves_are_undoable_and_switch_off_auto_layout(lenet):
    x, y = lenet.positions()["conv2"]
    lenet.move_nodes({"conv2": (x + 300, y + 10)})
    assert lenet.positions()["conv2"] == (x + 300, y + 10)
    lenet.add_node("dropout", pos=(900.0, 900.0))
    assert lenet.positions()["conv2"] == (x + 300, y + 10)  # hand placement kept
    assert lenet.positions()["drop1"] == (900.0, 900.0)
    lenet.undo()
    lenet.undo()
    assert lenet.positions()["conv2"] == (x, y)


@pytest.mark.parametrize("name", engine.preset_names())
def test_presets_load_validate_and_lay_out_without_overlap(qapp, name):
    m = EditorModel(engine.load_preset(name))
    assert m.validation().ok, m.validation().problems
    assert not m.is_dirty()
    pos = m.positions()
    assert set(pos) == {"input"} | {n.id for n in m.spec().nodes}
    boxes = sorted(pos.values())
    for i, (x1, y1) in enumerate(boxes):
        for x2, y2 in boxes[i + 1:]:
            assert abs(x1 - x2) >= NODE_W or abs(y1 - y2) >= NODE_H, f"{name}: overlapping nodes"


def test_layout_wraps_long_nets_into_lanes():
    spec = engine.load_preset("resnet18")
    tall = layered_layout(spec, view=(400, 4000))
    wide = layered_layout(spec, view=(1100, 800))
    height = lambda pos: max(y for _, y in pos.values()) + NODE_H  # noqa: E731
    width = lambda pos: max(x for x, _ in pos.values()) + NODE_W  # noqa: E731
    assert height(wide) < height(tall) / 2
    assert width(wide) / height(wide) > 0.8


@pytest.mark.parametrize("broken", [False, True])
def test_each_edit_analyzes_the_net_once(qapp, monkeypatch, broken):
    m = EditorModel(engine.load_preset("resnet18"))
    m.validation()
    if broken:
        m.set_param("layer4_1_conv1", "kernel", 99)  # downstream of the edit below
        assert not m.validation().ok
    calls = []
    real = engine.analyze

    def counting(spec, partial=False):
        calls.append(partial)
        return real(spec, partial=partial)

    monkeypatch.setattr(engine, "analyze", counting)
    m.set_param("layer3_0_conv1", "out_channels", 200)
    v = m.validation()
    assert calls == [True]
    assert v.ok is not broken and v.shapes["layer3_0_bn1"] == (200, 14, 14)
    assert m.validation() is v and calls == [True]  # nothing changed since: no new analysis
    m.undo()
    m.validation()
    assert calls == [True, True]
