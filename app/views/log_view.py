"""Log: the run's LogRecords (dataset summary, warnings, checkpoints), how each run ended (a failed
run's message in red) and the app's own notes (exports written, sessions opened)."""
from __future__ import annotations

import html
import sys
import time

from PySide6.QtWidgets import QPlainTextEdit, QVBoxLayout

from app import style
from app.views.base import MonitorView

_COLOURS = {"info": style.TEXT, "warning": style.WARN, "error": style.ERROR, "ok": style.OK, "app": style.MUTED}


class LogView(MonitorView):
    title = "Log"
    max_hz = 10.0

    def __init__(self, parent=None):
        super().__init__(parent)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(5000)
        self.text.setPlaceholderText("Run messages, warnings and failures appear here.")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.text)
        self._info = None
        self._seen = 0
        self._last = None
        self._ended = None
        self.lines: list[tuple[str, str]] = []  # (level, text) as shown, for tests and copying

    def clear(self) -> None:
        self._info = None
        self._seen = 0
        self._last = None
        self._ended = None

    def append(self, level: str, message: str, t: float | None = None) -> None:
        """Add a line (level: info, warning, error, ok, app)."""
        stamp = time.strftime("%H:%M:%S") if t is None else f"{t:8.2f}s"
        colour = _COLOURS.get(level, style.TEXT)
        body = html.escape(message).replace("\n", "<br>")
        tag = "" if level in ("info", "app", "ok") else f"{level}: "
        self.text.appendHtml(f"<span style='color:{style.MUTED}'>{stamp}</span> "
                             f"<span style='color:{colour}'>{html.escape(tag)}{body}</span>")
        self.lines.append((level, message))

    def push(self, snap, force: bool = False) -> None:
        # the log must not miss lines while its tab is hidden: always take them in
        super().push(snap, force=True)

    def update_snapshot(self, snap) -> None:
        if snap.info is not self._info and snap.info is not None:
            same_run = self._info is not None and _run_key(snap.info) == _run_key(self._info)
            self._info = snap.info
            if same_run:  # a session replayed again (a seek): its lines are shown already, once
                self._last = self._last and _Seen(self._last.t)
            else:
                self._new_run(snap)
        self._take(snap)

    def _new_run(self, snap) -> None:
        self._seen = 0
        self._last = None
        self._ended = None
        cfg = snap.info.config or {}
        net = (cfg.get("net") or {}).get("name") or "net"
        dev = (snap.info.device or {}).get("id") or cfg.get("device")
        self.append("app", f"── {net} · {cfg.get('mode', '')} on {dev} · batch {cfg.get('batch_size')} · "
                           f"{cfg.get('precision', '')} ──")

    def _take(self, snap) -> None:
        logs = snap.logs
        start = 0
        if self._last is not None:
            for k in range(len(logs) - 1, -1, -1):
                if logs[k] is self._last:
                    start = k + 1
                    break
            else:  # the bounded buffer moved past what we saw: show what is newer
                start = next((k for k, r in enumerate(logs) if r.t > self._last.t), len(logs))
        for rec in logs[start:]:
            self.append(rec.level, rec.message, rec.t)
        if logs:
            self._last = logs[-1]
        if snap.ended is not None and snap.ended != self._ended:  # by value: a replay makes new objects
            self._ended = snap.ended
            e = snap.ended
            if e.status == "failed":
                self.append("error", f"run failed: {e.message}", e.t)
            elif e.status == "stopped":
                self.append("warning", f"run stopped: {e.message or f'after {e.steps} steps'}", e.t)
            else:
                extra = e.extra or {}
                acc = extra.get("test_accuracy")
                more = f", test accuracy {100 * acc:.2f} %" if isinstance(acc, (int, float)) else ""
                self.append("ok", f"run completed: {e.steps} steps{more}", e.t)


def _run_key(info) -> tuple:
    """What tells one run from another (a replayed session gives new RunInfo objects of one run)."""
    return (info.start_time, info.host)


class _Seen:
    """The time of the last line shown, when the record object itself belongs to an earlier replay."""

    def __init__(self, t: float):
        self.t = t


def main(argv=None) -> int:
    from app.views.sample import preview

    return preview(LogView, argv, size=(700, 300))


if __name__ == "__main__":
    sys.exit(main())
