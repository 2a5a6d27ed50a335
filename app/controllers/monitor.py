"""Routes snapshots (live or from a session file) to the monitor views and colours the canvas by
the measured per-layer cost.

Live frames go round-robin: at most one plot view redraws per frame, so redraw costs are spread
out instead of stalling the GUI thread together. A snapshot that comes before the plot views
exist reaches only the log; ``set_views`` hands it to the views once they are built.
"""
from __future__ import annotations

from PySide6.QtCore import QObject

import engine

LIVE, SESSION = "live", "session"


class MonitorController(QObject):
    """Holds the view list, which source they show (``LIVE`` or ``SESSION``) and the last snapshot."""

    def __init__(self, log_view, color_by: str = "time", parent: QObject | None = None):
        super().__init__(parent)
        self.log_view = log_view
        self.views: list = [log_view]
        self.source = LIVE
        self.last_snapshot = None
        self.color_by = color_by  # "" (none), "time", "memory" or "flops"
        self.model = None
        self.canvas = None
        self._next_view = 0

    def set_views(self, views: list) -> None:
        """The views to feed, the log last; the latest snapshot is shown in them at once."""
        self.views = list(views)
        if self.last_snapshot is not None:
            for v in self.views:
                if v is not self.log_view:
                    v.push(self.last_snapshot, force=True)

    def attach_editor(self, model, canvas) -> None:
        """The editor model and canvas to colour (they exist once torch is loaded)."""
        self.model, self.canvas = model, canvas

    def show_live(self, clear_canvas: bool = False) -> None:
        """Views follow the live run from now on, starting empty."""
        self.source = LIVE
        self._reset(clear_canvas)

    def show_session(self) -> None:
        """Views follow the session player from now on, starting empty."""
        self.source = SESSION
        self._reset(False)

    def net_replaced(self, running: bool) -> None:
        """Another net was put on the canvas: the plot views drop the previous net's run, so its
        layers are never shown as the new net's. A run still going (its net is the one measured)
        and an open session (its bar names it) keep their views; the log keeps its lines."""
        if running or self.source != LIVE:
            return
        self.last_snapshot = None
        for v in self.views:
            if v is not self.log_view:
                v.reset()

    def _reset(self, clear_canvas: bool) -> None:
        for v in self.views:
            v.reset()
        if clear_canvas and self.canvas is not None:
            self.canvas.clear_metrics()

    def on_live_snapshot(self, snap) -> None:
        if self.source == LIVE:
            self.dispatch(snap)

    def on_session_snapshot(self, snap) -> None:
        if self.source == SESSION:
            self.dispatch(snap, force=True)

    def dispatch(self, snap, force: bool = False) -> None:
        """Hand ``snap`` to the views: every view when ``force``, else the log and one plot view."""
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
        """{node_id: {time_ms, mem_bytes, gflops}} of ``snap`` (default: the last one shown); {} before any.
        The figures are ``engine.node_metrics``'s, the same the layer table and exports show."""
        snap = snap or self.last_snapshot
        return engine.node_metrics(snap) if snap is not None else {}

    def set_color_by(self, key: str) -> None:
        self.color_by = key
        self.color_canvas()

    def color_canvas(self) -> None:
        """Colour the canvas nodes by the chosen measure of the last snapshot (nothing before a run)."""
        if self.canvas is None or self.model is None:
            return
        metrics = self.node_metrics()
        if not metrics:
            return
        ids = {n.id for n in self.model.spec_view().nodes}
        self.canvas.set_node_metrics({k: v for k, v in metrics.items() if k in ids}, color_by=self.color_by or None)

