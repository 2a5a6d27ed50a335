"""The window's questions and notes: stop a running run before closing, save unsaved edits, a
non-blocking information box, and About. Kept apart so the window reads as layout and wiring; the
window calls these through one-line methods that tests replace."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget

import engine


def ask_stop_run(parent: QWidget | None) -> bool:
    """True when the person wants the running run stopped so the app can close (modal)."""
    r = QMessageBox.question(parent, "A run is going",
                             "A run is going. Stop it and close LayerScope?\n"
                             "(Its session file keeps everything recorded so far.)",
                             QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return r == QMessageBox.Yes


def ask_save(parent: QWidget | None) -> str:
    """'save', 'discard' or 'cancel' for a net with unsaved edits (modal)."""
    box = QMessageBox(QMessageBox.Warning, "Unsaved changes", "The net has unsaved changes. Save them first?",
                      QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, parent)
    r = box.exec()
    return {QMessageBox.Save: "save", QMessageBox.Discard: "discard"}.get(r, "cancel")


def inform(parent: QWidget | None, title: str, text: str) -> QMessageBox:
    """A short note in a modeless box, deleted on close, so scripts and tests are never held up."""
    box = QMessageBox(QMessageBox.Information, title, text, QMessageBox.Ok, parent)
    box.setModal(False)
    box.setAttribute(Qt.WA_DeleteOnClose)
    box.show()
    return box


def show_about(parent: QWidget | None, settings_path: str, runs_folder) -> None:
    """The version and where settings and recorded runs are kept (modal)."""
    QMessageBox.about(parent, "About LayerScope",
                      f"LayerScope {engine.__version__}\nA desktop profiler for convolutional networks.\n"
                      f"Settings: {settings_path}\nRuns: {runs_folder}")
