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
from app.views.base import ElidedLabel


class SessionPlayer(QObject):
    """Holds one open session; ``seek(step)`` emits the snapshot of the run as it was after that step.

    Nothing is read whole: the reader's step index says where each step starts, a seek forward
    feeds only the steps in between, and a seek backward (or far forward) rebuilds the feed from
    the bounded tail its buffers keep (``LiveFeed``'s history, heat strip, telemetry points), so it
    costs about the same at step 100 as at step 1,000,000 and shows what a replay from step 0 would.
    ``feed_kw`` are ``LiveFeed``'s size arguments (tests make them small).
    """

    snapshot_ready = Signal(object)

    def __init__(self, parent: QObject | None = None, window: int = 50, **feed_kw):
        super().__init__(parent)
        self._window = window
        self._feed_kw = feed_kw
        self.reader = None
        self.path: str | None = None
        self._info = None
        self._steps: list[int] = []
        self._starts: list[float] = []
        self._pos: int | None = None  # index into _steps of the last step fed
        self.feed = None
        self.current_step: int | None = None
        self.replayed_steps = 0  # StepRecords fed by the last seek: what it cost

    def open(self, path) -> None:
        """Open a session (LayerScopeError with one line for a bad file) and show its last step."""
        reader = engine.open_session(path)
        try:
            steps, starts, _rowids = reader.step_index()
            info = reader.info
        except Exception:
            reader.close()
            raise
        self.close()
        self.reader = reader
        self.path = os.fspath(path)
        self._info = info
        self._steps, self._starts = list(steps), list(starts)
        self.feed = engine.LiveFeed(window=self._window, **self._feed_kw)
        self._pos = None
        self.current_step = None
        if self._steps:
            self.seek(self._steps[-1])
        else:  # no step recorded (a run that failed at once): its info, logs and end
            for rec in reader.records():
                self.feed(rec)
            self.snapshot_ready.emit(self.feed.snapshot())

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.reader = None
        self.path = None
        self._info = None
        self._steps = []
        self._starts = []
        self._pos = None
        self.feed = None
        self.current_step = None

    def is_open(self) -> bool:
        return self.reader is not None

    @property
    def info(self) -> engine.RunInfo | None:
        return self._info

    def steps(self) -> list[int]:
        return list(self._steps)

    def _take(self, records) -> None:
        for rec in records:
            if isinstance(rec, engine.StepRecord):
                self.replayed_steps += 1
            self.feed(rec)

    def _rebuild(self, k: int) -> None:
        """The feed as a replay from step 0 to step index ``k`` would leave it, from the tail it keeps.

        The feed's buffers are independent (steps, layer times, telemetry, logs), so each is fed
        its own bounded tail, in order, from the step index."""
        r, feed, steps = self.reader, self.feed, self._steps
        last = steps[k]
        feed.clear()
        self._take(r.records(None, last, kinds=(engine.RunInfo, engine.LogRecord, engine.EvalRecord)))
        self._take(r.records(steps[max(0, k - feed.history_len + 1)], last, kinds=(engine.StepRecord,)))
        first_lt = steps[max(0, k - max(feed.heat_len, feed.window) + 1)]
        self._take(r.records(first_lt, last, kinds=(engine.LayerTimes,)))
        fm_step = r.feature_step_before(last)
        if fm_step is not None:
            self._take(rec for rec in r.records(fm_step, last, kinds=(engine.FeatureMap,)))
        t_end = self._starts[k + 1] if k + 1 < len(steps) else float("inf")
        since = r.telemetry_start(t_end, feed.telemetry_points)
        self._take(r.records(None, last, since_t=since, kinds=(engine.TelemetryBatch,)))
        if k == len(steps) - 1:
            self._take(r.records(last, last, kinds=(engine.RunEnded,)))

    def seek(self, step: int) -> None:
        """Show the run as it was right after ``step`` (the nearest recorded step at or before it)."""
        if not self._steps or self.reader is None:
            return
        k = max(0, bisect.bisect_right(self._steps, step) - 1)
        self.replayed_steps = 0
        if self._pos is not None and self._pos < k <= self._pos + self.feed.history_len:
            self._take(self.reader.records(self._steps[self._pos + 1], self._steps[k]))
        elif k != self._pos:
            self._rebuild(k)
        self._pos = k
        self.current_step = self._steps[k]
        self.snapshot_ready.emit(self.feed.snapshot())

    def snapshot(self):
        return self.feed.snapshot() if self.feed is not None else None


class SessionBar(QWidget):
    """File name, run facts and a step slider; scrubbing is coalesced to the frame rate."""

    closed = Signal()

    def __init__(self, player: SessionPlayer, parent=None):
        super().__init__(parent)
        self.player = player
        # elided (full text in the tooltip): a long file name must not widen the window past the screen
        self.label = ElidedLabel("")
        self.label.setObjectName("summary")
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setMinimumWidth(160)
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
        lay.addWidget(self.label, 2)
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
        batch = cfg.get("batch_used") or cfg.get("batch_size", "?")
        self.label.setText(f"{os.path.basename(p.path or '')} · {net} · {cfg.get('mode', '')} on {dev} · "
                           f"batch {batch} · {status}")
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
