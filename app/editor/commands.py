"""Undo: each edit swaps whole editor states (nets are small, so snapshots make undo exact)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtGui import QUndoCommand

from engine import NetSpec

if TYPE_CHECKING:
    from .model import EditorModel


@dataclass
class EditorState:
    """One point in the undo history: the net, node positions, and whether they were placed by hand."""

    spec: NetSpec
    positions: dict[str, tuple[float, float]]
    manual: bool


class EditCommand(QUndoCommand):
    """Swaps whole editor states; nets are small, so snapshots make undo exact and simple."""

    def __init__(self, model: EditorModel, text: str, before: EditorState, after: EditorState, merge_key=None):
        super().__init__(text)
        self._model = model
        self.before = before
        self.after = after
        self.merge_key = merge_key

    def id(self) -> int:
        return 1 if self.merge_key is not None else -1

    def mergeWith(self, other) -> bool:
        if getattr(other, "merge_key", None) != self.merge_key:
            return False
        self.after = other.after
        return True

    def redo(self) -> None:
        self._model._restore(self.after)

    def undo(self) -> None:
        self._model._restore(self.before)
