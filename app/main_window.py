"""The main window: the net editor in the middle, the run panel and the monitor views in docks,
menus for nets, sessions, presets, views and runs, and a status bar (device, run state, NVML).

Start-up order matters: the window is shown first, with placeholders in the editor and plot docks
(pyqtgraph and numpy cost about half a second to import on a small machine, so nothing on the
path to the first paint imports them). Right after the first paint torch is imported, devices
listed and the telemetry status probed on a background thread (``BackgroundCall``) while the
monitor views are built on the GUI thread; once torch is there the editor is built (its
validation runs the engine, which needs torch). ``ready`` fires at that point, so anything
waiting for ``ready`` finds every view built.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QHBoxLayout, QLabel, QMainWindow, QMessageBox,
                               QPushButton, QStackedWidget, QVBoxLayout, QWidget)

import engine
from app.bridge import BackgroundCall, RunBridge
from app.run_panel import RunPanel
from app.session_view import SessionBar, SessionPlayer
from app.settings import Settings
from app.views.log_view import LogView

# the plot views (and pyqtgraph, numpy with them) are imported in _build_deferred_views

PRESET_TITLES = {"lenet5": "LeNet-5", "alexnet-article": "AlexNet (the article's)", "alexnet": "AlexNet",
                 "vgg11": "VGG-11", "resnet18": "ResNet-18"}
NET_FILTER = "LayerScope nets (*.json);;All files (*)"
SESSION_FILTER = "LayerScope sessions (*.lsession);;All files (*)"
EXPORTS = (  # key, menu text, suffix, filter
    ("trace", "Chrome/Perfetto &trace…", ".trace.json", "Trace event JSON (*.json)"),
    ("csv", "Per-layer &CSV…", ".csv", "CSV (*.csv)"),
    ("html", "&HTML report…", ".html", "HTML (*.html)"),
    ("json", "&JSON summary…", ".json", "JSON (*.json)"),
)
COLOR_BY = (("", "&None"), ("time", "&Time"), ("memory", "&Memory"), ("flops", "&FLOP/s"))


def _preload() -> dict:
    """Worker thread: pay for torch once, list devices, probe telemetry (all Qt-free)."""
    import engine.net.graph  # noqa: F401  (imports torch)

    try:
        # the first shape/FLOP analysis pulls in more of torch (torch._dynamo, seconds on a small
        # machine); pay for it here rather than in the editor's first validation on the GUI thread
        engine.analyze(engine.load_preset("lenet5"))
    except Exception:
        pass
    out = {"devices": engine.list_devices(), "telemetry": {}}
    try:
        out["telemetry"] = engine.telemetry_status()
    except Exception as e:  # telemetry is optional; the status bar says why it is missing
        out["telemetry"] = {"nvml": {"available": False, "reason": f"telemetry status failed: {e}"}}
    return out


class MainWindow(QMainWindow):
    ready = Signal()                 # editor built, devices known
    run_finished = Signal(str, str)  # re-emitted from the bridge after the window has updated
    first_shown = Signal()

    def __init__(self, settings: Settings | None = None, parent=None):
        super().__init__(parent)
        self.settings = settings or Settings()
        self.setWindowTitle("LayerScope")
        self.setDockNestingEnabled(True)
        self.setCorner(Qt.BottomLeftCorner, Qt.LeftDockWidgetArea)
        self.setCorner(Qt.BottomRightCorner, Qt.BottomDockWidgetArea)
        self.model = None
        self.canvas = None
        self.palette = None
        self.properties = None
        self.problems = None
        self.net_path: str | None = None
        self.devices: list = []
        self.telemetry: dict = {}
        self.last_session: str | None = None
        self.last_snapshot = None
        self._source = "live"  # "live" | "session"
        self._next_view = 0
        self._pending_spec = None
        self._shown_once = False
        self._closing = False
        self.is_ready = False

        self.bridge = RunBridge(self)
        self.bridge.snapshot_ready.connect(self._on_live_snapshot)
        self.bridge.state_changed.connect(self._on_run_state)
        self.bridge.progress_changed.connect(self._on_progress)
        self.bridge.run_finished.connect(self._on_run_finished)
        self.player = SessionPlayer(self)
        self.player.snapshot_ready.connect(self._on_session_snapshot)

        # central area: failure banner, session bar, canvas (a placeholder until torch is ready)
        self.banner = QWidget()
        self.banner.setStyleSheet("background:#4A1F22;")
        bl = QHBoxLayout(self.banner)
        bl.setContentsMargins(10, 4, 6, 4)
        self.banner_text = QLabel("")
        self.banner_text.setWordWrap(True)
        self.banner_text.setStyleSheet("color:#FFD5D6;")
        self.banner_text.setTextInteractionFlags(Qt.TextSelectableByMouse)
        dismiss = QPushButton("Dismiss")
        dismiss.clicked.connect(lambda: self.banner.setVisible(False))
        bl.addWidget(self.banner_text, 1)
        bl.addWidget(dismiss)
        self.banner.setVisible(False)
        self.session_bar = SessionBar(self.player)
        self.session_bar.closed.connect(self.close_session)
        self.session_bar.setVisible(False)
        self.center = QStackedWidget()
        self.placeholder = QLabel("Loading PyTorch…")
        self.placeholder.setAlignment(Qt.AlignCenter)
        self.placeholder.setObjectName("notice")
        self.center.addWidget(self.placeholder)
        central = QWidget()
        cl = QVBoxLayout(central)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.setSpacing(0)
        cl.addWidget(self.banner)
        cl.addWidget(self.session_bar)
        cl.addWidget(self.center, 1)
        self.setCentralWidget(central)

        # docks
        self.run_panel = RunPanel()
        self.run_panel.start_requested.connect(self.start_run)
        self.run_panel.pause_requested.connect(self.toggle_pause)
        self.run_panel.stop_requested.connect(self.stop_run)
        self.run_panel.download_requested.connect(self.download_dataset)
        self.run_panel.feature_layer_changed.connect(self._on_feature_layer)
        self.run_panel.device_changed.connect(self._on_device_changed)
        self.run_panel.set_options(self.settings.run_options())
        self.log_view = LogView()
        # the plot views and the table are built just after the first paint (_build_deferred_views):
        # importing pyqtgraph and creating plots is the larger part of start-up, and none of them
        # has anything to show before a run. Until then their docks hold placeholders.
        self.time_view = None
        self.training_view = None
        self.feature_view = None
        self.table_view = None
        self.memory_view = None
        self.power_view = None
        self.views = [self.log_view]
        self.docks: dict[str, QDockWidget] = {}
        self._placeholders = {name: self._placeholder_label()
                              for name in ("palette", "properties", "problems", "time", "training", "features",
                                           "table", "memory", "power")}
        self._dock("palette", "Layers", self._placeholders["palette"], Qt.LeftDockWidgetArea)
        self._dock("properties", "Properties", self._placeholders["properties"], Qt.LeftDockWidgetArea)
        self._dock("problems", "Problems", self._placeholders["problems"], Qt.LeftDockWidgetArea)
        self._dock("run", "Run", self.run_panel, Qt.RightDockWidgetArea)
        self._dock("time", "Layer time", self._placeholders["time"], Qt.BottomDockWidgetArea)
        self._dock("training", "Training", self._placeholders["training"], Qt.BottomDockWidgetArea)
        self._dock("features", "Feature maps", self._placeholders["features"], Qt.BottomDockWidgetArea)
        self._dock("table", "Layer table", self._placeholders["table"], Qt.BottomDockWidgetArea)
        self._dock("memory", "Memory", self._placeholders["memory"], Qt.BottomDockWidgetArea)
        self._dock("power", "Power && energy", self._placeholders["power"], Qt.BottomDockWidgetArea)
        self._dock("log", "Log", self.log_view, Qt.BottomDockWidgetArea)
        self.splitDockWidget(self.docks["palette"], self.docks["properties"], Qt.Vertical)
        self.splitDockWidget(self.docks["properties"], self.docks["problems"], Qt.Vertical)
        self.splitDockWidget(self.docks["time"], self.docks["training"], Qt.Horizontal)
        self.splitDockWidget(self.docks["training"], self.docks["features"], Qt.Horizontal)
        self.tabifyDockWidget(self.docks["time"], self.docks["table"])
        self.tabifyDockWidget(self.docks["table"], self.docks["memory"])
        self.tabifyDockWidget(self.docks["training"], self.docks["power"])
        self.tabifyDockWidget(self.docks["power"], self.docks["log"])
        for first in ("time", "training"):
            self.docks[first].raise_()
        self._default_state = None

        self._build_menus()
        self._build_status_bar()
        self._restore_window()
        self._loader = None

    # ---- construction helpers ---------------------------------------------------------------------
    def _placeholder_label(self) -> QLabel:
        label = QLabel("Loading…")
        label.setAlignment(Qt.AlignCenter)
        label.setObjectName("notice")
        return label

    def _dock(self, name: str, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{name}")
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable
                         | QDockWidget.DockWidgetClosable)
        self.addDockWidget(area, dock)
        # a view in a background tab skips frames; it catches up when its tab comes forward
        dock.visibilityChanged.connect(lambda visible, d=dock: visible and hasattr(d.widget(), "refresh")
                                       and QTimer.singleShot(0, d.widget().refresh))
        self.docks[name] = dock
        return dock

    def _action(self, menu, text: str, slot=None, shortcut=None, tip: str = "") -> QAction:
        a = QAction(text, self)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
        if tip:
            a.setStatusTip(tip)
        if slot is not None:
            a.triggered.connect(slot)
        menu.addAction(a)
        return a

    def _build_menus(self) -> None:
        bar = self.menuBar()
        m = bar.addMenu("&File")
        self.act_new = self._action(m, "&New net", self.new_net, QKeySequence.New)
        self.act_open = self._action(m, "&Open net…", self.open_net_dialog, QKeySequence.Open)
        self.act_save = self._action(m, "&Save net", self.save_net, QKeySequence.Save)
        self.act_save_as = self._action(m, "Save net &as…", self.save_net_as, "Ctrl+Shift+S")
        m.addSeparator()
        self.act_open_session = self._action(m, "Open &session…", self.open_session_dialog, "Ctrl+Shift+O",
                                             "Show a recorded session in the views")
        self.export_menu = m.addMenu("&Export session")
        self.export_actions = {}
        for key, text, _suffix, _filter in EXPORTS:
            self.export_actions[key] = self._action(self.export_menu, text, lambda _=False, k=key: self.export_dialog(k))
        m.addSeparator()
        self.recent_menu = m.addMenu("&Recent files")
        self._fill_recent()
        m.addSeparator()
        self._action(m, "&Quit", self.close, QKeySequence.Quit)

        self.edit_menu = bar.addMenu("&Edit")
        self.edit_menu.setEnabled(False)

        pm = bar.addMenu("&Presets")
        self.preset_actions = {}
        for name in engine.preset_names():
            self.preset_actions[name] = self._action(pm, PRESET_TITLES.get(name, name),
                                                     lambda _=False, n=name: self.load_preset(n))

        vm = bar.addMenu("&View")
        self.view_menu = vm
        for dock in self.docks.values():
            vm.addAction(dock.toggleViewAction())
        vm.addSeparator()
        cm = vm.addMenu("&Colour canvas by")
        self.color_group = QActionGroup(self)
        self.color_actions = {}
        current = self.settings.color_by
        for key, text in COLOR_BY:
            a = QAction(text, self, checkable=True)
            a.setChecked(key == current)
            a.triggered.connect(lambda _=False, k=key: self.set_color_by(k))
            self.color_group.addAction(a)
            cm.addAction(a)
            self.color_actions[key] = a
        if not any(a.isChecked() for a in self.color_actions.values()):
            self.color_actions["time"].setChecked(True)
        self.canvas_view_menu = vm.addMenu("C&anvas")
        self.canvas_view_menu.setEnabled(False)
        vm.addSeparator()
        self._action(vm, "&Reset layout", self.reset_layout)

        rm = bar.addMenu("&Run")
        self.act_start = self._action(rm, "&Start", self.start_run, "F5")
        self.act_pause = self._action(rm, "&Pause / resume", self.toggle_pause, "F6")
        self.act_stop = self._action(rm, "S&top", self.stop_run, "Shift+F5")
        rm.addSeparator()
        self._action(rm, "&Load weights for the next run…", self.load_weights_dialog,
                     tip="start the next run from a saved checkpoint (safetensors; nothing is unpickled)")
        self._action(rm, "Sa&ve weights as…", self.save_weights_dialog,
                     tip="copy the checkpoint of the last training run")
        self._action(rm, "&Test on held-out images…", self.test_held_out, "Ctrl+T",
                     tip="the article's check: N random test images with true and predicted labels")
        self._update_run_actions()

        hm = bar.addMenu("&Help")
        self._action(hm, "&About LayerScope", self._about)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.status_device = QLabel("device: –")
        self.status_run = QLabel("idle")
        self.status_nvml = QLabel("NVML: checking…")
        for w in (self.status_device, self.status_run, self.status_nvml):
            sb.addPermanentWidget(w)

    def _default_sizes(self) -> None:
        self.resizeDocks([self.docks["palette"], self.docks["run"]], [230, 320], Qt.Horizontal)
        self.resizeDocks([self.docks["time"], self.docks["training"], self.docks["features"]], [560, 440, 370],
                         Qt.Horizontal)
        self.resizeDocks([self.docks["time"]], [440], Qt.Vertical)
        self.resizeDocks([self.docks["palette"], self.docks["properties"], self.docks["problems"]], [380, 420, 140],
                         Qt.Vertical)

    def _restore_window(self) -> None:
        self.resize(1600, 1000)
        self._default_sizes()
        self._restored = False
        geo = self.settings.window_geometry()
        if geo is not None:
            self.restoreGeometry(geo)
        state = self.settings.window_state()
        if state is not None:
            self._restored = self.restoreState(state)

    def reset_layout(self) -> None:
        if self._default_state is not None:
            self.restoreState(self._default_state)
            for dock in self.docks.values():
                if dock.isHidden():
                    dock.show()
            self._default_sizes()

    # ---- start-up ----------------------------------------------------------------------------------
    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            if not self._restored:  # dock sizes only hold once the window has its real size
                QTimer.singleShot(0, self._default_sizes)
            QTimer.singleShot(0, lambda: setattr(self, "_default_state", self._default_state or self.saveState()))
            # after the first paint, or soon in any case (a platform may never paint a hidden window)
            QTimer.singleShot(300, self._after_first_paint)

    def event(self, e) -> bool:
        result = super().event(e)
        if e.type() == QEvent.Type.Paint and not getattr(self, "_painted", False):
            self._painted = True
            self.first_shown.emit()
            QTimer.singleShot(0, self._after_first_paint)
        return result

    def _after_first_paint(self) -> None:
        # torch starts loading on its thread first, so its import overlaps building the views
        self._start_preload()
        self._build_deferred_views()

    def views_built(self) -> bool:
        return self.time_view is not None

    def _build_deferred_views(self) -> None:
        """Build the plot views and the table into their docks (once; every caller that needs the
        views calls this first, so it also runs on demand if something needs them early)."""
        if self.time_view is not None:
            return
        from app import style
        from app.views.feature_view import FeatureMapView
        from app.views.layer_table import LayerTableView
        from app.views.memory_view import MemoryView
        from app.views.power_view import PowerView
        from app.views.timing_view import LayerTimeView
        from app.views.training_view import TrainingView

        # pyqtgraph's options (images row-major, no antialiasing), set where pyqtgraph is first needed
        style.configure_pyqtgraph()
        self.time_view = LayerTimeView()
        self.training_view = TrainingView()
        self.feature_view = FeatureMapView()
        self.feature_view.layer_chosen.connect(self._on_feature_layer)
        self.table_view = LayerTableView()
        self.memory_view = MemoryView()
        self.power_view = PowerView()
        built = {"time": self.time_view, "training": self.training_view, "features": self.feature_view,
                 "table": self.table_view, "memory": self.memory_view, "power": self.power_view}
        for name, view in built.items():
            self.docks[name].setWidget(view)
            self._placeholders.pop(name).deleteLater()
        self.views = [*built.values(), self.log_view]
        self.power_view.set_telemetry_status(self.telemetry)
        if self.model is not None:
            self.feature_view.set_layers([n.id for n in self.model.spec_view().nodes])
        feature = self.run_panel.feature_layer()
        if feature:
            self.feature_view.select_layer(feature, emit=False)
        if self.last_snapshot is not None:  # a snapshot that came before the views: show it now
            for v in built.values():
                v.push(self.last_snapshot, force=True)

    def _start_preload(self) -> None:
        if self._loader is not None:
            return
        self.statusBar().showMessage("Loading PyTorch and looking for devices…")
        self._loader = BackgroundCall(_preload, name="layerscope-preload", parent=self)
        self._loader.finished.connect(self._on_preloaded)
        self._loader.start()

    def wait_preload(self, timeout: float | None = None) -> bool:
        if self._loader is None:
            self._after_first_paint()
        return self._loader.wait(timeout)

    def _on_preloaded(self, result, error) -> None:
        self._build_deferred_views()
        if error:
            self.log_view.append("error", f"PyTorch could not be loaded: {error}")
            self.run_panel.set_device_error(error)
            self.status_nvml.setText("NVML: unknown")
            self.telemetry = {}
        else:
            self.devices = result["devices"]
            self.telemetry = result["telemetry"] or {}
            self.run_panel.set_devices(self.devices, self.settings.last_device)
            nv = self.telemetry.get("nvml") or {}
            text = "NVML: " + ("on" if nv.get("available") else "off")
            self.status_nvml.setText(text)
            self.status_nvml.setToolTip(nv.get("reason", ""))
            self.power_view.set_telemetry_status(self.telemetry)  # views built just above
        self._build_editor()
        self.statusBar().showMessage("Ready", 3000)
        self.is_ready = True
        self.ready.emit()

    def _build_editor(self) -> None:
        """The one place the net editor (app.editor) is put into the window."""
        from app.editor import CanvasView, EditorModel, PaletteWidget, ProblemsList, PropertyPanel

        spec = self._pending_spec
        self._pending_spec = None
        if spec is None:
            try:
                spec = engine.load_preset("lenet5")
            except engine.LayerScopeError:
                spec = None
        self.model = EditorModel(spec, self)
        self.canvas = CanvasView(self.model)
        self.palette = PaletteWidget(self.model)
        self.properties = PropertyPanel(self.model)
        self.problems = ProblemsList(self.model)
        self.center.addWidget(self.canvas)
        self.center.setCurrentWidget(self.canvas)
        self.docks["palette"].setWidget(self.palette)
        self.docks["properties"].setWidget(self.properties)
        self.docks["problems"].setWidget(self.problems)
        for w in self._placeholders.values():
            w.deleteLater()
        self.canvas.status_message.connect(lambda text: self.statusBar().showMessage(text, 5000))
        self.model.dirty_changed.connect(lambda _d: self._update_title())
        self.model.spec_loaded.connect(self._on_spec_loaded)
        self.model.selection_changed.connect(self._on_selection)
        self.model.validated.connect(lambda _v: self._update_run_actions())
        self.run_panel.set_model(self.model)
        acts = self.canvas.edit_actions()
        for key in ("undo", "redo", None, "cut", "copy", "paste", "delete", "duplicate", None, "select_all"):
            if key is None:
                self.edit_menu.addSeparator()
            elif key in acts:
                self.edit_menu.addAction(acts[key])
        self.edit_menu.setEnabled(True)
        for key in ("fit", "relayout", "zoom_in", "zoom_out", "zoom_reset"):
            if key in acts:
                self.canvas_view_menu.addAction(acts[key])
        self.canvas_view_menu.setEnabled(True)
        self.feature_view.set_layers([n.id for n in self.model.spec_view().nodes])
        self._update_title()
        self._update_run_actions()

    # ---- nets --------------------------------------------------------------------------------------
    def _update_title(self) -> None:
        name = os.path.basename(self.net_path) if self.net_path else (
            (self.model.spec_view().name if self.model is not None else "") or "untitled")
        dirty = "*" if self.model is not None and self.model.is_dirty() else ""
        self.setWindowTitle(f"{name}{dirty} — LayerScope")

    def set_spec(self, spec, path: str | None = None) -> None:
        """Show ``spec`` in the editor (kept until the editor exists, if torch is still loading)."""
        self.net_path = path
        if self.model is None:
            self._pending_spec = spec
        else:
            self.model.set_spec(spec)
        self._update_title()

    def _on_spec_loaded(self) -> None:
        if self.canvas is not None:
            self.canvas.clear_metrics()
            QTimer.singleShot(0, self.canvas.fit_view)
        self._build_deferred_views()
        self.feature_view.set_layers([n.id for n in self.model.spec_view().nodes])
        self._update_title()

    def maybe_save(self) -> bool:
        """Ask about unsaved edits; False when the user cancels."""
        if self.model is None or not self.model.is_dirty():
            return True
        answer = self._ask_save()
        if answer == "save":
            return self.save_net()
        return answer == "discard"

    def _ask_save(self) -> str:
        """'save', 'discard' or 'cancel' (tests replace this)."""
        box = QMessageBox(QMessageBox.Warning, "Unsaved changes",
                          "The net has unsaved changes. Save them first?",
                          QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, self)
        r = box.exec()
        return {QMessageBox.Save: "save", QMessageBox.Discard: "discard"}.get(r, "cancel")

    def new_net(self) -> None:
        if not self.maybe_save():
            return
        self.set_spec(engine.NetSpec(engine.InputSpec(), [], name="untitled"))

    def load_preset(self, name: str) -> bool:
        if not self.maybe_save():
            return False
        try:
            spec = engine.load_preset(name)
        except engine.LayerScopeError as e:
            self._error(str(e))
            return False
        self.set_spec(spec)
        self.statusBar().showMessage(f"Preset {PRESET_TITLES.get(name, name)} loaded", 4000)
        return True

    def open_net_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open net", self.settings.last_folder, NET_FILTER)
        if path:
            self.open_path(path)

    def open_path(self, path: str) -> bool:
        """Open a net file, or a session file (by its extension)."""
        if path.endswith(".lsession"):
            return self.open_session(path)
        if not self.maybe_save():
            return False
        try:
            spec = engine.load(path)
        except engine.LayerScopeError as e:
            self._error(str(e))
            self._fill_recent(self.settings.remove_recent_file(path) if not os.path.exists(path) else None)
            return False
        self.set_spec(spec, path)
        self._remember(path)
        return True

    def save_net(self) -> bool:
        if self.model is None:
            return False
        if not self.net_path:
            return self.save_net_as()
        return self._save_to(self.net_path)

    def save_net_as(self) -> bool:
        if self.model is None:
            return False
        start = self.net_path or os.path.join(self.settings.last_folder, f"{self.model.spec_view().name or 'net'}.json")
        path, _ = QFileDialog.getSaveFileName(self, "Save net as", start, NET_FILTER)
        if not path:
            return False
        if not os.path.splitext(path)[1]:
            path += ".json"
        return self._save_to(path)

    def _save_to(self, path: str) -> bool:
        try:
            engine.save(self.model.spec(), path)
        except (engine.LayerScopeError, OSError) as e:
            self._error(f"cannot save {path}: {getattr(e, 'strerror', None) or e}")
            return False
        self.net_path = path
        self.model.mark_clean()
        self._remember(path)
        self._update_title()
        self.statusBar().showMessage(f"Saved {path}", 4000)
        return True

    def _remember(self, path: str) -> None:
        self.settings.last_folder = os.path.dirname(os.path.abspath(path))
        self._fill_recent(self.settings.add_recent_file(path))

    def _fill_recent(self, files=None) -> None:
        files = self.settings.recent_files() if files is None else files
        self.recent_menu.clear()
        for p in files:
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda _=False, path=p: self.open_path(path))
        if files:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list", lambda: (self.settings.clear_recent_files(), self._fill_recent([])))
        self.recent_menu.setEnabled(bool(files))

    # ---- runs --------------------------------------------------------------------------------------
    def _update_run_actions(self) -> None:
        running = self.bridge.is_running()
        self.act_start.setEnabled(not running and self.run_panel.start_button.isEnabled())
        self.act_pause.setEnabled(running)
        self.act_stop.setEnabled(running)

    def start_run(self, **overrides) -> bool:
        """Start a run of the edited net with the run panel's settings (``overrides`` win)."""
        from engine.run.loop import RunConfig

        if self.bridge.is_running() or self.model is None:
            return False
        ok, reason = self.model.can_run()
        if not ok:
            self._error(f"Cannot start: {reason}")
            return False
        kw = self.run_panel.config_kwargs()
        kw.update(overrides)
        cfg = RunConfig(net=self.model.spec(), **kw)
        if cfg.mode == "train" and cfg.save_checkpoint is None:
            # every training run keeps its weights, for "Test on held-out images" and Save weights
            cfg.save_checkpoint = os.path.join(self.settings.runs_folder, "checkpoints",
                                               cfg.net.name or "net")
        if self.load_weights and cfg.load_checkpoint is None:
            cfg.load_checkpoint = self.load_weights
        self._run_checkpoint = cfg.save_checkpoint
        problems = cfg.problems()
        if problems:
            self._error("Cannot start: " + "; ".join(problems))
            return False
        if self.player.is_open():
            self.close_session()
        self.banner.setVisible(False)
        for v in self.views:
            v.reset()
        if self.canvas is not None:
            self.canvas.clear_metrics()
        self._source = "live"
        self.settings.last_device = kw.get("device") or ""
        self.settings.set_run_options(self.run_panel.options())
        self.bridge.start(cfg, runs_folder=self.settings.runs_folder)
        self.run_panel.set_run_state("starting")
        self.run_panel.set_progress(0, 0, 0.0)
        self.status_run.setText("starting")
        self.status_device.setText(f"device: {cfg.device}")
        self._update_run_actions()
        return True

    def toggle_pause(self) -> None:
        if not self.bridge.is_running():
            return
        if self.bridge.state == "paused":
            self.bridge.resume()
        else:
            self.bridge.pause()

    def stop_run(self) -> None:
        if self.bridge.is_running():
            self.bridge.stop()
            self.status_run.setText("stopping…")

    def _on_run_state(self, state: str) -> None:
        self.status_run.setText(state)
        self.run_panel.set_run_state(state if state in ("running", "paused") else "idle")
        self._update_run_actions()

    def _on_progress(self, done: int, total: int, rate: float) -> None:
        self.run_panel.set_progress(done, total, rate)

    def _on_run_finished(self, status: str, message: str) -> None:
        self.run_panel.set_finished(status, message)
        self._note_checkpoint(status)
        self.status_run.setText(status)
        snap = self.bridge.feed.snapshot() if self.bridge.feed is not None else None
        if snap is not None:
            self._dispatch(snap, force=True)
        self.last_session = self.bridge.session_path if self.bridge.session_path and \
            os.path.exists(self.bridge.session_path) else self.last_session
        if status == "failed":
            self.banner_text.setText(f"<b>Run failed:</b> {message}")
            self.banner.setVisible(True)
            self.docks["log"].raise_()
        elif self.last_session:
            self.log_view.append("app", f"session saved to {self.last_session}")
        self._color_canvas()
        self._update_run_actions()
        self.run_finished.emit(status, message)

    # ---- weights ---------------------------------------------------------------------------

    load_weights: str | None = None  # checkpoint the next run starts from
    last_checkpoint: str | None = None  # the latest checkpoint written or loaded
    _run_checkpoint: str | None = None

    def _note_checkpoint(self, status: str) -> None:
        from engine.net.checkpoint import latest_checkpoint

        folder = self._run_checkpoint
        if status in ("completed", "stopped") and folder and os.path.isdir(folder):
            try:
                self.last_checkpoint = str(latest_checkpoint(folder))
            except Exception:  # an empty folder: the run ended before saving
                return
            self.log_view.append("app", f"weights saved to {self.last_checkpoint}")

    def load_weights_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load weights", self.settings.runs_folder,
                                              "Checkpoints (*.safetensors *.pt *.pth);;All files (*)")
        if path:
            self.set_load_weights(path)

    def set_load_weights(self, path: str | None) -> None:
        """Start the next run from ``path`` (checked against the net when the run starts)."""
        self.load_weights = path or None
        if path:
            self.last_checkpoint = path
            self.log_view.append("app", f"the next run starts from the weights in {path}")

    def save_weights_dialog(self) -> None:
        import shutil

        if not self.last_checkpoint:
            self._inform("Save weights", "No weights yet: every training run saves its weights when it ends.")
            return
        suffix = os.path.splitext(self.last_checkpoint)[1]
        path, _ = QFileDialog.getSaveFileName(self, "Save weights as", "weights" + suffix, f"*{suffix}")
        if path:
            try:
                shutil.copyfile(self.last_checkpoint, path)
                sidecar = os.path.splitext(self.last_checkpoint)[0] + ".json"
                if os.path.exists(sidecar):  # torch-format checkpoints keep their net beside them
                    shutil.copyfile(sidecar, os.path.splitext(path)[0] + ".json")
            except OSError as e:
                self._error(f"Cannot save the weights: {e}")
                return
            self._inform("Save weights", f"Weights saved to {path}")

    def test_held_out(self):
        """Open the article's check on the latest checkpoint (None when there is none)."""
        if not self.last_checkpoint:
            self._inform("Test on held-out images",
                         "No weights yet: train the net first (each training run saves its weights) "
                         "or load a checkpoint with Run ▸ Load weights.")
            return None
        from app.predictions import open_predictions

        return open_predictions(self, self.last_checkpoint)

    def _on_feature_layer(self, node_id: str) -> None:
        self._build_deferred_views()
        self.run_panel.set_feature_layer(node_id)
        self.feature_view.select_layer(node_id, emit=False)
        reason = self.bridge.set_feature_node(node_id or None)
        if reason:
            self.statusBar().showMessage(reason, 5000)

    def _on_selection(self, node_id: str) -> None:
        if node_id and node_id != engine.INPUT_ID and node_id != self.run_panel.feature_layer():
            self._on_feature_layer(node_id)

    def _on_device_changed(self, device_id: str) -> None:
        if not self.bridge.is_running():
            self.status_device.setText(f"device: {device_id or '–'}")

    def download_dataset(self, name: str) -> None:
        from engine.data.download import download

        self.statusBar().showMessage(f"Downloading {name}…")
        self.run_panel.download_button.setEnabled(False)
        call = BackgroundCall(lambda: download(name), name="layerscope-download", parent=self)

        def done(result, error):
            self.run_panel.download_button.setEnabled(True)
            if error:
                self._error(f"Download of {name} failed: {error.split(': ', 1)[-1]}")
            else:
                self.log_view.append("ok", f"{name} downloaded to {result}")
                self.statusBar().showMessage(f"{name} downloaded", 4000)
            self.run_panel.refresh_dataset_note()
            call.deleteLater()

        call.finished.connect(done)
        call.start()

    # ---- snapshots ---------------------------------------------------------------------------------
    def _on_live_snapshot(self, snap) -> None:
        if self._source == "live":
            self._dispatch(snap)

    def _on_session_snapshot(self, snap) -> None:
        if self._source == "session":
            self._dispatch(snap, force=True)

    def _dispatch(self, snap, force: bool = False) -> None:
        """Hand a snapshot to the views. Live frames go round-robin: at most one plot view redraws
        per frame, so redraw costs are spread out instead of stalling the GUI thread together.
        Before the plot views exist only the log takes it; they are given ``last_snapshot`` when built."""
        self.last_snapshot = snap
        if force:
            for v in self.views:
                v.push(snap, force=True)
            return
        n = len(self.views)
        drew = False
        start = self._next_view % n
        for k in range(n):
            v = self.views[(start + k) % n]
            if v is self.log_view:
                v.push(snap)
            elif drew:
                v.offer(snap)
            else:
                before = v.draws
                v.push(snap)
                if v.draws != before:
                    drew = True
                    self._next_view = (start + k + 1) % n

    def node_metrics(self, snap=None) -> dict:
        """{node_id: {time_ms, mem_bytes, gflops}} from a snapshot (the canvas colours)."""
        import numpy as np

        snap = snap or self.last_snapshot
        if snap is None or snap.info is None:
            return {}
        batch = int((snap.info.config or {}).get("batch_size") or 1)
        rows = {r.node_id: r for r in snap.info.layers}
        out = {}
        for i, nid in enumerate(snap.node_ids):
            f, b = float(snap.layer_fwd_mean[i]), float(snap.layer_bwd_mean[i])
            m = float(snap.layer_mem[i]) if i < len(snap.layer_mem) else float("nan")
            d = {}
            if np.isfinite(f) or np.isfinite(b):
                d["time_ms"] = (f if np.isfinite(f) else 0.0) + (b if np.isfinite(b) else 0.0)
            r = rows.get(nid)
            if np.isfinite(m):
                d["mem_bytes"] = m
            elif r is not None:
                d["mem_bytes"] = float(r.act_bytes)
            if r is not None and r.flops and np.isfinite(f) and f > 0:
                d["gflops"] = r.flops * batch / (f / 1000.0) / 1e9
            if d:
                out[nid] = d
        return out

    def set_color_by(self, key: str) -> None:
        self.settings.color_by = key
        if key in self.color_actions:
            self.color_actions[key].setChecked(True)
        self._color_canvas()

    def _color_canvas(self) -> None:
        if self.canvas is None:
            return
        metrics = self.node_metrics()
        if not metrics:
            return
        key = next((k for k, a in self.color_actions.items() if a.isChecked()), "time")
        ids = {n.id for n in self.model.spec_view().nodes}
        self.canvas.set_node_metrics({k: v for k, v in metrics.items() if k in ids}, color_by=key or None)

    # ---- sessions ----------------------------------------------------------------------------------
    def open_session_dialog(self) -> None:
        start = self.settings.last_folder or os.fspath(self.settings.runs_folder)
        path, _ = QFileDialog.getOpenFileName(self, "Open session", start, SESSION_FILTER)
        if path:
            self.open_session(path)

    def open_session(self, path: str) -> bool:
        """Show a recorded session in the views (its net on the canvas), with the step slider."""
        if self.bridge.is_running():
            self._error("Stop the run before opening a session.")
            return False
        try:
            self.player.open(path)
        except engine.LayerScopeError as e:
            self._error(str(e))
            return False
        except Exception as e:  # sqlite and friends: still one line for the user
            self._error(f"{path} cannot be read ({type(e).__name__}: {e})")
            return False
        info = self.player.info
        net = (info.config or {}).get("net") if info else None
        if isinstance(net, dict) and self.model is not None:
            try:
                spec = engine.from_dict(net)
            except engine.LayerScopeError:
                spec = None
            if spec is not None and self.maybe_save():
                self.model.set_spec(spec)
                self.net_path = None
                self._update_title()
        self._build_deferred_views()  # a session opened before the first paint's views exist
        telemetry = (self.player.reader.meta or {}).get("telemetry") if self.player.reader else None
        self.power_view.set_telemetry_status(telemetry if isinstance(telemetry, dict) else self.telemetry)
        self._source = "session"
        for v in self.views:
            v.reset()
        self.session_bar.load()
        self.session_bar.setVisible(True)
        snap = self.player.snapshot()
        if snap is not None:
            self._dispatch(snap, force=True)
        self.last_session = os.fspath(path)
        self._remember(os.fspath(path))
        self._color_canvas()
        self.log_view.append("app", f"opened session {path}")
        return True

    def close_session(self) -> None:
        self.player.close()
        self.session_bar.setVisible(False)
        self._source = "live"
        if self.power_view is not None:
            self.power_view.set_telemetry_status(self.telemetry)
        for v in self.views:
            v.reset()

    def session_for_export(self) -> str | None:
        if self.player.is_open():
            return self.player.path
        return self.last_session

    def export_dialog(self, kind: str) -> None:
        src = self.session_for_export()
        if not src:
            self._error("Nothing to export yet: run a net or open a session first.")
            return
        _k, _t, suffix, filt = next(e for e in EXPORTS if e[0] == kind)
        base = os.path.splitext(src)[0] + suffix
        path, _ = QFileDialog.getSaveFileName(self, "Export session", base, filt)
        if path:
            self.export_session(kind, path, src)

    def export_session(self, kind: str, path: str, src: str | None = None) -> str | None:
        """Write the export; returns the path written (None on failure, with the reason shown)."""
        from engine.export import formats as export

        src = src or self.session_for_export()
        if not src:
            self._error("Nothing to export yet: run a net or open a session first.")
            return None
        fn = {"trace": export.export_trace, "csv": export.export_csv, "html": export.export_html,
              "json": export.export_json}[kind]
        try:
            with engine.open_session(src) as reader:
                out = fn(reader, path)
        except (engine.LayerScopeError, OSError) as e:
            self._error(f"Export failed: {getattr(e, 'strerror', None) or e}")
            return None
        out = os.fspath(out or path)
        self.log_view.append("ok", f"exported {kind} to {out}")
        self.statusBar().showMessage(f"Exported to {out}", 8000)
        self._inform("Export written", f"The {kind} export was written to:\n{out}")
        return out

    # ---- messages ----------------------------------------------------------------------------------
    def _error(self, text: str) -> None:
        self.log_view.append("error", text)
        self.statusBar().showMessage(text, 8000)
        self.banner_text.setText(text)
        self.banner.setVisible(True)

    def _inform(self, title: str, text: str) -> None:
        """A short non-blocking note (a modeless box; tests and scripts are never held up)."""
        box = QMessageBox(QMessageBox.Information, title, text, QMessageBox.Ok, self)
        box.setModal(False)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.show()
        self._last_info_box = box

    def _about(self) -> None:
        QMessageBox.about(self, "About LayerScope",
                          f"LayerScope {engine.__version__}\nA desktop profiler for convolutional networks.\n"
                          f"Settings: {self.settings.path}\nRuns: {self.settings.runs_folder}")

    # ---- closing -----------------------------------------------------------------------------------
    def _ask_stop_run(self) -> bool:
        """True to stop the run and close (tests replace this)."""
        r = QMessageBox.question(self, "A run is going",
                                 "A run is going. Stop it and close LayerScope?\n"
                                 "(Its session file keeps everything recorded so far.)",
                                 QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return r == QMessageBox.Yes

    def closeEvent(self, event) -> None:
        if self.bridge.is_running():
            if not self._ask_stop_run():
                event.ignore()
                return
            self.status_run.setText("stopping…")
            self.bridge.stop_and_join()
        if not self.maybe_save():
            event.ignore()
            return
        self._closing = True
        if self._loader is not None and self._loader.is_alive():
            self._loader.wait()
        self.player.close()
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self.settings.set_run_options(self.run_panel.options())
        self.settings.sync()
        event.accept()

    def shutdown(self) -> None:
        """Stop and join every worker without asking (tests, scripted use)."""
        self.bridge.stop_and_join()
        if self._loader is not None:
            self._loader.wait()
        self.player.close()
