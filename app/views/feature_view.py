"""Feature maps: the selected layer's channels for one sample as a grid of tiles, refreshed live.

The run sends at most a few reduced maps per second (uint8, up to 32 channels); this view only
lays them out. The layer is chosen here or by selecting a node on the canvas.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout

from app import style
from app.views.base import MonitorView, notice_label

_GAP_RGB = np.array([21, 23, 26], dtype=np.uint8)  # style.PLOT_BG


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

    def __init__(self, parent=None):
        super().__init__(parent)
        self._lut = pg.colormap.get("viridis").getLookupTable(0.0, 1.0, 256, alpha=False).astype(np.uint8)
        self._shown = None
        self._ids: list[str] = []
        top = QHBoxLayout()
        top.setContentsMargins(6, 4, 6, 0)
        top.addWidget(QLabel("Layer"))
        self.combo = QComboBox()
        self.combo.setMinimumContentsLength(8)
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setToolTip("The layer whose output is shown (also: select a node on the canvas)")
        self.combo.currentIndexChanged.connect(self._on_combo)
        top.addWidget(self.combo, 1)
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
        self.caption.setText("")
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
            maps = fm.array()
        except ValueError:
            return
        grid, rows, cols = tile(maps)
        rgb = np.empty(grid.shape + (3,), dtype=np.uint8)
        gap = grid < 0
        rgb[~gap] = self._lut[grid[~gap]]
        rgb[gap] = _GAP_RGB
        self.image.setImage(rgb, autoLevels=False, levels=(0, 255))
        if self._shown is None or self._shown.shape != fm.shape:
            self.vb.autoRange(padding=0.02)
        self._shown = fm
        c, h, w = fm.shape
        self.caption.setText(f"{fm.node_id} · step {fm.step} · {c} channel{'s' if c != 1 else ''} of {h}×{w}"
                             f" · values {fm.lo:.3g} … {fm.hi:.3g} (dark → bright)")
        if fm.node_id != self.current_layer() and fm.node_id in self._ids:
            self.select_layer(fm.node_id, emit=False)
        self._update_notice()


def main(argv=None) -> int:
    from app.views.sample import preview

    def make():
        v = FeatureMapView()
        v.set_layers([r[0] for r in __import__("app.views.sample", fromlist=["_LAYERS"])._LAYERS], "conv1")
        return v

    return preview(make, argv, size=(520, 520))


if __name__ == "__main__":
    sys.exit(main())
