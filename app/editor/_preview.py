"""Open one editor widget alone with a preset loaded, for a look or a screenshot.

``python -m app.editor.canvas [preset] [--screenshot PATH]`` and the same for palette,
properties and problems.
"""
from __future__ import annotations

import argparse
import sys


def preview(make, argv=None, size=(900, 700), select: str | None = None) -> int:
    from PySide6.QtWidgets import QApplication

    import engine

    from .model import EditorModel

    ap = argparse.ArgumentParser()
    ap.add_argument("preset", nargs="?", default="resnet18")
    ap.add_argument("--select", default=select)
    ap.add_argument("--screenshot", help="save a PNG of the widget and exit")
    args = ap.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    try:
        spec = engine.resolve_net(args.preset)
    except engine.LayerScopeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = EditorModel(spec)
    widget = make(model)
    widget.resize(*size)
    widget.setWindowTitle(f"LayerScope - {type(widget).__name__} - {args.preset}")
    widget.show()
    if args.select:
        model.select(args.select)
    model.validation()
    if args.screenshot:
        app.processEvents()
        if hasattr(widget, "fit_view"):
            widget.fit_view()
        app.processEvents()
        if not widget.grab().save(args.screenshot):
            print(f"error: cannot write {args.screenshot}", file=sys.stderr)
            return 2
        return 0
    return app.exec()
