"""Who may write a session file: one writer at a time, and never over a file it must not replace.

``claim_session(path)`` takes the file before anything is written: it opens (or, with
``exclusive=True``, creates with ``O_EXCL``) the file and holds an advisory ``flock`` on it for
as long as the writer runs. A second writer, in this process or another, is refused with "…
is being written by process N". Under that lock it decides what may be replaced: an empty file
(a fresh name) always; an existing LayerScope session only with ``force=True``; any other file
never. SQLite's own locks are POSIX ``fcntl`` locks, which do not interact with ``flock``, so
readers of the live session are not disturbed. Where ``fcntl`` is missing (Windows) the file is
not locked; the replace rules still hold.

The CLI claims ``--out`` before the run starts (bad input -> exit 2 instead of a failed run); the
``SessionWriter`` the run makes adopts that claim (``adopt_claim``) instead of taking a second one.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

from engine.session.schema import SessionError, check_is_session

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the replace rules below still apply
    fcntl = None

_claims: dict[str, "SessionClaim"] = {}  # claimed in this process and not yet adopted by a writer
_claims_lock = threading.Lock()


class SessionClaim:
    """The right to write one session file: an open descriptor holding an exclusive ``flock``.

    ``error`` is set by the writer that adopted it when a write fails (disk full ...), so the
    code that claimed the file can stop the run. ``release()`` drops the lock (idempotent).
    """

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd: int | None = fd
        self.error: str | None = None

    def release(self) -> None:
        with _claims_lock:
            if _claims.get(_key(self.path)) is self:
                del _claims[_key(self.path)]
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _key(p: Path) -> str:
    return os.path.abspath(os.fspath(p))


def _holder_pid(p: Path, fd: int) -> int | None:
    """The process holding the flock on ``p``: from /proc/locks (Linux), else the pid the writer
    stored in meta ``writer_pid``; None when neither says."""
    try:
        ino = os.fstat(fd).st_ino
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
                if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(ino):
                    return int(parts[4])
    except (OSError, ValueError):
        pass
    try:
        uri = "file:" + p.resolve().as_posix().replace("%", "%25").replace("?", "%3f").replace("#", "%23")
        con = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=0.2)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'writer_pid'").fetchone()
        finally:
            con.close()
        return int(json.loads(row[0])) if row else None
    except (sqlite3.Error, ValueError, TypeError):
        return None


def claim_session(path, *, force: bool = False, exclusive: bool = False, _register: bool = True) -> SessionClaim:
    """Take ``path`` for writing a session; SessionError (one line) when it may not be written.

    ``exclusive=True`` creates the file with ``O_EXCL`` and raises ``FileExistsError`` when it
    exists (the caller picks another name). Otherwise an existing file is refused when another
    process is writing it ("is being written by process N"), when it is a session and ``force``
    is False, and always when it is not a session; with ``force`` an existing session and its
    ``-wal``/``-shm`` are emptied in place (under the lock, so no other writer slips in). The
    claim stays registered in this process until a ``SessionWriter`` for the same path adopts it.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise SessionError(f"cannot write session {p}: it is a folder")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if exclusive else 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(p, flags, 0o644)
    except FileExistsError:
        if exclusive:
            raise
        raise SessionError(f"cannot write session {p}: it exists") from None  # pragma: no cover
    except OSError as e:
        raise SessionError(f"cannot write session {p}: {e.strerror or e}") from None
    claim = SessionClaim(p, fd)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _holder_pid(p, fd)
                who = f"process {pid}" if pid is not None else "another process"
                raise SessionError(f"{p} is being written by {who}; wait for that run to end or "
                                   "choose another file") from None
            except OSError:
                pass  # a file system without flock (some network mounts): the replace rules still hold
        wal, shm = Path(f"{p}-wal"), Path(f"{p}-shm")
        empty = os.fstat(fd).st_size == 0 and not (wal.is_file() and wal.stat().st_size)
        if not empty:
            try:
                check_is_session(p)[0].close()
            except SessionError:
                raise SessionError(f"cannot write session {p}: the file exists and is not a session "
                                   "(not a LayerScope session file); choose another name") from None
            if not force:
                raise SessionError(f"{p} already holds a session; give --force to replace it, or "
                                   "choose another name")
        try:
            for side in (wal, shm):
                side.unlink(missing_ok=True)  # leftovers of an old run would be replayed into ours
            os.ftruncate(fd, 0)
        except OSError as e:
            raise SessionError(f"cannot write session {p}: {e.strerror or e}") from None
    except BaseException:
        claim.release()
        raise
    if _register:
        with _claims_lock:
            _claims[_key(p)] = claim
    return claim


def adopt_claim(path, *, force: bool = False) -> SessionClaim:
    """The claim this process already holds on ``path`` (taken by ``claim_session``), else a new one."""
    with _claims_lock:
        claim = _claims.pop(_key(Path(path).expanduser()), None)
    if claim is not None and claim.fd is not None:
        return claim
    return claim_session(path, force=force, _register=False)
