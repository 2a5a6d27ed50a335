"""Recorded sessions in the live views: ``SessionPlayer`` replays a session file's records into a
``LiveFeed`` up to a chosen step, and ``SessionBar`` is the strip with the step slider.

A session from the app and one from ``layerscope profile`` read the same: the views cannot tell a
file from a live run, because both arrive as ``LiveSnapshot``s.
"""
from __future__ import annotations

import bisect
import os

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSlider, QWidget

import engine


class SessionPlayer(QObject):
    """Holds one open session; ``seek(step)`` emits the snapshot of the run as it was after that step."""

    snapshot_ready = Signal(object)

    def __init__(self, parent: QObject | None = None, window: int = 50):
        super().__init__(parent)
        self._window = window
        self.reader = None
        self.path: str | None = None
        self._records: list = []
        self._step_ends: list[int] = []   # record index just past each main step's records
        self._steps: list[int] = []
        self._fed = 0
        self.feed = None
        self.current_step: int | None = None

    def open(self, path) -> None:
        """Read the whole session (LayerScopeError with one line for a bad file) and show its last step."""
        reader = engine.open_session(path)
        try:
            records = list(reader.records())
        except Exception:
            reader.close()
            raise
        self.close()
        self.reader = reader
        self.path = os.fspath(path)
        self._records = records
        main = [(i, r) for i, r in enumerate(records) if isinstance(r, engine.StepRecord) and r.phase != "test"]
        self._steps = [r.step for _, r in main]
        # everything recorded before the next step began belongs to a step (its layer times,
        # feature map, telemetry)
        self._step_ends = [main[k + 1][0] if k + 1 < len(main) else len(records) for k in range(len(main))]
        self.feed = engine.LiveFeed(window=self._window)
        self._fed = 0
        self.current_step = None
        if self._steps:
            self.seek(self._steps[-1])
        else:
            self._feed_to(len(records))

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.reader = None
        self.path = None
        self._records = []
        self._steps = []
        self._step_ends = []
        self.feed = None
        self.current_step = None

    def is_open(self) -> bool:
        return self.reader is not None

    @property
    def info(self) -> engine.RunInfo | None:
        return self._records[0] if self._records and isinstance(self._records[0], engine.RunInfo) else None

    def steps(self) -> list[int]:
        return list(self._steps)

    def _feed_to(self, end: int) -> None:
        if end < self._fed:  # going back: replay from the start (the feed keeps no history)
            self.feed.clear()
            self._fed = 0
        for rec in self._records[self._fed:end]:
            self.feed(rec)
        self._fed = end
        snap = self.feed.snapshot()
        self.snapshot_ready.emit(snap)

    def seek(self, step: int) -> None:
        """Show the run as it was right after ``step`` (the nearest recorded step at or before it)."""
        if not self._steps:
            return
        k = max(0, bisect.bisect_right(self._steps, step) - 1)
        self.current_step = self._steps[k]
        self._feed_to(self._step_ends[k])

    def snapshot(self):
        return self.feed.snapshot() if self.feed is not None else None


class SessionBar(QWidget):
    """File name, run facts and a step slider; scrubbing is coalesced to the frame rate."""

    closed = Signal()

    def __init__(self, player: SessionPlayer, parent=None):
        super().__init__(parent)
        self.player = player
        self.label = QLabel("")
        self.label.setObjectName("summary")
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setMinimumWidth(240)
        self.slider.valueChanged.connect(self._on_slider)
        self.step_label = QLabel("")
        self.step_label.setMinimumWidth(110)
        self.close_button = QPushButton("Close session")
        self.close_button.clicked.connect(self.closed)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(33)
        self._timer.timeout.connect(self._seek_now)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 3, 8, 3)
        lay.addWidget(self.label)
        lay.addWidget(QLabel("Step"))
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.step_label)
        lay.addWidget(self.close_button)

    def load(self) -> None:
        """Show the player's open session (call after ``player.open``)."""
        p = self.player
        info = p.info
        cfg = (info.config or {}) if info else {}
        net = (cfg.get("net") or {}).get("name") or "net"
        dev = ((info.device or {}).get("id") if info else None) or cfg.get("device") or "?"
        status = p.reader.status if p.reader is not None else "?"
        self.label.setText(f"<b>{os.path.basename(p.path or '')}</b> · {net} · {cfg.get('mode', '')} on {dev} · "
                           f"batch {cfg.get('batch_size', '?')} · {status}")
        steps = p.steps()
        self.slider.blockSignals(True)
        self.slider.setRange(steps[0] if steps else 0, steps[-1] if steps else 0)
        self.slider.setValue(p.current_step or 0)
        self.slider.blockSignals(False)
        self.slider.setEnabled(len(steps) > 1)
        self._show_step()

    def _show_step(self) -> None:
        steps = self.player.steps()
        self.step_label.setText(f"{self.player.current_step} of {steps[-1]}" if steps else "no steps")

    def _on_slider(self, _v: int) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def _seek_now(self) -> None:
        self.player.seek(self.slider.value())
        self._show_step()

    def seek(self, step: int) -> None:
        """Move the slider (and the views) to ``step`` now."""
        self.slider.setValue(step)
        self._timer.stop()
        self._seek_now()
