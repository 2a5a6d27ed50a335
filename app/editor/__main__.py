"""``python -m app.editor [preset]``: palette, canvas, properties and problems side by side."""
from __future__ import annotations

import sys


def _make(model):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

    from engine import fmt

    from . import CanvasView, PaletteWidget, ProblemsList, PropertyPanel

    root = QSplitter(Qt.Horizontal)
    root.addWidget(PaletteWidget(model))
    middle = QSplitter(Qt.Vertical)
    canvas = CanvasView(model)
    middle.addWidget(canvas)
    middle.addWidget(ProblemsList(model))
    middle.setSizes([640, 110])
    root.addWidget(middle)
    side = QWidget()
    col = QVBoxLayout(side)
    col.setContentsMargins(0, 0, 0, 0)
    col.addWidget(PropertyPanel(model), 1)
    summary = QLabel()
    summary.setContentsMargins(10, 4, 10, 8)
    col.addWidget(summary)
    root.addWidget(side)
    root.setSizes([200, 760, 300])

    def show_summary(_=None):
        s = model.summary(32, "fp32")
        part = "" if s.complete else " (valid part)"
        summary.setText(f"batch 32, fp32{part}<br>params {fmt.fmt_count(s.params)} &nbsp; "
                        f"FLOPs {fmt.fmt_count(s.flops)}<br>activations {fmt.fmt_bytes(s.activation_bytes)} &nbsp; "
                        f"training ~{fmt.fmt_bytes(s.train_bytes_estimate)}")

    model.validated.connect(show_summary)
    show_summary()
    root.fit_view = canvas.fit_view
    return root


def main(argv=None) -> int:
    from ._preview import preview

    return preview(_make, argv, size=(1280, 800))


if __name__ == "__main__":
    sys.exit(main())
