"""The article's check as a feature: "test on N random held-out images" with a saved checkpoint.

``predict_held_out`` is plain Python (no Qt) so it runs on a worker thread and in tests;
``PredictionsDialog`` shows its result as a grid of images captioned with true and predicted
labels, drawing each sample in the background through ``bridge.BackgroundCall``.

Open it alone: ``python -m app.dialogs.predictions CHECKPOINT [--dataset digits] [--screenshot PATH]``.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (QApplication, QDialog, QFrame, QGridLayout, QHBoxLayout, QLabel, QPushButton,
                               QScrollArea, QSpinBox, QVBoxLayout, QWidget)

import engine
from app import style
from app.bridge import BackgroundCall

MAX_N = 64
TILE_PX = 84  # the shown size of each image; small sources are scaled up by whole pixels


@dataclass
class PredictionResult:
    """N held-out images with their true and predicted labels, and where they came from."""

    images: list  # uint8 numpy arrays, H x W (grey) or C x H x W, as a person sees them
    labels: list[int]
    predicted: list[int]
    seed: int  # the draw's seed: the same seed draws the same images
    dataset: str  # the dataset's name ("digits")
    split: str  # which split the images come from ("test")
    split_seed: int  # the seed of the train/test split (the training run's, when known)
    dataset_summary: str
    checkpoint: str  # the file read (a folder resolves to its latest checkpoint)
    net_name: str = ""
    step: int | None = None
    class_names: list[str] = field(default_factory=list)
    run: str = ""  # the session file of the run that saved the weights ("" when the checkpoint does not say)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def correct(self) -> int:
        return sum(int(a == b) for a, b in zip(self.labels, self.predicted))

    @property
    def accuracy(self) -> float | None:
        """Share of the N images predicted right; None when there are none."""
        return self.correct / self.n if self.n else None

    def name_of(self, label: int) -> str:
        """A label as a person reads it: the class name when the dataset has names."""
        if 0 <= label < len(self.class_names) and self.class_names[label]:
            return str(self.class_names[label])
        return str(label)


def _trained_on(meta: dict) -> tuple[str | None, int, str | None]:
    """(dataset, split seed, data root) of the run that saved the checkpoint, where it says."""
    cfg = (meta.get("extra") or {}).get("config") or {}
    if not isinstance(cfg, dict):
        return None, 0, None
    seed = cfg.get("seed")
    dataset = cfg.get("dataset")
    root = cfg.get("data_root")
    return (dataset if isinstance(dataset, str) else None, seed if isinstance(seed, int) else 0,
            root if isinstance(root, str) else None)


def predict_held_out(checkpoint, dataset: str | None = None, *, n: int = 16, seed: int | None = None,
                     data_root=None) -> PredictionResult:
    """Predict ``n`` random held-out images of ``dataset`` with the net stored in ``checkpoint``.

    ``checkpoint`` is a file or a folder (its latest checkpoint). ``dataset`` defaults to the one the
    checkpoint was trained on (else ``digits``); its test split is fitted to the net's input and, when
    it is the training dataset, split with the training run's seed so the images really were held out.
    ``seed`` picks the images (None: a fresh random draw). Bad input raises a LayerScopeError.
    """
    model, spec, meta = engine.load_model(checkpoint, device="cpu")
    trained, trained_seed, trained_root = _trained_on(meta)
    if dataset is None:
        dataset = trained or "digits"
    same = trained is not None and (engine.canonical_name(str(dataset)) or str(dataset)) == \
        (engine.canonical_name(trained) or trained)
    split_seed = trained_seed if same else 0
    if data_root is None and same:
        data_root = trained_root
    splits = engine.get_dataset(str(dataset), spec.input, seed=split_seed, root=data_root)
    if seed is None:
        seed = random.randrange(2**31)
    n = max(1, min(int(n), MAX_N))
    samples = engine.sample_predictions(model, splits.test, n=n, seed=seed, device="cpu")
    info = splits.info
    images = [s.image for s in samples]  # already on 0..255, as people see them
    return PredictionResult(
        images=images, labels=[s.label for s in samples],
        predicted=[s.predicted for s in samples], seed=int(seed), dataset=info.name, split="test",
        split_seed=split_seed, dataset_summary=info.summary(), checkpoint=str(meta.get("path") or checkpoint),
        net_name=spec.name or "", step=meta.get("step"), class_names=list(info.class_names or []),
        run=engine.checkpoint_run(meta) or "")


def to_pixmap(image, size: int = TILE_PX) -> QPixmap:
    """A uint8 H x W (grey) or C x H x W image as a pixmap of about ``size`` px, scaled up by
    nearest neighbour so each source pixel stays a crisp square."""
    import numpy as np

    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        if a.shape[0] == 4:
            a = a[:3]
        if a.shape[0] != 3:  # other channel counts: show the first channel in grey
            a = a[0]
    a = np.ascontiguousarray(a.astype(np.uint8, copy=False))
    if a.ndim == 2:
        h, w = a.shape
        qimg = QImage(a.data, w, h, a.strides[0], QImage.Format_Grayscale8).copy()
    else:
        rgb = np.ascontiguousarray(a.transpose(1, 2, 0))
        h, w = rgb.shape[:2]
        qimg = QImage(rgb.data, w, h, rgb.strides[0], QImage.Format_RGB888).copy()
    scale = max(1, size // max(h, w)) if max(h, w) <= size else 0
    if scale:
        qimg = qimg.scaled(w * scale, h * scale, Qt.IgnoreAspectRatio, Qt.FastTransformation)
    else:  # larger than a tile: shrink smoothly, keeping the aspect
        qimg = qimg.scaled(size, size, Qt.KeepAspectRatio, Qt.SmoothTransformation)
    return QPixmap.fromImage(qimg)


class PredictionTile(QFrame):
    """One image with its caption "true 7 · predicted 7", green when right, red when wrong."""

    def __init__(self, image, true_text: str, predicted_text: str, right: bool, parent=None):
        super().__init__(parent)
        self.right = right
        self.setObjectName("predictionTile")
        colour = style.OK if right else style.ERROR
        self.setStyleSheet(f"QFrame#predictionTile {{ background: {style.ALT_BASE}; border: 1px solid "
                           f"{style.BORDER if right else colour}; border-radius: 4px; }}")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 4)
        lay.setSpacing(4)
        self.picture = QLabel()
        self.picture.setAlignment(Qt.AlignCenter)
        self.picture.setFixedSize(TILE_PX, TILE_PX)
        self.picture.setPixmap(to_pixmap(image))
        self.caption = QLabel(f"true {true_text} · predicted {predicted_text}")
        self.caption.setAlignment(Qt.AlignCenter)
        self.caption.setStyleSheet(f"color: {colour}; font-size: 8.5pt;")
        self.colour = colour
        lay.addWidget(self.picture, 0, Qt.AlignHCenter)
        lay.addWidget(self.caption)
        self.setFixedSize(self.sizeHint())  # the grid scrolls rather than squeezing captions into images


class PredictionsDialog(QDialog):
    """Random held-out images of a dataset with the checkpoint's predictions; "New sample" draws again."""

    def __init__(self, checkpoint, dataset: str | None = None, data_root=None, parent=None, n: int = 16):
        super().__init__(parent)
        self.checkpoint = checkpoint
        self.dataset = dataset
        self.data_root = data_root
        self.result: PredictionResult | None = None
        self.tiles: list[PredictionTile] = []
        self._call: BackgroundCall | None = None
        self._pending: int | None = None  # a seed asked for while a draw was running
        self._seed: int | None = None
        self._rng = random.Random()
        self.setWindowTitle("Held-out predictions")

        self.header = QLabel("drawing held-out images…")
        self.header.setObjectName("summary")
        self.header.setStyleSheet("font-size: 11pt; font-weight: 600;")
        self.detail = QLabel("")
        self.detail.setObjectName("notice")
        self.detail.setWordWrap(True)
        self.error = QLabel("")
        self.error.setObjectName("reason")
        self.error.setWordWrap(True)
        self.error.hide()

        self.n_spin = QSpinBox()
        self.n_spin.setRange(1, MAX_N)
        self.n_spin.setValue(max(1, min(int(n), MAX_N)))
        self.n_spin.setToolTip("how many held-out images to draw")
        self.n_spin.valueChanged.connect(self._on_n_changed)
        self.new_button = QPushButton("New sample")
        self.new_button.setToolTip("draw another random set of held-out images")
        self.new_button.clicked.connect(self.new_sample)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)

        controls = QHBoxLayout()
        controls.addWidget(QLabel("Images"))
        controls.addWidget(self.n_spin)
        controls.addWidget(self.new_button)
        controls.addStretch(1)
        controls.addWidget(self.close_button)

        self.grid_host = QWidget()
        self.grid = QGridLayout(self.grid_host)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(8)
        self.grid.setAlignment(Qt.AlignTop | Qt.AlignHCenter)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setWidget(self.grid_host)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(14, 12, 14, 12)
        lay.setSpacing(8)
        lay.addWidget(self.header)
        lay.addWidget(self.detail)
        lay.addWidget(self.error)
        lay.addWidget(self.scroll, 1)
        lay.addLayout(controls)
        self.resize(620, 520)

    # -- drawing ----------------------------------------------------------------------------------
    def is_busy(self) -> bool:
        return self._call is not None

    def new_sample(self) -> None:
        """Draw another random set of images (a new seed) in the background."""
        self.draw(self._rng.randrange(2**31))

    def _on_n_changed(self, _value: int) -> None:
        # the same seed: a larger N keeps the images already shown and adds more
        if self._seed is not None:
            self.draw(self._seed)

    def draw(self, seed: int) -> None:
        """Predict the spin box's N images picked by ``seed``; a request during a draw runs after it."""
        if self._call is not None:
            self._pending = seed
            return
        self._seed = seed
        n = self.n_spin.value()
        checkpoint, dataset, root = self.checkpoint, self.dataset, self.data_root
        self.new_button.setEnabled(False)
        self.header.setText(f"drawing {n} held-out images…")
        self._call = BackgroundCall(lambda: predict_held_out(checkpoint, dataset, n=n, seed=seed, data_root=root),
                                    name="layerscope-predictions", parent=self)
        self._call.finished.connect(self._on_finished)
        self._call.start()

    def _on_finished(self, result, error) -> None:
        call, self._call = self._call, None
        if call is not None:
            call.deleteLater()
        self.new_button.setEnabled(True)
        if self._pending is not None:
            seed, self._pending = self._pending, None
            self.draw(seed)
            return
        if error is not None:
            self.show_error(error)
        else:
            self.show_result(result)

    def show_error(self, text: str) -> None:
        """One line saying why no images could be drawn; the previous grid is cleared."""
        self.result = None
        self._clear()
        self.header.setText("no predictions")
        self.detail.setText(f"checkpoint {self.checkpoint}")
        self.error.setText(text.strip().splitlines()[0] if text.strip() else "failed")
        self.error.show()

    def show_result(self, r: PredictionResult) -> None:
        self.result = r
        self.error.hide()
        self._clear()
        pct = f"{100 * r.accuracy:.0f}%" if r.accuracy is not None else "-"
        self.header.setText(f"{r.correct} of {r.n} right ({pct}) · {r.dataset} {r.split} split · "
                            f"checkpoint {Path(r.checkpoint).name}")
        bits = []
        if r.net_name:
            bits.append(r.net_name + (f" after {r.step} steps" if r.step is not None else ""))
        # whose weights these are: the run that saved them, not whatever net is on the canvas now
        run = Path(r.run).stem if r.run else ""
        bits.append(f"weights of run {run}" if run else "weights of a run this checkpoint does not name")
        self.setWindowTitle(f"Held-out predictions — run {run}" if run else "Held-out predictions")
        bits.append(f"images drawn with seed {r.seed} from the {r.split} split (split seed {r.split_seed})")
        self.detail.setText(" · ".join(bits))
        self.detail.setToolTip(r.dataset_summary)
        self.header.setToolTip(f"{r.checkpoint}\n{r.dataset_summary}")
        cols = min(8, max(1, math.ceil(math.sqrt(r.n))))
        for k, (img, y, p) in enumerate(zip(r.images, r.labels, r.predicted)):
            tile = PredictionTile(img, r.name_of(y), r.name_of(p), y == p)
            self.grid.addWidget(tile, k // cols, k % cols)
            self.tiles.append(tile)
        self._fit_to_grid(cols)

    def _fit_to_grid(self, cols: int) -> None:
        """Grow the dialog so the grid shows without scrolling, up to most of the screen."""
        if not self.tiles:
            return
        tile = self.tiles[0].size()
        rows = math.ceil(len(self.tiles) / cols)
        gap = self.grid.spacing()
        want_w = cols * (tile.width() + gap) + 40
        want_h = rows * (tile.height() + gap) + self.height() - self.scroll.viewport().height() + 8
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        max_w, max_h = (screen.width() - 40, screen.height() - 60) if screen is not None else (1400, 1000)
        self.resize(min(max(self.width(), want_w), max_w), min(max(self.height(), want_h), max_h))

    def _clear(self) -> None:
        for tile in self.tiles:
            self.grid.removeWidget(tile)
            tile.deleteLater()
        self.tiles = []

    # -- shutdown ---------------------------------------------------------------------------------
    def shutdown(self, timeout: float | None = None) -> bool:
        """Wait for a running draw's thread (it cannot be interrupted; it is short); True when none is left."""
        self._pending = None
        if self._call is None:
            return True
        return self._call.wait(timeout)

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    def done(self, code: int) -> None:
        self.shutdown()
        super().done(code)


def open_predictions(parent, checkpoint, dataset: str | None = None, data_root=None) -> PredictionsDialog:
    """Create and show the dialog (non-modal, deleted on close) and start its first draw."""
    dlg = PredictionsDialog(checkpoint, dataset, data_root, parent=parent)
    dlg.setAttribute(Qt.WA_DeleteOnClose, True)
    dlg.show()
    dlg.new_sample()
    return dlg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.dialogs.predictions",
                                description="Show N random held-out images with a checkpoint's predictions.")
    p.add_argument("checkpoint", help="checkpoint file or folder (its latest checkpoint)")
    p.add_argument("--dataset", default=None, help="dataset name or folder (default: the one it was trained on)")
    p.add_argument("--data-root", default=None, help="folder holding downloaded datasets")
    p.add_argument("-n", type=int, default=16, help=f"how many images (1..{MAX_N})")
    p.add_argument("--seed", type=int, default=None, help="draw these images (default: random)")
    p.add_argument("--screenshot", metavar="PATH", help="save a PNG of the dialog once drawn, then exit")
    args = p.parse_args(argv)

    app = QApplication.instance() or QApplication(sys.argv[:1])
    style.apply(app)
    dlg = PredictionsDialog(args.checkpoint, args.dataset, args.data_root, n=args.n)
    dlg.show()
    if args.seed is not None:
        dlg.draw(args.seed)
    else:
        dlg.new_sample()
    if args.screenshot:
        while dlg.is_busy():  # the result arrives through the event loop
            app.processEvents()
            time.sleep(0.01)
        for _ in range(3):  # layout requests are posted, and answered over a few passes
            app.processEvents()
        ok = dlg.grab().save(os.fspath(args.screenshot))
        dlg.shutdown()
        print(f"screenshot: {args.screenshot}" if ok else f"could not write {args.screenshot}")
        return 0 if ok else 1
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
