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
