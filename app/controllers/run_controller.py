"""Run control: start, pause/resume and stop the edited net's run through the bridge, show its
progress and how it ended, follow the chosen feature-map layer, and download datasets for runs.

The run itself lives on the bridge's worker thread; everything here runs on the GUI thread.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget

import engine
from app.bridge import BackgroundCall, RunBridge, session_path_for
from app.controllers.base import Controller


def run_status(snap, warmup: int = 0, in_state_s: float = 0.0) -> str:
    """One line for the status bar from a live snapshot: what the run does and how far it is.

    ``warmup``: the run's warm-up steps (run, not measured; counted in ``progress``);
    ``in_state_s``: how long the run has been in ``snap.state`` (evaluation has no step count,
    so its elapsed time is the honest measure)."""
    done, total = snap.progress
    state = snap.state
    if state == "evaluating":
        return f"evaluating on the test split · {engine.fmt.fmt_duration(in_state_s)}"
    if state == "saving":
        return "saving the weights (checkpoint)"
    if state == "paused":
        return f"paused after step {done} of {total}" if total else "paused"
    if state == "running":
        if not total or (done == 0 and snap.last_step is None):
            return "starting: loading data, building the model"
        if warmup and done <= warmup:
            return f"running · warm-up step {done} of {warmup} (not measured)"
        measured = f" · {total - warmup} measured + {warmup} warm-up" if warmup else ""
        return f"running · step {done} of {total}{measured}"
    return state


class RunController(Controller):
    """Drives the run panel, the run menu's actions and the status bar's run and device labels."""

    run_started = Signal()            # a run was handed to the worker
    run_failed = Signal(str)          # the run ended with status "failed"; the message
    run_finished = Signal(str, str)   # status, message: after the panel, views and canvas are updated

    def __init__(self, settings, bridge: RunBridge, run_panel, status_run, status_device, monitor, sessions,
                 weights, log_view, parent: QWidget):
        super().__init__(parent)
        self.settings = settings
        self.bridge = bridge
        self.run_panel = run_panel
        self.status_run = status_run
        self.status_device = status_device
        self.monitor = monitor
        self.sessions = sessions
        self.weights = weights
        self.log_view = log_view
        self.model = None
        self._actions = ()
        self.edit_lock = None  # EditLock: the net is read-only while it runs
        self._warmup = 0
        self._phase_since: tuple[str, float] | None = None  # (state, monotonic time it was first seen)
        self._downloads: list[BackgroundCall] = []
        self.config_overrides = lambda: {}  # the window points this at the net's (an imported model's source)
        self.bridge.snapshot_ready.connect(monitor.on_live_snapshot)
        self.bridge.state_changed.connect(self._on_run_state)
        self.bridge.progress_changed.connect(self._on_progress)
        self.bridge.snapshot_ready.connect(self._on_snapshot)
        self.bridge.run_finished.connect(self._on_run_finished)
        run_panel.start_requested.connect(self.start)
        run_panel.pause_requested.connect(self.toggle_pause)
        run_panel.stop_requested.connect(self.stop)
        run_panel.download_requested.connect(self.download_dataset)
        run_panel.device_changed.connect(self._on_device_changed)

    def set_model(self, model) -> None:
        """The editor model whose net runs (it exists once torch is loaded)."""
        self.model = model
        model.validated.connect(lambda _v: self.update_actions())

    def set_edit_lock(self, lock) -> None:
        """The editor's lock, closed while a run goes (the window gives it once the editor exists)."""
        self.edit_lock = lock
        lock.set_locked(self.bridge.is_running())

    def bind_actions(self, start, pause, stop) -> None:
        """The Run menu's Start, Pause/resume and Stop actions, enabled to match the run."""
        self._actions = (start, pause, stop)
        self.update_actions()

    def update_actions(self) -> None:
        if not self._actions:
            return
        running = self.bridge.is_running()
        start, pause, stop = self._actions
        controllable = self.bridge.controllable
        start.setEnabled(not running and self.run_panel.start_button.isEnabled())
        pause.setEnabled(running and controllable)
        stop.setEnabled(running and controllable)
        self.run_panel.set_controllable(controllable or not running)

    def start(self, **overrides) -> bool:
        """Start a run of the edited net with the run panel's settings (``overrides`` win, as
        ``RunConfig`` fields). False, with the reason shown, when the net or the settings cannot run."""
        if self.bridge.is_running() or self.model is None:
            return False
        ok, reason = self.model.can_run()
        if not ok:
            self._problem(f"Cannot start: {reason}")
            return False
        kw = self.run_panel.config_kwargs()
        kw.update(self.config_overrides())
        kw.update(overrides)
        fit = self.run_panel.fit_problem() if not overrides.keys() & {"batch_size", "mode", "precision", "device"} \
            else None
        if fit:  # the panel's own warning, word for word (the run's check below says the same)
            self._problem(f"Cannot start: {fit}")
            return False
        cfg = engine.RunConfig(net=self.model.spec(), **kw)
        if cfg.out is None:  # named now, so the run's checkpoints can go beside its session
            try:
                folder = self.settings.runs_folder
                os.makedirs(folder, exist_ok=True)
                cfg.out = os.fspath(session_path_for(Path(folder), cfg.net.name or "net"))
            except OSError:
                cfg.out = None  # the bridge tries again and the log says it was not recorded
        self.weights.prepare(cfg)
        problems = cfg.problems()
        if problems:
            self._problem("Cannot start: " + "; ".join(problems))
            return False
        self._enter_live()
        self.settings.last_device = kw.get("device") or ""
        self.settings.set_run_options(self.run_panel.options())
        self.bridge.start(cfg, runs_folder=self.settings.runs_folder)
        self._warmup = cfg.warmup or 0
        self._phase_since = None
        self.run_panel.set_run_state("starting")
        self.run_panel.show_phase("running")
        self.run_panel.set_progress(0, 0, 0.0)
        self.status_run.setText("starting: loading data, building the model")
        self.status_device.setText(f"device: {cfg.device}")
        self.update_actions()
        return True

    def _enter_live(self) -> None:
        """What a run (local or watched) starts with: a session closed, the canvas locked and the
        views live and empty."""
        if self.sessions.is_open():
            self.sessions.close()
        self.run_started.emit()
        if self.edit_lock is not None:
            self.edit_lock.set_locked(True)
        self.monitor.show_live(clear_canvas=True)

    def begin_watch(self, address: str, token: str, copy_path) -> bool:
        """Show a run served elsewhere (``layerscope profile --serve``) live, like a local run;
        False (and why) when a run is going here."""
        if self.bridge.is_running():
            self._problem("Stop the run before connecting to another one.")
            return False
        self._enter_live()
        self.bridge.watch(address, token, copy_path)
        self._warmup = 0
        self._phase_since = None
        self.run_panel.set_run_state("starting")
        self.run_panel.set_progress(0, 0, 0.0)
        self.status_run.setText(f"connecting to {address}…")
        self.status_device.setText(f"remote run: {address}")
        self.update_actions()
        return True

    def toggle_pause(self) -> None:
        if not self.bridge.is_running():
            return
        if self.bridge.state == "paused":
            self.bridge.resume()
        else:
            self.bridge.pause()

    def stop(self) -> None:
        """Ask the run to stop after its current step (``run_finished`` follows)."""
        if self.bridge.is_running():
            self.bridge.stop()
            self.status_run.setText("stopping…")

    def set_feature_layer(self, node_id: str) -> None:
        """Show ``node_id``'s feature maps (the running run switches at its next capture)."""
        self.run_panel.set_feature_layer(node_id)
        reason = self.bridge.set_feature_node(node_id or None)
        if reason:
            self._status(reason, 5000)

    def set_feature_channels(self, node_id: str, first_channel: int) -> None:
        """Ask the running run for ``node_id``'s channels from ``first_channel`` (0-based, 32 at a
        time); without a run going, says in the status bar that no other channels can come."""
        if not self.bridge.is_running():
            self._status("No run is going: only the channels already captured can be shown", 5000)
            return
        reason = self.bridge.set_feature_node(node_id or None, first_channel)
        if reason:
            self._status(reason, 5000)

    def _on_device_changed(self, device_id: str) -> None:
        if not self.bridge.is_running():
            self.status_device.setText(f"device: {device_id or '–'}")

    def _on_progress(self, done: int, total: int, rate: float) -> None:
        self.run_panel.set_progress(done, total, rate, self._warmup)

    def _on_snapshot(self, snap) -> None:
        """The status bar's run line from the snapshot's state, phase and progress (the records')."""
        if not self.bridge.is_running() or snap.ended is not None:
            return
        if self.bridge.remote:  # whether a watched run takes commands is known once connected
            self.update_actions()
        now = time.monotonic()
        if self._phase_since is None or self._phase_since[0] != snap.state:
            self._phase_since = (snap.state, now)
        text = run_status(snap, self._warmup, now - self._phase_since[1])
        self.status_run.setText(text)
        if snap.state in ("evaluating", "saving", "running"):
            self.run_panel.show_phase(snap.state, text)

    def _on_run_state(self, state: str) -> None:
        if state not in ("running", "paused"):  # the end status; running/paused come with their detail
            self.status_run.setText(state)
        self.run_panel.set_run_state(state if state in ("running", "paused") else "idle")
        self.update_actions()

    def _on_run_finished(self, status: str, message: str) -> None:
        if self.edit_lock is not None:
            self.edit_lock.set_locked(False)
        self.run_panel.set_finished(status, message)
        result = self.bridge.result
        self.weights.note_run_end(status, result.extra if result is not None else None)
        self.status_run.setText(status)
        snap = self.bridge.feed.snapshot() if self.bridge.feed is not None else None
        if snap is not None:
            self.monitor.dispatch(snap, force=True)
        self.sessions.note_recorded(self.bridge.session_path)
        if status == "failed":
            self.run_failed.emit(message)
        elif self.sessions.last_session:
            self.log_view.append("app", f"session saved to {self.sessions.last_session}")
        self.monitor.color_canvas()
        self.update_actions()
        self.run_finished.emit(status, message)

    # ---- datasets ----------------------------------------------------------------------------------
    def download_dataset(self, name: str) -> None:
        """Download ``name`` (mnist, fashion-mnist, cifar10) on a background thread, checksums checked."""
        self._status(f"Downloading {name}…")
        self.run_panel.download_button.setEnabled(False)
        call = BackgroundCall(lambda: engine.download(name, cancel=call.is_cancelled), name="layerscope-download",
                              parent=self)
        self._downloads.append(call)

        def done(result, error):
            self._downloads.remove(call)
            call.deleteLater()
            self.run_panel.download_button.setEnabled(True)
            if error:
                self._problem(f"Download of {name} failed: {error.split(': ', 1)[-1]}")
            else:
                self.log_view.append("ok", f"{name} downloaded to {result}")
                self._status(f"{name} downloaded", 4000)
            self.run_panel.refresh_dataset_note()

        call.finished.connect(done)
        call.start()

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop and join the run, cancel the downloads (each stops at its next chunk and keeps no
        partial dataset) and wait for them (``timeout`` bounds each wait). True when no worker of
        this controller is left."""
        joined = self.bridge.stop_and_join()
        for call in self._downloads:
            call.cancel()
        return all([call.wait(timeout) for call in list(self._downloads)]) and joined
