"""The bridge without a window: a real tiny run on its worker thread, polled from the GUI thread."""
from __future__ import annotations

import threading

import pytest

import engine

RUN_TIMEOUT = 180_000


def tiny_cfg(**kw):
    from engine.run.loop import RunConfig

    base = dict(net=engine.load_preset("lenet5"), device="cpu", batch_size=4, steps=3, warmup=1, threads=1)
    base.update(kw)
    return RunConfig(**base)


def test_run_signals_snapshots_and_session(qtbot, tmp_path):
    from app.bridge import RunBridge

    bridge = RunBridge()
    snaps, threads = [], []
    bridge.snapshot_ready.connect(lambda s: (snaps.append(s), threads.append(threading.current_thread())))
    with qtbot.waitSignal(bridge.run_started, timeout=5000):
        with qtbot.waitSignal(bridge.run_finished, timeout=RUN_TIMEOUT) as done:
            bridge.start(tiny_cfg(), runs_folder=tmp_path / "runs")
    assert done.args[0] == "completed"
    assert not bridge.is_running()
    assert snaps and snaps[-1].ended is not None and snaps[-1].last_step.step == 4
    # every snapshot was delivered on the GUI thread, and versions only grow
    assert all(t is threading.main_thread() for t in threads)
    assert [s.version for s in snaps] == sorted({s.version for s in snaps})
    assert bridge.session_path.startswith(str(tmp_path / "runs"))
    with engine.open_session(bridge.session_path) as r:
        assert r.status == "completed"


def test_start_twice_refused_and_stop_and_join(qtbot, tmp_path):
    from app.bridge import RunBridge

    bridge = RunBridge()
    bridge.start(tiny_cfg(steps=100000), runs_folder=tmp_path)
    with pytest.raises(RuntimeError):
        bridge.start(tiny_cfg(), runs_folder=tmp_path)
    qtbot.waitUntil(lambda: bridge.run.progress[0] >= 1, timeout=RUN_TIMEOUT)
    with qtbot.waitSignal(bridge.run_finished, timeout=5000) as done:
        assert bridge.stop_and_join()
    assert done.args[0] == "stopped"
    assert bridge.result.status == "stopped"


def test_failed_run_is_a_signal_not_an_exception(qtbot, tmp_path):
    from app.bridge import RunBridge

    bridge = RunBridge()
    with qtbot.waitSignal(bridge.run_finished, timeout=RUN_TIMEOUT) as done:
        bridge.start(tiny_cfg(device="cuda:7"), runs_folder=tmp_path)
    status, message = done.args
    assert status == "failed" and "cuda" in message.lower() and "\n" not in message


def test_session_file_names_do_not_collide(tmp_path):
    from app.bridge import session_path_for

    a = session_path_for(tmp_path, "res net/18")
    a.write_text("x")
    b = session_path_for(tmp_path, "res net/18")
    assert a != b and a.name.startswith("res-net-18-") and a.suffix == ".lsession"


def test_background_call_result_and_error(qtbot):
    from app.bridge import BackgroundCall

    ok = BackgroundCall(lambda: 41 + 1)
    with qtbot.waitSignal(ok.finished, timeout=5000) as got:
        ok.start()
    assert got.args == [42, None]

    def boom():
        raise ValueError("bad thing\nsecond line")

    bad = BackgroundCall(boom)
    with qtbot.waitSignal(bad.finished, timeout=5000) as got:
        bad.start()
    assert got.args == [None, "ValueError: bad thing"]
