"""What every controller tells the window: a problem for the banner, a note for an information box,
a message for the status bar, a file written (the status bar links its folder). The window decides how each is shown."""
from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class Controller(QObject):
    """Base of the window's controllers: three signals, one way of reporting."""

    problem_reported = Signal(str)      # one line: the banner, the log and the status bar show it
    note_reported = Signal(str, str)    # title, text: a short non-blocking information box
    status_posted = Signal(str, int)    # text, milliseconds: a passing status-bar message
    file_written = Signal(str, str)     # text, path: the status bar says it with a link to the folder

    def _problem(self, text: str) -> None:
        self.problem_reported.emit(text)

    def _note(self, title: str, text: str) -> None:
        self.note_reported.emit(title, text)

    def _status(self, text: str, ms: int = 0) -> None:
        self.status_posted.emit(text, ms)

    def _file(self, text: str, path: str) -> None:
        self.file_written.emit(text, path)
