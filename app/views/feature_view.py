"""Feature maps: the selected layer's channels for one sample as a grid of tiles, refreshed live.

The run sends at most a few reduced maps per second (uint8, a window of at most 32 of the layer's
channels, the first 32 unless asked otherwise); this view lays them out and says which of the
layer's channels those are. The layer is chosen here or by selecting a node on the canvas.
"Channels" offers every window of 32 across the layer's channels ("1–32", "33–64", "65–96"):
picking one that is not on screen asks the running run for it (``channels_requested``); a
recorded session holds only the channels it recorded, so only those are offered. It also offers
groups of 8 of the captured channels to see larger; the wheel zooms, and a click on a map
enlarges it with its value range (click again for the grid).
"""
from __future__ import annotations

import math
import sys

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from app import style
from app.views.base import MonitorView, notice_label

_GAP_RGB = np.array([21, 23, 26], dtype=np.uint8)  # style.PLOT_BG
GROUP = 8  # channels per group in the Channels chooser
GAP = 2


def tile(maps: np.ndarray, gap: int = 2) -> tuple[np.ndarray, int, int]:
    """(C, h, w) uint8 -> one (rows*(h+gap), cols*(w+gap)) int image with -1 in the gaps; rows, cols."""
    c, h, w = maps.shape
    if h * w == 1:  # a vector (linear layer): one strip of values
        maps = maps.reshape(1, 1, c)
        c, h, w = maps.shape
    cols = max(1, math.ceil(math.sqrt(c * h / max(w, 1))))
    cols = min(cols, c)
    rows = math.ceil(c / cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), -1, dtype=np.int16)
    for k in range(c):
        r, q = divmod(k, cols)
        out[r * (h + gap):r * (h + gap) + h, q * (w + gap):q * (w + gap) + w] = maps[k]
    return out, rows, cols


