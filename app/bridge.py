"""The one place where work on other threads reaches Qt, and the one way back.

A run executes ``engine.Run.run()`` on a plain Python worker thread with two sinks: a
``LiveFeed`` (bounded, latest wins) and the run's own ``SessionWriter`` (``cfg.out``). The
worker never touches a Qt object - not a widget, not a signal, not a timer - and the GUI never
reads the worker's attributes: it polls ``feed.snapshot()`` on a ``QTimer`` (<= 30 Hz) and
turns what it finds into signals: ``snapshot_ready`` once per frame with new data,
``state_changed`` and ``progress_changed`` from the snapshot's ``state`` and ``progress``, and,
when the worker has ended, ``run_finished(status, message)``. Never a signal per layer per step.
Going the other way, ``pause``/``resume``/``stop``/``set_feature_node`` only put a command into
the run's queue, which the loop drains between steps.

``BackgroundCall`` does the same for one-off work (importing torch and listing devices at
start-up, downloads): a thread computes, the GUI thread polls for the result. It can be
cancelled (its result is dropped), and ``join_background(timeout)`` waits for every one still
running, for the main window's close. ``ProgressCall`` is a BackgroundCall whose work also
reports progress (a sweep): the worker calls ``report(obj)`` (latest wins, no Qt), the GUI's
poll turns a new report into ``progress_changed(obj)``.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QTimer, Signal

POLL_HZ = 30

# threads of BackgroundCalls still running, so a closing window can join them all
_background: set[threading.Thread] = set()
_background_lock = threading.Lock()


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0].strip() if lines else type(e).__name__


def join_background(timeout: float | None = None) -> bool:
    """Wait (at most ``timeout`` seconds in all) for every BackgroundCall thread still running.

    True when none is left alive. Call it at close after cancelling the calls you own.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with _background_lock:
        threads = list(_background)
    for t in threads:
        t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    with _background_lock:
        return not any(t.is_alive() for t in _background)


class BackgroundCall(QObject):
    """Run ``fn()`` on a worker thread; ``finished(result, error)`` fires in the GUI thread.

    ``error`` is a one-line string (None on success). The thread is joined before the signal.
    ``cancel()`` drops the result: ``finished`` is then never emitted. Work that can stop early
    polls ``is_cancelled`` (e.g. ``download(..., cancel=call.is_cancelled)``).
    """

    finished = Signal(object, object)

    def __init__(self, fn: Callable[[], Any], name: str = "layerscope-background", parent: QObject | None = None,
                 poll_ms: int = 30):
        super().__init__(parent)
        self._fn = fn
        self._result: Any = None
        self._error: str | None = None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self._check)
        self.done = False

    def start(self) -> "BackgroundCall":
        with _background_lock:
            _background.add(self._thread)
        self._thread.start()
        self._timer.start()
        return self

    def _work(self) -> None:
        try:
            result = self._fn()
            if not self._cancelled.is_set():
                self._result = result
        except Exception as e:  # reported to the GUI as a sentence, never raised across threads
            self._error = f"{type(e).__name__}: {_first_line(e)}"
        finally:
            with _background_lock:
                _background.discard(threading.current_thread())

    def cancel(self) -> None:
        """Drop the result and never emit ``finished``; the thread ends when ``fn`` returns."""
        self._cancelled.set()
        self._timer.stop()
        self._result = None

    def is_cancelled(self) -> bool:
        """Whether ``cancel()`` was called (any thread; pass it to work that can stop early)."""
        return self._cancelled.is_set()

    def _check(self) -> None:
        if self._thread.is_alive():
            return
        self._timer.stop()
        self._thread.join()
        self.done = True
        if not self._cancelled.is_set():
            self.finished.emit(self._result, self._error)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work is done (tests, shutdown); the signal still comes from the timer."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()


