"""The main window's dock layout: the dock table, the default arrangement and sizes, saving and
restoring the window state, and the layout check (``squeezed_widgets``) that keeps a saved state
which clips a widget from coming back.

``DockedWindow`` is the ``QMainWindow`` base of ``app.main_window.MainWindow``; it builds no
content of its own. The subclass fills the docks (``_build_docks``) and provides ``log_view``
(where a rejected saved layout is reported), ``settings`` (``app.settings.Settings``) and
``_closing`` (true once the window is going).
"""
from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QEvent, QSize, Qt, QTimer
from PySide6.QtWidgets import QDockWidget, QLayout, QMainWindow, QScrollArea, QWidget

DOCKS = (  # name, title, area; the plot views and the editor replace their placeholders once built
    ("palette", "Layers", Qt.LeftDockWidgetArea), ("properties", "Properties", Qt.LeftDockWidgetArea),
    ("problems", "Problems", Qt.LeftDockWidgetArea), ("run", "Run", Qt.RightDockWidgetArea),
    ("time", "Layer time", Qt.BottomDockWidgetArea), ("training", "Training", Qt.BottomDockWidgetArea),
    ("features", "Feature maps", Qt.BottomDockWidgetArea), ("table", "Layer table", Qt.BottomDockWidgetArea),
    ("memory", "Memory", Qt.BottomDockWidgetArea), ("power", "Power && energy", Qt.BottomDockWidgetArea),
    ("log", "Log", Qt.BottomDockWidgetArea),
    ("compare", "Comparison", Qt.BottomDockWidgetArea), ("roofline", "Roofline", Qt.BottomDockWidgetArea),
)
DEFAULT_SIZE = (1600, 1000)  # the first window, shrunk to the screen's free area when that is smaller
FEATURES_MIN_W = 240  # px: the Feature maps dock's chooser and thumbnails; narrower, the maps shrank to specks


def _in_layout(layout: QLayout | None, widget: QWidget) -> bool:
    if layout is None:
        return False
    for i in range(layout.count()):
        item = layout.itemAt(i)
        if item.widget() is widget or (item.layout() is not None and _in_layout(item.layout(), widget)):
            return True
    return False


def squeezed_widgets(root: QWidget) -> list[str]:
    """Visible widgets under ``root`` (``root`` included) that a layout gave less room than their
    ``minimumSizeHint`` (or ``minimumSize``): the clipped labels, cut-off buttons and overlapping
    docks a too-small window or a bad saved dock state produce. One line per widget:
    ``"Class 'objectName' in <dock title>: WxH < minimum WxH"``; empty when the layout holds.

    Only widgets placed by a layout (or docks, placed by the main window) count: Qt's internal
    children (a spin box's line edit, a table's header) size themselves by other rules."""
    out = []
    # a dock in a background tab stays "visible" to Qt but shows nothing: its insides are not judged
    hidden = [d for d in root.findChildren(QDockWidget) if d.isVisible() and d.visibleRegion().isEmpty()]
    for w in [root, *root.findChildren(QWidget)]:
        if not w.isVisible() or w.isWindow() and w is not root:
            continue
        if any(d is w or d.isAncestorOf(w) for d in hidden):
            continue
        parent = w.parentWidget()
        area = parent.parentWidget() if parent is not None else None
        scrolled = isinstance(area, QScrollArea) and area.widget() is w  # sized by its scroll area
        if (not isinstance(w, QDockWidget) and w is not root and not scrolled
                and not _in_layout(parent and parent.layout(), w)):
            continue
        # as Qt's layouts do: an explicit minimum size overrides the hint in that direction
        hint = w.minimumSizeHint()
        hint = QSize(w.minimumWidth() or hint.width(), w.minimumHeight() or hint.height())
        size = w.size()
        if size.width() < hint.width() or size.height() < hint.height():
            dock = w if isinstance(w, QDockWidget) else None
            p = parent
            while dock is None and p is not None:
                dock = p if isinstance(p, QDockWidget) else None
                p = p.parentWidget()
            where = f" in {dock.windowTitle().replace('&&', '&')}" if dock is not None else ""
            text = getattr(w, "text", None)  # a label's or button's text names it in the report
            text = text() if callable(text) else ""
            text = text if isinstance(text, str) else ""
            label = f"{type(w).__name__} {w.objectName() or text[:30]!r}{where}"
            out.append(f"{label}: {size.width()}x{size.height()} < minimum {hint.width()}x{hint.height()}")
    return out


