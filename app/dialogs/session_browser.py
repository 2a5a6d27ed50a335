"""The session browser: every run in the runs folder (the app's and ``layerscope profile``'s alike)
with its net, device, precision, batch, steps, status, date, throughput and size; open one, delete
(after a confirmation), reveal the folder, or select two or more to compare.

The list comes from ``engine.list_sessions`` (meta rows and the last steps only, never whole
files); throughput is ``engine.samples_per_s`` of those steps, the statistics' own figure.
Studies (the folders ``layerscope sweep`` and the app's sweep form write, ``engine.is_study``)
are listed too, one row each, after the runs; Open or Compare on a study compares its
configurations. Compare on two or more runs asks the window's comparison view for them
(``compare_requested``).
"""
from __future__ import annotations

import os
import shutil
import sys
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QHBoxLayout, QHeaderView, QLabel, QMessageBox,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout)

import engine
from engine import fmt

COLUMNS = ("Net", "Device", "Precision", "Batch", "Steps", "Status", "Date", "Throughput", "Size", "File")


class _Item(QTableWidgetItem):
    """A cell that sorts by its number (``sort_key``), not by its text."""

    def __init__(self, text: str, sort_key=None):
        super().__init__(text)
        self.sort_key = sort_key if sort_key is not None else text
        self.setFlags(Qt.ItemIsSelectable | Qt.ItemIsEnabled)

    def __lt__(self, other) -> bool:
        a, b = self.sort_key, getattr(other, "sort_key", other.text())
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)


