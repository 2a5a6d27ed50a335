"""The comparison view and its ways in (session browser, drops, File ▸ Compare, --compare), drawn
from real ``engine.compare_runs`` results of tiny recorded lenet5 runs."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

import engine

ROOT = Path(__file__).resolve().parents[2]


def record(path, batch, precision="fp32", steps=3):
    cfg = engine.RunConfig(net=engine.load_preset("lenet5"), device="cpu", batch_size=batch, precision=precision,
                           steps=steps, warmup=1, out=str(path), threads=1)
    assert engine.Run(cfg).run().status == "completed"
    return os.fspath(path)


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    return record(folder / "b4.lsession", 4), record(folder / "b8.lsession", 8)


@pytest.fixture
def view(qtbot):
    from app import style
    from app.views.compare_view import CompareView

    style.configure_pyqtgraph()
    v = CompareView()
    qtbot.addWidget(v)
    v.resize(1100, 520)
    v.show()
    return v


def test_one_bar_per_common_layer_with_the_compared_speedups(view, two_sessions):
    data = engine.compare_runs(list(two_sessions))
    view.set_comparison(data)
    base, other = data["runs"][0]["label"], data["runs"][1]["label"]
    assert data["baseline"] == base and view.others == [other]
    bars = view.speed_bars[other].opts
    want = [ly["per_run"][1]["speedup"] for ly in data["layers"]]
    assert all(s is not None and s > 0 for s in want)  # lenet5 on both: every layer timed in both
    assert len(bars["width"]) == len(data["layers"]) == len(view.layer_ids)
    # the bar lengths are log2 of the dict's speed-ups, row r for layer r (baseline 1x at x = 0)
    np.testing.assert_allclose(bars["width"], [math.log2(s) for s in want], rtol=1e-12)
    rows = np.round(np.asarray(bars["y"])).astype(int)
    assert list(rows) == list(range(len(want)))
    assert view.layer_ids == [ly["id"] for ly in data["layers"]]
    # heat map: the baseline column is 0 (1x), the other column the same log2 speed-ups
    np.testing.assert_allclose(view.heat_grid[:, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(view.heat_grid[:, 1], [math.log2(s) for s in want], rtol=1e-12)
    # totals: one row per run with the dict's throughput, formatted by engine.fmt
    assert view.totals.rowCount() == 2
    col = [view.totals.horizontalHeaderItem(c).text() for c in range(view.totals.columnCount())].index("Samples/s")
    assert view.totals.item(1, col).text().strip() == engine.fmt.fmt_rate(data["runs"][1]["samples_per_s"], "").strip()
    # where the time went: the stacked family bars are the dict's ms per sample, per run
    fams = view.family_values()
    for k, run in enumerate(data["families"]):
        for fam, ms in run["by_family"].items():
            assert fams[fam][k] == ms
            seg = view.family_bars[fam].opts
            assert seg["height"][k] == pytest.approx(ms)
        assert fams["optimizer"][k] == run["optimizer_ms_per_sample"]
    # hover over a row of the bars gives that layer's exact numbers
    r = 2
    pos = view.bars_plot.vb.mapViewToScene(QPointF(0.0, r))
    text = view.hover_text(pos)
    lid = data["layers"][r]["id"]
    assert lid in text and engine.fmt.fmt_num(want[r]) + "×" in text


def test_view_draws_a_second_comparison_without_the_first(view, two_sessions):
    a, b = two_sessions
    view.set_comparison(engine.compare_runs([a, b]))
    data = engine.compare_runs([a, b], baseline=1)  # the other run as baseline: speed-ups inverted
    view.set_comparison(data)
    assert list(view.speed_bars) == [data["runs"][0]["label"]]
    assert len(view.bars_plot.items) == 3  # the 1x line, the selection band, one set of bars
    view.clear()
    assert view.speed_bars == {} and view.notice.isVisible()


def wait_compared(qtbot, window):
    qtbot.waitUntil(lambda: window.compare_view is not None and window.compare_view.data is not None,
                    timeout=60_000)
    return window.compare_view


def test_click_on_a_layer_selects_it_on_the_canvas_and_colours_it_by_speedup(qtbot, window, two_sessions):
    assert window.compare_paths(list(two_sessions))
    view = wait_compared(qtbot, window)
    assert window.docks["compare"].isVisible()
    other = view.canvas_config()
    assert other == view.data["runs"][1]["label"]
    # the canvas is coloured by that configuration's speed-ups, written on each node
    sp = view.speedups(other)
    item = window.canvas.node_item("conv1")
    assert item.fill is not None and item.metric == f"{engine.fmt.fmt_num(sp['conv1'])}×"
    # a real click on the row of conv2 in the bars plot
    window.docks["compare"].raise_()
    qtbot.waitUntil(lambda: view.glw.isVisible(), timeout=5000)
    r = view.layer_ids.index("conv2")
    scene = view.bars_plot.vb.mapViewToScene(QPointF(0.0, r))
    at = view.glw.mapFromScene(scene)
    qtbot.mouseClick(view.glw.viewport(), Qt.LeftButton, pos=QPoint(int(at.x()), int(at.y())))
    assert window.model.selected() == "conv2"
    assert window.canvas.selected_ids() == ["conv2"]
    assert view.selected == "conv2" and view.select_band.isVisible()
    # selecting on the canvas moves the comparison's highlight too
    window.model.select("fc1")
    assert view.selected == "fc1"


def test_dropping_two_session_files_on_the_window_opens_the_comparison(qtbot, window, two_sessions):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(p) for p in two_sessions])
    target = window.canvas.viewport()  # where a person drops: the middle of the window
    pos = QPoint(target.width() // 2, target.height() // 2)
    enter = QDragEnterEvent(pos, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(pos), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(target, drop)
    view = wait_compared(qtbot, window)
    assert [r["session"] for r in view.data["runs"]] == list(two_sessions)
    assert len(view.layer_ids) == len(engine.compare_runs(list(two_sessions))["layers"])


def test_one_file_is_no_comparison_and_says_why(qtbot, window, two_sessions):
    assert not window.compare_paths(two_sessions[:1])
    assert "two or more session files" in window.log_view.lines[-1][1]


def test_session_browser_compare_opens_the_comparison_view(qtbot, window, two_sessions):
    import shutil

    folder = window.settings.runs_folder
    folder.mkdir(parents=True, exist_ok=True)
    paths = [os.fspath(shutil.copy(p, folder / os.path.basename(p))) for p in two_sessions]
    dlg = window.sessions.browse()
    qtbot.addWidget(dlg)
    dlg.select_paths(paths)
    assert dlg.compare_button.isEnabled()
    dlg.compare_button.click()
    view = wait_compared(qtbot, window)
    assert sorted(r["session"] for r in view.data["runs"]) == sorted(paths)


def test_main_compare_bad_input_is_one_line_and_exit_2(tmp_path, two_sessions):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    for args, says in (([two_sessions[0]], "two or more session files"),
                       ([two_sessions[0], str(tmp_path / "nope.lsession")], "no such file")):
        p = subprocess.run([sys.executable, str(ROOT / "main.py"), "--compare", *args], capture_output=True,
                           text=True, env=env, timeout=60)
        assert p.returncode == 2, p.stderr
        assert says in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_main_compare_screenshot(tmp_path, two_sessions):
    out = tmp_path / "cmp.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    p = subprocess.run([sys.executable, str(ROOT / "main.py"), "--compare", *two_sessions, "--size", "1280x800",
                        "--screenshot", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "compared 2 runs" in p.stdout and out.stat().st_size > 10_000


def test_totals_draw_a_runs_advice_handmade_dict(view):
    """Pure drawing (a hand-made dict in compare_runs' shape): the totals show a run's page-fault
    share and advice when it has them, and nothing where it has none."""
    runs = [{"label": "a", "session": "a.lsession", "device": "cpu", "precision": "fp32", "batch": 16,
             "step_ms": 10.0, "samples_per_s": 1600.0, "fault_share": None, "advice": None},
            {"label": "b", "session": "b.lsession", "device": "cpu", "precision": "fp32", "batch": 16,
             "step_ms": 12.0, "samples_per_s": 1333.0, "fault_share": 0.4,
             "advice": "40 % of the time in page faults: try --cpu-allocator tuned"}]
    view.set_comparison({"baseline": "a", "runs": runs, "layers": [], "only_in": {}, "families": []})
    heads = [view.totals.horizontalHeaderItem(c).text() for c in range(view.totals.columnCount())]
    advice, faults = heads.index("Advice"), heads.index("Page faults")
    assert view.totals.item(0, advice).text() == "" and view.totals.item(0, faults).text() == engine.fmt.DASH
    assert view.totals.item(1, advice).text() == runs[1]["advice"]
    assert view.totals.item(1, faults).text() == engine.fmt.fmt_pct(0.4)


def test_layer_table_shows_the_advice_handmade_text(qtbot):
    """Pure drawing: the layer table's note line carries a run's advice while one is given."""
    from app.views.layer_table import LayerTableView

    table = LayerTableView()
    qtbot.addWidget(table)
    usual = table.notice.text()
    table.set_advice("try --cpu-allocator tuned", 0.35)
    assert "try --cpu-allocator tuned" in table.notice.text() and engine.fmt.fmt_pct(0.35) in table.notice.text()
    table.set_advice(None)
    assert table.notice.text() == usual


def test_file_compare_dialog_opens_the_chosen_sessions(qtbot, window, two_sessions, monkeypatch):
    from app.controllers import compare_controller

    monkeypatch.setattr(compare_controller.QFileDialog, "getOpenFileNames",
                        staticmethod(lambda *a, **k: (list(two_sessions), "")))
    menu = {a.text(): a for a in window.menuBar().actions()}["&File"].menu()
    action = next(a for a in menu.actions() if a.text() == "&Compare sessions…")
    action.trigger()
    view = wait_compared(qtbot, window)
    assert [r["session"] for r in view.data["runs"]] == list(two_sessions)


def test_canvas_colours_speedups_diverging_at_1x_as_the_heat_map(qtbot, view):
    from app.editor.canvas import CanvasView
    from app.editor.model import EditorModel
    from app.editor.overlays import SPEEDUP_LEGEND

    model = EditorModel(engine.resolve_net("lenet5"))
    canvas = CanvasView(model)
    qtbot.addWidget(canvas)
    canvas.resize(900, 600)
    canvas.show()
    sp = {"conv1": 1.55, "conv2": 1.2, "fc1": 1.0, "fc2": 0.8, "fc3": 0.621}
    canvas.set_node_metrics({k: {"speedup": v} for k, v in sp.items()}, color_by="speedup")
    fill = {k: canvas.node_item(k).fill for k in sp}
    # faster is green, slower red, 1x neutral: never the fastest layer as the darkest red
    assert fill["conv1"].green() > fill["conv1"].red() and fill["conv2"].green() > fill["conv2"].red()
    assert fill["fc2"].red() > fill["fc2"].green() and fill["fc3"].red() > fill["fc3"].green()
    assert fill["conv1"].green() > fill["conv2"].green() and fill["fc3"].red() > fill["fc2"].red()
    # the heat map's own colours: its 1x cell and the canvas's 1x node are the same neutral
    from app.views.compare_view import FASTER, NEUTRAL, SLOWER
    assert fill["fc1"].getRgb()[:3] == NEUTRAL
    # a log scale: 2x faster and 2x slower sit at the same distance from 1x (span 1 = 0.5x..2x)
    from app.editor import theme
    assert theme.speedup_color(2.0).getRgb()[:3] == FASTER and theme.speedup_color(0.5).getRgb()[:3] == SLOWER
    # the legend says which way is which, and its title fits (wrapped, nothing cut off)
    legend = canvas._legend
    assert legend.isVisible() and legend.diverging and SPEEDUP_LEGEND == "slower ← 1× → faster"
    # the scale's ends: 2**-span .. 2**span, span the largest |log2| and at least 1 (0.5x .. 2x here)
    assert legend.lo == f"{engine.fmt.fmt_num(0.5)}×" and legend.hi == f"{engine.fmt.fmt_num(2.0)}×"
    fm = legend.fontMetrics()
    assert legend.title == "speed-up against the baseline"
    assert legend.height() >= legend.title_height() + 2 * 14 + 8
    wide = fm.horizontalAdvance(legend.title) > legend.width() - 2 * legend.PAD
    assert legend.title_height() > fm.height() * 1.5 or not wide


def test_no_common_layer_is_a_notice_not_two_empty_plots(view, two_sessions):
    from app.views.compare_view import NO_COMMON_LAYERS

    data = engine.compare_runs(list(two_sessions))
    view.set_comparison(dict(data, layers=[]))
    assert view.notice.isVisible() and view.notice.text() == NO_COMMON_LAYERS
    assert not view.bars_plot.isVisible() and not view.heat_plot.isVisible()
    assert view.totals.rowCount() == 2 and "0 common layers" in view.summary.text()
    # the next comparison with common layers draws its plots again, without the notice
    view.set_comparison(data)
    assert not view.notice.isVisible() and view.bars_plot.isVisible() and view.heat_plot.isVisible()
    assert view.heat_grid.shape == (len(data["layers"]), 2)
