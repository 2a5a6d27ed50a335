"""Net files: new, open, save, save as, presets and the recent-files list; exporting the net as
PyTorch code or ONNX; importing a user's PyTorch model. The editor model shows the net; this
controller knows where it came from (a file, or an imported model's source) and whether it was saved."""
from __future__ import annotations

import os
from typing import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDialog, QFileDialog, QWidget

import engine
from app.bridge import BackgroundCall
from app.controllers.base import Controller

PRESET_TITLES = {"lenet5": "LeNet-5", "alexnet-article": "AlexNet (the article's)", "alexnet": "AlexNet",
                 "vgg11": "VGG-11", "resnet18": "ResNet-18"}
NET_FILTER = "LayerScope nets (*.json);;All files (*)"
IMPORT_SETTING = "model"  # the RunConfig field that runs an imported model from its source
EXPORT_LOOK = {"pytorch": ("Export net as PyTorch", ".py", "PyTorch module (*.py);;All files (*)"),
               "onnx": ("Export net as ONNX", ".onnx", "ONNX model (*.onnx);;All files (*)")}


def _one_line(fn):
    """Worker-thread wrapper: an engine error comes back as its own one line, not 'LayerScopeError: …'."""
    def call():
        try:
            return fn(), None
        except engine.LayerScopeError as e:
            return None, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return call