class SessionBrowser(QDialog):
    """Lists ``folder``'s sessions; ``open_requested(path)`` asks the window to show one."""

    open_requested = Signal(str)
    compare_requested = Signal(list)  # two or more session files, or one study folder

    def __init__(self, folder, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Sessions")
        self.folder = Path(folder)
        self.entries: list = []
        self.where = QLabel("")
        self.where.setObjectName("notice")
        self.where.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self._sorted_by_user = False
        self.table.setWordWrap(False)
        head = self.table.horizontalHeader()
        head.setSectionResizeMode(QHeaderView.ResizeToContents)
        head.setStretchLastSection(True)
        head.sectionClicked.connect(lambda _c: setattr(self, "_sorted_by_user", True))
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _item: self.open_selected())
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(self.open_selected)
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip("Select two or more runs, or a study: they open side by side in the "
                                       "Comparison view")
        self.compare_button.clicked.connect(self.compare_selected)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(self.delete_selected)
        self.reveal_button = QPushButton("Show in folder")
        self.reveal_button.clicked.connect(self.reveal)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        buttons = QHBoxLayout()
        for b in (self.open_button, self.compare_button, self.delete_button, self.reveal_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(refresh)
        lay = QVBoxLayout(self)
        lay.addWidget(self.where)
        lay.addWidget(self.table, 1)
        lay.addLayout(buttons)
        self.resize(1100, 420)
        self.refresh()

    # -- the list ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        try:
            self.entries = engine.list_sessions(self.folder)
        except engine.LayerScopeError as e:
            self.entries = []
            self.where.setText(str(e))
        else:
            n = len(self.entries)
            self.where.setText(f"{n} run{'s' if n != 1 else ''} in {self.folder} (app and command-line runs)")
        self.studies = self._studies()
        if self.studies:
            self.where.setText(self.where.text() + f"; {len(self.studies)} "
                               f"stud{'ies' if len(self.studies) != 1 else 'y'} (sweeps)")
        head = self.table.horizontalHeader()
        col, order = (head.sortIndicatorSection(), head.sortIndicatorOrder()) if self._sorted_by_user else \
            (COLUMNS.index("Date"), Qt.DescendingOrder)  # newest first until the person sorts otherwise
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.entries) + len(self.studies))
        for r, e in enumerate(self.entries):
            for c, (text, key) in enumerate(self._cells(e)):
                item = _Item(text, key)
                if c == 0:
                    item.setData(Qt.UserRole, os.fspath(e.path))
                if e.problem:
                    item.setToolTip(e.problem)
                self.table.setItem(r, c, item)
        for r, (path, cells) in enumerate(self.studies, start=len(self.entries)):
            for c, (text, key) in enumerate(cells):
                item = _Item(text, key)
                if c == 0:
                    item.setData(Qt.UserRole, os.fspath(path))
                    item.setData(Qt.UserRole + 1, "study")
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        self.table.sortItems(col, order)
        self._update_buttons()

    @staticmethod
    def _cells(e) -> list[tuple[str, object]]:
        if e.problem:
            return [("(unreadable)", ""), ("", ""), ("", ""), ("", -1), ("", -1), (e.problem, e.problem),
                    (datetime.fromtimestamp(e.modified).strftime("%Y-%m-%d %H:%M"), e.modified), ("", -1.0),
                    (fmt.fmt_bytes(e.size), e.size), (e.path.name, e.path.name)]
        when = e.start_time or e.modified
        rate = engine.samples_per_s(e.tail) if e.tail else None
        dev = e.device + (f" ({e.device_name})" if e.device_name and e.device_name != e.device else "")
        return [(e.net or "(unnamed)", e.net), (dev, dev), (e.precision, e.precision),
                (fmt.fmt_int(e.batch_size), e.batch_size or -1), (fmt.fmt_int(e.steps), e.steps or -1),
                (e.status, e.status), (datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M"), when),
                (fmt.fmt_rate(rate), rate if rate is not None else -1.0), (fmt.fmt_bytes(e.size), e.size),
                (e.path.name, e.path.name)]

    def _studies(self) -> list[tuple[Path, list]]:
        """(folder, cells) of each study folder under the runs folder (``engine.read_study``)."""
        out = []
        try:
            # a study is a folder with a study.json (the layout); engine.is_study judges it
            subdirs = sorted(p for p in self.folder.iterdir() if p.is_dir() and (p / "study.json").is_file())
        except OSError:
            return out
        for d in subdirs:
            try:
                if not engine.is_study(d):
                    continue
                study = engine.read_study(d)
            except (engine.LayerScopeError, OSError, ValueError) as e:
                out.append((d, [("(unreadable study)", ""), ("", ""), ("", ""), ("", -1), ("", -1),
                                (str(e).splitlines()[0] if str(e) else "", ""), ("", 0), ("", -1.0), ("", 0),
                                (d.name + os.sep, d.name)]))
                continue
            out.append((d, self._study_cells(d, study)))
        return out

    @staticmethod
    def _study_cells(d: Path, study) -> list[tuple[str, object]]:
        configs = list(getattr(study, "configs", None) or [])
        done = sum(1 for c in configs if getattr(c, "status", None) == "done")
        axes = getattr(study, "axes", None) or {}
        vary = lambda key: ",".join(str(v) for v in axes.get(key, [])) or ""  # noqa: E731
        when = (d / "study.json").stat().st_mtime if (d / "study.json").exists() else d.stat().st_mtime
        net = getattr(study, "net", None) or ""
        return [(f"study: {net or d.name}", net), (vary("device"), vary("device")),
                (vary("precision"), vary("precision")), (vary("batch_size"), -1), ("", -1),
                (f"{done}/{len(configs)} configurations", done),
                (datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M"), when), ("", -1.0), ("", 0),
                (d.name + os.sep, d.name)]

    def selected_studies(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.table.item(r, 0).data(Qt.UserRole) for r in rows
                if self.table.item(r, 0).data(Qt.UserRole + 1) == "study"]

    def selected_paths(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.table.item(r, 0).data(Qt.UserRole) for r in rows]

    def select_paths(self, paths) -> None:
        """Select the rows of these files (tests and scripts)."""
        want = {os.fspath(p) for p in paths}
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.MultiSelection)
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).data(Qt.UserRole) in want:
                self.table.selectRow(r)
        self.table.setSelectionMode(mode)

    def _update_buttons(self) -> None:
        paths = self.selected_paths()
        studies = self.selected_studies()
        n = len(paths)
        self.open_button.setEnabled(n == 1)
        self.compare_button.setEnabled((n >= 2 and not studies) or (n == 1 and len(studies) == 1))
        self.delete_button.setEnabled(n >= 1 and not studies)

    # -- actions ----------------------------------------------------------------------------------
    def open_selected(self) -> None:
        paths = self.selected_paths()
        if paths and self.selected_studies():
            self.compare_requested.emit(paths[:1])  # a study opens as the comparison of its configurations
        elif paths:
            self.open_requested.emit(paths[0])

    def compare_selected(self) -> list[str]:
        """Ask the window to compare the selected runs (two or more) or the selected study."""
        paths = self.selected_paths()
        studies = self.selected_studies()
        if (len(paths) < 2 or studies) and not (len(paths) == 1 and studies):
            return []
        self.compare_requested.emit(paths)
        return paths

    def delete_selected(self) -> list[str]:
        """Delete the selected runs (session file, its WAL, and its weights folder) after asking."""
        paths = [p for p in self.selected_paths() if p not in self.selected_studies()]
        if not paths:
            return []
        names = "\n".join(os.path.basename(p) for p in paths[:10]) + ("\n…" if len(paths) > 10 else "")
        if not self.confirm(f"Delete {len(paths)} run{'s' if len(paths) > 1 else ''} and their saved weights?\n\n"
                            f"{names}\n\nThis cannot be undone."):
            return []
        gone = []
        for p in paths:
            try:
                for extra in (p + "-wal", p + "-shm"):
                    if os.path.exists(extra):
                        os.remove(extra)
                os.remove(p)
                weights = engine.run_checkpoint_folder(p)
                if weights.is_dir():
                    shutil.rmtree(weights)
                gone.append(p)
            except OSError as e:
                self.where.setText(f"cannot delete {p}: {e.strerror or e}")
        self.refresh()
        return gone

    def confirm(self, text: str) -> bool:
        """Ask before deleting (tests replace this)."""
        return QMessageBox.question(self, "Delete runs", text, QMessageBox.Yes | QMessageBox.No,
                                    QMessageBox.No) == QMessageBox.Yes

    def reveal(self) -> None:
        """Open the runs folder in the file manager."""
        self.open_url(QUrl.fromLocalFile(os.fspath(self.folder)))

    @staticmethod
    def open_url(url: QUrl) -> bool:
        return QDesktopServices.openUrl(url)


def main(argv=None) -> int:
    import argparse

    from PySide6.QtWidgets import QApplication

    from app import style

    ap = argparse.ArgumentParser(prog="python -m app.dialogs.session_browser", description="List the runs in a folder.")
    ap.add_argument("folder", nargs="?", default=None, help="default: the runs folder (engine.runs_dir())")
    ap.add_argument("--screenshot", metavar="PATH", help="save a PNG of the dialog and exit")
    args = ap.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    style.apply(app)
    dlg = SessionBrowser(args.folder or engine.runs_dir())
    dlg.show()
    if args.screenshot:
        for _ in range(3):
            app.processEvents()
        ok = dlg.grab().save(args.screenshot)
        print(f"screenshot: {args.screenshot}" if ok else f"could not write {args.screenshot}")
        return 0 if ok else 1
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
