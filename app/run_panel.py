"""The run panel: where a run is set up (device, mode, precision, batch, steps or epochs, dataset,
profiling, feature-map layer), started, paused and stopped, and where its progress shows.

It also shows the live summary of the net being edited (parameters, FLOPs, activation memory
for the chosen batch and precision) and warns when the estimate will not fit the selected
device's free memory. Start is disabled, with the reason shown, while the net is invalid.
"""
from __future__ import annotations

import os

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QFrame, QHBoxLayout, QLabel,
                               QProgressBar,
                               QPushButton, QScrollArea, QSpinBox, QToolButton, QVBoxLayout, QWidget)

import engine
from engine import fmt

# display names only: which modes and precisions exist, and their order, is RunConfig's declaration
MODE_LABELS = {"train": "Train", "infer": "Inference", "benchmark": "Benchmark (one random batch)"}
PRECISION_LABELS = {"fp32": "fp32", "bf16": "bf16 (autocast)", "fp16": "fp16 (autocast)"}
SPIN_LIMIT = 2_147_483_647  # QSpinBox holds a C int: the ceiling of a setting declared without one
DATASETS = ("synthetic", "digits", "mnist", "fashion-mnist", "cifar10")


def setting_spin(name: str) -> QSpinBox:
    """A spin box for the whole-number RunConfig setting ``name``: its declared bounds, default and help."""
    s = engine.RunConfig.setting(name)
    spin = QSpinBox()
    spin.setRange(int(s.lo) if s.lo is not None else -SPIN_LIMIT - 1,
                  min(int(s.hi), SPIN_LIMIT) if s.hi is not None else SPIN_LIMIT)  # e.g. the 64-bit seed
    if s.default is not None:
        spin.setValue(int(s.default))
    spin.setToolTip(s.help[:1].upper() + s.help[1:])
    return spin


def setting_combo(name: str, labels: dict[str, str]) -> QComboBox:
    """A combo box of the RunConfig setting ``name``'s declared choices (data: the choice), default selected."""
    s = engine.RunConfig.setting(name)
    combo = QComboBox()
    for key in s.choices:
        combo.addItem(labels.get(key, key), key)
    combo.setCurrentIndex(max(0, combo.findData(s.default)))
    combo.setToolTip(s.help[:1].upper() + s.help[1:])
    return combo


