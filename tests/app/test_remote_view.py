"""File ▸ Connect to run…: a run served by a RecordServer is shown live like a local one, its net
appears on the canvas, Pause/Stop follow --allow-control, and a copy of the session can be kept."""
from __future__ import annotations

import threading

import pytest

import engine
from engine.remote.server import RecordServer

RUN_TIMEOUT = 180_000


def _served_run(tmp_path, allow_control, steps):
    """A real lenet5 run on a thread, its records served; it starts once a viewer is connected."""
    spec = engine.load_preset("lenet5")
    spec.name = "served-net"
    spec.nodes[-1].id = "logits"  # not the canvas's net: the watched run's must replace it
    cfg = engine.RunConfig(net=spec, mode="train", device="cpu", batch_size=4, steps=steps,
                           warmup=1, threads=1, out=str(tmp_path / "server.lsession"))
    server = RecordServer(token="secret", allow_control=allow_control).start()
    run = engine.Run(cfg, sinks=[server])
    server.control = run
    result = {}

    def go():
        while server.stats()["viewers"] < 1 and not server._closing.is_set():
            threading.Event().wait(0.02)
        result["r"] = run.run()

    t = threading.Thread(target=go)
    t.start()
    return server, t, result, run


@pytest.mark.parametrize("allow_control", [False, True])
def test_watching_a_served_run(qtbot, window, tmp_path, allow_control):
    server, thread, result, run = _served_run(tmp_path, allow_control, steps=2000)  # stopped below
    saved = tmp_path / "copy.lsession"
    window.remote.ask_copy_path = lambda suggested: str(saved)
    try:
        with qtbot.waitSignal(window.bridge.run_finished, timeout=RUN_TIMEOUT) as finished:
            assert window.remote.connect_to(server.address, "secret")
            qtbot.waitUntil(lambda: window.bridge.run.control == allow_control and window.bridge.feed.snapshot()
                            is not None and window.bridge.feed.snapshot().progress[0] >= 2, timeout=RUN_TIMEOUT)
            qtbot.wait(100)
            assert window.act_stop.isEnabled() == allow_control
            assert window.run_panel.stop_button.isEnabled() == allow_control
            assert not window.act_start.isEnabled()
            if allow_control:
                window.runs.stop()  # reaches the served run through the socket
            else:
                window.runs.stop()  # view only: nothing reaches the run ...
                qtbot.wait(300)
                assert window.bridge.is_running() and run.state == "running"
                run.stop()  # ... which the server side ends
        status = finished.args[0]
    finally:
        thread.join(120)
        server.close()
    assert status == "stopped" == result["r"].status
    # the remote net is on the canvas and the views were fed
    ids = [n.id for n in window.model.spec().nodes]
    assert ids[-1] == "logits" and window.model.spec().name == "served-net"
    assert ids == [n.id for n in engine.load_preset("lenet5").nodes][:-1] + ["logits"]
    assert [window.table_view.model.row(i)["id"] for i in range(window.table_view.model.rowCount())] == ids[:window.table_view.model.rowCount()]
    assert window.table_view.model.rowCount() >= len(ids) - 1  # every built layer (the input is not one)
    # the copy holds what the server's session holds
    assert saved.exists()
    with engine.open_session(saved) as copy, engine.open_session(tmp_path / "server.lsession") as orig:
        assert [(s.step, s.step_ms) for s in copy.steps()] == [(s.step, s.step_ms) for s in orig.steps()]
        assert len(copy.layer_times()) == len(orig.layer_times()) > 0


def test_connect_dialog_refuses_a_bad_address(qtbot):
    from PySide6.QtWidgets import QDialogButtonBox

    from app.dialogs.connect_run import ConnectDialog

    dlg = ConnectDialog(None, "127.0.0.1:7788")
    qtbot.addWidget(dlg)
    ok = dlg.buttons.button(QDialogButtonBox.Ok)
    assert not ok.isEnabled() and "token" in dlg.reason.text()
    dlg.token.setText("abc")
    assert ok.isEnabled()
    dlg.address.setText("host:notaport")
    assert not ok.isEnabled() and "HOST:PORT" in dlg.reason.text()


def test_data_parallel_run_rank_view(qtbot, window, tmp_path):
    """File > Open data-parallel run…: a real 2-rank study shown rank by rank."""
    from engine.cli.main import main

    out = tmp_path / "ddp"
    assert main(["profile", "lenet5", "--nproc", "2", "--steps", "3", "--warmup", "1", "--batch-size", "4",
                 "--bucket-cap-mb", "0.05", "--out", str(out), "-q"]) == 0
    call = window.ddp.open(str(out))
    qtbot.waitUntil(lambda: window.ddp.view is not None and window.ddp.view.isVisible(), timeout=60_000)
    view = window.ddp.view
    summary, timeline = engine.ddp_summary(out), engine.rank_timeline(out)
    assert view.table.rowCount() == 2 and view.table.item(1, 0).text() == "1"
    assert view.step_combo.count() == len(summary["steps"]) == 3
    # every slice of the engine's timeline is drawn, and hovering finds it where it is drawn
    assert len(view._slices) == sum(len(r["slices"]) for r in timeline["ranks"])
    ar = next(s for s in timeline["ranks"][1]["slices"] if s["kind"] == "all-reduce")
    hit = view.slice_at((ar["start_ms"] + ar["end_ms"]) / 2, 1 + 0.42 - 0.2 + 0.1)
    assert hit is not None and hit["kind"] == "all-reduce"
    other = next(s["step"] for s in summary["steps"] if s["step"] != timeline["step"])
    view.step_requested.emit(other)  # the step box asks; the controller draws that step
    qtbot.waitUntil(lambda: view.plot.getPlotItem().titleLabel.text.endswith(f"step {other}"), timeout=30_000)
    assert len(view._slices) == sum(len(r["slices"]) for r in engine.rank_timeline(out, other)["ranks"])
    assert call is not None
