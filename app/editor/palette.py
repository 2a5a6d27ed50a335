"""The layer palette: every registered kind, grouped by family, with icons and help tooltips.

Drag a kind onto the canvas (MIME ``application/x-layerscope-kind``, the kind name in
UTF-8) or double-click it to append it to the net. The "Input" item selects the net input
so the property panel edits channels, size and classes.

Run alone: ``python -m app.editor.palette``.
"""
from __future__ import annotations

from PySide6.QtCore import QMimeData, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QAbstractItemView, QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

import engine
from engine import INPUT_ID

from . import theme
from .canvas import KIND_MIME
from .model import EditorModel

KIND_ROLE = Qt.UserRole + 1


class _Tree(QTreeWidget):
    def mimeTypes(self) -> list[str]:
        return [KIND_MIME]

    def mimeData(self, items) -> QMimeData:
        mime = QMimeData()
        kinds = [i.data(0, KIND_ROLE) for i in items if i.data(0, KIND_ROLE)]
        if kinds:
            mime.setData(KIND_MIME, kinds[0].encode("utf-8"))
            mime.setText(kinds[0])
        return mime

    def supportedDropActions(self):
        return Qt.CopyAction


class PaletteWidget(QWidget):
    """Layer kinds grouped by family; a drag source for the canvas."""

    kind_activated = Signal(str)  # double-clicked kind (after the model was told), or 'input'

    def __init__(self, model: EditorModel | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.filter = QLineEdit(self)
        self.filter.setPlaceholderText("Filter layers")
        self.filter.setClearButtonEnabled(True)
        self.tree = _Tree(self)
        self.tree.setHeaderHidden(True)
        self.tree.setRootIsDecorated(False)
        self.tree.setIndentation(6)
        self.tree.setIconSize(QSize(20, 20))
        self.tree.setDragEnabled(True)
        self.tree.setDragDropMode(QAbstractItemView.DragOnly)
        self.tree.setSelectionMode(QAbstractItemView.SingleSelection)
        self.tree.setUniformRowHeights(True)
        self.tree.setStyleSheet("QTreeWidget::item { padding: 2px 0; }")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        lay.addWidget(self.filter)
        lay.addWidget(self.tree)
        self._items: dict[str, QTreeWidgetItem] = {}
        self._populate()
        self.filter.textChanged.connect(self._on_filter)
        self.tree.itemDoubleClicked.connect(self._on_double_clicked)

    def _populate(self) -> None:
        by_family: dict[str, list] = {f: [] for f in engine.FAMILIES}
        for kind in engine.kinds().values():
            by_family.setdefault(kind.family, []).append(kind)
        head_font = QFont(self.font())
        head_font.setBold(True)
        head_font.setPointSizeF(max(7.0, head_font.pointSizeF() * 0.92))
        for family, kinds in by_family.items():
            if family != "input" and not kinds:
                continue
            head = QTreeWidgetItem(self.tree, [theme.FAMILY_TITLES.get(family, family.title()).upper()])
            head.setFlags(Qt.ItemIsEnabled)
            head.setFont(0, head_font)
            head.setForeground(0, theme.mix(theme.family_color(family), QColor(self.palette().text().color()), 0.35))
            head.setData(0, Qt.UserRole + 2, family)
            if family == "input":
                item = QTreeWidgetItem(head, ["Input"])
                item.setIcon(0, theme.icon("input"))
                item.setToolTip(0, "<b>Input</b><br>the net input: channels, height, width and number of classes"
                                   "<br><i>double-click to edit</i>")
                item.setData(0, KIND_ROLE, INPUT_ID)
                item.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable)
                self._items[INPUT_ID] = item
            for kind in kinds:
                item = QTreeWidgetItem(head, [kind.name])
                item.setIcon(0, theme.icon(kind.name, kind.family))
                params = ", ".join(p.name for p in kind.params)
                tip = f"<b>{kind.name}</b><br>{kind.help}"
                if params:
                    tip += f"<br><span style='color:gray'>parameters: {params}</span>"
                tip += "<br><i>drag onto the canvas, or double-click to append</i>"
                item.setToolTip(0, tip)
                item.setData(0, KIND_ROLE, kind.name)
                item.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable | Qt.ItemIsDragEnabled)
                self._items[kind.name] = item
            head.setExpanded(True)

    def item_for(self, kind: str) -> QTreeWidgetItem | None:
        return self._items.get(kind)

    def families(self) -> list[str]:
        """The family groups shown, in order."""
        return [self.tree.topLevelItem(i).data(0, Qt.UserRole + 2) for i in range(self.tree.topLevelItemCount())]

    def _on_filter(self, text: str) -> None:
        text = text.strip().lower()
        for i in range(self.tree.topLevelItemCount()):
            head = self.tree.topLevelItem(i)
            visible = 0
            for j in range(head.childCount()):
                child = head.child(j)
                hay = f"{child.text(0)} {head.text(0)} {child.toolTip(0)}".lower()
                hide = bool(text) and text not in hay
                child.setHidden(hide)
                visible += not hide
            head.setHidden(visible == 0)

    def _on_double_clicked(self, item: QTreeWidgetItem, column: int) -> None:
        kind = item.data(0, KIND_ROLE)
        if not kind:
            return
        if self.model is not None:
            if kind == INPUT_ID:
                self.model.select(INPUT_ID)
            else:
                self.model.add_node(kind)
        self.kind_activated.emit(kind)

    def sizeHint(self) -> QSize:
        return QSize(210, 560)


def main(argv=None) -> int:
    from ._preview import preview

    return preview(lambda model: PaletteWidget(model), argv, size=(230, 640))


if __name__ == "__main__":
    raise SystemExit(main())
