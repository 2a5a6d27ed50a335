"""What every monitor view shares: it is built once, keeps the latest ``LiveSnapshot`` it was
given, and redraws only while it is visible (a view in a hidden dock tab catches up when shown)."""
from __future__ import annotations

import math
import time

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget


class MonitorView(QWidget):
    """Base of the monitor views: ``push(snapshot)`` from the GUI thread, ``clear()`` for a new run.

    Subclasses implement ``update_snapshot(snap)`` (update existing plot items with setData /
    setImage, never create them per frame) and ``clear()``. ``max_hz`` caps how often a view redraws.
    """

    title = "View"
    max_hz = 30.0

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._latest = None
        self._drawn = None
        self._last_draw = 0.0
        self.draws = 0

    def offer(self, snap) -> None:
        """Keep ``snap`` as the latest without drawing (another view has this frame)."""
        self._latest = snap

    def push(self, snap, force: bool = False) -> None:
        """Offer a new snapshot; drawn now if visible and due (``force``: the last one of a run)."""
        self._latest = snap
        if not force and not self.on_screen():
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < 1.0 / self.max_hz:
            return
        self._draw(snap, now)

    def _draw(self, snap, now: float | None = None) -> None:
        self._last_draw = now if now is not None else time.perf_counter()
        self._drawn = snap
        self.draws += 1
        self.update_snapshot(snap)

    def on_screen(self) -> bool:
        """Visible and not covered: a dock in a background tab stays "visible" to Qt but shows nothing."""
        return self.isVisible() and not self.visibleRegion().isEmpty()

    def refresh(self) -> None:
        """Draw the latest snapshot if it has not been drawn yet."""
        if self._latest is not None and self._latest is not self._drawn:
            self._draw(self._latest)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh()

    def reset(self) -> None:
        self._latest = self._drawn = None
        self.clear()

    # -- to implement ----------------------------------------------------------------------------
    def update_snapshot(self, snap) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError


def notice_label(text: str = "") -> QLabel:
    """A muted one-line note shown above a plot (why a series is absent, what is averaged)."""
    label = QLabel(text)
    label.setObjectName("notice")
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextSelectableByMouse)
    return label


def batch_of(info) -> int:
    try:
        return int((info.config or {}).get("batch_size") or 1)
    except (TypeError, ValueError, AttributeError):
        return 1


def finite(a):
    import numpy as np  # lazily: this module is on the path to the window's first paint

    a = np.asarray(a, dtype=float)
    return a[np.isfinite(a)]


def fmt_ms(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_count(n) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "–"
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f}"


def fmt_bytes(n) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "–"
    for div, unit in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f} B"


def fmt_pct(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.1f} %"


def mean_step_ms(snap) -> float | None:
    """Mean compute time of the recent measured (non-warm-up) steps; profiled steps preferred,
    since those are the steps the layer times come from."""
    steps = [s for s in snap.steps if not s.warmup and s.phase != "test"]
    prof = [s.step_ms for s in steps if s.profiled]
    vals = prof or [s.step_ms for s in steps]
    return float(sum(vals) / len(vals)) if vals else None
