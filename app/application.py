"""Starts the desktop app (placeholder window until the app issue lands)."""
from __future__ import annotations

import sys


def run(argv: list[str] | None = None) -> int:
    from PySide6.QtWidgets import QApplication, QLabel

    app = QApplication.instance() or QApplication(sys.argv[:1])
    w = QLabel("LayerScope")
    w.setWindowTitle("LayerScope")
    w.resize(800, 600)
    w.show()
    return app.exec()
