"""The net is read-only while it runs: the canvas, palette and properties take no edits, and a
notice on the canvas says why. Without it an edit was accepted silently and the canvas showed a
net (conv2 with 32 channels) that was not the one running (16), nor the one its feature maps came
from. Looking stays possible: zoom, pan with the middle button, fit, select, copy.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QLabel, QWidget

NOTICE = "Read-only while the run goes: edits would not reach the running net. Stop the run to edit."
EDIT_ACTIONS = ("undo", "redo", "cut", "paste", "delete", "duplicate", "relayout")
_BLOCKED = {QEvent.DragEnter, QEvent.DragMove, QEvent.Drop, QEvent.MouseButtonDblClick}


class EditLock(QObject):
    """``set_locked(True)`` while a run goes; ``locked`` and ``notice`` say the state."""

    def __init__(self, canvas, widgets: list[QWidget], actions: dict, parent: QObject | None = None):
        super().__init__(parent)
        self.canvas = canvas
        self.widgets = [w for w in widgets if w is not None]
        self.actions = {k: a for k, a in actions.items() if k in EDIT_ACTIONS}
        self.locked = False
        self._was_enabled: dict[str, bool] = {}
        self.notice = QLabel(NOTICE, canvas)
        self.notice.setObjectName("reason")
        self.notice.setStyleSheet("background:#3A3320; color:#F2DFA6; padding:4px 8px; border-radius:3px;")
        self.notice.setVisible(False)
        canvas.viewport().installEventFilter(self)
        canvas.installEventFilter(self)

    def set_locked(self, locked: bool) -> None:
        if locked == self.locked:
            return
        self.locked = locked
        for w in self.widgets:
            w.setEnabled(not locked)
        if locked:
            self._was_enabled = {k: a.isEnabled() for k, a in self.actions.items()}
            for a in self.actions.values():
                a.setEnabled(False)
        else:
            for k, a in self.actions.items():
                if k in ("undo", "redo"):  # the undo stack's own actions know their state
                    stack = self.canvas.model.undo_stack()
                    a.setEnabled(stack.canUndo() if k == "undo" else stack.canRedo())
                else:
                    a.setEnabled(self._was_enabled.get(k, True))
        self.notice.setVisible(locked)
        if locked:
            self.notice.adjustSize()
            self.notice.move(8, 8)
            self.notice.raise_()

    def eventFilter(self, obj, event) -> bool:
        if not self.locked:
            return False
        t = event.type()
        if t in _BLOCKED:
            event.ignore()
            return True
        # a left press would start a port link or a move; the middle button still pans
        if t in (QEvent.MouseButtonPress, QEvent.MouseButtonRelease, QEvent.MouseMove) \
                and (event.button() == Qt.LeftButton or event.buttons() & Qt.LeftButton):
            return True
        return False
