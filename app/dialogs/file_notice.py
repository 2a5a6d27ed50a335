"""The status-bar line that says where a file went, with a link that opens its folder.

It replaces the information box each export used to open: four exports left four boxes to
dismiss; now the latest one is said once, in place, and the older ones are in the log.
"""
from __future__ import annotations

import html
import os

from PySide6.QtCore import Qt, QTimer, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QLabel


class FileNotice(QLabel):
    """``show_file(text, path)``: "<text> · Open folder" for ``hold_ms``; the link opens the folder
    holding ``path`` in the file manager (``open_url`` is replaced in tests)."""

    def __init__(self, parent=None, hold_ms: int = 15000):
        super().__init__(parent)
        self.setTextFormat(Qt.RichText)
        self.setTextInteractionFlags(Qt.LinksAccessibleByMouse | Qt.LinksAccessibleByKeyboard)
        self.setOpenExternalLinks(False)
        self.linkActivated.connect(self._on_link)
        self.path: str | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(hold_ms)
        self._timer.timeout.connect(self.clear_file)
        self.setVisible(False)

    def folder(self) -> str | None:
        return os.path.dirname(os.path.abspath(self.path)) if self.path else None

    def show_file(self, text: str, path: str) -> None:
        self.path = os.fspath(path)
        url = QUrl.fromLocalFile(self.folder()).toString()
        self.setText(f"{html.escape(text)} · <a href=\"{html.escape(url)}\">Open folder</a>")
        self.setToolTip(self.path)
        self.setVisible(True)
        self._timer.start()

    def clear_file(self) -> None:
        self.path = None
        self.setText("")
        self.setVisible(False)

    def _on_link(self, url: str) -> None:
        self.open_url(QUrl(url))

    @staticmethod
    def open_url(url: QUrl) -> bool:
        return QDesktopServices.openUrl(url)
