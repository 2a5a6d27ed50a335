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
    out = tmp_path / "lenet5.onnx"
    _save_dialog_returns(monkeypatch, out)
    path, error = _export(window, qtbot, window.act_export_onnx)
    assert error == ""
    onnx.checker.check_model(onnx.load(path))


def test_export_of_an_invalid_net_says_why_in_one_line(window, qtbot, monkeypatch, tmp_path):
    window.model.set_param("conv1", "kernel", 200)  # larger than its 28x28 input
    _save_dialog_returns(monkeypatch, tmp_path / "bad.py")
    with qtbot.waitSignal(window.nets.exported, timeout=10_000) as sig:
        window.act_export_pytorch.trigger()
    assert sig.args[1] and "\n" not in sig.args[1]
    assert not (tmp_path / "bad.py").exists()
    assert "Cannot export" in window.banner_text.text()
