"""The roofline plot, drawn from a real ``engine.roofline`` of a tiny recorded lenet5 run."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

import engine


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    path = tmp_path_factory.mktemp("roof") / "lenet5.lsession"
    cfg = engine.RunConfig(net=engine.load_preset("lenet5"), device="cpu", batch_size=8, steps=3, warmup=1,
                           out=str(path), threads=1)
    assert engine.Run(cfg).run().status == "completed"
    return os.fspath(path)


def test_one_point_per_layer_pass_with_flops_at_the_dicts_coordinates(qtbot, session):
    from app import style
    from app.views.roofline_view import RooflineView

    style.configure_pyqtgraph()
    data = engine.roofline(session)
    view = RooflineView()
    qtbot.addWidget(view)
    view.resize(800, 500)
    view.show()
    view.set_roofline(data, "lenet5")
    want = [(ly["id"], ps, ly[ps]) for ly in data["layers"] for ps in ("fwd", "bwd")
            if ly.get(ps) and ly[ps]["intensity"] and ly[ps]["achieved_flop_s"]]
    with_flops = {ly["id"] for ly in data["layers"] if (ly["fwd"] or {}).get("flops")}
    assert {w[0] for w in want} == with_flops and len(want) >= 2 * 3  # lenet5: conv1, conv2, fc1.. fwd + bwd
    spots = view.scatter.points()
    assert len(spots) == len(want) == len(view.points)
    got = np.array([[s.pos().x(), s.pos().y()] for s in spots])
    exp = np.array([[math.log10(p["intensity"]), math.log10(p["achieved_flop_s"] / 1e9)] for _i, _ps, p in want])
    np.testing.assert_allclose(got, exp, rtol=1e-9)
    # forward and backward are told apart by the symbol
    assert {s.symbol() for s in spots} == {"o", "t1"}
    # the ceilings: a memory slope up to the ridge, then the flat compute roof at peak_flop_s
    xs, ys = view.compute_line.getOriginalDataset()
    assert ys[0] == ys[-1] == pytest.approx(data["peak_flop_s"] / 1e9)
    mx, my = view.memory_line.getOriginalDataset()
    assert my[0] / mx[0] == pytest.approx(data["bandwidth_bytes_s"] / 1e9)
    # hover and a real click on conv2's forward point
    i = next(k for k, p in enumerate(view.points) if p["id"] == "conv2" and p["pass"] == "fwd")
    assert "conv2" in view.hover_text(i) and engine.fmt.fmt_pct(view.points[i]["pct_of_roof"]) in view.hover_text(i)
    clicked = []
    view.layer_clicked.connect(clicked.append)
    spot = next(s for s in spots if s.data() == i)
    at = view.plot_widget.mapFromScene(view.plot.vb.mapViewToScene(spot.pos()))
    qtbot.mouseClick(view.plot_widget.viewport(), Qt.LeftButton, pos=QPoint(int(at.x()), int(at.y())))
    assert clicked == ["conv2"] and len(view.ring.points()) == sum(p["id"] == "conv2" for p in view.points)


def test_opening_a_session_draws_its_roofline_and_a_click_selects_on_the_canvas(qtbot, window, session):
    assert window.open_session(session)
    qtbot.waitUntil(lambda: window.roofline_view.data is not None, timeout=60_000)
    view = window.roofline_view
    assert view.data["session"] == session and len(view.points) == len(
        [1 for ly in view.data["layers"] for ps in ("fwd", "bwd") if ly.get(ps) and ly[ps]["intensity"]])
    view.select_layer("conv1")
    assert window.model.selected() == "conv1" and window.canvas.selected_ids() == ["conv1"]
    assert window.table_view.selected_ids() == ["conv1"]  # the layer table follows the selection


def test_the_layer_table_shows_each_layers_roofline_class_and_share_of_roof(qtbot, window, session):
    """The issue's "% of roof" in the layer table: the same figures as engine.roofline."""
    from app.views.layer_table import COLUMNS

    assert window.open_session(session)
    qtbot.waitUntil(lambda: window.roofline_view.data is not None, timeout=60_000)
    data = engine.roofline(session)
    model = window.table_view.model
    col = {k: i for i, (k, _t, _f) in enumerate(COLUMNS)}
    shown = {model.row(i)["id"]: (model.row(i)["roof_fwd"], model.row(i)["roof_bwd"]) for i in range(model.rowCount())}
    assert shown
    for lay in data["layers"]:
        want = tuple((p["bound"], p["pct_of_roof"]) if p else None for p in (lay["fwd"], lay["bwd"]))
        assert shown[lay["id"]] == want
    conv = next(i for i in range(model.rowCount()) if model.row(i)["id"] == "conv1")
    text = model.data(model.index(conv, col["roof_fwd"]))
    assert "of roof" in text and text.split(" · ")[0] in ("compute-bound", "memory-bound", "overhead-bound")


