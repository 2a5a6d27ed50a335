"""Nodes on the system clipboard: a small JSON document (``{"format": CLIP_FORMAT, "version": 1,
"nodes": [{id, kind, params, inputs}]}``) under ``NODES_MIME``, also set as plain text so it
pastes into a text editor and back."""
from __future__ import annotations

import json

from PySide6.QtCore import QMimeData
from PySide6.QtGui import QGuiApplication

from engine import Node

NODES_MIME = "application/x-layerscope-nodes"
CLIP_FORMAT = "layerscope-nodes"


def nodes_json(nodes: list[Node]) -> str:
    """The nodes as clipboard JSON (inputs as given, ids as they are)."""
    return json.dumps({"format": CLIP_FORMAT, "version": 1,
                       "nodes": [{"id": n.id, "kind": n.kind, "params": n.params, "inputs": n.inputs}
                                 for n in nodes]})


def put_text(text: str) -> None:
    """Put clipboard JSON on the system clipboard (as NODES_MIME and as plain text)."""
    mime = QMimeData()
    mime.setData(NODES_MIME, text.encode("utf-8"))
    mime.setText(text)
    QGuiApplication.clipboard().setMimeData(mime)


def can_paste() -> bool:
    """Whether the system clipboard looks like it holds nodes (a cheap check, no parsing)."""
    mime = QGuiApplication.clipboard().mimeData()
    return mime is not None and (mime.hasFormat(NODES_MIME) or CLIP_FORMAT in (mime.text() or "")[:200])


def read_nodes() -> list[Node]:
    """The nodes on the system clipboard, ids and inputs as copied; [] when it holds none or
    holds text that is not clipboard JSON."""
    mime = QGuiApplication.clipboard().mimeData()
    if mime is None:
        return []
    raw = bytes(mime.data(NODES_MIME)).decode("utf-8") if mime.hasFormat(NODES_MIME) else mime.text()
    try:
        data = json.loads(raw)
        if data.get("format") != CLIP_FORMAT:
            return []
        return [Node(str(d["id"]), str(d["kind"]), dict(d.get("params") or {}),
                     [str(r) for r in d.get("inputs") or []]) for d in data["nodes"]]
    except (ValueError, TypeError, KeyError, AttributeError):
        return []
