"""Takes docs/screenshots/imported-model.png: the window at 1280x800 with a user's residual CNN
imported (File ▸ Import PyTorch model…), after a 20-step CPU run of it (from its file), with one
of its read-only imported ops selected.

    QT_QPA_PLATFORM=offscreen XDG_CONFIG_HOME=$(mktemp -d) LAYERSCOPE_HOME=$(mktemp -d) \
        python docs/screenshots/imported_model.py docs/screenshots/imported-model.png

The model file is written to a temporary folder first (the code below is the user's model).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

USER_MODEL = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """A basic residual block: conv-bn-relu-conv-bn, plus the skip, then relu (functional)."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class SmallRes(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block = Block(16)
        self.side = nn.Conv2d(16, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, classes)

    def forward(self, x):
        x = self.block(F.relu(self.stem(x)))
        x = torch.cat([x, self.side(x)], dim=1)
        x = F.hardswish(x) * 0.5
        return self.fc(self.pool(x).view(x.size(0), -1))


def make_model():
    return SmallRes(10)
'''


def main(out: str) -> int:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app import style
    from app.main_window import MainWindow
    from app.settings import ensure_names

    app = QApplication.instance() or QApplication(sys.argv[:1])
    ensure_names()
    style.apply(app)
    folder = Path(tempfile.mkdtemp())
    (folder / "smallres.py").write_text(USER_MODEL)
    window = MainWindow()
    window.resize(1280, 800)
    window._inform = lambda title, text: None
    window.show()

    def wait(signal, ms=120_000):
        loop = QEventLoop()
        signal.connect(loop.quit)
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    if not window.is_ready:
        wait(window.ready)
    result = []
    window.nets.imported.connect(result.append)
    window.nets.import_model(f"{folder / 'smallres.py'}:make_model", (3, 32, 32), 10)
    if not result:
        wait(window.nets.imported)
    if result != [""]:
        print(f"import failed: {result}", file=sys.stderr)
        return 1
    # a short CPU run of the imported model (from its file), so the canvas is coloured by layer time
    window.run_panel.apply(steps=20, batch_size=32, dataset="synthetic", device="cpu")
    ended = []
    window.run_finished.connect(lambda status, message: ended.append(status))
    if window.start_run():
        wait(window.run_finished, 300_000)
    print(f"run: {ended}")
    window.model.select("hardswish")
    window.docks["properties"].raise_()
    for _ in range(5):
        app.processEvents()
    window.canvas.fit_view()
    app.processEvents()
    ok = window.grab().save(out)
    print(f"screenshot saved to {out}" if ok else f"cannot write {out}")
    window.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "imported-model.png"))
