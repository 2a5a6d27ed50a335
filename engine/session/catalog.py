"""The runs in a folder, each with the facts a list shows, read cheaply: ``list_sessions(folder)``.

Only each file's ``meta`` rows and the last few hundred ``steps`` rows are read (``tail``: a
list's throughput is ``engine.samples_per_s(entry.tail)``, the statistics' own figure) (no integrity
check, no layer times, no telemetry), so a folder of long sessions lists in milliseconds per file.
CLI runs and app runs share ``engine.runs_dir()``, so both show.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from engine.records import StepRecord
from engine.session.schema import FORMAT_NAME, SessionError, _header_problem, read_meta

SUFFIX = ".lsession"
TAIL_STEPS = 200  # throughput is taken over the last steady steps recorded, at most this many


@dataclass
class SessionEntry:
    """One session file as a list shows it. ``problem`` is set (one line) for a file that is not a
    readable session; the other fields are then empty."""

    path: Path
    size: int  # bytes on disk (the file alone; a WAL beside it is counted too)
    modified: float  # mtime, seconds since the epoch
    net: str = ""
    mode: str = ""
    device: str = ""  # the device id the run used ("cpu", "cuda:0")
    device_name: str = ""
    precision: str = ""
    batch_size: int | None = None
    steps: int | None = None  # steps run (warm-up included), as the run reported or as recorded so far
    status: str = ""  # "completed" | "stopped" | "failed" | "running" (still written, or killed)
    start_time: float | None = None  # epoch seconds
    tail: list = field(default_factory=list, repr=False)  # the last TAIL_STEPS main StepRecords, in order
    problem: str = ""
    meta: dict = field(default_factory=dict, repr=False)


def _read(path: Path) -> SessionEntry:
    st = path.stat()
    size = st.st_size + sum(p.stat().st_size for p in (path.with_name(path.name + "-wal"),) if p.exists())
    entry = SessionEntry(path=path, size=size, modified=st.st_mtime)
    problem = _header_problem(path)
    if problem:
        entry.problem = problem
        return entry
    uri = "file:" + path.resolve().as_posix().replace("?", "%3f").replace("#", "%23") + "?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as e:
        entry.problem = f"{path.name} cannot be read ({e})"
        return entry
    try:
        meta = read_meta(con)
        if meta.get("format") != FORMAT_NAME:
            entry.problem = f"{path.name} is not a LayerScope session"
            return entry
        rows = con.execute("SELECT step, t, phase, loss, accuracy, step_ms, samples_per_s, data_ms, epoch, warmup, "
                           "profiled, peak_mem_bytes FROM steps WHERE phase != 'test' ORDER BY rowid DESC LIMIT ?",
                           (TAIL_STEPS,)).fetchall()
    except sqlite3.Error as e:
        entry.problem = f"{path.name} cannot be read ({str(e).splitlines()[0]})"
        return entry
    finally:
        con.close()
    tail = [StepRecord(s, t, ph, lo, ac, ms, sps, dm, ep, bool(w), bool(p), pk)
            for s, t, ph, lo, ac, ms, sps, dm, ep, w, p, pk in reversed(rows)]
    cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    net = meta.get("net") if isinstance(meta.get("net"), dict) else {}
    dev = meta.get("device") if isinstance(meta.get("device"), dict) else {}
    entry.meta = meta
    entry.net = str(net.get("name") or cfg.get("net_name") or "")
    entry.mode = str(cfg.get("mode") or "")
    entry.device = str(dev.get("id") or cfg.get("device") or "")
    entry.device_name = str(dev.get("name") or "")
    entry.precision = str(cfg.get("precision") or "")
    entry.batch_size = cfg.get("batch_size")
    entry.status = str(meta.get("status") or "running")
    entry.steps = meta.get("steps") if entry.status != "running" else (tail[-1].step if tail else 0)
    entry.start_time = meta.get("start_time")
    entry.tail = tail
    return entry


def list_sessions(folder) -> list[SessionEntry]:
    """Every ``*.lsession`` file directly in ``folder``, newest first, with its meta facts.

    A file that is not a readable session is listed with ``problem`` set, not skipped (a person
    can still delete it). A missing folder lists nothing. Raises SessionError only when ``folder``
    is a file."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise SessionError(f"{folder} is a file, not a folder of sessions")
    out = []
    for p in folder.iterdir():
        if p.suffix == SUFFIX and p.is_file():
            try:
                out.append(_read(p))
            except OSError:  # removed while we listed
                continue
    out.sort(key=lambda e: (e.start_time or e.modified), reverse=True)
    return out
