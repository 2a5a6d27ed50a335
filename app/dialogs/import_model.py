"""File ▸ Import PyTorch model…: which model (a .py file and the factory in it that returns an
``nn.Module``, or a torchvision model name), its input shape and classes. The file's code is
executed when it is imported: the dialog says so, and only the file chosen here is run."""
from __future__ import annotations

import os

from PySide6.QtWidgets import (QButtonGroup, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QPushButton, QRadioButton, QSpinBox, QVBoxLayout, QWidget)

from app.editor import theme

TRUST_WARNING = ("<b>The file's code is executed.</b> Importing runs it with your permissions, as "
                 "<code>python FILE</code> would. Choose only a file you trust. Only the file chosen here "
                 "is run; nothing else is imported from its folder unless the file imports it.")


def parse_shape(text: str) -> tuple[int, int, int] | None:
    """``"3,32,32"`` (or ``3x32x32``) as (C, H, W) of positive whole numbers; None when it is not one."""
    parts = [p.strip() for p in text.replace("x", ",").replace("X", ",").split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    dims = tuple(int(p) for p in parts)
    return dims if all(0 < d <= 65536 for d in dims) else None


def import_source(kind: str, path: str, factory: str, name: str) -> str:
    """The import API's source string: ``FILE.py:FACTORY`` or ``torchvision:NAME``."""
    return f"torchvision:{name.strip()}" if kind == "torchvision" else f"{path.strip()}:{factory.strip()}"


class ImportModelDialog(QDialog):
    """Asks for the model to import. ``request()`` -> (source, (C, H, W), classes) once accepted."""

    def __init__(self, parent: QWidget | None = None, folder: str = ""):
        super().__init__(parent)
        self.setWindowTitle("Import PyTorch model")
        self._folder = folder
        self.from_file = QRadioButton("A Python file and the factory in it that returns the nn.Module")
        self.from_vision = QRadioButton("A torchvision model (needs torchvision: pip install -e '.[vision]')")
        self.from_file.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.from_file)
        group.addButton(self.from_vision)
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("/path/to/model.py")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        file_row = QWidget()
        fl = QHBoxLayout(file_row)
        fl.setContentsMargins(0, 0, 0, 0)
        fl.addWidget(self.path_edit, 1)
        fl.addWidget(browse)
        self.factory_edit = QLineEdit()
        self.factory_edit.setPlaceholderText("make_model")
        self.factory_edit.setToolTip("a function (or class) in the file, called with no arguments, "
                                     "that returns the torch.nn.Module")
        self.vision_edit = QLineEdit()
        self.vision_edit.setPlaceholderText("resnet18")
        self.shape_edit = QLineEdit("3,32,32")
        self.shape_edit.setToolTip("one sample: channels, height, width")
        self.classes = QSpinBox()
        self.classes.setRange(1, 1 << 20)
        self.classes.setValue(10)
        self.warning = QLabel(TRUST_WARNING)
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet(f"color: {theme.ERROR_COLOR};")
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet(f"color: {theme.ERROR_COLOR};")
        self.error.hide()
        form = QFormLayout()
        form.addRow(self.from_file)
        form.addRow("file", file_row)
        form.addRow("factory", self.factory_edit)
        form.addRow(self.from_vision)
        form.addRow("torchvision name", self.vision_edit)
        form.addRow("input C,H,W", self.shape_edit)
        form.addRow("classes", self.classes)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.button(QDialogButtonBox.Ok).setText("Import")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.warning)
        lay.addLayout(form)
        lay.addWidget(self.error)
        lay.addWidget(buttons)
        for b in (self.from_file, self.from_vision):
            b.toggled.connect(self._enable)
        self._enable()

    def _enable(self) -> None:
        f = self.from_file.isChecked()
        for w in (self.path_edit, self.factory_edit):
            w.setEnabled(f)
        self.vision_edit.setEnabled(not f)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model file (its code is executed)", self._folder,
                                              "Python files (*.py);;All files (*)")
        if path:
            self.path_edit.setText(path)

    def problem(self) -> str:
        """Why the entries cannot be imported (one line), or '' when they can."""
        if self.from_file.isChecked():
            path = self.path_edit.text().strip()
            if not path:
                return "choose the model's .py file"
            if not os.path.isfile(path):
                return f"no such file: {path}"
            if not self.factory_edit.text().strip().isidentifier():
                return "the factory must be the name of a function or class in the file"
        elif not self.vision_edit.text().strip().isidentifier():
            return "give a torchvision model name such as resnet18"
        if parse_shape(self.shape_edit.text()) is None:
            return "the input shape must be three positive whole numbers C,H,W (e.g. 3,32,32)"
        return ""

    def accept(self) -> None:
        why = self.problem()
        if why:
            self.error.setText(why)
            self.error.show()
            return
        super().accept()

    def request(self) -> tuple[str, tuple[int, int, int], int]:
        """(source, (C, H, W), classes) as the import API takes them."""
        kind = "file" if self.from_file.isChecked() else "torchvision"
        src = import_source(kind, self.path_edit.text(), self.factory_edit.text(), self.vision_edit.text())
        return src, parse_shape(self.shape_edit.text()), self.classes.value()