class ProgressCall(BackgroundCall):
    """A ``BackgroundCall`` whose ``fn(report)`` reports progress: ``report(obj)`` from the worker
    keeps the latest object (no Qt touched); the GUI thread's poll emits ``progress_changed(obj)``
    once per new report (reports between two polls collapse to the latest), always before
    ``finished``. ``report(obj, keep=True)`` is never collapsed: such reports (an item's end
    status) are all emitted, in the order they came, each before any later report."""

    progress_changed = Signal(object)

    def __init__(self, fn: Callable[[Callable[[Any], None]], Any], name: str = "layerscope-progress",
                 parent: QObject | None = None, poll_ms: int = 50):
        self._lock = threading.Lock()
        self._seq = 0
        self._report: tuple[int, Any] | None = None
        self._kept: list[tuple[int, Any]] = []
        self._reported = 0
        super().__init__(lambda: fn(self.report), name=name, parent=parent, poll_ms=poll_ms)

    def report(self, obj: Any, keep: bool = False) -> None:
        """Worker thread: the latest progress (replaces one not yet shown, unless ``keep``)."""
        with self._lock:
            self._seq += 1
            if keep:
                self._kept.append((self._seq, obj))
            else:
                self._report = (self._seq, obj)

    def _emit_progress(self) -> None:
        with self._lock:
            kept, self._kept = self._kept, []
            rep = self._report
        if self._cancelled.is_set():
            return
        for seq, obj in kept:
            self._reported = seq
            self.progress_changed.emit(obj)
        if rep is not None and rep[0] > self._reported:
            self._reported = rep[0]
            self.progress_changed.emit(rep[1])

    def _check(self) -> None:
        alive = self._thread.is_alive()  # read first: a report made before the end is emitted below
        self._emit_progress()
        if not alive:
            super()._check()


