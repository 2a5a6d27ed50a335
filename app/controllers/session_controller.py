"""Recorded sessions in the window: open one into the views (its net onto the canvas), scrub it with
the session bar, close it, and export the open or the last recorded session."""
from __future__ import annotations

import os

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFileDialog, QWidget

import engine
from app.controllers.base import Controller

SESSION_FILTER = "LayerScope sessions (*.lsession);;All files (*)"

# how the Export menu shows a format: menu text, file suffix, file-dialog filter (a name not listed
# here still gets an entry, plainly labelled)
EXPORT_LOOK = {
    "trace": ("Chrome/Perfetto &trace…", ".trace.json", "Trace event JSON (*.json)"),
    "csv": ("Per-layer &CSV…", ".csv", "CSV (*.csv)"),
    "html": ("&HTML report…", ".html", "HTML (*.html)"),
    "json": ("&JSON summary…", ".json", "JSON (*.json)"),
}


def exporters() -> dict:
    """{format name: fn(reader, path) -> Path} as the engine offers them (imports the exporters)."""
    return dict(engine.EXPORTERS)


def export_look(name: str) -> tuple[str, str, str]:
    """(menu text, file suffix, file-dialog filter) for an export format."""
    return EXPORT_LOOK.get(name, (f"{name}…", f".{name}", "All files (*)"))


class SessionController(Controller):
    """Opens sessions into the views through ``player`` and ``session_bar``; remembers the last
    session (opened or recorded) so Export has a source."""

    session_loaded = Signal(object, object)  # net dict (or None), telemetry status (or None): before it shows
    session_closed = Signal()
    file_opened = Signal(str)               # a session file was opened (the recent-files list takes it)

    def __init__(self, settings, bridge, player, session_bar, monitor, log_view, parent: QWidget):
        super().__init__(parent)
        self._window = parent
        self.settings = settings
        self.browser = None  # the session browser, once opened
        self.bridge = bridge
        self.player = player
        self.session_bar = session_bar
        self.monitor = monitor
        self.log_view = log_view
        self.last_session: str | None = None
        self.compare_paths = None  # fn(paths) -> bool: the window's comparison (the browser's Compare)
        player.snapshot_ready.connect(monitor.on_session_snapshot)
        session_bar.closed.connect(self.close)

    def is_open(self) -> bool:
        return self.player.is_open()

    def open_dialog(self) -> None:
        start = self.settings.last_folder or os.fspath(self.settings.runs_folder)
        path, _ = QFileDialog.getOpenFileName(self._window, "Open session", start, SESSION_FILTER)
        if path:
            self.open(path)

    def browse(self):
        """The session browser on the runs folder (one, non-modal; shown again if already open)."""
        from app.dialogs.session_browser import SessionBrowser

        dlg = self.browser
        if dlg is None:
            dlg = self.browser = SessionBrowser(self.settings.runs_folder, self._window)
            dlg.open_requested.connect(self.open)
            if self.compare_paths is not None:
                dlg.compare_requested.connect(self.compare_paths)
            dlg.show()
        else:  # already open (maybe behind the window): fresh list, brought forward
            dlg.refresh()
            dlg.show()
            dlg.raise_()
        return dlg

    def open(self, path) -> bool:
        """Show a recorded session in the views with the step slider; False (and one line why) when
        a run is going or the file cannot be read."""
        if self.bridge.is_running():
            self._problem("Stop the run before opening a session.")
            return False
        try:
            self.player.open(path)
        except engine.LayerScopeError as e:
            self._problem(str(e))
            return False
        except Exception as e:  # sqlite and friends: still one line for the user
            self._problem(f"{path} cannot be read ({type(e).__name__}: {e})")
            return False
        info = self.player.info
        net = (info.config or {}).get("net") if info else None
        telemetry = (self.player.reader.meta or {}).get("telemetry")
        self.session_loaded.emit(net if isinstance(net, dict) else None,
                                 telemetry if isinstance(telemetry, dict) else None)
        self.monitor.show_session()
        self.session_bar.load()
        self.session_bar.setVisible(True)
        snap = self.player.snapshot()
        if snap is not None:
            self.monitor.dispatch(snap, force=True)
        self.last_session = os.fspath(path)
        self.file_opened.emit(self.last_session)
        self.monitor.color_canvas()
        self.log_view.append("app", f"opened session {path}")
        return True

    def close(self) -> None:
        """Back to the live views (empty until the next run)."""
        self.player.close()
        self.session_bar.setVisible(False)
        self.monitor.show_live()
        self.session_closed.emit()

    def note_recorded(self, path: str | None) -> None:
        """A run wrote ``path``: it becomes the session Export uses (if the file is there)."""
        if path and os.path.exists(path):
            self.last_session = path

    def source_for_export(self) -> str | None:
        """The open session, else the last recorded or opened one; None when there is none."""
        if self.player.is_open():
            return self.player.path
        return self.last_session

    def export_dialog(self, kind: str) -> None:
        src = self.source_for_export()
        if not src:
            self._problem("Nothing to export yet: run a net or open a session first.")
            return
        _text, suffix, filt = export_look(kind)
        path, _ = QFileDialog.getSaveFileName(self._window, "Export session", os.path.splitext(src)[0] + suffix, filt)
        if path:
            self.export(kind, path, src)

    def export(self, kind: str, path: str, src: str | None = None) -> str | None:
        """Write export ``kind`` of ``src`` (default: ``source_for_export()``) to ``path``; returns the
        path written, or None with the reason shown."""
        src = src or self.source_for_export()
        if not src:
            self._problem("Nothing to export yet: run a net or open a session first.")
            return None
        fn = exporters().get(kind)
        if fn is None:
            self._problem(f"Export failed: no export format {kind!r}")
            return None
        try:
            with engine.open_session(src) as reader:
                out = fn(reader, path)
        except (engine.LayerScopeError, OSError) as e:
            self._problem(f"Export failed: {getattr(e, 'strerror', None) or e}")
            return None
        out = os.fspath(out or path)
        self.log_view.append("ok", f"exported {kind} to {out}")
        self._file(f"Exported {kind} to {os.path.basename(out)}", out)
        return out