class FeatureMapView(MonitorView):
    title = "Feature maps"
    max_hz = 4.0
    layer_chosen = Signal(str)  # node id, '' for none
    channels_requested = Signal(str, int)  # node id, first channel (0-based) of the window asked

    def __init__(self, parent=None):
        super().__init__(parent)
        self._lut = pg.colormap.get("viridis").getLookupTable(0.0, 1.0, 256, alpha=False).astype(np.uint8)
        self._shown = None
        self._ids: list[str] = []
        self._recorded = False  # showing a recorded session: no run to ask for other channels
        self._requested: int | None = None  # first channel asked of the run, not arrived yet
        top = QHBoxLayout()
        top.setContentsMargins(6, 4, 6, 0)
        top.addWidget(QLabel("Layer"))
        self.combo = QComboBox()
        self.combo.setMinimumContentsLength(8)
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setToolTip("The layer whose output is shown (also: select a node on the canvas)")
        self.combo.currentIndexChanged.connect(self._on_combo)
        top.addWidget(self.combo, 1)
        top.addWidget(QLabel("Channels"))
        self.channels = QComboBox()
        self.channels.setToolTip(f"Which of the layer's channels the run sends (32 at a time), or a group of {GROUP} "
                                 "of them at a larger size")
        self.channels.currentIndexChanged.connect(self._on_channels)
        top.addWidget(self.channels)
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("Zoom to fit (the mouse wheel zooms, dragging pans)")
        self.fit_button.clicked.connect(lambda: self.vb.autoRange(padding=0.02))
        top.addWidget(self.fit_button)
        self._enlarged: int | None = None  # the channel shown alone (a click on a map), None for the grid
        self._layout = None  # (subset, rows, cols, h, w) of the grid on screen
        self.caption = QLabel("")
        self.caption.setObjectName("summary")
        self.caption.setWordWrap(True)
        self.caption.setContentsMargins(6, 0, 6, 0)
        self.notice = notice_label("")
        self.glw = pg.GraphicsLayoutWidget()
        self.vb = self.glw.addViewBox(lockAspect=True, invertY=True, enableMouse=True, enableMenu=False)
        self.image = pg.ImageItem()
        self.vb.addItem(self.image)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(top)
        lay.addWidget(self.caption)
        lay.addWidget(self.notice)
        lay.addWidget(self.glw, 1)
        self.glw.scene().sigMouseClicked.connect(self._on_click)
        self.clear()

    # -- layer choice ----------------------------------------------------------------------------
    def set_layers(self, ids: list[str], current: str | None = None) -> None:
        """Offer these node ids (net order); keeps the current choice when it still exists."""
        ids = list(ids)
        keep = current if current is not None else self.current_layer()
        if ids != self._ids:
            self._ids = ids
            self.combo.blockSignals(True)
            self.combo.clear()
            self.combo.addItem("(none)", "")
            for nid in ids:
                self.combo.addItem(nid, nid)
            self.combo.blockSignals(False)
        self.select_layer(keep if keep in ids else "", emit=False)

    def current_layer(self) -> str:
        return self.combo.currentData() or ""

    def select_layer(self, node_id: str, emit: bool = True) -> None:
        i = self.combo.findData(node_id or "")
        if i < 0:
            return
        if i == self.combo.currentIndex():
            return
        self.combo.blockSignals(not emit)
        self.combo.setCurrentIndex(i)
        self.combo.blockSignals(False)
        self._update_notice()

    def _on_combo(self, _i: int) -> None:
        self._update_notice()
        self.layer_chosen.emit(self.current_layer())

    # -- drawing ---------------------------------------------------------------------------------
    def clear(self) -> None:
        self.image.clear()
        self._shown = None
        self._enlarged = None
        self._layout = None
        self._total = None
        self._requested = None
        self.caption.setText("")
        self._fill_channels(0)
        self._update_notice()

    def _update_notice(self) -> None:
        if self._shown is not None and self._shown.node_id == self.current_layer():
            self.notice.setVisible(False)
            return
        if not self.current_layer():
            self.notice.setText("Choose a layer (here or on the canvas) to see its feature maps.")
        else:
            self.notice.setText(f"Waiting for feature maps of {self.current_layer()} (a few per second while a run goes).")
        self.notice.setVisible(True)

    def shown(self):
        """The FeatureMap record on screen (None when nothing is)."""
        return self._shown

    def update_snapshot(self, snap) -> None:
        if snap.info is not None and not self._ids:
            self.set_layers([r.node_id for r in snap.info.layers])
        fm = snap.feature
        if fm is None or fm is self._shown:
            self._update_notice()
            return
        try:
            fm.array()
        except ValueError:
            return
        old_total = self._total
        self._total = fm.channels_total
        if self._total is None and snap.info is not None:  # older records: the run's layer table
            row = next((r for r in snap.info.layers if r.node_id == fm.node_id), None)
            if row is not None and len(row.out_shape) >= 1:
                self._total = int(row.out_shape[0]) if len(row.out_shape) == 3 else None
        prev = self._shown
        fresh = (prev is None or prev.shape != fm.shape or prev.node_id != fm.node_id
                 or prev.first_channel != fm.first_channel or old_total != self._total)
        if (prev is not None and prev.node_id != fm.node_id) or self._requested == fm.first_channel:
            self._requested = None
        self._shown = fm
        if fresh:
            self._enlarged = None
            self._fill_channels(fm.shape[0] if fm.shape[1] * fm.shape[2] > 1 else 0)
        self._render(fit=fresh)
        if fm.node_id != self.current_layer() and fm.node_id in self._ids:
            self.select_layer(fm.node_id, emit=False)
        self._update_notice()

    # -- channels, zoom and the enlarged map -------------------------------------------------------
    def set_recorded(self, recorded: bool) -> None:
        """Showing a recorded session (True) or a run (False): a session offers only the channels
        it recorded, a run every window of the layer's channels."""
        self._recorded = bool(recorded)
        self._requested = None
        if self._shown is not None:
            self._fill_channels(self._shown.shape[0] if self._shown.shape[1] * self._shown.shape[2] > 1 else 0)
            self._render()

    def _windows(self, n: int) -> list[int]:
        """First channels (0-based) of the windows of ``n`` the chooser offers: the captured one
        only, unless a run can be asked for the others (the last window ends at the layer's end,
        as the run captures it)."""
        first = self._shown.first_channel if self._shown is not None else 0
        total = self._total
        if self._recorded or not n or not total or total <= n:
            return [first]
        return sorted({min(a, total - n) for a in range(0, total, n)})

    def _fill_channels(self, n: int) -> None:
        """Offer the windows of the layer's channels (data ``-1 - first``) and groups of GROUP of
        the ``n`` captured ones (data: start within the capture); only "all" for a vector."""
        first = self._shown.first_channel if self._shown is not None else 0
        self.channels.blockSignals(True)
        self.channels.clear()
        windows = self._windows(n)
        for a in windows:
            label = f"{a + 1}–{a + n}" if len(windows) > 1 else (f"all {n}" if n else "all")
            self.channels.addItem(label, -1 - a)
        for a in range(0, n if n > GROUP else 0, GROUP):
            self.channels.addItem(f"{first + a + 1}–{first + min(n, a + GROUP)}", a)
        want = self._requested if self._requested is not None else first
        i = self.channels.findData(-1 - want)
        self.channels.setCurrentIndex(max(i, 0))
        self.channels.blockSignals(False)
        self.channels.setEnabled(self.channels.count() > 1)

    def channel_choices(self) -> list[str]:
        """The chooser's entries as shown ("1–32", "33–64", …, then the groups of GROUP)."""
        return [self.channels.itemText(i) for i in range(self.channels.count())]

    def set_channels(self, first: int | None) -> None:
        """Show the group of GROUP captured channels starting at the layer's channel ``first``
        (1-based, as the chooser offers it); None: all captured channels."""
        base = self._shown.first_channel if self._shown is not None else 0
        i = self.channels.findData(-1 - base if first is None else first - 1 - base)
        if i >= 0:
            self.channels.setCurrentIndex(i)

    def choose_window(self, first: int) -> None:
        """Pick the window of the layer's channels that starts at ``first`` (1-based), as a click in
        the chooser does: one not on screen is asked of the run."""
        i = self.channels.findData(-1 - (first - 1))
        if i >= 0:
            self.channels.setCurrentIndex(i)

    def _on_channels(self, _i: int) -> None:
        d = self.channels.currentData()
        fm = self._shown
        if fm is not None and d is not None and d < 0 and -1 - d != fm.first_channel:
            self._requested = -1 - d
            self.channels_requested.emit(fm.node_id, self._requested)
        elif d is not None and d < 0:
            self._requested = None
        self._leave_enlarged_and_render()

    def shown_channels(self) -> list[int]:
        """The captured channels on screen (0-based), in tile order."""
        return list(self._layout[0]) if self._layout else []

    def enlarged(self) -> int | None:
        return self._enlarged

    def enlarge(self, channel: int | None) -> None:
        """Show one channel (0-based) alone with its value range; None goes back to the grid."""
        if self._shown is None:
            return
        c = self._shown.shape[0]
        self._enlarged = channel if channel is not None and 0 <= channel < c else None
        self._render(fit=True)

    def channel_at(self, x: float, y: float) -> int | None:
        """The channel whose tile holds image pixel (x, y) of the grid; None in a gap or outside."""
        if not self._layout or self._enlarged is not None:
            return None
        subset, rows, cols, h, w = self._layout
        col, dx = divmod(int(math.floor(x)), w + GAP)
        row, dy = divmod(int(math.floor(y)), h + GAP)
        if x < 0 or y < 0 or dx >= w or dy >= h or col >= cols or row >= rows:
            return None
        k = row * cols + col
        return subset[k] if k < len(subset) else None

    def _on_click(self, ev) -> None:
        if self._shown is None or ev.button() != Qt.LeftButton:
            return
        if self._enlarged is not None:
            self.enlarge(None)
            return
        p = self.image.mapFromScene(ev.scenePos())
        ch = self.channel_at(p.x(), p.y())
        if ch is not None:
            self.enlarge(ch)

    def _leave_enlarged_and_render(self) -> None:
        self._enlarged = None
        if self._shown is not None:
            self._render(fit=True)

    def _render(self, fit: bool = False) -> None:
        fm = self._shown
        maps = fm.array()
        c, h, w = fm.shape
        spatial = h * w > 1
        span = fm.hi - fm.lo
        if self._enlarged is not None and spatial:
            k = self._enlarged
            grid = maps[k].astype(np.int16)
            self._layout = None
            lo_v = fm.lo + span * float(maps[k].min()) / 255.0
            hi_v = fm.lo + span * float(maps[k].max()) / 255.0
            of = f" of {self._total}" if self._total else ""
            text = (f"{fm.node_id} · step {fm.step} · channel {fm.first_channel + k + 1}{of}, {h}×{w} · values {lo_v:.3g} … {hi_v:.3g} "
                    f"(dark → bright) · click for the grid")
        else:
            start = self.channels.currentData() if spatial else -1
            group = start is not None and start >= 0
            subset = list(range(start, min(c, start + GROUP))) if group else list(range(c))
            grid, rows, cols = tile(maps[subset], gap=GAP)
            self._layout = (subset, rows, cols, h, w) if spatial else None
            first = fm.first_channel
            if self._total and self._total > c:
                count = (f"first {c} of {self._total} channels" if first == 0
                         else f"channels {first + 1}–{first + c} of {self._total}")
            else:
                count = f"{c} channel{'s' if c != 1 else ''}"
            part = f" (showing {first + subset[0] + 1}–{first + subset[-1] + 1})" if group else ""
            text = (f"{fm.node_id} · step {fm.step} · {count}{part} of {h}×{w} · values {fm.lo:.3g} … {fm.hi:.3g} "
                    f"(dark → bright)" + (" · click a map to enlarge it" if spatial else ""))
            if self._requested is not None and self._total:
                end = min(self._total, self._requested + c)
                text += f" · asked the run for channels {self._requested + 1}–{end}, waiting"
            elif self._recorded and self._total and self._total > c:
                text += " · the session recorded only these channels"
        rgb = np.empty(grid.shape + (3,), dtype=np.uint8)
        gap = grid < 0
        rgb[~gap] = self._lut[grid[~gap]]
        rgb[gap] = _GAP_RGB
        self.image.setImage(rgb, autoLevels=False, levels=(0, 255))
        if fit:
            self.vb.autoRange(padding=0.02)
        self.caption.setText(text)


def main(argv=None) -> int:
    from app.views.sample import preview

    def make():
        v = FeatureMapView()
        v.set_layers([r[0] for r in __import__("app.views.sample", fromlist=["_LAYERS"])._LAYERS], "conv1")
        return v

    return preview(make, argv, size=(520, 520))


if __name__ == "__main__":
    sys.exit(main())
