"""The main window driving real (tiny) CPU runs through the bridge: views fill, controls work,
closing mid-run joins the worker, sessions reopen and export, failures are shown and recovered from."""
from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest

import engine

RUN_TIMEOUT = 180_000


def small_run(window, steps=4, batch=8, dataset="synthetic", feature="conv1"):
    window.run_panel.apply(steps=steps, batch_size=batch, dataset=dataset, device="cpu")
    if feature:
        window.run_panel.set_feature_layer(feature)


def run_to_end(qtbot, window, **overrides):
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT) as blocker:
        assert window.start_run(warmup=1, **overrides)
    return blocker.args


def test_window_ready_with_editor_devices_and_status(window):
    assert window.model is not None and window.canvas is not None
    assert [n.id for n in window.model.spec_view().nodes][0] == "conv1"  # lenet5 by default
    assert window.run_panel.device.count() >= 1
    assert window.run_panel.device_id() == "cpu" or window.run_panel.device_id().startswith(("cuda", "mps"))
    assert window.status_nvml.text().startswith("NVML: ")
    assert window.run_panel.start_button.isEnabled()
    assert window.act_start.isEnabled()


def test_cpu_run_fills_time_training_feature_and_table_views(qtbot, window):
    small_run(window, steps=4)
    status, message = run_to_end(qtbot, window)
    assert status == "completed", message
    rows = window.time_view.rows()
    assert [r["id"] for r in rows][:2] == ["conv1", "relu1"]
    assert all(np.isfinite(r["fwd_ms"]) and r["fwd_ms"] > 0 for r in rows)
    assert all(np.isfinite(r["bwd_ms"]) for r in rows if r["kind"] in ("conv2d", "linear"))
    counts = window.training_view.point_counts()
    assert counts["loss"] == 5 and counts["throughput"] == 5  # 1 warm-up + 4 steps
    fm = window.feature_view.shown()
    assert fm is not None and fm.node_id == "conv1" and fm.shape[0] == 6
    tsv = window.table_view.as_tsv(selected_only=False).splitlines()
    assert tsv[0].split("\t")[0] == "Layer" and len(tsv) == 1 + len(window.model.spec_view().nodes)
    assert window.run_panel.progress.value() == 5
    # the session file was written while the run went and says how it ended
    path = window.sessions.last_session
    assert path and os.path.exists(path) and str(path).startswith(str(window.settings.runs_folder))
    with engine.open_session(path) as reader:
        assert reader.status == "completed" and len(reader.steps()) == 5
    # after the run, the canvas is coloured from the measured times
    metrics = window.monitor.node_metrics()
    assert metrics["conv1"]["time_ms"] > 0 and metrics["conv1"]["gflops"] > 0


def test_pause_resume_stop(qtbot, window):
    small_run(window, steps=100000, batch=4, feature=None)
    assert window.start_run(warmup=0)
    qtbot.waitUntil(lambda: window.bridge.run.progress[0] >= 2, timeout=RUN_TIMEOUT)
    window.toggle_pause()
    qtbot.waitUntil(lambda: window.bridge.state == "paused", timeout=30_000)
    assert window.run_panel.pause_button.text() == "Resume"
    held = window.bridge.run.progress[0]
    qtbot.wait(300)
    assert window.bridge.run.progress[0] == held  # paused between steps: nothing runs
    window.toggle_pause()
    qtbot.waitUntil(lambda: window.bridge.run.progress[0] > held, timeout=30_000)
    qtbot.waitUntil(lambda: window.bridge.state == "running", timeout=30_000)
    assert window.run_panel.pause_button.text() == "Pause"
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT) as blocker:
        window.stop_run()
    assert blocker.args[0] == "stopped"
    assert not window.bridge.is_running()
    assert window.run_panel.start_button.isEnabled()
    assert window.status_run.text() == "stopped"


