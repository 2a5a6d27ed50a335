"""File ▸ Open data-parallel run…: a study folder written by ``layerscope profile --nproc N`` (or
torchrun) shown rank by rank (``app.views.rank_timeline``). The figures are computed off the GUI
thread (``BackgroundCall``) by ``engine.ddp_summary`` and ``engine.rank_timeline``."""
from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QWidget

import engine
from app.bridge import BackgroundCall


class DdpController(QObject):
    def __init__(self, log_view, parent: QWidget):
        super().__init__(parent)
        self.log_view = log_view
        self._parent = parent
        self.view = None  # app.views.rank_timeline.RankTimelineView, built on first use (pyqtgraph loads late)
        self.folder: str | None = None
        self._calls: list[BackgroundCall] = []

    def ask_folder(self) -> str | None:  # replaced by tests
        return QFileDialog.getExistingDirectory(self._parent, "Open a data-parallel run (its study folder)") or None

    def open_dialog(self) -> None:
        folder = self.ask_folder()
        if folder:
            self.open(folder)

    def _call(self, fn, done) -> BackgroundCall:
        call = BackgroundCall(fn, name="layerscope-ddp", parent=self)
        self._calls.append(call)

        def finished(result, error):
            self._calls.remove(call)
            call.deleteLater()
            if error:
                self.log_view.append("error", error)
            else:
                done(result)

        call.finished.connect(finished)
        return call.start()

    def open(self, folder: str) -> BackgroundCall:
        """Read the study off the GUI thread and show its ranks (errors go to the log, one line)."""
        self.folder = folder

        def show(result):
            summary, timeline = result
            if self.view is None:
                from app.views.rank_timeline import RankTimelineView

                self.view = RankTimelineView()
                self.view.resize(1100, 560)
                self.view.step_requested.connect(self.show_step)
            self.view.set_study(summary, timeline)
            self.view.setWindowTitle(f"Data-parallel run: {folder}")
            self.view.show()
            self.log_view.append("app", f"opened the data-parallel run {folder} ({summary['world_size']} ranks)")

        return self._call(lambda: (engine.ddp_summary(folder), engine.rank_timeline(folder)), show)

    def show_step(self, step: int) -> BackgroundCall | None:
        if self.folder is None or self.view is None:
            return None
        folder = self.folder
        return self._call(lambda: engine.rank_timeline(folder, step), self.view.set_timeline)

    def shutdown(self) -> None:
        for call in list(self._calls):
            call.cancel()
        if self.view is not None:
            self.view.close()
