"""The app's look: a dark Fusion palette, the style sheet in ``assets/style.qss``, pyqtgraph defaults
and the few colours every view shares (forward/backward, series), so all panels read as one tool."""
from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

from assets import ASSETS_DIR

WINDOW = "#1C1E22"
BASE = "#15171A"
ALT_BASE = "#1A1C20"
PANEL = "#22252A"
TEXT = "#D9DCE1"
MUTED = "#8B919B"
BORDER = "#30343B"
ACCENT = "#4C8DFF"
PLOT_BG = "#15171A"
GRID_ALPHA = 0.18

FWD = "#4C8DFF"      # forward time, everywhere
BWD = "#F5A524"      # backward time
TEST = "#34D399"     # held-out evaluation points
WARN = "#F5A524"
ERROR = "#F0595E"
OK = "#34D399"
SERIES = ["#4C8DFF", "#F5A524", "#34D399", "#E879F9", "#F0595E", "#22D3EE", "#A3E635", "#FB923C",
          "#A78BFA", "#F472B6", "#2DD4BF", "#FACC15", "#60A5FA", "#F97316", "#4ADE80", "#C084FC"]


def palette() -> QPalette:
    p = QPalette()
    roles = {
        QPalette.Window: WINDOW, QPalette.WindowText: TEXT, QPalette.Base: BASE,
        QPalette.AlternateBase: ALT_BASE, QPalette.ToolTipBase: "#2A2E35", QPalette.ToolTipText: TEXT,
        QPalette.Text: TEXT, QPalette.Button: PANEL, QPalette.ButtonText: TEXT,
        QPalette.BrightText: "#FFFFFF", QPalette.Highlight: ACCENT, QPalette.HighlightedText: "#FFFFFF",
        QPalette.Link: ACCENT, QPalette.PlaceholderText: MUTED, QPalette.Light: "#3A3F47",
        QPalette.Midlight: "#2E3238", QPalette.Mid: "#262A30", QPalette.Dark: "#111214",
        QPalette.Shadow: "#000000",
    }
    for role, colour in roles.items():
        p.setColor(role, QColor(colour))
    for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
        p.setColor(QPalette.Disabled, role, QColor("#62676F"))
    p.setColor(QPalette.Disabled, QPalette.Highlight, QColor("#3A3F47"))
    return p


def configure_pyqtgraph() -> None:
    """pyqtgraph options, set once (images row-major, or they come out transposed)."""
    import pyqtgraph as pg

    # no antialiasing: smooth lines cost a lot of GUI-thread time at live refresh rates, and
    # that time is taken from the run on a small machine
    pg.setConfigOptions(imageAxisOrder="row-major", antialias=False, background=PLOT_BG, foreground=MUTED)


def apply(app: QApplication) -> None:
    """Fusion style, the dark palette and the style sheet for the whole application."""
    app.setStyle("Fusion")
    app.setPalette(palette())
    font = QFont(app.font())
    if font.pointSizeF() > 0:
        font.setPointSizeF(max(9.0, min(font.pointSizeF(), 10.0)))
    app.setFont(font)
    qss = ASSETS_DIR / "style.qss"
    if qss.is_file():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))


def style_plot(plot, *, left: str | None = None, bottom: str | None = None, grid: bool = True) -> None:
    """Common look for a pyqtgraph PlotItem: grid, muted axes, labels with units."""
    plot.showGrid(x=grid, y=grid, alpha=GRID_ALPHA)
    for name in ("left", "bottom"):
        ax = plot.getAxis(name)
        ax.setTextPen(MUTED)
        ax.setPen(BORDER)
    if left:
        plot.setLabel("left", left, color=MUTED)
    if bottom:
        plot.setLabel("bottom", bottom, color=MUTED)
    plot.hideButtons()
    plot.setMenuEnabled(False)