def test_closing_during_run_stops_and_joins_the_worker(qtbot, window):
    small_run(window, steps=100000, batch=4, feature=None)
    assert window.start_run(warmup=0)
    qtbot.waitUntil(lambda: window.bridge.run.progress[0] >= 1, timeout=RUN_TIMEOUT)
    path = window.bridge.session_path
    assert window.close()
    assert not window.bridge.is_running()
    assert window.bridge.result.status == "stopped"
    con = sqlite3.connect(path)
    try:
        status = json.loads(dict(con.execute("SELECT key, value FROM meta").fetchall())["status"])
    finally:
        con.close()
    assert status == "stopped"


def test_closing_during_run_can_be_cancelled(qtbot, window, monkeypatch):
    small_run(window, steps=100000, batch=4, feature=None)
    assert window.start_run(warmup=0)
    monkeypatch.setattr(window, "_ask_stop_run", lambda: False)
    assert not window.close()
    assert window.bridge.is_running()
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT):
        window.stop_run()


def test_failed_run_shows_message_and_next_run_works(qtbot, window, tmp_path):
    missing = tmp_path / "no-such-data"
    small_run(window, steps=2, dataset=str(missing), feature=None)
    status, message = run_to_end(qtbot, window)
    assert status == "failed"
    assert message
    assert window.isVisible() and window.banner.isVisible()  # the fixture shows the window
    assert window.banner_text.text() == f"<b>Run failed:</b> {message}"
    assert any(level == "error" and message in text for level, text in window.log_view.lines)
    assert window.run_panel.start_button.isEnabled()
    small_run(window, steps=2, dataset="synthetic", feature=None)
    status, message = run_to_end(qtbot, window)
    assert status == "completed", message
    assert not window.banner.isVisible()


def test_invalid_net_disables_start_with_reason(qtbot, window):
    window.model.set_param("conv1", "kernel", 60)
    qtbot.waitUntil(lambda: not window.run_panel.start_button.isEnabled(), timeout=10_000)
    reason = window.run_panel.start_reason()
    assert "conv1" in reason
    assert not window.start_run()
    window.model.undo()
    qtbot.waitUntil(lambda: window.run_panel.start_button.isEnabled(), timeout=10_000)


def _record_session(tmp_path, steps=6):
    from engine.run.loop import Run, RunConfig

    path = tmp_path / "cli.lsession"
    cfg = RunConfig(net=engine.load_preset("lenet5"), device="cpu", batch_size=4, steps=steps, warmup=1,
                    feature_node="conv2", out=str(path), threads=1)
    assert Run(cfg).run().status == "completed"
    return path


def test_open_session_shows_it_and_scrubs(qtbot, window, tmp_path):
    path = _record_session(tmp_path)
    assert window.open_session(str(path))
    assert window.session_bar.isVisible()
    assert window.player.steps() == list(range(1, 8))
    assert window.training_view.point_counts()["loss"] == 7
    assert window.time_view.rows()
    assert window.feature_view.shown() is not None and window.feature_view.shown().node_id == "conv2"
    window.session_bar.seek(3)
    assert window.player.current_step == 3
    assert window.training_view.point_counts()["loss"] == 3
    window.session_bar.seek(7)
    assert window.training_view.point_counts()["loss"] == 7
    assert str(path) in window.settings.recent_files()[0]
    window.close_session()
    assert not window.session_bar.isVisible()


def test_open_bad_session_says_why(window, tmp_path):
    bad = tmp_path / "bad.lsession"
    bad.write_text("not a database")
    assert not window.open_session(str(bad))
    level, text = window.log_view.lines[-1]
    assert level == "error" and "bad.lsession" in text and "\n" not in text


def test_export_every_format(qtbot, window, tmp_path):
    path = _record_session(tmp_path, steps=3)
    assert window.open_session(str(path))
    for kind, name in (("trace", "t.json"), ("csv", "s.csv"), ("html", "r.html"), ("json", "s.json")):
        out = window.export_session(kind, str(tmp_path / name))
        assert out and os.path.getsize(out) > 0
        assert any(out in text for _lvl, text in window.log_view.lines)
    trace = json.loads((tmp_path / "t.json").read_text())
    assert trace["traceEvents"] if isinstance(trace, dict) else trace
    assert (tmp_path / "s.csv").read_text().splitlines()[0].count(",") >= 5