def _section(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("sectionTitle")
    return label


class RunPanel(QWidget):
    start_requested = Signal()
    pause_requested = Signal()      # toggles pause / resume
    stop_requested = Signal()
    download_requested = Signal(str)
    device_changed = Signal(str)
    feature_layer_changed = Signal(str)
    options_changed = Signal()
    sweep_requested = Signal()      # the sweep form (app.dialogs.sweep_dialog)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._devices: dict[str, object] = {}
        self._model = None
        self._running = False
        self._paused = False
        self._net_ok = False
        self._net_reason = "PyTorch is loading…"

        inner = QWidget()
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignRight | Qt.AlignVCenter)
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        form.setVerticalSpacing(5)

        self.device = QComboBox()
        self.device.setMinimumContentsLength(12)
        self.device.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.device.addItem("Looking for devices…", "")
        self.device.setEnabled(False)
        self.device.currentIndexChanged.connect(self._on_device)
        self.device_note = QLabel("")
        self.device_note.setObjectName("notice")
        self.device_note.setWordWrap(True)

        self.mode = setting_combo("mode", MODE_LABELS)
        self.precision = setting_combo("precision", PRECISION_LABELS)
        self.batch = setting_spin("batch_size")
        self.length_kind = QComboBox()
        self.length_kind.addItem("steps", "steps")
        self.length_kind.addItem("epochs", "epochs")
        self.length = setting_spin("steps")  # steps and epochs share their bounds (whole numbers >= 1)
        length_row = QHBoxLayout()
        length_row.setContentsMargins(0, 0, 0, 0)
        length_row.addWidget(self.length, 1)
        length_row.addWidget(self.length_kind)
        self.profile_every = setting_spin("profile_every")
        self.profile_every.setSpecialValueText("never (no per-layer times)")
        self.feature = QComboBox()
        self.feature.addItem("(none)", "")
        self.feature.currentIndexChanged.connect(lambda _: self.feature_layer_changed.emit(self.feature_layer()))

        self.dataset = QComboBox()
        for name in DATASETS:
            self.dataset.addItem(name, name)
        self.dataset.currentIndexChanged.connect(self._on_dataset)
        self.folder_button = QToolButton()
        self.folder_button.setText("…")
        self.folder_button.setToolTip("Use a folder of images or dataset files")
        self.folder_button.clicked.connect(self._choose_folder)
        self.download_button = QPushButton("Download")
        self.download_button.setToolTip("Download the selected dataset into the cache (checksums verified)")
        self.download_button.clicked.connect(lambda: self.download_requested.emit(self.dataset_name()))
        data_row = QHBoxLayout()
        data_row.setContentsMargins(0, 0, 0, 0)
        data_row.addWidget(self.dataset, 1)
        data_row.addWidget(self.folder_button)
        skip = engine.RunConfig.setting("skip_bad_images")
        self.skip_bad_images = QCheckBox("Skip unreadable images")
        self.skip_bad_images.setChecked(bool(skip.default))
        self.skip_bad_images.setToolTip(skip.help[:1].upper() + skip.help[1:])
        self.data_note = QLabel("")
        self.data_note.setObjectName("notice")
        self.data_note.setWordWrap(True)

        form.addRow(_section("Device"))
        form.addRow("Device", self.device)
        form.addRow("", self.device_note)
        form.addRow(_section("Run"))
        form.addRow("Mode", self.mode)
        form.addRow("Precision", self.precision)
        form.addRow("Batch size", self.batch)
        form.addRow("Length", length_row)
        form.addRow("Profile every", self.profile_every)
        form.addRow("Feature maps", self.feature)
        le = engine.RunConfig.setting("layer_energy")
        self.layer_energy = QCheckBox("Energy per layer (replay after the run)")
        self.layer_energy.setChecked(bool(le.default))
        self.layer_energy.setToolTip(le.help[:1].upper() + le.help[1:])
        form.addRow("", self.layer_energy)
        self.sweep_button = QPushButton("Sweep…")
        self.sweep_button.setToolTip("Run this net over several devices, precisions, batch sizes, … one "
                                     "configuration at a time, then compare them (a study)")
        self.sweep_button.clicked.connect(self.sweep_requested)
        form.addRow("", self.sweep_button)
        form.addRow(_section("Data"))
        form.addRow("Dataset", data_row)
        form.addRow("", self.data_note)
        form.addRow("", self.skip_bad_images)
        form.addRow("", self.download_button)

        self.summary = QLabel("")
        self.summary.setObjectName("summary")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.RichText)
        self.fit_warning = QLabel("")
        self.fit_warning.setObjectName("warning")
        self.fit_warning.setWordWrap(True)
        self.fit_warning.setVisible(False)

        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("startButton")
        self.start_button.setToolTip("Start the run (F5)")
        self.start_button.clicked.connect(self.start_requested)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Pause or resume the run (F6)")
        self.pause_button.clicked.connect(self.pause_requested)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.setToolTip("Stop the run after the current step (Shift+F5)")
        self.stop_button.clicked.connect(self.stop_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button, 2)
        buttons.addWidget(self.pause_button, 1)
        buttons.addWidget(self.stop_button, 1)
        self.reason = QLabel("")
        self.reason.setObjectName("reason")
        self.reason.setWordWrap(True)
        self._phase_shown = ""
        self._last_progress = (0, 0)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.rate = QLabel("")
        self.rate.setObjectName("notice")

        col = QVBoxLayout(inner)
        col.setContentsMargins(10, 4, 10, 8)
        col.addLayout(form)
        col.addWidget(_section("Net"))
        col.addWidget(self.summary)
        col.addWidget(self.fit_warning)
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidget(inner)
        controls = QWidget()
        ctl = QVBoxLayout(controls)
        ctl.setContentsMargins(10, 6, 10, 8)
        ctl.addLayout(buttons)
        ctl.addWidget(self.reason)
        ctl.addWidget(self.progress)
        ctl.addWidget(self.rate)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(scroll, 1)
        outer.addWidget(controls)

        for w in (self.mode, self.precision, self.length_kind, self.dataset, self.feature):
            w.currentIndexChanged.connect(self._on_option)
            w.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            w.setMinimumContentsLength(6)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        # no horizontal scrolling, so the panel may not get narrower than its form: a squeezed dock
        # cut labels to "rofile every" and this keeps the main window from doing that
        scroll.setMinimumWidth(inner.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
        for w in (self.batch, self.length, self.profile_every):
            w.valueChanged.connect(self._on_option)
        self._on_dataset()
        self._update_buttons()

    # -- net ---------------------------------------------------------------------------------------
    def set_model(self, model) -> None:
        """Follow an EditorModel: its validation decides Start; its summary fills the Net section."""
        self._model = model
        model.validated.connect(self._on_validated)
        model.spec_loaded.connect(self._refresh_layers)
        model.spec_changed.connect(self._refresh_layers)
        self._on_validated(model.validation())

    def set_net_reason(self, ok: bool, reason: str) -> None:
        self._net_ok, self._net_reason = ok, reason
        self._update_buttons()

    def _on_validated(self, validation) -> None:
        self._net_ok = bool(validation.ok)
        self._net_reason = validation.reason
        self._refresh_layers()
        self._update_summary()
        self._update_buttons()

    def _refresh_layers(self) -> None:
        if self._model is None:
            return
        ids = [n.id for n in self._model.spec_view().nodes]
        current = self.feature_layer()
        have = [self.feature.itemData(i) for i in range(1, self.feature.count())]
        if ids != have:
            self.feature.blockSignals(True)
            self.feature.clear()
            self.feature.addItem("(none)", "")
            for nid in ids:
                self.feature.addItem(nid, nid)
            self.feature.blockSignals(False)
            i = self.feature.findData(current)
            self.feature.setCurrentIndex(max(0, i))

    def _update_summary(self) -> None:
        if self._model is None:
            return
        s = self._model.summary(self.batch.value(), self.precision_key())
        part = "" if s.complete else " <i>(valid part only)</i>"
        self.summary.setText(
            f"<table cellspacing=2>"
            f"<tr><td>Parameters</td><td align=right><b>{fmt.fmt_count(s.params)}</b></td></tr>"
            f"<tr><td>FLOPs / sample</td><td align=right><b>{fmt.fmt_count(s.flops_per_sample)}</b></td></tr>"
            f"<tr><td>FLOPs / batch</td><td align=right><b>{fmt.fmt_count(s.flops)}</b></td></tr>"
            f"<tr><td>Activations</td><td align=right><b>{fmt.fmt_bytes(s.activation_bytes)}</b></td></tr>"
            f"<tr><td>Training memory ≈</td><td align=right><b>{fmt.fmt_bytes(s.train_bytes_estimate)}</b></td></tr>"
            f"</table>batch {self.batch.value()}, {self.precision_key()}{part}")
        problem = self.fit_problem()
        self.fit_warning.setText(f"⚠ {problem}" if problem else "")
        self.fit_warning.setVisible(bool(problem))

    def fit_problem(self) -> str | None:
        """The engine's refusal for the chosen net, batch, mode and device's free memory (None when
        it fits or the free memory is unknown): the same sentence Start answers with."""
        if self._model is None:
            return None
        dev = self._devices.get(self.device_id())
        free = getattr(dev, "memory_free", None)
        if dev is None or free is None:
            return None
        # the device's own autocast rules (a CUDA run casts other layers than a CPU one)
        est = engine.memory_estimate(self._model.validation().info, self.batch.value(), mode=self.mode_key(),
                                     precision=self.precision_key(), device_type=getattr(dev, "kind", "cpu") or "cpu")
        where = "system memory" if getattr(dev, "kind", "") == "cpu" else f"{dev.id} memory"
        return engine.fit_problem(est, free, where)

    # -- devices -----------------------------------------------------------------------------------
    def set_devices(self, devices, preferred: str = "") -> None:
        """Fill the device combo from ``engine.list_devices()``."""
        self._devices = {d.id: d for d in devices}
        self.device.blockSignals(True)
        self.device.clear()
        for d in devices:
            mem = f" · {fmt.fmt_bytes(d.memory_total)}" if d.memory_total else ""
            self.device.addItem(f"{d.id} — {d.name}{mem}", d.id)
            i = self.device.count() - 1
            free = f", {fmt.fmt_bytes(d.memory_free)} free" if d.memory_free is not None else ""
            self.device.setItemData(i, f"{d.name}{mem}{free}", Qt.ToolTipRole)
        self.device.blockSignals(False)
        self.device.setEnabled(bool(devices))
        i = self.device.findData(preferred) if preferred else -1
        self.device.setCurrentIndex(i if i >= 0 else 0)
        self._on_device()

    def set_device_error(self, message: str) -> None:
        self.device.clear()
        self.device.addItem("cpu", "cpu")
        self.device_note.setText(f"Devices could not be listed: {message}")

    def _on_device(self, _=None) -> None:
        dev = self._devices.get(self.device_id())
        if dev is not None:
            parts = [dev.name]
            if dev.memory_total:
                parts.append(f"{fmt.fmt_bytes(dev.memory_total)} total")
            if dev.memory_free is not None:
                parts.append(f"{fmt.fmt_bytes(dev.memory_free)} free")
            self.device_note.setText(" · ".join(parts))
        self._update_summary()
        self.device_changed.emit(self.device_id())

    def device_id(self) -> str:
        return self.device.currentData() or ""

    # -- options -----------------------------------------------------------------------------------
    def mode_key(self) -> str:
        return self.mode.currentData()

    def precision_key(self) -> str:
        return self.precision.currentData()

    def dataset_name(self) -> str:
        return self.dataset.currentData() or "synthetic"

    def feature_layer(self) -> str:
        return self.feature.currentData() or ""

    def set_feature_layer(self, node_id: str) -> None:
        i = self.feature.findData(node_id or "")
        if i >= 0 and i != self.feature.currentIndex():
            self.feature.blockSignals(True)
            self.feature.setCurrentIndex(i)
            self.feature.blockSignals(False)

    def set_dataset(self, name_or_path: str) -> None:
        i = self.dataset.findData(name_or_path)
        if i < 0:
            self.dataset.addItem(os.path.basename(os.path.normpath(name_or_path)) or name_or_path, name_or_path)
            i = self.dataset.count() - 1
            self.dataset.setItemData(i, name_or_path, Qt.ToolTipRole)
        self.dataset.setCurrentIndex(i)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder")
        if folder:
            self.set_dataset(folder)

    def _on_dataset(self, _=None) -> None:
        name = self.dataset_name()
        try:
            self.data_note.setText(engine.dataset_note(name))
        except Exception as e:  # a note is a courtesy; never let it break the panel
            self.data_note.setText(f"{name}: {e}")
        self.download_button.setVisible(engine.can_download(name) and "empty" in self.data_note.text())

    def refresh_dataset_note(self) -> None:
        self._on_dataset()

    def _on_option(self, _=None) -> None:
        self.profile_every.setEnabled(True)
        self.length_kind.setEnabled(self.mode_key() != "benchmark")
        if self.mode_key() == "benchmark":
            self.length_kind.setCurrentIndex(0)
        self._update_summary()
        self.options_changed.emit()

    def options(self) -> dict:
        """The panel's choices, for settings (plain values)."""
        return {"mode": self.mode_key(), "precision": self.precision_key(), "batch_size": self.batch.value(),
                "length_kind": self.length_kind.currentData(), "length": self.length.value(),
                "profile_every": self.profile_every.value(), "dataset": self.dataset_name()}

    def set_options(self, opts: dict) -> None:
        def as_int(v, default):
            try:
                return int(v)
            except (TypeError, ValueError):
                return default

        for combo, key in ((self.mode, "mode"), (self.precision, "precision"), (self.length_kind, "length_kind")):
            i = combo.findData(opts.get(key))
            if i >= 0:
                combo.setCurrentIndex(i)
        self.batch.setValue(as_int(opts.get("batch_size"), self.batch.value()))
        self.length.setValue(as_int(opts.get("length"), self.length.value()))
        self.profile_every.setValue(as_int(opts.get("profile_every"), self.profile_every.value()))
        ds = opts.get("dataset")
        if isinstance(ds, str) and ds and (ds in DATASETS or os.path.isdir(ds)):
            self.set_dataset(ds)

    def apply(self, *, steps: int | None = None, device: str | None = None, batch_size: int | None = None,
              dataset: str | None = None) -> None:
        """Set choices from a script (``main.py --run``), so the panel shows what actually runs."""
        if steps is not None:
            self.length_kind.setCurrentIndex(self.length_kind.findData("steps"))
            self.length.setValue(steps)
        if batch_size is not None:
            self.batch.setValue(batch_size)
        if dataset:
            self.set_dataset(dataset)
        if device:
            i = self.device.findData(device)
            if i < 0:  # a device this machine lacks: the run says why
                self.device.addItem(device, device)
                i = self.device.count() - 1
            self.device.setCurrentIndex(i)

    def config_kwargs(self) -> dict:
        """RunConfig keyword arguments (without the net and the output file)."""
        steps = epochs = None
        if self.length_kind.currentData() == "epochs" and self.mode_key() != "benchmark":
            epochs = self.length.value()
        else:
            steps = self.length.value()
        return {"mode": self.mode_key(), "device": self.device_id() or "auto", "precision": self.precision_key(),
                "batch_size": self.batch.value(), "steps": steps, "epochs": epochs, "dataset": self.dataset_name(),
                "profile_every": self.profile_every.value(), "feature_node": self.feature_layer() or None,
                "skip_bad_images": self.skip_bad_images.isChecked(), "layer_energy": self.layer_energy.isChecked()}

    # -- run state ---------------------------------------------------------------------------------
    def set_run_state(self, state: str) -> None:
        """"running", "paused" or an end state ("completed", "stopped", "failed", "idle")."""
        self._running = state in ("running", "paused", "starting")
        self._paused = state == "paused"
        self.pause_button.setText("Resume" if self._paused else "Pause")
        if not self._running:
            self.rate.setText("" if state == "idle" else self.rate.text())
        self._update_buttons()

    def set_controllable(self, on: bool) -> None:
        """False while watching a remote run served view-only: Pause and Stop stay disabled."""
        self._controllable = bool(on)
        self._update_buttons()

    def _update_buttons(self) -> None:
        devices_ready = bool(self._devices) or self.device.count() > 0 and self.device.currentData()
        can_start = not self._running and self._net_ok and bool(devices_ready)
        self.start_button.setEnabled(can_start)
        controllable = getattr(self, "_controllable", True)
        self.pause_button.setEnabled(self._running and controllable)
        self.stop_button.setEnabled(self._running and controllable)
        for w in (self.device, self.mode, self.precision, self.batch, self.length, self.length_kind, self.dataset,
                  self.folder_button, self.profile_every):
            w.setEnabled(not self._running)
        if self._running:
            reason = ""
        elif not self._net_ok:
            reason = f"Cannot start: {self._net_reason}" if self._net_reason else "Cannot start: the net is not valid"
        elif not devices_ready:
            reason = "Looking for devices (PyTorch is loading)…"
        else:
            reason = ""
        self.reason.setText(reason)
        self.reason.setVisible(bool(reason))
        self.start_button.setToolTip(reason or "Start the run (F5)")

    def start_reason(self) -> str:
        """Why Start is disabled ('' when it is enabled)."""
        return "" if self.start_button.isEnabled() else (self.reason.text() or "a run is going")

    def set_progress(self, done: int, total: int, rate: float, warmup: int = 0) -> None:
        """Steps done of planned (warm-up included, as the run counts them); the first ``warmup``
        steps are named as such, because they are run but not measured."""
        self._last_progress = (done, total)
        if self._phase_shown in ("evaluating", "saving"):  # the bar belongs to that phase until it ends
            return
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(min(done, max(1, total)))
        if not total:
            self.progress.setFormat("starting…")
        elif warmup and done <= warmup:
            self.progress.setFormat(f"warm-up step {done} of {warmup} (not measured)")
        else:
            self.progress.setFormat(f"step {done} / {total}" + (f" · {warmup} warm-up" if warmup else ""))
        if rate > 0 and total:
            self.rate.setText(f"{rate:.1f} steps/s · {fmt.fmt_duration((total - done) / rate)} left")
        elif self._running:
            self.rate.setText("preparing (loading data, building the model)…" if done == 0 else "")

    def show_phase(self, state: str, text: str = "") -> None:
        """What the run does between steps: "evaluating" or "saving" make the bar busy (no count is
        known) with ``text``; "running" hands the bar back to the step count."""
        prev, self._phase_shown = self._phase_shown, state
        if state in ("evaluating", "saving"):
            self.progress.setRange(0, 0)
            self.progress.setFormat(text)
            self.rate.setText(text)
        elif prev in ("evaluating", "saving"):  # back to the step count as it stands
            done, total = self._last_progress
            self.progress.setRange(0, max(1, total))
            self.progress.setValue(min(done, max(1, total)))
            self.rate.setText("")

    def set_finished(self, status: str, message: str) -> None:
        self.show_phase(status)
        self.set_run_state(status)
        self.progress.setFormat({"completed": "completed", "stopped": "stopped", "failed": "failed"}.get(status, status)
                                + (f" · step {self.progress.value()} / {self.progress.maximum()}"
                                   if self.progress.maximum() > 1 else ""))
        self.rate.setText(message if status != "completed" else self.rate.text().split(" · ")[0])
