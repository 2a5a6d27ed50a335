"""The sweep form: the net on the canvas run over the cross product of chosen values - devices,
precisions, batch sizes, channels-last, CPU threads, CPU allocator - one configuration at a time,
each into its own session of a study folder (``engine.run_sweep``, the code ``layerscope sweep``
runs). The rest of the run's settings (mode, steps, dataset, profiling) come from the run panel.

The sweep runs on a worker thread (``app.bridge.ProgressCall``): the form shows "configuration
k/N label: step s/S" and each configuration's status; Stop ends it after the current step (the
configurations done stay done: Start again with the same folder resumes). When the sweep runs
to its end with two or more configurations done, ``study_finished(folder)`` fires and the window
opens the study in the comparison view.
"""
from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QDialog, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QListWidget, QProgressBar, QPushButton, QSpinBox, QToolButton,
                               QVBoxLayout, QWidget)

import engine
from app.bridge import ProgressCall

AXIS_TITLES = {"device": "Devices", "precision": "Precisions", "batch_size": "Batch sizes",
               "channels_last": "Channels-last", "threads": "CPU threads", "cpu_allocator": "CPU allocator"}


def parse_ints(text: str, lo: int = 1) -> tuple[list[int], str]:
    """Whole numbers >= ``lo`` from "16, 64 128" (commas or spaces), in order, without repeats; or
    ([], one line why)."""
    out: list[int] = []
    for part in text.replace(",", " ").split():
        if not part.isdigit() or int(part) < lo:
            return [], f"'{part}' is not a whole number >= {lo}"
        if int(part) not in out:
            out.append(int(part))
    return out, ""


def _checks(values, checked) -> tuple[QWidget, dict[str, QCheckBox]]:
    row = QWidget()
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    boxes = {}
    for v in values:
        box = QCheckBox(str(v))
        box.setChecked(v in checked)
        lay.addWidget(box)
        boxes[v] = box
    lay.addStretch(1)
    return row, boxes