def test_export_without_session_says_so(window):
    window.sessions.last_session = None
    assert window.export_session("csv", "/tmp/never.csv") is None
    assert "Nothing to export" in window.log_view.lines[-1][1]


def test_settings_are_isolated_and_persist(qtbot, window, isolated_settings):
    assert window.settings.path.startswith(str(isolated_settings))
    small_run(window, steps=1, feature=None)
    run_to_end(qtbot, window)
    assert window.settings.last_device == "cpu"
    window.close()
    from app.settings import Settings

    again = Settings()
    assert again.window_state() is not None
    assert again.run_options()["batch_size"] in (8, "8")


def test_presets_menu_and_save_open_net(qtbot, window, tmp_path, monkeypatch):
    assert set(window.preset_actions) == set(engine.preset_names())
    window.preset_actions["resnet18"].trigger()
    assert any(n.kind == "add" for n in window.model.spec_view().nodes)
    path = tmp_path / "net.json"
    assert window.nets.save_to(str(path))
    assert not window.model.is_dirty()
    window.load_preset("lenet5")
    assert window.open_path(str(path))
    assert any(n.kind == "add" for n in window.model.spec_view().nodes)
    assert window.settings.recent_files()[0] == str(path)


def test_no_display_exits_2_with_one_line(monkeypatch, capsys):
    from app import application

    monkeypatch.setattr(application.sys, "platform", "linux")
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    assert application.run(["--preset", "lenet5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [application.NO_DISPLAY]


def test_bad_preset_flag_is_one_line(capsys):
    from app import application

    assert application.run(["--preset", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_window_module_does_not_import_plotting_before_first_paint():
    # pyqtgraph and numpy are imported when the plot views are built, after the first paint
    import subprocess
    import sys

    code = ("import sys, app.main_window; "
            "print(sorted(m for m in ('pyqtgraph', 'numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_views_are_placeholders_until_built_and_a_session_builds_them(qtbot, tmp_path):
    from app.main_window import MainWindow
    from app.settings import Settings

    path = _record_session(tmp_path)
    w = MainWindow(Settings())  # never shown: no first paint, so no plot views yet
    qtbot.addWidget(w)
    assert w.time_view is None and not w.views_built()
    assert w.docks["time"].widget().text() == "Loading…"
    assert w.open_session(str(path))
    assert w.views_built() and w.docks["time"].widget() is w.time_view
    assert w.training_view.point_counts()["loss"] == 7
    assert w.feature_view.shown() is not None
    w.close_session()
    w.shutdown()


def test_training_run_saves_weights_and_tests_held_out_images(qtbot, window, tmp_path, monkeypatch):
    """The article's workflow in the app: train, weights saved, test on random held-out images,
    save the weights elsewhere, and start the next run from them."""
    small_run(window, steps=6, dataset="digits", feature=None)
    assert run_to_end(qtbot, window)[0] == "completed"
    ckpt = window.weights.last_checkpoint
    assert ckpt and ckpt.endswith(".safetensors") and os.path.isfile(ckpt)
    dlg = window.weights.test_held_out()
    qtbot.addWidget(dlg)
    qtbot.waitUntil(lambda: not dlg.is_busy() and dlg.result is not None, timeout=60_000)
    assert len(dlg.tiles) == dlg.result.n > 0
    assert all(t.caption.text().startswith("true ") for t in dlg.tiles)
    dlg.close()

    from PySide6.QtWidgets import QFileDialog

    target = tmp_path / "mine.safetensors"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    window.weights.save_dialog()
    assert target.read_bytes() == open(ckpt, "rb").read()

    window.weights.set_load_weights(str(target))
    small_run(window, steps=2, dataset="digits", feature=None)
    assert run_to_end(qtbot, window)[0] == "completed"
    assert any("loaded checkpoint" in msg and "mine.safetensors" in msg for _, msg in window.log_view.lines)


def test_export_menu_lists_the_engine_exporters_and_writes(qtbot, window, tmp_path, monkeypatch):
    """The Export menu is built from the engine's exporter table, and its entries write files."""
    from PySide6.QtWidgets import QFileDialog

    from app.controllers.session_controller import exporters

    assert window.export_menu.isEnabled()
    assert list(window.export_actions) == list(exporters())
    assert [a.text() for a in window.export_menu.actions()] == [a.text() for a in window.export_actions.values()]
    path = _record_session(tmp_path, steps=2)
    assert window.open_session(str(path))
    target = tmp_path / "via-menu.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    window.export_actions["csv"].trigger()
    assert target.read_text().splitlines()[0].startswith("id,")
    assert window.export_session("no-such-format", str(tmp_path / "x")) is None
    assert "no-such-format" in window.log_view.lines[-1][1]


def test_closing_joins_a_prediction_draw(qtbot, window, tmp_path):
    """A held-out draw still running when the window closes is joined, not left behind."""
    from engine.net.checkpoint import save_checkpoint

    spec = engine.load_preset("lenet5")
    ckpt = save_checkpoint(engine.build_model(spec), spec, tmp_path / "ck", step=1)
    window.weights.set_load_weights(str(ckpt))
    dlg = window.weights.test_held_out()
    assert dlg is not None and dlg.is_busy()
    assert window.close()
    assert dlg.shutdown(0)  # the draw's thread is gone: nothing left to wait for


def test_a_session_with_a_long_name_does_not_widen_the_session_bar(qtbot, window, tmp_path):
    """The session bar's run facts are elided (full text in the tooltip), so a long file name never
    pushes the window past a 1280-pixel screen."""
    path = _record_session(tmp_path, steps=2)
    long = path.with_name("alexnet-article-cpu-20261129-224400-a-rather-long-descriptive-name.lsession")
    path.rename(long)
    assert window.open_session(str(long))
    bar = window.session_bar
    assert long.name in bar.label.toolTip()
    assert bar.minimumSizeHint().width() < 700, bar.minimumSizeHint()


def test_seeking_a_session_does_not_repeat_its_log(qtbot, window, tmp_path):
    """Seeking replays the session into the views; the Log shows the session's lines once, not again
    per seek."""
    path = _record_session(tmp_path, steps=4)
    assert window.open_session(str(path))
    window.log_view.update_snapshot(window.player.snapshot())
    before = list(window.log_view.lines)
    for step in (2, 5, 3):
        window.session_bar.seek(step)
        window.log_view.update_snapshot(window.player.snapshot())
    assert window.log_view.lines == before


def test_feature_channels_chosen_in_the_view_reach_the_run(window, monkeypatch):
    """Issue 10 item 8: the chooser's request goes view -> run controller -> bridge.set_feature_node;
    without a run the status bar says only captured channels can be shown."""
    from engine.records import FeatureMap
    from engine.run.live import LiveFeed

    window._build_deferred_views()
    v = window.feature_view
    feed = LiveFeed(window=10)
    feed(FeatureMap(3, 0.1, "conv1", (32, 4, 4), bytes(32 * 16), 0.0, 1.0, 0, 96))
    v.set_layers(["conv1"])
    v.push(feed.snapshot(), force=True)
    calls = []
    monkeypatch.setattr(window.bridge, "is_running", lambda: True)
    monkeypatch.setattr(window.bridge, "set_feature_node", lambda node, first=0: calls.append((node, first)))
    v.choose_window(65)
    assert calls == [("conv1", 64)]
    monkeypatch.setattr(window.bridge, "is_running", lambda: False)
    v.choose_window(33)
    assert calls == [("conv1", 64)]
    assert "only the channels already captured" in window.statusBar().currentMessage()
