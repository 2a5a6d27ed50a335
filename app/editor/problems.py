"""The problems list: every validation problem of the net; clicking one selects its node.

``can_run()`` gives the Start button its state and the reason it is disabled.

Run alone: ``python -m app.editor.problems [preset]``.
"""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QStyle, QWidget

from engine import INPUT_ID

from . import theme
from .model import EditorModel
from .validation import Validation

NODE_ROLE = Qt.UserRole + 1


class ProblemsList(QListWidget):
    """The current validation problems; one row each, 'node: message'."""

    problems_changed = Signal(int)  # how many problems there are now

    def __init__(self, model: EditorModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.setWordWrap(True)
        self.setAlternatingRowColors(False)
        self.setUniformItemSizes(False)
        self.itemClicked.connect(self._on_clicked)
        self.itemActivated.connect(self._on_clicked)
        model.validated.connect(self._on_validated)
        self._on_validated(model.validation())

    def can_run(self) -> tuple[bool, str]:
        """(True, '') when the net can run, else (False, the reason to show by the Start button)."""
        return self.model.can_run()

    def problem_count(self) -> int:
        return len(self.model.validation().problems)

    def _on_validated(self, v: Validation) -> None:
        self.clear()
        if v.ok:
            item = QListWidgetItem("No problems: the net is ready to run.")
            item.setFlags(Qt.ItemIsEnabled)
            item.setForeground(QColor("#2E9E5B"))
            self.addItem(item)
        for p in v.problems:
            node = p.node or ""
            item = QListWidgetItem(self.style().standardIcon(QStyle.SP_MessageBoxWarning),
                                   f"{node}: {p.message}" if node else p.message)
            item.setData(NODE_ROLE, node)
            item.setForeground(QColor(theme.ERROR_COLOR))
            item.setToolTip(p.message + ("\n(click to select the node)" if node else ""))
            self.addItem(item)
        self.problems_changed.emit(len(v.problems))

    def _on_clicked(self, item: QListWidgetItem) -> None:
        node = item.data(NODE_ROLE)
        if node and (node == INPUT_ID or self.model.node(node) is not None):
            self.model.select(node)

    def sizeHint(self) -> QSize:
        return QSize(420, 120)


def main(argv=None) -> int:
    from ._preview import preview

    return preview(lambda model: ProblemsList(model), argv, size=(520, 160))


if __name__ == "__main__":
    raise SystemExit(main())
