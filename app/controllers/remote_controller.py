"""File ▸ Connect to run…: follow a run served by another process live, then keep a copy.

The views are fed exactly as for a local run (``RunBridge.watch``: an ``engine.RemoteRun`` on the
worker thread fills the LiveFeed); the recorded net appears on the canvas once its ``RunInfo``
arrives; Pause and Stop are enabled only when the server allows control. The records received
are written to a temporary session in the cache folder; when the run ends the person is offered
to save that copy (the server's own file stays the record of the run).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QDialog, QFileDialog, QWidget

import engine
from app.dialogs.connect_run import ConnectDialog


class RemoteController(QObject):
    """Connects the window to served runs; the remote net replaces the canvas's (after asking about
    unsaved edits, before connecting)."""

    copy_saved = Signal(str)

    def __init__(self, bridge, runs, nets, log_view, parent: QWidget):
        super().__init__(parent)
        self.bridge = bridge
        self.runs = runs
        self.nets = nets
        self.log_view = log_view
        self._parent = parent
        self._net_shown = False
        self._copy: Path | None = None
        self.last_address = "127.0.0.1:7788"
        bridge.snapshot_ready.connect(self._on_snapshot)
        bridge.run_finished.connect(self._on_finished)

    # replaced by tests: the modal questions
    def ask_connection(self) -> tuple[str, str] | None:
        dlg = ConnectDialog(self._parent, self.last_address)
        return dlg.values() if dlg.exec() == QDialog.Accepted else None

    def ask_copy_path(self, suggested: str) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self._parent, "Save a copy of the watched run", suggested,
                                              "LayerScope sessions (*.lsession)")
        return path or None

    def connect_dialog(self) -> None:
        answer = self.ask_connection()
        if answer:
            self.connect_to(*answer)

    def connect_to(self, address: str, token: str) -> bool:
        """Start following ``address``; False (and why, in the log) when it cannot start."""
        try:
            engine.parse_address(address)
        except engine.LayerScopeError as e:
            self.log_view.append("error", str(e))
            return False
        if not self.nets.maybe_save():  # the canvas will show the watched run's net
            return False
        folder = Path(engine.cache_dir()) / "watched"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._copy = folder / f"watched-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.lsession"
        except OSError:
            self._copy = None  # watching still works; there is just no copy to offer
        self._net_shown = False
        self.last_address = address
        if not self.runs.begin_watch(address, token, self._copy):
            return False
        self.log_view.append("app", f"connecting to the run served at {address}")
        return True

    def _on_snapshot(self, snap) -> None:
        if not self.bridge.remote or self._net_shown or snap.info is None:
            return
        net = (snap.info.config or {}).get("net")
        if isinstance(net, dict):
            self._net_shown = True
            self.nets.show_recorded_net(net, ask=False)

    def _on_finished(self, status: str, message: str) -> None:
        if not self.bridge.remote:
            return
        run = self.bridge.run
        if run.missed:
            self.log_view.append("warning", f"{run.missed} records were dropped by the server before they reached "
                                            "this viewer (it was slower than the run)")
        copy = self._copy
        self._copy = None
        if copy is None or not copy.exists() or not run.received:
            return
        path = self.ask_copy_path(str(Path(engine.runs_dir()) / copy.name.replace("watched-", "remote-")))
        if not path:
            self.log_view.append("app", f"the watched run's copy stays in {copy}")
            return
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(os.fspath(copy), path)
        except OSError as e:
            self.log_view.append("error", f"could not save the copy to {path}: {e.strerror or e}")
            return
        self.runs.sessions.note_recorded(path)
        self.log_view.append("ok", f"copy of the watched run saved to {path}")
        self.copy_saved.emit(path)
