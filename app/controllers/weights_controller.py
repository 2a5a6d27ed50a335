"""Weights: every training run saves a checkpoint into its own folder beside its session file; the
next run can start from a chosen one; the latest can be copied elsewhere or tested on random
held-out images (the article's check). A checkpoint is always this run's or said to be another's:
a run that ended without saving says so instead of pointing at an older run's file."""
from __future__ import annotations

import os
import shutil
import time

from PySide6.QtWidgets import QFileDialog, QWidget

import engine
from app.controllers.base import Controller

CHECKPOINT_FILTER = "Checkpoints (*.safetensors *.pt *.pth);;All files (*)"


class WeightsController(Controller):
    """Which checkpoint the next run loads (``load_weights``) and which one is the latest
    (``last_checkpoint``: written by the last training run, or loaded)."""

    def __init__(self, settings, log_view, parent: QWidget):
        super().__init__(parent)
        self._window = parent
        self.settings = settings
        self.log_view = log_view
        self.load_weights: str | None = None
        self.last_checkpoint: str | None = None
        self.last_checkpoint_run: str | None = None  # the session of the run that saved last_checkpoint
        self._run_checkpoint: str | None = None  # the folder the running run saves into
        self._run_session: str | None = None
        self._dialogs: list = []

    def prepare(self, cfg) -> None:
        """Give a run config its checkpoint folder (training runs) and the weights to start from.

        The folder is the run's own (``engine.run_checkpoint_folder`` of its session file), never one
        shared by every run of a net name."""
        if cfg.mode == "train" and cfg.save_checkpoint is None:
            # every training run keeps its weights, for "Test on held-out images" and Save weights
            if cfg.out:
                cfg.save_checkpoint = os.fspath(engine.run_checkpoint_folder(cfg.out))
            else:  # not recorded (the runs folder is not writable): still a folder of this run alone
                stamp = time.strftime("%Y%m%d-%H%M%S")
                cfg.save_checkpoint = os.path.join(self.settings.runs_folder, "checkpoints",
                                                   f"{cfg.net.name or 'net'}-{stamp}-{os.getpid()}")
        if self.load_weights and cfg.load_checkpoint is None:
            cfg.load_checkpoint = self.load_weights
        self._run_checkpoint = cfg.save_checkpoint if cfg.mode == "train" else None
        self._run_session = cfg.out

    def note_run_end(self, status: str, extra: dict | None = None) -> None:
        """After a run: the checkpoint it wrote (``RunEnded.extra["checkpoint"]``) becomes the latest.
        A training run that wrote none says so plainly, and the latest stays the older run's, named."""
        if self._run_checkpoint is None:  # inference or benchmark: no weights were to be saved
            return
        path = (extra or {}).get("checkpoint")
        if path and os.path.isfile(path):
            self.last_checkpoint = os.fspath(path)
            self.last_checkpoint_run = self._run_session
            step = (extra or {}).get("checkpoint_step")
            self.log_view.append("app", f"weights saved to {self.last_checkpoint}"
                                        + (f" (after step {step})" if step is not None else ""))
            return
        why = (extra or {}).get("checkpoint_error") or (
            "the run stopped before its end" if status == "stopped" else f"the run {status}")
        text = f"this run saved no weights ({why})"
        if self.last_checkpoint:
            owner = os.path.basename(self.last_checkpoint_run) if self.last_checkpoint_run else "an earlier run"
            text += f"; Test on held-out images still uses the weights of {owner}"
        self.log_view.append("warning", text)
        self._status(text[0].upper() + text[1:], 10000)

    def load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self._window, "Load weights", os.fspath(self.settings.runs_folder),
                                              CHECKPOINT_FILTER)
        if path:
            self.set_load_weights(path)

    def set_load_weights(self, path: str | None) -> None:
        """Start the next run from ``path`` (checked against the net when the run starts)."""
        self.load_weights = path or None
        if path:
            self.last_checkpoint = path
            self.last_checkpoint_run = None  # the dialog reads the run from the file itself
            self.log_view.append("app", f"the next run starts from the weights in {path}")

    def save_dialog(self) -> None:
        """Copy the latest checkpoint (and a torch-format file's net beside it) where the person says."""
        if not self.last_checkpoint:
            self._note("Save weights", "No weights yet: every training run saves its weights when it ends.")
            return
        suffix = os.path.splitext(self.last_checkpoint)[1]
        path, _ = QFileDialog.getSaveFileName(self._window, "Save weights as", "weights" + suffix, f"*{suffix}")
        if not path:
            return
        try:
            shutil.copyfile(self.last_checkpoint, path)
            sidecar = os.path.splitext(self.last_checkpoint)[0] + ".json"
            if os.path.exists(sidecar):  # torch-format checkpoints keep their net beside them
                shutil.copyfile(sidecar, os.path.splitext(path)[0] + ".json")
        except OSError as e:
            self._problem(f"Cannot save the weights: {e}")
            return
        self.log_view.append("ok", f"weights saved to {path}")
        self._file(f"Weights saved to {os.path.basename(path)}", path)

    def test_held_out(self):
        """Open the predictions dialog on the latest checkpoint; None (and a note) when there is none."""
        if not self.last_checkpoint:
            self._note("Test on held-out images",
                       "No weights yet: train the net first (each training run saves its weights) "
                       "or load a checkpoint with Run ▸ Load weights.")
            return None
        from app.dialogs.predictions import open_predictions

        dlg = open_predictions(self._window, self.last_checkpoint)
        self._dialogs.append(dlg)
        dlg.destroyed.connect(lambda _=None, d=dlg: self._dialogs.remove(d) if d in self._dialogs else None)
        return dlg

    def shutdown(self, timeout: float | None = None) -> bool:
        """Wait for the draws of open prediction dialogs; True when none is left running."""
        return all([dlg.shutdown(timeout) for dlg in list(self._dialogs)])
