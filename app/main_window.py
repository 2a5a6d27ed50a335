"""The main window: the net editor in the middle, the run panel and the monitor views in docks,
menus for nets, sessions, presets, views and runs, and a status bar (device, run state, NVML).

The window lays out and wires; what the menus and panels do lives in ``app.controllers`` (runs,
sessions, weights, net files, routing snapshots to the views), its dialogs in ``app.dialogs``, and
the docks' arrangement, saved state and layout check in ``app.window_layout`` (``DockedWindow``).

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

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMenu, QPushButton, QStackedWidget, QVBoxLayout, QWidget

import engine
from app.bridge import BackgroundCall, RunBridge, join_background
from app.controllers.compare_controller import CompareController
from app.controllers.edit_lock import EditLock
from app.controllers.monitor import MonitorController
from app.controllers.net_controller import PRESET_TITLES, NetController
from app.controllers.ddp_controller import DdpController
from app.controllers.remote_controller import RemoteController
from app.controllers.run_controller import RunController
from app.controllers.session_controller import SessionController, export_look, exporters
from app.controllers.weights_controller import WeightsController
from app.dialogs import prompts
from app.dialogs.file_notice import FileNotice
from app.run_panel import RunPanel
from app.session_view import SessionBar, SessionPlayer
from app.settings import Settings
from app.views.log_view import LogView
from app.window_layout import DOCKS, DockedWindow

# the plot views (and pyqtgraph, numpy with them) are imported in _build_deferred_views

COLOR_BY = (("", "&None"), ("time", "&Time"), ("memory", "&Memory"), ("flops", "&FLOP/s"))
DOWNLOAD_WAIT_S = 10.0  # at close, how long to wait for a dataset download (it cannot be interrupted)


def _preload() -> dict:
    """Worker thread: pay for torch once, list devices, probe telemetry (all Qt-free)."""
    engine.build_model  # noqa: B018  imports torch (engine.net.model): a missing torch fails the preload here
    try:
        # the first shape/FLOP analysis pulls in more of torch (torch._dynamo, seconds on a small
        # machine); pay for it here rather than in the editor's first validation on the GUI thread
        engine.analyze(engine.load_preset("lenet5"))
    except Exception:  # a warm-up only: the editor's own validation reports any real problem
        pass
    out = {"devices": engine.list_devices(), "telemetry": {}}
    try:
        out["telemetry"] = engine.telemetry_status()
    except Exception as e:  # telemetry is optional; the status bar says why it is missing
        out["telemetry"] = {"nvml": {"available": False, "reason": f"telemetry status failed: {e}"}}
    return out


class MainWindow(DockedWindow):
    ready = Signal()                 # editor built, devices known
    run_finished = Signal(str, str)  # re-emitted from the run controller after the window has updated
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
        self.devices: list = []
        self.telemetry: dict = {}
        self._shown_once = False
        self._closing = False
        self._loader = None
        self.is_ready = False

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
        self.bridge = RunBridge(self)
        self.player = SessionPlayer(self)
        self.session_bar = SessionBar(self.player)
        self.session_bar.setVisible(False)
        self.center = QStackedWidget()
        self.placeholder = self._placeholder_label("Loading PyTorch…")
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
        self.run_panel.set_options(self.settings.run_options())
        self.run_panel.feature_layer_changed.connect(self._on_feature_layer)
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
        self.compare_view = None
        self.roofline_view = None
        self._placeholders = {name: self._placeholder_label() for name, _t, _a in DOCKS if name not in ("run", "log")}
        self._build_docks({"run": self.run_panel, "log": self.log_view, **self._placeholders})

        self._build_status_bar()
        self._build_controllers()
        self._build_menus()
        self._restore_window()
        self.setAcceptDrops(True)  # session files or a study folder dropped on the window: opened / compared

    # ---- construction helpers ---------------------------------------------------------------------
    def _placeholder_label(self, text: str = "Loading…") -> QLabel:
        label = QLabel(text)
        label.setAlignment(Qt.AlignCenter)
        label.setObjectName("notice")
        return label

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

    def _build_controllers(self) -> None:
        color_by = self.settings.color_by if self.settings.color_by in dict(COLOR_BY) else "time"
        self.monitor = MonitorController(self.log_view, color_by, self)
        self.weights = WeightsController(self.settings, self.log_view, self)
        self.sessions = SessionController(self.settings, self.bridge, self.player, self.session_bar, self.monitor,
                                          self.log_view, self)
        self.runs = RunController(self.settings, self.bridge, self.run_panel, self.status_run, self.status_device,
                                  self.monitor, self.sessions, self.weights, self.log_view, self)
        self.recent_menu = QMenu("&Recent files", self)
        self.nets = NetController(self.settings, self.recent_menu, lambda: self._ask_save(), self)
        self.remote = RemoteController(self.bridge, self.runs, self.nets, self.log_view, self)
        self.ddp = DdpController(self.log_view, self)
        self.nets.run_going = self.bridge.is_running
        self.runs.config_overrides = self.nets.run_overrides  # an imported model runs from its source
        self.nets.export_weights = lambda: self.weights.last_checkpoint  # ONNX export bakes them in when they fit
        for c in (self.weights, self.sessions, self.runs, self.nets):
            c.problem_reported.connect(self._error)
            c.note_reported.connect(lambda title, text: self._inform(title, text))  # looked up per call: tests replace it
            c.status_posted.connect(self.statusBar().showMessage)
            c.file_written.connect(self.file_notice.show_file)
        self.runs.run_started.connect(lambda: self.banner.setVisible(False))
        self.runs.run_failed.connect(self._on_run_failed)
        self.runs.run_finished.connect(self.run_finished)
        self.sessions.session_loaded.connect(self._on_session_loaded)
        self.sessions.session_closed.connect(self._on_session_closed)
        self.sessions.file_opened.connect(self.nets.remember)
        self.nets.title_changed.connect(self._update_title)
        self.nets.path_chosen.connect(self.open_path)
        self.compare = CompareController(self.settings, self.log_view, self)
        self.compare.problem_reported.connect(self._error)
        self.compare.status_posted.connect(self.statusBar().showMessage)
        self.compare.comparison_ready.connect(self._on_comparison)
        self.compare.roofline_ready.connect(self._on_roofline)
        self.compare.advice_ready.connect(lambda advice, share: self.table_view is not None
                                          and self.table_view.set_advice(advice, share))
        self.sessions.session_loaded.connect(lambda *_: self.compare.roofline(self.player.path))
        self.runs.run_finished.connect(lambda *_: self.compare.roofline(self.bridge.session_path))
        self.run_panel.sweep_requested.connect(self.open_sweep)
        self.sessions.compare_paths = self.compare_paths

    def _build_menus(self) -> None:
        bar = self.menuBar()
        m = bar.addMenu("&File")
        self.act_new = self._action(m, "&New net", self.nets.new, QKeySequence.New)
        self.act_open = self._action(m, "&Open net…", self.nets.open_dialog, QKeySequence.Open)
        self.act_save = self._action(m, "&Save net", self.nets.save, QKeySequence.Save)
        self.act_save_as = self._action(m, "Save net &as…", self.nets.save_as, "Ctrl+Shift+S")
        self.act_export_pytorch = self._action(m, "Export net as &PyTorch…", lambda: self.nets.export_dialog("pytorch"),
                                               tip="a standalone nn.Module (.py) whose state_dict keys are the checkpoints'")
        self.act_export_onnx = self._action(m, "Export net as O&NNX…", lambda: self.nets.export_dialog("onnx"),
                                            tip="an ONNX file checked by onnx.checker (needs the onnx extra)")
        self.act_import_model = self._action(m, "&Import PyTorch model…", self.nets.import_dialog,
                                             tip="profile your own nn.Module: its file's code is executed")
        m.addSeparator()
        self.act_open_session = self._action(m, "Open &session…", self.sessions.open_dialog, "Ctrl+Shift+O",
                                             "Show a recorded session in the views")
        self.act_sessions = self._action(m, "Sessions (&runs folder)…", self.sessions.browse, "Ctrl+Shift+R",
                                         "Every recorded run: open, compare, delete, show in folder")
        self.act_open_ddp = self._action(m, "Open &data-parallel run…", self.ddp.open_dialog, None,
                                         "A study folder of `layerscope profile --nproc N`: ranks side by side, "
                                         "compute and all-reduce per rank")
        self.act_connect = self._action(m, "&Connect to run…", self.remote.connect_dialog, None,
                                        "Watch a run served by `layerscope profile --serve` live (SSH tunnel for a remote one)")
        self._action(m, "&Compare sessions…", self.compare.open_dialog, "Ctrl+Shift+C",
                     "Two or more recorded runs side by side, layer by layer")
        self._action(m, "Compare a s&tudy folder…", self.compare.open_study_dialog,
                     tip="Every configuration of a sweep side by side")
        self.export_menu = m.addMenu("&Export session")
        self.export_menu.setEnabled(False)  # filled from the engine's exporters once the engine is loaded
        self.export_actions: dict[str, QAction] = {}
        m.addSeparator()
        m.addMenu(self.recent_menu)
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
        for key, text in COLOR_BY:
            a = QAction(text, self, checkable=True)
            a.setChecked(key == self.monitor.color_by)
            a.triggered.connect(lambda _=False, k=key: self.set_color_by(k))
            self.color_group.addAction(a)
            cm.addAction(a)
            self.color_actions[key] = a
        self.canvas_view_menu = vm.addMenu("C&anvas")
        self.canvas_view_menu.setEnabled(False)
        vm.addSeparator()
        self._action(vm, "&Reset layout", self.reset_layout)

        rm = bar.addMenu("&Run")
        self.act_start = self._action(rm, "&Start", self.start_run, "F5")
        self.act_pause = self._action(rm, "&Pause / resume", self.runs.toggle_pause, "F6")
        self.act_stop = self._action(rm, "S&top", self.runs.stop, "Shift+F5")
        self.runs.bind_actions(self.act_start, self.act_pause, self.act_stop)
        self._action(rm, "S&weep…", self.open_sweep, tip="Run the net over several devices, precisions, "
                     "batch sizes…, one configuration at a time, then compare them")
        rm.addSeparator()
        self._action(rm, "&Load weights for the next run…", self.weights.load_dialog,
                     tip="start the next run from a saved checkpoint (safetensors; nothing is unpickled)")
        self._action(rm, "Sa&ve weights as…", self.weights.save_dialog,
                     tip="copy the checkpoint of the last training run")
        self._action(rm, "&Test on held-out images…", self.weights.test_held_out, "Ctrl+T",
                     tip="the article's check: N random test images with true and predicted labels")

        hm = bar.addMenu("&Help")
        self._action(hm, "&About LayerScope",
                     lambda: prompts.show_about(self, self.settings.path, self.settings.runs_folder))

    def _fill_export_menu(self) -> None:
        """One entry per engine exporter (the engine is loaded by now, so naming them costs nothing)."""
        if self.export_actions:
            return
        for name in exporters():
            text, _suffix, _filter = export_look(name)
            self.export_actions[name] = self._action(self.export_menu, text,
                                                     lambda _=False, k=name: self.sessions.export_dialog(k))
        self.export_menu.setEnabled(True)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.status_device = QLabel("device: –")
        self.status_run = QLabel("idle")
        self.status_nvml = QLabel("NVML: checking…")
        self.file_notice = FileNotice()  # exports and saved weights: one line with a folder link, no boxes
        for w in (self.file_notice, self.status_device, self.status_run, self.status_nvml):
            sb.addPermanentWidget(w)

    @property
    def views(self) -> list:
        """The monitor views that take snapshots (the log only, until the plot views are built)."""
        return self.monitor.views

    # ---- start-up ----------------------------------------------------------------------------------
    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            if not self._restored:  # dock sizes only hold once the window has its real size
                QTimer.singleShot(0, self._default_sizes)
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
        from app.views.compare_view import CompareView
        from app.views.feature_view import FeatureMapView
        from app.views.layer_table import LayerTableView
        from app.views.memory_view import MemoryView
        from app.views.power_view import PowerView
        from app.views.roofline_view import RooflineView
        from app.views.timing_view import LayerTimeView
        from app.views.training_view import TrainingView

        # pyqtgraph's options (images row-major, no antialiasing), set where pyqtgraph is first needed
        style.configure_pyqtgraph()
        self.time_view = LayerTimeView()
        self.training_view = TrainingView()
        self.feature_view = FeatureMapView()
        self.feature_view.layer_chosen.connect(self._on_feature_layer)
        self.feature_view.channels_requested.connect(self.runs.set_feature_channels)
        self.table_view = LayerTableView()
        self.memory_view = MemoryView()
        self.power_view = PowerView()
        built = {"time": self.time_view, "training": self.training_view, "features": self.feature_view,
                 "table": self.table_view, "memory": self.memory_view, "power": self.power_view}
        self.compare_view = CompareView()
        self.roofline_view = RooflineView()
        for name, view in (*built.items(), ("compare", self.compare_view), ("roofline", self.roofline_view)):
            self.docks[name].setWidget(view)
            self._placeholders.pop(name).deleteLater()
        self.compare_view.layer_clicked.connect(self.select_layer)
        self.roofline_view.layer_clicked.connect(self.select_layer)
        self.compare_view.config_chosen.connect(self.color_by_speedup)
        self.compare_view.baseline_requested.connect(self.compare.set_baseline)
        self.power_view.set_telemetry_status(self.telemetry)
        if self.model is not None:
            self.feature_view.set_layers([n.id for n in self.model.spec_view().nodes])
        feature = self.run_panel.feature_layer()
        if feature:
            self.feature_view.select_layer(feature, emit=False)
        self.monitor.set_views([*built.values(), self.log_view])  # shows a snapshot that came before them

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
            self.status_nvml.setText("NVML: " + ("on" if nv.get("available") else "off"))
            self.status_nvml.setToolTip(nv.get("reason", ""))
            self.power_view.set_telemetry_status(self.telemetry)  # views built just above
            self._fill_export_menu()
        self._build_editor()
        self.statusBar().showMessage("Ready", 3000)
        # every view is built now, so their minimum sizes are the real ones the saved layout must hold
        self.layout().activate()
        self._check_restored_layout()
        self.is_ready = True
        self.ready.emit()

    def _build_editor(self) -> None:
        """The one place the net editor (app.editor) is put into the window."""
        from app.editor import CanvasView, EditorModel, PaletteWidget, ProblemsList, PropertyPanel

        self.model = EditorModel(self.nets.take_pending(), self)
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
        self.model.spec_loaded.connect(self._on_spec_loaded)
        self.model.selection_changed.connect(self._on_selection)
        self.model.selection_changed.connect(self._show_selection)
        self.run_panel.set_model(self.model)
        self.monitor.attach_editor(self.model, self.canvas)
        self.runs.set_model(self.model)
        self.nets.set_model(self.model)
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
        self.runs.set_edit_lock(EditLock(self.canvas, [self.palette, self.properties], acts, self))
        self.feature_view.set_layers([n.id for n in self.model.spec_view().nodes])
        self.runs.update_actions()

    # ---- wiring between the editor, the controllers and the views ---------------------------------
    def _update_title(self) -> None:
        self.setWindowTitle(self.nets.window_title())

    def _on_spec_loaded(self) -> None:
        if self.canvas is not None:
            self.canvas.clear_metrics()
            QTimer.singleShot(0, self.canvas.fit_view)
        self._build_deferred_views()
        self.monitor.net_replaced(self.bridge.is_running())
        self.feature_view.set_layers([n.id for n in self.model.spec_view().nodes])
        self._update_title()

    def _on_feature_layer(self, node_id: str) -> None:
        self._build_deferred_views()
        self.feature_view.select_layer(node_id, emit=False)
        self.runs.set_feature_layer(node_id)

    def _on_selection(self, node_id: str) -> None:
        if node_id and node_id != engine.INPUT_ID and node_id != self.run_panel.feature_layer():
            self._on_feature_layer(node_id)

    # ---- comparisons, rooflines, sweeps (app.controllers.compare_controller, app.dialogs.sweep_dialog) --
    def select_layer(self, node_id: str) -> None:
        """Select a layer everywhere: the canvas (through the editor model), the layer table, the
        comparison and the roofline."""
        if self.model is not None and self.model.node(node_id) is not None:
            self.model.select(node_id)  # _show_selection follows from the model's signal
        else:
            self._show_selection(node_id)

    def _show_selection(self, node_id: str) -> None:
        for view in (self.compare_view, self.roofline_view):
            if view is not None and view.selected != node_id:
                view.select_layer(node_id, emit=False)
        if self.table_view is not None:
            self.table_view.select_layer(node_id)

    def _on_comparison(self, data: dict, net: dict | None) -> None:
        self._build_deferred_views()
        ids = [ly["id"] for ly in data.get("layers") or []]
        if net is not None and self.model is not None and not self.bridge.is_running() \
                and any(self.model.node(i) is None for i in ids):
            self.nets.show_recorded_net(net)  # the compared net on the canvas, so it can be coloured
        self.compare_view.set_comparison(data)
        dock = self.docks["compare"]
        dock.show()
        dock.raise_()
        if not dock.isFloating():  # most of the bottom row's width: the comparison has three plots
            row = [d for d in (dock, self.docks["training"], self.docks["features"]) if d.isVisible()]
            share = {dock: 0.62, self.docks["training"]: 0.2, self.docks["features"]: 0.18}
            self.resizeDocks(row, [int(self.width() * share[d]) for d in row], Qt.Horizontal)
        self.color_by_speedup(self.compare_view.canvas_config())

    def color_by_speedup(self, label: str) -> None:
        """Colour the canvas by the per-layer speed-up of the compared configuration ``label``."""
        if self.canvas is None or self.model is None or self.compare_view is None or not label:
            return
        ids = {n.id for n in self.model.spec_view().nodes}
        metrics = {k: {"speedup": v} for k, v in self.compare_view.speedups(label).items()
                   if k in ids and v is not None}
        self.canvas.set_node_metrics(metrics, color_by="speedup")

    def _on_roofline(self, data: dict, title: str) -> None:
        self._build_deferred_views()
        self.roofline_view.set_roofline(data, title)
        if self.table_view is not None:
            self.table_view.set_roofline(data)

    def open_sweep(self):
        """The sweep form (non-modal): the net on the canvas over the chosen axes, into a study."""
        from app.dialogs.sweep_dialog import SweepDialog

        if self.model is None:
            return None
        dlg = getattr(self, "sweep_dialog", None)
        if dlg is None or dlg.isHidden() and not dlg.running():
            dlg = self.sweep_dialog = SweepDialog(self.model.spec(), self.run_panel.config_kwargs(),
                                                  self.settings.runs_folder, self.devices, self)
            dlg.study_finished.connect(lambda folder: self.compare.open([folder]))
            dlg.show()
        else:  # already open (maybe behind the window): brought forward
            dlg.show()
            dlg.raise_()
        return dlg

    def compare_paths(self, paths) -> bool:
        """Open a comparison of two or more session files or one study folder (scripts, drops)."""
        return self.compare.open(paths)

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dropEvent(self, event) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if not paths:
            super().dropEvent(event)
            return
        event.acceptProposedAction()
        self.open_dropped(paths)

    def open_dropped(self, paths: list[str]) -> bool:
        """Files dropped on the window: two or more sessions (or a study folder) are compared, one
        session or net file is opened."""
        if len(paths) == 1 and not os.path.isdir(paths[0]):
            return self.open_path(paths[0])
        return self.compare.open(paths)

    def _on_run_failed(self, message: str) -> None:
        self._show_banner(f"<b>Run failed:</b> {message}")
        self.docks["log"].raise_()

    def _show_banner(self, text: str) -> None:
        self.banner_text.setText(text)
        self.banner.setVisible(True)

    def _on_session_loaded(self, net: dict | None, telemetry: dict | None) -> None:
        self.nets.show_recorded_net(net)
        self._build_deferred_views()  # a session opened before the first paint's views exist
        self.power_view.set_telemetry_status(telemetry if telemetry is not None else self.telemetry)
        self.feature_view.set_recorded(True)

    def _on_session_closed(self) -> None:
        if self.power_view is not None:
            self.power_view.set_telemetry_status(self.telemetry)
        if self.feature_view is not None:
            self.feature_view.set_recorded(False)

    def set_color_by(self, key: str) -> None:
        """Colour the canvas by "time", "memory", "flops" or nothing (""); remembered in the settings."""
        self.settings.color_by = key
        if key in self.color_actions:
            self.color_actions[key].setChecked(True)
        self.monitor.set_color_by(key)

    # ---- the window's public verbs (scripts, tests and the launcher use these) ---------------------
    def set_spec(self, spec, path: str | None = None) -> None:
        self.nets.set_spec(spec, path)

    def load_preset(self, name: str) -> bool:
        return self.nets.load_preset(name)

    def open_path(self, path: str) -> bool:
        """Open a net file, or a session file (by its extension)."""
        return self.sessions.open(path) if path.endswith(".lsession") else self.nets.open(path)

    def start_run(self, **overrides) -> bool:
        return self.runs.start(**overrides)

    def toggle_pause(self) -> None:
        self.runs.toggle_pause()

    def stop_run(self) -> None:
        self.runs.stop()

    def open_session(self, path: str) -> bool:
        return self.sessions.open(path)

    def close_session(self) -> None:
        self.sessions.close()

    def export_session(self, kind: str, path: str, src: str | None = None) -> str | None:
        return self.sessions.export(kind, path, src)

    # ---- messages ----------------------------------------------------------------------------------
    def _error(self, text: str) -> None:
        self.log_view.append("error", text)
        self.statusBar().showMessage(text, 8000)
        self._show_banner(text)

    def _inform(self, title: str, text: str) -> None:
        """A short non-blocking note (tests replace this)."""
        self._last_info_box = prompts.inform(self, title, text)

    def _ask_save(self) -> str:
        """'save', 'discard' or 'cancel' (tests replace this)."""
        return prompts.ask_save(self)

    def _ask_stop_run(self) -> bool:
        """True to stop the run and close (tests replace this)."""
        return prompts.ask_stop_run(self)

    # ---- closing -----------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        if self.bridge.is_running():
            if not self._ask_stop_run():
                event.ignore()
                return
            self.status_run.setText("stopping…")
            self.bridge.stop_and_join()
        if not self.nets.maybe_save():
            event.ignore()
            return
        self._closing = True
        self._join_background()
        self.player.close()
        # a layout that clips a widget is not kept: the next start opens with the default docks
        self.settings.save_window(self.saveGeometry(), None if self.layout_problems() else self.saveState())
        self.settings.set_run_options(self.run_panel.options())
        self.settings.sync()
        event.accept()

    def _join_background(self) -> bool:
        """Join every worker the window started: the run, the start-up preload, prediction draws and
        (for at most DOWNLOAD_WAIT_S each) dataset downloads. True when none is left running."""
        joined = self.runs.shutdown(DOWNLOAD_WAIT_S)
        if self._loader is not None:
            self._loader.cancel()  # the window is going: its result has no one to go to
        joined = self.weights.shutdown() and joined
        self.ddp.shutdown()
        self.compare.shutdown()
        dlg = getattr(self, "sweep_dialog", None)
        if dlg is not None:
            joined = dlg.shutdown() and joined
        return join_background(DOWNLOAD_WAIT_S) and joined

    def shutdown(self) -> None:
        """Stop and join every worker without asking (tests, scripted use)."""
        self._join_background()
        self.player.close()