class SweepDialog(QDialog):
    """The sweep form for ``net`` (a NetSpec) with the run panel's other settings ``fixed``
    (``RunPanel.config_kwargs()``); studies go under ``runs_folder`` by default."""

    study_finished = Signal(str)  # the study folder, once the sweep ran to its end with two or more done

    def __init__(self, net, fixed: dict, runs_folder, devices=(), parent=None):
        super().__init__(parent)
        self.setWindowTitle("Sweep")
        self.net = net
        self.fixed = {k: v for k, v in dict(fixed).items()
                      if k not in ("device", "precision", "batch_size", "channels_last", "threads", "feature_node")}
        self.runs_folder = Path(runs_folder)
        self.call: ProgressCall | None = None
        self._stop = threading.Event()
        self.result = None
        self.error: str | None = None
        self.statuses: dict[str, str] = {}

        dev_ids = [getattr(d, "id", d) for d in devices] or ["cpu"]
        self.device_row, self.device_boxes = _checks(dev_ids, {fixed.get("device") if fixed.get("device") in dev_ids
                                                               else dev_ids[0]})
        precisions = engine.RunConfig.setting("precision").choices
        self.precision_row, self.precision_boxes = _checks(precisions, {"fp32", "bf16"})
        self.batches = QLineEdit(f"{fixed.get('batch_size') or 16}, {4 * (fixed.get('batch_size') or 16)}")
        self.batches.setToolTip("Batch sizes, separated by commas")
        self.cl_row, self.cl_boxes = _checks(("off", "on"), {"off"})
        self.threads = QLineEdit("")
        self.threads.setPlaceholderText("default (all cores but one)")
        self.threads.setToolTip("CPU thread counts, separated by commas (empty: the default)")
        self.alloc_row, self.alloc_boxes = _checks(engine.CPU_ALLOCATORS, {"default"})
        for name in ("jemalloc", "tcmalloc"):
            self.alloc_boxes[name].setToolTip(f"{name}, when its library is on this machine (the sweep "
                                              "records the configuration as failed, with the reason, if not)")
        self.alloc_boxes["tuned"].setToolTip("glibc malloc with MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ "
                                             "raised: freed activations are reused instead of unmapped")
        for name, box in self.alloc_boxes.items():  # one this machine cannot use is shown, not offered
            why = engine.allocator_problem(name)
            if why:
                box.setChecked(False)
                box.setEnabled(False)
                box.setToolTip(why[:1].upper() + why[1:])
        self.steps = QSpinBox()
        self.steps.setRange(1, 1_000_000)
        self.steps.setValue(int(fixed.get("steps") or 20))
        self.cooldown = QDoubleSpinBox()
        self.cooldown.setRange(0.0, 3600.0)
        self.cooldown.setSuffix(" s")
        self.cooldown.setToolTip("Wait between configurations (GPU energy readings drift upward as the GPU heats)")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.out = QLineEdit(os.fspath(self.runs_folder / f"study-{getattr(net, 'name', '') or 'net'}-{stamp}"))
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._choose_folder)
        out_row = QHBoxLayout()
        out_row.setContentsMargins(0, 0, 0, 0)
        out_row.addWidget(self.out, 1)
        out_row.addWidget(browse)

        form = QFormLayout()
        form.addRow("Devices", self.device_row)
        form.addRow("Precisions", self.precision_row)
        form.addRow("Batch sizes", self.batches)
        form.addRow("Channels-last", self.cl_row)
        form.addRow("CPU threads", self.threads)
        form.addRow("CPU allocator", self.alloc_row)
        form.addRow("Steps each", self.steps)
        form.addRow("Cool-down", self.cooldown)
        form.addRow("Study folder", out_row)
        mode = fixed.get("mode", "train")
        self.fixed_note = QLabel(f"Net {getattr(net, 'name', '') or '(unnamed)'}; from the run panel: mode {mode}, "
                                 f"dataset {fixed.get('dataset', 'synthetic')}, profile every "
                                 f"{fixed.get('profile_every', 1)}.")
        self.fixed_note.setObjectName("notice")
        self.fixed_note.setWordWrap(True)
        self.count = QLabel("")
        self.count.setObjectName("summary")
        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("startButton")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.count, 1)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.configs = QListWidget()
        self.configs.setMinimumHeight(90)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.fixed_note)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(self.configs, 1)
        for box in [*self.device_boxes.values(), *self.precision_boxes.values(), *self.cl_boxes.values(),
                    *self.alloc_boxes.values()]:
            box.toggled.connect(self._update_count)
        for edit in (self.batches, self.threads):
            edit.textChanged.connect(self._update_count)
        self.resize(560, 520)
        self._update_count()

    # -- the form ----------------------------------------------------------------------------------
    def choices(self) -> tuple[dict, str]:
        """({RunConfig field: [values]} as chosen, every axis with at least one value), or ({}, why)."""
        out: dict[str, list] = {}
        for key, boxes in (("device", self.device_boxes), ("precision", self.precision_boxes)):
            out[key] = [v for v, b in boxes.items() if b.isChecked()]
            if not out[key]:
                return {}, f"choose at least one {AXIS_TITLES[key][:-1].lower()}"
        out["batch_size"], why = parse_ints(self.batches.text())
        if why or not out["batch_size"]:
            return {}, f"batch sizes: {why or 'give at least one'}"
        out["channels_last"] = [v == "on" for v, b in self.cl_boxes.items() if b.isChecked()] or [False]
        threads, why = parse_ints(self.threads.text())
        if why:
            return {}, f"CPU threads: {why}"
        if threads:
            out["threads"] = threads
        out["cpu_allocator"] = [v for v, b in self.alloc_boxes.items() if b.isChecked()] or ["default"]
        return out, ""

    def axes(self) -> dict[str, list]:
        """The axes ``engine.run_sweep`` varies: the chosen settings with two or more values, and
        the CPU allocator whenever it is not glibc's default alone (the allocator is always an
        axis for the engine: it is set in each configuration's process environment)."""
        chosen, _why = self.choices()
        return {k: v for k, v in chosen.items()
                if len(v) > 1 or (k == "cpu_allocator" and v != ["default"])}

    def fixed_settings(self) -> dict:
        """The run's other settings: the run panel's (unset ones left out), the steps, and every
        setting given one value."""
        chosen, _why = self.choices()
        axes = self.axes()
        fixed = {k: v for k, v in dict(self.fixed, steps=self.steps.value(), epochs=None).items() if v is not None}
        fixed.update({k: v[0] for k, v in chosen.items() if k not in axes and k != "cpu_allocator"})
        return fixed

    def n_configs(self) -> int:
        n = 1
        for v in self.axes().values():
            n *= len(v)
        return n

    def _update_count(self, *_args) -> None:
        _chosen, why = self.choices()
        self.count.setText(why or f"{self.n_configs()} configuration{'s' if self.n_configs() != 1 else ''}")
        self.start_button.setEnabled(not why and not self.running())

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Study folder", os.fspath(self.runs_folder))
        if folder:
            self.out.setText(folder)

    # -- running -----------------------------------------------------------------------------------
    def running(self) -> bool:
        return self.call is not None and not self.call.done

    def start(self) -> bool:
        """Start the sweep on a worker; False (and the reason shown) when the form is incomplete."""
        if self.running():
            return False
        chosen, why = self.choices()
        out = self.out.text().strip()
        if why or not out:
            self.status.setText(why or "choose a study folder")
            return False
        axes, fixed, net = self.axes(), self.fixed_settings(), self.net
        cooldown = self.cooldown.value()
        self._stop.clear()
        self.result, self.error, self.statuses = None, None, {}
        self.configs.clear()
        self.out_dir = out

        def work(report):
            # each configuration's end (done, failed, skipped, stopped) reaches the form; the
            # "running" step counts in between collapse to the latest
            return engine.run_sweep(net, axes, fixed, out, cooldown=cooldown, resume=True,
                                    progress=lambda p: report(p, keep=p.status != "running"), stop=self._stop)

        self.call = ProgressCall(work, name="layerscope-sweep", parent=self)
        self.call.progress_changed.connect(self.show_progress)
        self.call.finished.connect(self._on_finished)
        self.call.start()
        self.progress.setRange(0, self.n_configs())
        self.progress.setValue(0)
        self.progress.setFormat(f"0 / {self.n_configs()} configurations")
        self.status.setText("starting…")
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        return True

    def show_progress(self, p) -> None:
        """A ``SweepProgress`` (k, n, label, step, steps, status) from the worker."""
        k, n = getattr(p, "k", 0), getattr(p, "n", 0)
        label, status = getattr(p, "label", ""), getattr(p, "status", "")
        step, steps = getattr(p, "step", None), getattr(p, "steps", None)
        text = f"configuration {k}/{n} {label}"
        if step is not None and steps:
            text += f": step {step}/{steps}"
        if status:
            text += f" ({status}" + (f": {p.reason}" if getattr(p, "reason", None) else "") + ")"
        self.status.setText(text)
        self.progress.setRange(0, max(1, n))
        finished = status in ("done", "failed", "skipped", "stopped")
        self.progress.setValue(k if finished else max(0, k - 1))
        self.progress.setFormat(f"{k} / {n} configurations")
        if label and status:
            self.statuses[label] = status
            items = self.configs.findItems(label + " ", Qt.MatchStartsWith)
            line = f"{label} — {status}"
            if items:
                items[0].setText(line)
            else:
                self.configs.addItem(line)

    def stop(self) -> None:
        """Ask the sweep to stop after the current step (the worker checks between steps)."""
        if self.running():
            self._stop.set()
            self.status.setText(self.status.text() + " — stopping…")
            self.stop_button.setEnabled(False)

    def _on_finished(self, result, error) -> None:
        self.result, self.error = result, error
        self.stop_button.setEnabled(False)
        self._update_count()
        if error:
            self.status.setText(f"sweep failed: {error}")
            self.progress.setFormat("failed")
            return
        stopped = self._stop.is_set()
        self.status.setText(("stopped" if stopped else "done") + f": study in {self.out_dir}")
        done = sum(1 for c in getattr(result, "configs", []) if c.status == "done")
        if not stopped and done >= 2:  # a comparison needs two finished configurations
            self.study_finished.emit(self.out_dir)

    def wait(self, timeout: float | None = None) -> bool:
        return self.call is None or self.call.wait(timeout)

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Stop a sweep that is going and wait for its worker (the window's close)."""
        if self.call is None:
            return True
        self._stop.set()
        return self.call.wait(timeout)


def main(argv=None) -> int:
    """``python -m app.dialogs.sweep_dialog [--preset NAME] [--run --out DIR] [--screenshot PNG]``:
    the form alone (docs, a quick look); with ``--run`` the sweep runs and the PNG is taken when
    it ends."""
    import argparse
    import sys

    from PySide6.QtCore import QTimer

    ap = argparse.ArgumentParser(prog="python -m app.dialogs.sweep_dialog", description="The sweep form.")
    ap.add_argument("--preset", default="lenet5")
    ap.add_argument("--precision", default="fp32,bf16", help="precisions to tick (comma-separated)")
    ap.add_argument("--batch-sizes", default="16, 64")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", help="study folder (default: one under the runs folder)")
    ap.add_argument("--run", action="store_true", help="run the sweep, then take the screenshot")
    ap.add_argument("--screenshot", metavar="PNG")
    args = ap.parse_args(argv)
    try:
        net = engine.load_preset(args.preset)
    except engine.LayerScopeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from app.views.base import standalone_app

    app = standalone_app()
    fixed = {"mode": "train", "device": "cpu", "batch_size": 16, "steps": args.steps, "dataset": "synthetic",
             "profile_every": 1}
    dlg = SweepDialog(net, fixed, engine.runs_dir(), engine.list_devices())
    for name, box in dlg.precision_boxes.items():
        box.setChecked(name in args.precision.split(","))
    dlg.batches.setText(args.batch_sizes)
    if args.out:
        dlg.out.setText(args.out)
    dlg.show()
    code = {"value": 0}

    def shoot() -> None:
        for _ in range(3):
            app.processEvents()
        if args.screenshot:
            ok = dlg.grab().save(args.screenshot)
            print(f"screenshot: {args.screenshot}" if ok else f"could not write {args.screenshot}")
            code["value"] = 0 if ok else 1
        app.exit(code["value"])

    if args.run:
        dlg.study_finished.connect(lambda _folder: QTimer.singleShot(200, shoot))
        if not dlg.start():
            print(f"error: {dlg.status.text()}", file=sys.stderr)
            return 2
        dlg.call.finished.connect(lambda _r, err: err and (print(f"error: {err}", file=sys.stderr), shoot()))
    elif args.screenshot:
        QTimer.singleShot(200, shoot)
    app.exec()
    return code["value"]


if __name__ == "__main__":
    raise SystemExit(main())