class NetController(Controller):
    """The edited net's file (``net_path``), unsaved-edit questions and the recent-files menu.

    ``ask_save()`` returns 'save', 'discard' or 'cancel' (the window's question, which tests replace).
    Until the editor exists (torch still loading) a net to show is kept and handed over by ``take_pending``."""

    title_changed = Signal()
    path_chosen = Signal(str)  # a file picked in the open dialog or the recent-files menu (net or session)
    exported = Signal(str, str)  # path, error ('' when written): an export finished
    imported = Signal(str)       # error ('' when the imported graph is on the canvas): an import finished

    def __init__(self, settings, recent_menu, ask_save: Callable[[], str], parent: QWidget):
        super().__init__(parent)
        self._window = parent
        self.settings = settings
        self.recent_menu = recent_menu
        self._ask_save = ask_save
        self.model = None
        self.net_path: str | None = None
        self._pending_spec = None
        self.import_request: tuple | None = None  # (source, (C, H, W), classes) of the imported model shown
        self._imported_spec = None  # the imported graph as imported (edits to it are compared with this)
        self._calls: list[BackgroundCall] = []
        self.export_weights = lambda: None  # the window points this at the last checkpoint (ONNX bakes it in)
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
        self.import_request = self._imported_spec = None
        if self.model is None:
            self._pending_spec = spec
        else:
            self.model.set_spec(spec)
        self.title_changed.emit()

    def show_recorded_net(self, net: dict | None, ask: bool = True) -> None:
        """Put a session's net on the canvas (after asking about unsaved edits); a bad net is skipped.

        ``ask=False``: the net of a run watched from its server (File > Connect to run…): the canvas
        is locked to it like to a local run's, and unsaved edits were asked about before connecting."""
        if not isinstance(net, dict) or self.model is None:
            return
        try:
            spec = engine.from_dict(net)
        except engine.LayerScopeError:
            return
        if not ask or self.maybe_save():
            self.model.set_spec(spec)
            self.net_path = None
            self.import_request = self._imported_spec = None
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
        if self.model is None or self._refuse_unsaveable():
            return False
        if not self.net_path:
            return self.save_as()
        return self.save_to(self.net_path)

    def _refuse_unsaveable(self) -> bool:
        """True (with the one-line reason shown) when the net holds imported ops with no layer kind."""
        from app.editor import unsaveable_reason

        why = unsaveable_reason(self.model.spec_view())
        if why:
            self._problem(why)
        return bool(why)

    def save_as(self) -> bool:
        if self.model is None or self._refuse_unsaveable():
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
        if self._refuse_unsaveable():
            return False
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

    # ---- export ---------------------------------------------------------------------------------
    def export_dialog(self, fmt: str) -> BackgroundCall | None:
        """Ask where to write the canvas's net as ``fmt`` ("pytorch" or "onnx") and write it there.
        Qt's save dialog asks before replacing a file; a name typed without the suffix gets it, and
        then an existing file of that name is refused (the dialog never asked about it)."""
        if self.model is None:
            return None
        title, suffix, filt = EXPORT_LOOK[fmt]
        stem = (self.model.spec_view().name or "net").replace(os.sep, "_")
        path, _ = QFileDialog.getSaveFileName(self._window, title, os.path.join(self.settings.last_folder,
                                                                               stem + suffix), filt)
        if not path:
            return None
        force = True  # the dialog asked before replacing the file it names
        if not os.path.splitext(path)[1]:
            path += suffix
            force = False
        return self.export_to(fmt, path, force=force)

    def export_to(self, fmt: str, path: str, force: bool = False) -> BackgroundCall | None:
        """Write the canvas's net as ``fmt`` to ``path`` on a worker thread (ONNX tracing takes
        seconds for a large net). ``exported(path, error)`` fires when done; an existing file is
        replaced only with ``force``. None (with the reason shown) when the net cannot be exported."""
        if self.model is None:
            return None
        ok, reason = self.model.can_run()
        if not ok:
            self._problem(f"Cannot export: {reason}")
            self.exported.emit(path, reason)
            return None
        spec = self.model.spec()
        ckpt = self.export_weights() if fmt == "onnx" else None

        def work():
            if ckpt:
                try:  # the last run's weights, when they fit the net on the canvas
                    return engine.export_net(spec, fmt, path, weights=ckpt, force=force), os.path.basename(ckpt)
                except engine.LayerScopeError as e:
                    if "does not fit" not in str(e):
                        raise
            return engine.export_net(spec, fmt, path, force=force), None

        call = BackgroundCall(_one_line(work), name="layerscope-export-net", parent=self)
        call.finished.connect(lambda result, error, c=call: self._on_exported(c, path, result, error))
        self._calls.append(call)
        self._status(f"Exporting {spec.name or 'the net'} as {fmt}…")
        return call.start()

    def _on_exported(self, call, path: str, result, error) -> None:
        self._calls = [c for c in self._calls if c is not call]
        error = error or (result[1] if result else "export failed")
        if result and result[0] is not None:
            written, weights = result[0]
            what = f"with the weights of {weights}" if weights else (
                "with its initial weights (no checkpoint of this net)" if path.endswith(".onnx") else "")
            self._file(f"Exported {os.path.basename(path)} {what}".strip(), str(written))
            self.exported.emit(str(written), "")
            return
        self._problem(f"Cannot export: {error}")
        self.exported.emit(path, error)

    # ---- import ---------------------------------------------------------------------------------
    def import_dialog(self) -> BackgroundCall | None:
        """Ask for a model (its file's code is executed, the dialog says so) and import it."""
        from app.dialogs.import_model import ImportModelDialog

        dlg = ImportModelDialog(self._window, self.settings.last_folder)
        if dlg.exec() != QDialog.Accepted:
            return None
        source, shape, classes = dlg.request()
        return self.import_model(source, shape, classes)

    def import_model(self, source: str, shape, classes: int) -> BackgroundCall | None:
        """Import ``source`` (``FILE.py:FACTORY`` or ``torchvision:NAME``; a file's code runs) on a
        worker thread and draw its graph on the canvas. ``imported(error)`` fires when done."""
        if self.model is None or not self.maybe_save():
            return None
        shape = tuple(int(d) for d in shape)
        call = BackgroundCall(_one_line(lambda: engine.import_model(source, shape, int(classes))),
                              name="layerscope-import", parent=self)
        call.finished.connect(lambda result, error, c=call: self._on_imported(c, (source, shape, int(classes)),
                                                                               result, error))
        self._calls.append(call)
        self._status(f"Importing {source}…")
        return call.start()

    def _on_imported(self, call, request, result, error) -> None:
        self._calls = [c for c in self._calls if c is not call]
        error = error or (result[1] if result else "import failed")
        if not result or result[0] is None:
            self._problem(f"Cannot import {request[0]}: {error}")
            self.imported.emit(error)
            return
        imp = result[0]
        self.set_spec(imp.spec)  # no file: Save asks where (and refuses while ops have no layer kind)
        self.import_request = request
        self._imported_spec = imp.spec.copy()
        if self.model is not None:
            self.model.mark_clean()
        from app.editor import opaque_op

        opaque = sum(1 for n in imp.spec.nodes if opaque_op(n) is not None)
        self._status(f"Imported {request[0]}: {len(imp.spec.nodes)} nodes, {opaque} read-only imported ops", 8000)
        if getattr(imp, "notice", None):
            self._note("Imported model", imp.notice)
        self.imported.emit("")

    def run_overrides(self) -> dict:
        """``RunConfig`` fields for a run of the canvas's net: an imported model runs from its source
        (the user's modules and weights), unless every node maps to a layer kind and it was edited
        (then the edited LayerScope net is what runs)."""
        if self.import_request is None or self.model is None:
            return {}
        from app.editor import unsaveable_reason

        edited = engine.dumps(self.model.spec()) != engine.dumps(self._imported_spec)
        if edited and not unsaveable_reason(self.model.spec_view()):
            return {}
        source, shape, classes = self.import_request
        return {IMPORT_SETTING: source}

    def shutdown(self) -> None:
        """Drop the results of exports and imports still going (their threads end on their own)."""
        for c in self._calls:
            c.cancel()
        self._calls = []

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
