"""The session file's layout and the checks every reader and writer shares.

A session is one SQLite database per run (``docs/session-format.md``): the tables and views
below, ``PRAGMA application_id`` = ``APPLICATION_ID`` and ``PRAGMA user_version`` =
``SCHEMA_VERSION``. This module also holds the header check that tells a session from any other
file, ``SessionError``, and the unit conversions both sides use (times are stored as integer ns,
handed out as float ms; shapes as compact JSON text).

Only the standard library is used: any SQLite client can read a session, and reading one never
executes anything stored in it.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from engine.errors import LayerScopeError

SCHEMA_VERSION = 1
APPLICATION_ID = 0x4C53434F  # "LSCO": lets `file`-like tools and our reader tell a session apart
FORMAT_NAME = "layerscope-session"
SUFFIX = ".lsession"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_NS = 1_000_000  # ns per ms

# executed once, inside the writer's first transaction, on a new file
SCHEMA_SQL = f"""
PRAGMA application_id = {APPLICATION_ID};
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE layers(idx INTEGER PRIMARY KEY, node_id TEXT NOT NULL, name TEXT, kind TEXT,
                    out_shape TEXT, params INTEGER, flops INTEGER, act_bytes INTEGER,
                    bwd_flops INTEGER);
CREATE TABLE steps(step INTEGER, t REAL, phase TEXT, loss REAL, accuracy REAL, step_ms REAL,
                   samples_per_s REAL, data_ms REAL, epoch INTEGER, warmup INTEGER,
                   profiled INTEGER, peak_mem_bytes INTEGER);
CREATE TABLE nodes(id INTEGER PRIMARY KEY, node_id TEXT NOT NULL UNIQUE);
CREATE TABLE profiled_steps(rec INTEGER PRIMARY KEY, step INTEGER, t REAL, first_row INTEGER,
                            n INTEGER);
CREATE TABLE layer_times_ns(row INTEGER PRIMARY KEY, rec INTEGER, node INTEGER, fwd_ns INTEGER,
                            bwd_ns INTEGER, mem_bytes INTEGER, fwd_start_ns INTEGER,
                            bwd_start_ns INTEGER, peak_bytes INTEGER);
CREATE VIEW layer_times AS
    SELECT p.step AS step, n.node_id AS node_id, l.fwd_ns / 1e6 AS fwd_ms, l.bwd_ns / 1e6 AS bwd_ms,
           l.mem_bytes AS mem_bytes, l.fwd_start_ns / 1e6 AS fwd_start_ms,
           l.bwd_start_ns / 1e6 AS bwd_start_ms, l.peak_bytes AS peak_bytes, p.t AS t
    FROM layer_times_ns l JOIN profiled_steps p ON p.rec = l.rec JOIN nodes n ON n.id = l.node;
CREATE TABLE telemetry_series(id INTEGER PRIMARY KEY, source TEXT NOT NULL, metric TEXT NOT NULL,
                              UNIQUE(source, metric));
CREATE TABLE telemetry_values(t REAL, series INTEGER, value REAL);
CREATE VIEW telemetry AS
    SELECT v.t AS t, s.source AS source, s.metric AS metric, v.value AS value
    FROM telemetry_values v JOIN telemetry_series s ON s.id = v.series;
CREATE TABLE feature_maps(step INTEGER, node_id TEXT, shape TEXT, data BLOB, t REAL, lo REAL,
                          hi REAL, codec TEXT);
CREATE TABLE evals(step INTEGER, t REAL, epoch INTEGER, split TEXT, loss REAL, accuracy REAL,
                   samples INTEGER);