def session_path_for(folder: Path, net_name: str) -> Path:
    """A fresh session file name in ``folder``: NET-YYYYmmdd-HHMMSS[-N].lsession."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in (net_name or "net")).strip("-") or "net"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = folder / f"{safe}-{stamp}.lsession"
    n = 2
    while path.exists():
        path = folder / f"{safe}-{stamp}-{n}.lsession"
        n += 1
    return path


class RunBridge(QObject):
    """Hosts one engine run at a time on a worker thread and feeds the GUI from its LiveFeed."""

    run_started = Signal(object)        # the RunConfig
    run_finished = Signal(str, str)     # status ("completed" | "stopped" | "failed"), message
    state_changed = Signal(str)         # "running" | "paused" while it runs, then the end status
    progress_changed = Signal(int, int, float)  # done, total, steps per second (recent)
    snapshot_ready = Signal(object)     # LiveSnapshot, at most POLL_HZ times a second

    def __init__(self, parent: QObject | None = None, hz: float = POLL_HZ, window: int = 50):
        super().__init__(parent)
        self._window = window
        self.feed = None
        self.run = None
        self.result = None
        self.session_path: str | None = None
        self._copy = None  # a watched run's local session copy (SessionWriter), see ``watch``
        self._thread: threading.Thread | None = None
        self._version: int | None = None
        self._state = "idle"
        self._progress = (0, 0)
        self._rate: list[tuple[float, int]] = []
        self._timer = QTimer(self)
        self._timer.setInterval(max(1, int(1000 / min(hz, POLL_HZ))))
        self._timer.timeout.connect(self._tick)

    # -- control (GUI thread) ----------------------------------------------------------------------
    def is_running(self) -> bool:
        return self._thread is not None

    @property
    def state(self) -> str:
        return self._state

    def start(self, cfg, runs_folder: Path | None = None) -> None:
        """Start ``cfg`` on a worker thread. With ``runs_folder`` and no ``cfg.out`` the session file
        goes there. Raises RuntimeError if a run is still going (the caller disables Start)."""
        import engine

        if self._thread is not None:
            raise RuntimeError("a run is already going")
        if cfg.out is None and runs_folder is not None:
            folder = Path(runs_folder)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                cfg.out = str(session_path_for(folder, getattr(cfg.net, "name", "") or "net"))
            except OSError:
                cfg.out = None  # the engine still runs; the log says it was not recorded
        self.feed = engine.LiveFeed(window=self._window)
        self.run = engine.Run(cfg, sinks=[self.feed])
        self.result = None
        self.session_path = cfg.out
        self._version = None
        self._progress = (0, 0)
        self._rate = []
        self._set_state("running")
        self._thread = threading.Thread(target=self._work, name="layerscope-run", daemon=False)
        self._thread.start()
        self._timer.start()
        self.run_started.emit(cfg)

    def watch(self, address: str, token: str, copy_path: Path | None = None) -> None:
        """Follow a run served by another process (``layerscope profile --serve``) exactly as a
        local one: an ``engine.RemoteRun`` feeds the LiveFeed (and a session copy at ``copy_path``)
        on the worker thread. ``controllable`` says whether pause/stop reach it (``--allow-control``)."""
        import engine

        if self._thread is not None:
            raise RuntimeError("a run is already going")
        self.feed = engine.LiveFeed(window=self._window)
        sinks = [self.feed]
        self._copy = engine.SessionWriter(copy_path, force=True) if copy_path is not None else None
        if self._copy is not None:
            sinks.append(self._copy)
        self.run = engine.RemoteRun(address, token, sinks)
        self.result = None
        self.session_path = str(copy_path) if copy_path is not None else None
        self._version = None
        self._progress = (0, 0)
        self._rate = []
        self._set_state("running")
        self._thread = threading.Thread(target=self._work, name="layerscope-watch", daemon=False)
        self._thread.start()
        self._timer.start()

    @property
    def remote(self) -> bool:
        """True while (or after) following a served run rather than running one here."""
        import engine

        return self.run is not None and isinstance(self.run, engine.RemoteRun)

    @property
    def controllable(self) -> bool:
        """Whether pause/stop reach the run: always for a local run, for a remote one only when
        it was served with --allow-control (known once connected)."""
        return not self.remote or bool(self.run.control)

    def pause(self) -> None:
        if self.run is not None and self._thread is not None and self.controllable:
            self.run.pause()

    def resume(self) -> None:
        if self.run is not None and self._thread is not None and self.controllable:
            self.run.resume()

    def stop(self) -> None:
        if self.run is not None and self._thread is not None and self.controllable:
            self.run.stop()

    def set_feature_node(self, node_id: str | None, first_channel: int = 0) -> str | None:
        """Ask the running run for this node's feature maps, the window of 32 channels from
        ``first_channel`` (0-based); returns a reason when it cannot."""
        import engine

        if self.run is None or self._thread is None:
            return None
        try:
            self.run.set_feature_node(node_id, first_channel)
        except engine.LayerScopeError as e:
            return str(e)
        return None

    def stop_and_join(self, timeout: float | None = None) -> bool:
        """Stop the run and wait for its thread; True when no worker is left. Emits run_finished.

        The ``stop`` command also ends a paused run at once.
        """
        if self._thread is None:
            return True
        if self.remote:
            self.run.disconnect()  # a watched run goes on on its server; only the viewer stops
        else:
            self.run.stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self._tick()
        return True

    # -- worker thread: no Qt here -----------------------------------------------------------------
    def _work(self) -> None:
        import engine

        run = self.run
        try:
            self.result = run.run()
        except BaseException as e:  # KeyboardInterrupt or a bug: still a result for the GUI
            self.result = engine.RunResult("failed", f"{type(e).__name__}: {_first_line(e)}")
        finally:
            copy = self._copy
            if copy is not None:  # a watched run's local copy: complete once the worker ends
                copy.close()
                self._copy = None

    # -- GUI thread polling: the snapshot is all it reads --------------------------------------------
    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.state_changed.emit(state)

    def poll(self) -> None:
        """Take the latest snapshot now (the timer calls this) and signal what changed in it."""
        if self.feed is None:
            return
        snap = self.feed.snapshot(self._version)
        if snap is None:
            return
        self._version = snap.version
        self.snapshot_ready.emit(snap)
        done, total = snap.progress
        if (done, total) != self._progress:
            self._progress = (done, total)
            now = time.perf_counter()
            self._rate.append((now, done))
            while len(self._rate) > 2 and now - self._rate[0][0] > 5.0:
                self._rate.pop(0)
            rate = 0.0
            if len(self._rate) >= 2 and self._rate[-1][0] > self._rate[0][0]:
                rate = (self._rate[-1][1] - self._rate[0][1]) / (self._rate[-1][0] - self._rate[0][0])
            self.progress_changed.emit(done, total, rate)
        if self._thread is not None:
            # evaluating and saving are part of running for the controls; the end comes from the result
            if snap.state == "paused":
                self._set_state("paused")
            elif snap.state in ("running", "evaluating", "saving"):
                self._set_state("running")

    def _tick(self) -> None:
        thread = self._thread
        if self.run is None:
            self._timer.stop()
            return
        self.poll()
        if thread is None or thread.is_alive():
            return
        thread.join()
        self._thread = None
        self._timer.stop()
        self.poll()
        result = self.result
        if result is None:
            import engine

            result = self.result = engine.RunResult("failed", "the run ended without a result")
        self._set_state(result.status)
        self.run_finished.emit(result.status, result.message)
