"""The canvas's edit and view actions (undo, redo, cut, copy, paste, delete, duplicate, select all,
fit, re-layout, zoom) with their shortcuts, bound to one ``CanvasView``."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence


def make_canvas_actions(view) -> dict[str, QAction]:
    """The actions keyed as ``CanvasView.edit_actions`` documents, added to ``view``; their
    shortcuts work while ``view`` or a child of it has the focus (``Qt.WidgetWithChildrenShortcut``)."""
    stack = view.model.undo_stack()
    undo = stack.createUndoAction(view, "Undo")
    undo.setShortcuts([QKeySequence("Ctrl+Z")])
    redo = stack.createRedoAction(view, "Redo")
    redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
    acts = {"undo": undo, "redo": redo}

    def make(key, text, shortcuts, slot):
        a = QAction(text, view)
        a.setShortcuts([QKeySequence(s) for s in shortcuts])
        a.triggered.connect(slot)
        acts[key] = a

    make("cut", "Cut", ["Ctrl+X"], lambda: view.model.cut_nodes(view.selected_ids()))
    make("copy", "Copy", ["Ctrl+C"], lambda: view.model.copy_nodes(view.selected_ids()))
    make("paste", "Paste", ["Ctrl+V"], lambda: view.model.paste())
    make("delete", "Delete", ["Delete", "Backspace"], view.delete_selection)
    make("duplicate", "Duplicate", ["Ctrl+D"], lambda: view.model.duplicate(view.selected_ids()))
    make("select_all", "Select All", ["Ctrl+A"], view._select_all)
    make("fit", "Fit to View", ["F"], view.fit_view)
    make("relayout", "Re-layout", ["L"], view.relayout)
    make("zoom_in", "Zoom In", ["Ctrl+=", "Ctrl++"], lambda: view.zoom_by(1.25))
    make("zoom_out", "Zoom Out", ["Ctrl+-"], lambda: view.zoom_by(0.8))
    make("zoom_reset", "Actual Size", ["Ctrl+0"], view.zoom_reset)
    for a in acts.values():
        a.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        view.addAction(a)
    return acts