class DockedWindow(QMainWindow):
    """A main window whose docks come from ``DOCKS``, with a default arrangement, a saved state
    restored at start and dropped when it clips a widget (see the module docstring for what a
    subclass provides)."""

    # ---- docks ---------------------------------------------------------------------------------------
    def _build_docks(self, widgets: dict[str, QWidget]) -> None:
        """One dock per ``DOCKS`` row holding ``widgets[name]``, arranged in the default layout."""
        self.docks: dict[str, QDockWidget] = {}
        for name, title, area in DOCKS:
            self._dock(name, title, widgets[name], area)
        self.splitDockWidget(self.docks["palette"], self.docks["properties"], Qt.Vertical)
        self.splitDockWidget(self.docks["properties"], self.docks["problems"], Qt.Vertical)
        self.splitDockWidget(self.docks["time"], self.docks["training"], Qt.Horizontal)
        self.splitDockWidget(self.docks["training"], self.docks["features"], Qt.Horizontal)
        self.tabifyDockWidget(self.docks["time"], self.docks["table"])
        self.tabifyDockWidget(self.docks["table"], self.docks["memory"])
        self.tabifyDockWidget(self.docks["training"], self.docks["power"])
        self.tabifyDockWidget(self.docks["power"], self.docks["log"])
        self.tabifyDockWidget(self.docks["memory"], self.docks["compare"])
        self.tabifyDockWidget(self.docks["compare"], self.docks["roofline"])
        for first in ("time", "training"):
            self.docks[first].raise_()
        self.docks["features"].setMinimumWidth(FEATURES_MIN_W)
        self._default_state = None

    def _dock(self, name: str, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{name}")
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable
                         | QDockWidget.DockWidgetClosable)
        self.addDockWidget(area, dock)
        # a view in a background tab skips frames; it catches up when its tab comes forward
        dock.visibilityChanged.connect(lambda visible, d=dock: visible and hasattr(d.widget(), "refresh")
                                       and QTimer.singleShot(0, d.widget().refresh))
        self.docks[name] = dock
        return dock

    def _default_sizes(self) -> None:
        self.resizeDocks([self.docks["palette"], self.docks["run"]], [230, 320], Qt.Horizontal)
        self.resizeDocks([self.docks["time"], self.docks["training"], self.docks["features"]], [560, 440, 370],
                         Qt.Horizontal)
        self.resizeDocks([self.docks["time"]], [440], Qt.Vertical)
        self.resizeDocks([self.docks["palette"], self.docks["properties"], self.docks["problems"]], [380, 420, 140],
                         Qt.Vertical)

    # ---- saved window state ------------------------------------------------------------------------
    def _restore_window(self) -> None:
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        width, height = DEFAULT_SIZE
        if screen is not None and screen.width() > 0 and screen.height() > 0:
            width, height = min(width, screen.width()), min(height, screen.height())
        self.resize(width, height)
        self._default_sizes()
        # the dock arrangement before any saved state: reset_layout and a rejected saved state go back to it
        self._default_state = self.saveState()
        self._restored = False
        geo = self.settings.window_geometry()
        if geo is not None:
            self.restoreGeometry(geo)
        state = self.settings.window_state()
        if state is not None:
            self._restored = self.restoreState(state)

    def reset_layout(self) -> None:
        if self._default_state is not None:
            self.restoreState(self._default_state)
            for dock in self.docks.values():
                if dock.isHidden():
                    dock.show()
            self._default_sizes()

    def layout_problems(self) -> list[str]:
        """``squeezed_widgets`` of the whole window as it is laid out now (empty: nothing clipped).
        Pending layout passes run first: a label whose text just changed is not yet re-laid out."""
        QCoreApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
        return squeezed_widgets(self)

    def _check_restored_layout(self) -> None:
        """A saved dock state that squeezes a widget below its minimum (saved by an older version,
        on a bigger screen, or before a view grew) is dropped for the default layout."""
        if not self._restored or self._closing:
            return
        problems = self.layout_problems()
        if problems:
            self.log_view.append("app", "the saved window layout clipped "
                                 f"{len(problems)} widget(s) ({problems[0]}); using the default layout")
            self._restored = False
            self.reset_layout()