@pytest.mark.parametrize("module, bad", [
    ("app.views.roofline_view", ["nope.lsession"]),
    ("app.views.roofline_view", ["NOT_A_SESSION"]),
    ("app.views.compare_view", ["nope.lsession", "nope2.lsession"]),
    ("app.views.compare_view", ["SESSION"]),
    ("app.views.compare_view", ["SESSION", "NOT_A_SESSION"]),
    ("app.editor.canvas", ["no-such-preset"]),
])
def test_view_entry_points_answer_bad_input_in_one_line_with_exit_2(tmp_path, capsys, session, module, bad):
    import importlib

    junk = tmp_path / "g.lsession"
    junk.write_text("not a session")
    argv = [{"SESSION": session, "NOT_A_SESSION": str(junk)}.get(a, str(tmp_path / a) if a.endswith(".lsession")
            else a) for a in bad] + ["--screenshot", str(tmp_path / "x.png")]
    assert importlib.import_module(module).main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_header_and_roof_give_the_bandwidth_in_the_clis_decimal_gb_per_s(qtbot, session):
    from app.views.roofline_view import RooflineView

    data = engine.roofline(session)
    view = RooflineView()
    qtbot.addWidget(view)
    view.set_roofline(data, "lenet5")
    want = engine.fmt.fmt_bandwidth(data["bandwidth_bytes_s"])
    assert want.endswith(" GB/s") and want == f"{engine.fmt.fmt_num(data['bandwidth_bytes_s'] / 1e9)} GB/s"
    assert f"memory {want}" in view.head.text() and view.roof_labels[0].toPlainText() == f"memory {want}"
    assert "GiB" not in view.head.text()


def test_legend_is_rich_text_whatever_its_first_entry(qtbot, session):
    from PySide6.QtGui import QTextDocument

    from app.views.roofline_view import RooflineView

    data = engine.roofline(session)
    view = RooflineView()
    qtbot.addWidget(view)
    for layers in (data["layers"], []):  # with family entries first, and with none
        view.set_roofline(dict(data, layers=layers), "lenet5")
        assert view.legend.textFormat() == Qt.RichText
        doc = QTextDocument()
        doc.setHtml(view.legend.text())
        assert "&nbsp;" not in doc.toPlainText() and ("forward" in doc.toPlainText()) == bool(view.points)


@pytest.mark.parametrize("module, args", [
    ("app.views.roofline_view", ["SESSION"]),
    ("app.views.log_view", []),
    ("app.editor.canvas", ["lenet5"]),
])
def test_view_entry_points_refuse_an_unwritable_screenshot_in_one_line(tmp_path, capsys, session, module, args):
    import importlib

    shot = tmp_path / "no" / "such" / "folder" / "x.png"
    argv = [session if a == "SESSION" else a for a in args] + ["--screenshot", str(shot)]
    assert importlib.import_module(module).main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: cannot write {shot}"
