"""Everything the command line prints with: number formatters, the aligned table, the run's
progress line and the download progress line. Commands format through these only."""
from __future__ import annotations

import sys
import threading
import time
from functools import partial

from engine import fmt
from engine.records import EvalRecord, LogRecord, RunEnded, StateChanged, StepRecord

__all__ = ["fmt_int", "fmt_flops", "fmt_num", "fmt_duration", "fmt_bytes", "print_table", "Progress",
           "DownloadProgress", "fmt_pct"]

# The terminal spells "not measured" as "-" (the app and the HTML report use an en dash); the
# formatting itself is engine.fmt's.
fmt_int, fmt_flops, fmt_duration = fmt.fmt_int, fmt.fmt_flops, fmt.fmt_duration
fmt_num = partial(fmt.fmt_num, missing="-")
fmt_bytes = partial(fmt.fmt_bytes, missing="-")
fmt_pct = partial(fmt.fmt_pct, missing="-")


def print_table(rows: list[list[str]], header: list[str], out=None, right: set[int] | None = None) -> None:
    """A plain aligned text table; columns in ``right`` are right-aligned."""
    out = out or sys.stdout
    right = right or set()
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    print(line(header), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print(line(r), file=out)


class Progress:
    """A record sink printing a run's progress: one carriage-return line on a terminal (redrawn
    at most ~8 times a second), plain lines every ``every_s`` seconds otherwise. Log
    warnings/errors and evaluations are printed as they come.

    Progress comes from the records alone: the planned total from ``StateChanged``, the steps
    done from each ``StepRecord`` and, at the end, ``RunEnded.steps``; steps/s and the ETA from
    the steps' own start times (``StepRecord.t``, the run's clock), so a viewer receiving a served
    run in bursts (``layerscope watch``) shows the run's speed, not its own.
    """

    def __init__(self, out=None, tty: bool | None = None, every_s: float = 5.0, quiet: bool = False):
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.every_s = every_s
        self.quiet = quiet
        self._lock = threading.Lock()  # telemetry-thread records may arrive while a step is drawn
        self._last_draw = 0.0
        self._first: tuple[float, int] | None = None
        self._line_open = False
        self._last: StepRecord | None = None
        self._done = 0
        self._total = 0

    def __call__(self, rec) -> None:
        if isinstance(rec, StepRecord):
            if rec.phase != "test":
                self._step(rec)
        elif isinstance(rec, StateChanged):
            with self._lock:
                self._done, self._total = rec.done, rec.total
        elif isinstance(rec, LogRecord):
            if rec.level != "info" or not self.quiet:
                self._print(f"{rec.level}: {rec.message}" if rec.level != "info" else rec.message)
        elif isinstance(rec, EvalRecord):
            ep = f"epoch {rec.epoch}: " if rec.epoch is not None else ""
            self._print(f"{ep}{rec.split} loss {rec.loss:.4f}, accuracy {rec.accuracy:.4f} ({rec.samples} samples)")
        elif isinstance(rec, RunEnded):
            with self._lock:
                self._done = rec.steps
                if self._last is not None and not self.quiet:
                    self._draw(self._last, final=True)
                self._end_line()

    def _print(self, text: str) -> None:
        with self._lock:
            self._end_line()
            print(text, file=self.out, flush=True)

    def _end_line(self) -> None:
        if self._line_open:
            print(file=self.out, flush=True)
            self._line_open = False

    def _step(self, rec: StepRecord) -> None:
        now = time.monotonic()
        with self._lock:
            self._last = rec
            self._done = rec.step
            if self._first is None:  # the run's own clock (StepRecord.t), not this process's: a
                self._first = (rec.t, self._done)  # viewer catching up on a served run must not time itself
            if self.quiet:
                return
            if now - self._last_draw >= (0.125 if self.tty else self.every_s):
                self._last_draw = now
                self._draw(rec)

    def _draw(self, rec: StepRecord, final: bool = False) -> None:
        done, total = max(self._done, 1), self._total
        rate = None
        if self._first is not None:
            dt = rec.t - self._first[0]
            if dt >= 0.5 and done > self._first[1]:  # a rate from a blink of time is noise
                rate = (done - self._first[1]) / dt
        eta = (total - done) / rate if rate and total else None
        parts = [f"step {done}/{total}" if total else f"step {done}"]
        if rec.epoch is not None:
            parts.append(f"epoch {rec.epoch}")
        parts.append(f"{fmt_num(rate)} steps/s" if rate else "- steps/s")
        if rec.loss is not None:
            parts.append(f"loss {rec.loss:.4f}")
        if rec.warmup:
            parts.append("warm-up")
        if not final:
            parts.append(f"ETA {fmt_duration(eta)}")
        text = "  ".join(parts)
        if self.tty:
            bar = ""
            if total:
                n = 24
                k = int(n * min(done, total) / total)
                bar = "[" + "#" * k + "." * (n - k) + "] "
            self.out.write("\r" + bar + text + " " * 4)
            self.out.flush()
            self._line_open = True
        else:
            print(text, file=self.out, flush=True)


class DownloadProgress:
    """``progress(done_bytes, total_bytes_or_None)`` for ``engine.data.download``, printed to stderr:
    one redrawn line on a terminal (at most 5 times a second), a plain line every 5 s otherwise."""

    def __init__(self, name: str, out=None):
        self.name = name
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last < (0.2 if self.tty else 5.0) and done != total:
            return
        self._last = now
        pct = f"{100 * done / total:5.1f}%" if total else ""
        line = f"downloading {self.name}: {done / 1e6:.1f} MB {pct}"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=self.out, flush=True)

    def finished(self, path) -> None:
        """The closing line: where the dataset now is."""
        print(("\n" if self.tty else "") + f"downloaded {self.name} to {path}", file=self.out)