CREATE TABLE logs(t REAL, level TEXT, message TEXT);
PRAGMA user_version = {SCHEMA_VERSION};
"""


class SessionError(LayerScopeError):
    """A session file that cannot be written or read (missing, not a session, damaged, too new)."""



def ns_from_ms(ms):
    """Milliseconds (float or None) as whole nanoseconds, the unit the ``*_ns`` columns hold."""
    return None if ms is None else int(round(ms * _NS))


def ms_from_ns(ns):
    """Nanoseconds (int or None) from a ``*_ns`` column as float milliseconds."""
    return None if ns is None else ns / _NS


def shape_text(shape) -> str:
    """A tensor shape as the compact JSON list stored in ``shape``/``out_shape`` columns, e.g. "[1,8,32,32]"."""
    return json.dumps([int(d) for d in shape], separators=(",", ":"))


def has_session_header(path) -> bool:
    """True when ``path`` starts with the 16-byte SQLite header every session file has.

    A cheap first look (16 bytes read), not a proof: an empty, missing, unreadable or other file
    gives False, and any SQLite database gives True. ``open_session`` proves a file is a session.
    """
    try:
        with open(path, "rb") as f:
            return f.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


def _header_problem(p: Path) -> str | None:
    """A reason the file cannot be a whole SQLite database, from its 100-byte header and size."""
    size = p.stat().st_size
    if size == 0:
        return f"{p} is empty, not a LayerScope session"
    with open(p, "rb") as f:
        head = f.read(100)
    if not head.startswith(_SQLITE_MAGIC):
        return f"{p} is not a LayerScope session (not an SQLite database)"
    if len(head) < 100:
        return f"{p} is truncated ({size} bytes); the session cannot be read"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    valid = pages and head[24:28] == head[92:96]
    if page_size < 512 or (valid and size < pages * page_size) or size % page_size:
        expected = f" of {pages * page_size}" if valid else ""
        return f"{p} is truncated or damaged ({size}{expected} bytes); the session cannot be read"
    return None


def _connect(p: Path) -> sqlite3.Connection:
    # read-write so a WAL left by a killed writer is recovered; mode=rw never creates a file
    uri = "file:" + p.resolve().as_posix().replace("?", "%3f").replace("#", "%23")
    try:
        return sqlite3.connect(uri + "?mode=rw", uri=True, check_same_thread=False)
    except sqlite3.OperationalError:
        return sqlite3.connect(uri + "?mode=ro", uri=True, check_same_thread=False)


def check_is_session(p: Path) -> tuple[sqlite3.Connection, dict]:
    """Open ``p`` and prove it is a readable session of a version we know; SessionError if not."""
    if not p.exists():
        raise SessionError(f"session file not found: {p}")
    if p.is_dir():
        raise SessionError(f"{p} is a folder, not a session file")
    problem = _header_problem(p)
    if problem:
        raise SessionError(problem)
    con = None
    try:
        con = _connect(p)
        version = con.execute("PRAGMA user_version").fetchone()[0]
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table','view')")}
        if "meta" not in tables:
            raise SessionError(f"{p} is an SQLite database but not a LayerScope session")
        meta = {}
        for k, v in con.execute("SELECT key, value FROM meta"):
            try:
                meta[k] = json.loads(v)
            except (TypeError, ValueError):
                meta[k] = v
        if app_id != APPLICATION_ID and meta.get("format") != FORMAT_NAME:
            raise SessionError(f"{p} is an SQLite database but not a LayerScope session")
        if version > SCHEMA_VERSION:
            raise SessionError(f"{p} was written by a newer LayerScope (session format v{version}; this "
                               f"version reads up to v{SCHEMA_VERSION}); update LayerScope to open it")
        if version < 1:
            raise SessionError(f"{p} is an incomplete LayerScope session (no schema version)")
        check = con.execute("PRAGMA quick_check(1)").fetchone()[0]
        if check != "ok":
            raise SessionError(f"{p} is damaged ({check.splitlines()[0]}); the session cannot be read")
        return con, meta
    except SessionError:
        if con is not None:
            con.close()
        raise
    except sqlite3.Error as e:
        if con is not None:
            con.close()
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "not a database" in msg:
            raise SessionError(f"{p} is not a LayerScope session (not an SQLite database)") from None
        raise SessionError(f"{p} is truncated or damaged ({msg}); the session cannot be read") from None
