"""Net files: new, open, save, save as, presets and the recent-files list. The editor model shows
the net; this controller knows where it came from and whether it was saved."""
from __future__ import annotations

import os
from typing import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFileDialog, QWidget

import engine
from app.controllers.base import Controller

PRESET_TITLES = {"lenet5": "LeNet-5", "alexnet-article": "AlexNet (the article's)", "alexnet": "AlexNet",
                 "vgg11": "VGG-11", "resnet18": "ResNet-18"}
NET_FILTER = "LayerScope nets (*.json);;All files (*)"


class NetController(Controller):
    """The edited net's file (``net_path``), unsaved-edit questions and the recent-files menu.

    ``ask_save()`` returns 'save', 'discard' or 'cancel' (the window's question, which tests replace).
    Until the editor exists (torch still loading) a net to show is kept and handed over by ``take_pending``."""

    title_changed = Signal()
    path_chosen = Signal(str)  # a file picked in the open dialog or the recent-files menu (net or session)

    def __init__(self, settings, recent_menu, ask_save: Callable[[], str], parent: QWidget):
        super().__init__(parent)
        self._window = parent
        self.settings = settings
        self.recent_menu = recent_menu
        self._ask_save = ask_save
        self.model = None
        self.net_path: str | None = None
        self._pending_spec = None
        self.run_going = lambda: False  # the window points this at the bridge: no other net mid-run
        self.fill_recent()

    # ---- the editor ----------------------------------------------------------------------------
    def take_pending(self):
        """The net to show first (a preset or file chosen before the editor existed; default LeNet-5)."""
        spec, self._pending_spec = self._pending_spec, None
        if spec is None:
            try:
                spec = engine.load_preset("lenet5")
            except engine.LayerScopeError:
                spec = None
        return spec

    def set_model(self, model) -> None:
        self.model = model
        model.dirty_changed.connect(lambda _d: self.title_changed.emit())
        self.title_changed.emit()

    def window_title(self) -> str:
        name = os.path.basename(self.net_path) if self.net_path else (
            (self.model.spec_view().name if self.model is not None else "") or "untitled")
        dirty = "*" if self.model is not None and self.model.is_dirty() else ""
        return f"{name}{dirty} — LayerScope"

    def set_spec(self, spec, path: str | None = None) -> None:
        """Show ``spec`` in the editor (kept until the editor exists, if torch is still loading)."""
        self.net_path = path
        if self.model is None:
            self._pending_spec = spec
        else:
            self.model.set_spec(spec)
        self.title_changed.emit()

    def show_recorded_net(self, net: dict | None) -> None:
        """Put a session's net on the canvas (after asking about unsaved edits); a bad net is skipped."""
        if not isinstance(net, dict) or self.model is None:
            return
        try:
            spec = engine.from_dict(net)
        except engine.LayerScopeError:
            return
        if self.maybe_save():
            self.model.set_spec(spec)
            self.net_path = None
            self.title_changed.emit()

    def show_watched_net(self, net: dict | None) -> None:
        """Put the net of a run watched from its server on the canvas (File > Connect to run…):
        the canvas is locked to it like to a local run's; unsaved edits were asked about before
        connecting. A bad net is skipped."""
        if not isinstance(net, dict) or self.model is None:
            return
        try:
            spec = engine.from_dict(net)
        except engine.LayerScopeError:
            return
        self.model.set_spec(spec)
        self.net_path = None
        self.title_changed.emit()

    # ---- files ----------------------------------------------------------------------------------
    def maybe_save(self) -> bool:
        """Ask about unsaved edits; False when the person cancels (or the save fails). While a run
        goes the net on the canvas is the one measured: another net is refused with one line."""
        if self.run_going():
            self._problem("Stop the run before opening another net: the canvas shows the net that runs.")
            return False
        if self.model is None or not self.model.is_dirty():
            return True
        answer = self._ask_save()
        if answer == "save":
            return self.save()
        return answer == "discard"

    def new(self) -> None:
        if self.maybe_save():
            self.set_spec(engine.NetSpec(engine.InputSpec(), [], name="untitled"))

    def load_preset(self, name: str) -> bool:
        if not self.maybe_save():
            return False
        try:
            spec = engine.load_preset(name)
        except engine.LayerScopeError as e:
            self._problem(str(e))
            return False
        self.set_spec(spec)
        self._status(f"Preset {PRESET_TITLES.get(name, name)} loaded", 4000)
        return True

    def open_dialog(self) -> None:
        """Ask for a file; ``path_chosen`` carries it to the window (which opens nets and sessions)."""
        path, _ = QFileDialog.getOpenFileName(self._window, "Open net", self.settings.last_folder, NET_FILTER)
        if path:
            self.path_chosen.emit(path)

    def open(self, path: str) -> bool:
        """Open a net file into the editor; False with one line why."""
        if not self.maybe_save():
            return False
        try:
            spec = engine.load(path)
        except engine.LayerScopeError as e:
            self._problem(str(e))
            if not os.path.exists(path):
                self.fill_recent(self.settings.remove_recent_file(path))
            return False
        self.set_spec(spec, path)
        self.remember(path)
        return True

    def save(self) -> bool:
        if self.model is None:
            return False
        if not self.net_path:
            return self.save_as()
        return self.save_to(self.net_path)

    def save_as(self) -> bool:
        if self.model is None:
            return False
        start = self.net_path or os.path.join(self.settings.last_folder, f"{self.model.spec_view().name or 'net'}.json")
        path, _ = QFileDialog.getSaveFileName(self._window, "Save net as", start, NET_FILTER)
        if not path:
            return False
        if not os.path.splitext(path)[1]:
            path += ".json"
        return self.save_to(path)

    def save_to(self, path: str) -> bool:
        """Write the edited net to ``path``; it becomes the net's file. False with the reason shown."""
        try:
            engine.save(self.model.spec(), path)
        except (engine.LayerScopeError, OSError) as e:
            self._problem(f"cannot save {path}: {getattr(e, 'strerror', None) or e}")
            return False
        self.net_path = path
        self.model.mark_clean()
        self.remember(path)
        self.title_changed.emit()
        self._status(f"Saved {path}", 4000)
        return True

    # ---- recent files ---------------------------------------------------------------------------
    def remember(self, path: str) -> None:
        """Put ``path`` first in the recent files; its folder is where the next file dialog starts."""
        self.settings.last_folder = os.path.dirname(os.path.abspath(path))
        self.fill_recent(self.settings.add_recent_file(path))

    def fill_recent(self, files=None) -> None:
        files = self.settings.recent_files() if files is None else files
        self.recent_menu.clear()
        for p in files:
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda _=False, path=p: self.path_chosen.emit(path))
        if files:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list", lambda: (self.settings.clear_recent_files(), self.fill_recent([])))
        self.recent_menu.setEnabled(bool(files))
