"""File ▸ Export net as PyTorch… / ONNX… and File ▸ Import PyTorch model… in the window (offscreen)."""
from __future__ import annotations

import subprocess
import sys

import pytest

import engine


def _save_dialog_returns(monkeypatch, path):
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(path), "")))


def _export(window, qtbot, action):
    with qtbot.waitSignal(window.nets.exported, timeout=120_000) as sig:
        action.trigger()
    return sig.args


def test_export_menu_writes_pytorch_code_that_runs(window, qtbot, monkeypatch, tmp_path):
    window.load_preset("lenet5")
    out = tmp_path / "lenet5.py"
    _save_dialog_returns(monkeypatch, out)
    path, error = _export(window, qtbot, window.act_export_pytorch)
    assert error == "" and path == str(out)
    r = subprocess.run([sys.executable, str(out)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "61,706 parameters" in r.stdout  # lenet5's count, from the exported module itself
    # the net edited on the canvas is what is exported, not the preset file
    window.model.set_param("fc1", "out_features", 100)
    _save_dialog_returns(monkeypatch, tmp_path / "edited.py")
    _export(window, qtbot, window.act_export_pytorch)
    assert "nn.Linear(400, 100)" in (tmp_path / "edited.py").read_text()


def test_export_never_replaces_a_file_the_dialog_did_not_ask_about(window, qtbot, monkeypatch, tmp_path):
    mine = tmp_path / "mine.py"
    mine.write_text("# my own code")
    _save_dialog_returns(monkeypatch, tmp_path / "mine")  # typed without the suffix: .py is added
    path, error = _export(window, qtbot, window.act_export_pytorch)
    assert path == str(mine) and "exists" in error and "\n" not in error
    assert mine.read_text() == "# my own code"
    assert window.banner.isVisible() and "exists" in window.banner_text.text()


def test_export_menu_writes_onnx_that_passes_the_checker(window, qtbot, monkeypatch, tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx is an optional extra (pip install -e '.[onnx]')")
    import onnx.numpy_helper
    import torch

    from engine.net.checkpoint import save_checkpoint

    out = tmp_path / "lenet5.onnx"
    _save_dialog_returns(monkeypatch, out)
    path, error = _export(window, qtbot, window.act_export_onnx)
    assert error == ""
    onnx.checker.check_model(onnx.load(path))
    # the last run's checkpoint goes in when it fits the net on the canvas
    spec = window.model.spec()
    ckpt = save_checkpoint(engine.build_model(spec), spec, tmp_path / "ckpt")
    window.weights.last_checkpoint = str(ckpt)
    _save_dialog_returns(monkeypatch, tmp_path / "trained.onnx")
    path, error = _export(window, qtbot, window.act_export_onnx)
    assert error == ""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    from safetensors.torch import load_file

    assert torch.equal(torch.from_numpy(inits["fc3.weight"].copy()), load_file(str(ckpt))["fc3.weight"])
    # another net's checkpoint does not fit: the export still goes, with the initial weights
    window.model.set_param("fc1", "out_features", 60)
    _save_dialog_returns(monkeypatch, tmp_path / "edited.onnx")
    path, error = _export(window, qtbot, window.act_export_onnx)
    assert error == "" and (tmp_path / "edited.onnx").is_file()


def test_export_of_an_invalid_net_says_why_in_one_line(window, qtbot, monkeypatch, tmp_path):
    window.model.set_param("conv1", "kernel", 200)  # larger than its 28x28 input
    _save_dialog_returns(monkeypatch, tmp_path / "bad.py")
    with qtbot.waitSignal(window.nets.exported, timeout=10_000) as sig:
        window.act_export_pytorch.trigger()
    assert sig.args[1] and "\n" not in sig.args[1]
    assert not (tmp_path / "bad.py").exists()
    assert "Cannot export" in window.banner_text.text()


USER_MODEL = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class SmallRes(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = Block(8)
        self.side = nn.Conv2d(8, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = self.block(F.relu(self.stem(x)))
        x = torch.cat([x, self.side(x)], dim=1)
        x = F.hardswish(x) * 0.5
        return self.fc(self.pool(x).flatten(1))


def make_model():
    return SmallRes()
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "usermodel.py"
    path.write_text(USER_MODEL)
    return path


def _import(window, qtbot, source, shape=(3, 16, 16), classes=10):
    with qtbot.waitSignal(window.nets.imported, timeout=120_000) as sig:
        assert window.nets.import_model(source, shape, classes) is not None
    return sig.args[0]


def test_import_draws_the_traced_graph_with_opaque_ops_read_only(window, qtbot, user_file):
    from app.editor import opaque_op

    error = _import(window, qtbot, f"{user_file}:make_model")
    assert error == ""
    spec = window.model.spec_view()
    # stem, relu, conv1, bn1, relu, conv2, bn2, add, relu, side, cat, hardswish, mul, pool, flatten, fc
    assert len(spec.nodes) == 16
    kinds = [n.kind for n in spec.nodes]
    assert kinds.count("conv2d") == 4 and "add" in kinds and "concat" in kinds
    opaque = {n.id: opaque_op(n) for n in spec.nodes if opaque_op(n) is not None}
    assert sorted(opaque.values()) == ["F.hardswish", "operator.mul"]
    canvas = window.canvas
    assert len([k for k in canvas._nodes if k != engine.INPUT_ID]) == 16
    for nid, op in opaque.items():
        item = canvas._nodes[nid]
        assert item.opaque_op == op and item.params_text == op  # the op name is drawn on the node
        assert "read-only" in item.toolTip()
    # an editable node gets its schema form; an opaque one only its op, nothing to edit
    conv = next(n.id for n in spec.nodes if n.kind == "conv2d")
    window.model.select(conv)
    assert "out_channels" in window.properties.editors
    nid = next(iter(opaque))
    window.model.select(nid)
    props = window.properties
    assert props.editors == {} and props.id_edit.isReadOnly()
    assert "read-only" in props.kind_label.text() and props.op_label.text() == opaque[nid]
    # editable nodes really are: a parameter edit lands in the net
    window.model.set_param(conv, "out_channels", 8)
    assert window.model.node(conv).params["out_channels"] == 8


def test_imported_net_with_opaque_ops_cannot_be_saved_and_says_why(window, qtbot, user_file, tmp_path):
    assert _import(window, qtbot, f"{user_file}:make_model") == ""
    target = tmp_path / "imported.json"
    assert window.nets.save_to(str(target)) is False
    assert not target.exists()
    text = window.banner_text.text()
    assert "cannot save" in text and "F.hardswish" in text and "\n" not in text
    # nor exported as LayerScope code: one line naming the node
    with qtbot.waitSignal(window.nets.exported, timeout=60_000) as sig:
        window.nets.export_to("pytorch", str(tmp_path / "imported.py"))
    assert "no PyTorch code form" in sig.args[1] and "\n" not in sig.args[1]
    assert not (tmp_path / "imported.py").exists()


def test_fully_mapped_import_saves_as_a_layerscope_net(window, qtbot, tmp_path):
    path = tmp_path / "plain.py"
    path.write_text(USER_MODEL.replace("        x = F.hardswish(x) * 0.5\n", ""))
    assert _import(window, qtbot, f"{path}:make_model") == ""
    target = tmp_path / "plain.json"
    assert window.nets.save_to(str(target)) is True
    saved = engine.load(target)
    assert [n.kind for n in saved.nodes] == [n.kind for n in window.model.spec_view().nodes]
    import runpy

    module = runpy.run_path(str(path))["make_model"]()
    assert engine.analyze(saved).params == sum(p.numel() for p in module.parameters())


def test_import_of_a_broken_file_is_one_line(window, qtbot, tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("def make_model(:\n")
    before = engine.dumps(window.model.spec())
    error = _import(window, qtbot, f"{bad}:make_model")
    assert error and "\n" not in error
    assert engine.dumps(window.model.spec()) == before  # the canvas keeps its net


def test_a_run_of_an_imported_model_runs_it_from_its_source(window, qtbot, user_file):
    """Start from the app: the run's config carries the import source (RunConfig.model), so the
    user's own modules run, and every node of the imported graph gets forward times."""
    source = f"{user_file}:make_model"
    assert _import(window, qtbot, source, shape=(3, 8, 8)) == ""
    assert window.nets.run_overrides() == {"model": source}
    window.run_panel.apply(steps=2, batch_size=4, dataset="synthetic", device="cpu")
    with qtbot.waitSignal(window.run_finished, timeout=180_000) as sig:
        assert window.start_run(warmup=0)
    assert sig.args[0] == "completed", sig.args
    session = engine.open_session(window.sessions.last_session)
    assert session.info.config["model"] == source
    times = session.layer_times()
    assert times, "no profiled step"
    for lt in times:
        assert set(lt.node_ids) == {n.id for n in window.model.spec_view().nodes}
        assert all(ms is not None and ms >= 0 for ms in lt.fwd_ms)
