"""What every monitor view shares: it is built once, keeps the latest ``LiveSnapshot`` it was
given, and redraws only while it is visible (a view in a hidden dock tab catches up when shown).

Views only draw: every figure they show (layer times, shares, FLOP/s, step time, throughput,
energy) comes from ``engine.analysis`` through the facade (``engine.snapshot_layer_rows`` and
friends), the same functions the exports use, and every number is formatted by ``engine.fmt``."""
from __future__ import annotations

import time

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

from engine import fmt



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


class ElidedLabel(QLabel):
    """A one-line label that shortens its text with "…" when its column is narrower than the text,
    instead of widening the dock (a long header line must not push a view over its neighbour).
    The full text is the tooltip. Plain text only; ``text()`` returns the full text."""

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self._full = ""
        self.setTextFormat(Qt.PlainText)
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802  (Qt's name)
        self._full = text or ""
        self.setToolTip(self._full)
        self._elide()

    def text(self) -> str:
        return self._full

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        fm = self.fontMetrics()
        return QSize(fm.horizontalAdvance("…") * 4, fm.height())

    def sizeHint(self) -> QSize:  # noqa: N802
        fm = self.fontMetrics()
        return QSize(fm.horizontalAdvance(self._full) + 4, fm.height())

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(self._full, Qt.ElideRight, max(0, self.width() - 2))
        super().setText(shown)


def standalone_app():
    """The QApplication of a module run on its own (``python -m app.views.X``), styled as the app."""
    import sys

    from PySide6.QtWidgets import QApplication

    from app import style

    app = QApplication.instance() or QApplication(sys.argv[:1])
    style.apply(app)
    style.configure_pyqtgraph()
    return app


def show_or_shoot(app, widget: QWidget, size: tuple[int, int], screenshot: str | None, pumps: int = 3,
                  before_grab=None) -> int:
    """Show ``widget`` at ``size``; with ``screenshot`` save it there (exit 0, or 2 with one line
    when it cannot be written), else run the event loop. ``before_grab()`` runs once the widget
    has been laid out (e.g. fit a canvas to its contents)."""
    import sys

    widget.resize(*size)
    widget.show()
    if not screenshot:
        return app.exec()
    for _ in range(pumps):
        app.processEvents()
    if before_grab is not None:
        before_grab()
        app.processEvents()
    if not widget.grab().save(screenshot):
        print(f"error: cannot write {screenshot}", file=sys.stderr)
        return 2
    return 0
