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
    qtbot.waitUntil(lambda: bridge.feed.snapshot().progress[0] >= 1, timeout=RUN_TIMEOUT)
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


def test_bridge_reads_only_the_snapshot_and_commands_go_through_the_queue(qtbot, tmp_path, monkeypatch):
    """The GUI never reads the worker's Run: its state and progress attributes raise here."""
    from app.bridge import RunBridge
    from engine.run.loop import Run

    class Untouchable(Run):
        @property
        def state(self):
            raise AssertionError("the bridge read run.state")

        @property
        def progress(self):
            raise AssertionError("the bridge read run.progress")

    monkeypatch.setattr(engine, "Run", Untouchable)
    bridge = RunBridge()
    states, progress = [], []
    bridge.state_changed.connect(states.append)
    bridge.progress_changed.connect(lambda done, total, rate: progress.append((done, total)))
    bridge.start(tiny_cfg(steps=100000, warmup=0), runs_folder=tmp_path)
    assert isinstance(bridge.run, Untouchable)
    qtbot.waitUntil(lambda: bool(progress) and progress[-1][0] >= 1, timeout=RUN_TIMEOUT)
    assert progress[-1][1] == 100000  # the total came from a StateChanged record
    bridge.pause()
    qtbot.waitUntil(lambda: bridge.state == "paused", timeout=30_000)
    held = bridge.feed.snapshot().progress[0]
    assert bridge.feed.snapshot().state == "paused"
    assert bridge.set_feature_node("conv1") is None  # queued while paused
    assert "nope" in bridge.set_feature_node("nope")  # an unknown node is refused at once
    with qtbot.waitSignal(bridge.run_finished, timeout=10_000) as done:
        bridge.stop()  # a stop ends a paused run without another step
    assert done.args[0] == "stopped"
    assert bridge.feed.snapshot().progress[0] == held
    assert states[:2] == ["running", "paused"] and states[-1] == "stopped"


def test_background_call_cancel_drops_the_result_and_join_background(qtbot):
    import threading as th

    from app.bridge import BackgroundCall, join_background

    release = th.Event()
    saw_cancel = []

    def slow():
        release.wait(10)
        saw_cancel.append(call.is_cancelled())
        return "late"

    call = BackgroundCall(slow)
    got = []
    call.finished.connect(lambda *a: got.append(a))
    call.start()
    assert call.is_alive() and not call.is_cancelled()
    assert not join_background(0.05)  # still running
    call.cancel()
    release.set()
    assert join_background(10)
    qtbot.wait(100)  # the poll timer would have fired by now
    assert got == [] and saw_cancel == [True] and not call.is_alive()
