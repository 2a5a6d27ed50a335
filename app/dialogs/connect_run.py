"""File ▸ Connect to run…: the address and token of a run served by ``layerscope profile --serve``."""
from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

import engine

HELP = ("Start the run on the server with\n"
        "    layerscope profile NET … --serve 127.0.0.1:7788\n"
        "and give here the address and the token it prints. For a remote machine, keep the server "
        "on 127.0.0.1 and open an SSH tunnel first:\n"
        "    ssh -N -L 7788:127.0.0.1:7788 user@server\n"
        "then connect to 127.0.0.1:7788. Pause and Stop work only when the run was started with "
        "--allow-control.")


class ConnectDialog(QDialog):
    """Asks HOST:PORT and the token; ``values() -> (address, token)``; OK stays disabled until the
    address parses (``engine.parse_address``) and a token is given, with the reason shown."""

    def __init__(self, parent: QWidget | None = None, address: str = "127.0.0.1:7788"):
        super().__init__(parent)
        self.setWindowTitle("Connect to a served run")
        self.address = QLineEdit(address)
        self.token = QLineEdit()
        self.token.setPlaceholderText("the token `layerscope profile --serve` printed")
        self.reason = QLabel()
        self.reason.setStyleSheet("color: #b00020")
        note = QLabel(HELP)
        note.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Address (host:port)", self.address)
        form.addRow("Token", self.token)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(note)
        lay.addLayout(form)
        lay.addWidget(self.reason)
        lay.addWidget(self.buttons)
        self.address.textChanged.connect(self._check)
        self.token.textChanged.connect(self._check)
        self._check()

    def _check(self) -> None:
        reason = ""
        try:
            engine.parse_address(self.address.text())
        except engine.LayerScopeError as e:
            reason = str(e)
        if not reason and not self.token.text().strip():
            reason = "give the token the server printed"
        self.reason.setText(reason)
        self.buttons.button(QDialogButtonBox.Ok).setEnabled(not reason)

    def values(self) -> tuple[str, str]:
        return self.address.text().strip(), self.token.text().strip()
