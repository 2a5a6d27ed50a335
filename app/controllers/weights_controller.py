"""Weights: every training run saves a checkpoint; the next run can start from a chosen one; the
latest can be copied elsewhere or tested on random held-out images (the article's check)."""
from __future__ import annotations

import os
import shutil

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
        self._run_checkpoint: str | None = None  # the folder the running run saves into
        self._dialogs: list = []

    def prepare(self, cfg) -> None:
        """Give a run config its checkpoint folder (training runs) and the weights to start from."""
        if cfg.mode == "train" and cfg.save_checkpoint is None:
            # every training run keeps its weights, for "Test on held-out images" and Save weights
            cfg.save_checkpoint = os.path.join(self.settings.runs_folder, "checkpoints", cfg.net.name or "net")
        if self.load_weights and cfg.load_checkpoint is None:
            cfg.load_checkpoint = self.load_weights
        self._run_checkpoint = cfg.save_checkpoint

    def note_run_end(self, status: str) -> None:
        """After a run: the checkpoint it left becomes the latest (none when it failed or saved nothing)."""
        folder = self._run_checkpoint
        if status in ("completed", "stopped") and folder and os.path.isdir(folder):
            try:
                latest = engine.latest_checkpoint(folder)
            except OSError:  # the folder went away or cannot be listed: nothing to point at
                return
            if latest is None:  # the run ended before its first save
                return
            self.last_checkpoint = str(latest)
            self.log_view.append("app", f"weights saved to {self.last_checkpoint}")

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
