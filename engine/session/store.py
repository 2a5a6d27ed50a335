"""The session file: one SQLite database per run, written incrementally while the run goes.

``SessionWriter`` is a record sink. It queues records and a background thread writes them in
one transaction at most every ``flush_interval`` seconds (and at once for ``RunInfo`` and
``RunEnded``), in WAL mode, so a killed process leaves a readable file holding everything up to
the last batch with status ``running``. ``open_session`` gives a ``SessionReader`` returning the
same record types the live run produced. The layout is documented in ``docs/session-format.md``.

Only the standard library is used: any SQLite client can read a session, and reading one never
executes anything stored in it.
"""
from __future__ import annotations

import heapq
import json
import os
import socket
import sqlite3
import threading
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Iterator

from engine.errors import LayerScopeError
from engine.run.records import (EvalRecord, FeatureMap, LayerRow, LayerTimes, LogRecord, RunEnded, RunInfo,
                      StepRecord, TelemetryBatch, TelemetrySample)

SCHEMA_VERSION = 1
APPLICATION_ID = 0x4C53434F  # "LSCO": lets `file`-like tools and our reader tell a session apart
FORMAT_NAME = "layerscope-session"
SUFFIX = ".lsession"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_NS = 1_000_000  # ns per ms

_SCHEMA = f"""
PRAGMA application_id = {APPLICATION_ID};
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE layers(idx INTEGER PRIMARY KEY, node_id TEXT NOT NULL, name TEXT, kind TEXT,
                    out_shape TEXT, params INTEGER, flops INTEGER, act_bytes INTEGER);
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


def _ns(ms):
    return None if ms is None else int(round(ms * _NS))


def _ms(ns):
    return None if ns is None else ns / _NS


def _at(seq, i):
    return seq[i] if i < len(seq) else None


def _shape_text(shape) -> str:
    return json.dumps([int(d) for d in shape], separators=(",", ":"))


def _is_session_header(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


class _Meta:
    """Queue item: meta keys to set (written by the writer itself, not by a run record)."""

    def __init__(self, values: dict):
        self.values = values


_HELD_MAPS = object()  # queue marker: store the feature maps held back by the rate limit


class SessionWriter:
    """A record sink writing one run into a session file, incrementally and thread-safely.

    ``writer(record)`` only appends to a queue (no disk I/O in the caller); a writer thread
    commits the queue every ``flush_interval`` seconds, and ``RunInfo``/``RunEnded`` are committed
    before the call returns. Feature maps are kept at most one per ``feature_interval_s`` per node
    (the last one of the run is always kept) and zlib-compressed, so long runs stay small.
    Call ``close()`` when done (also a context manager).
    """

    def __init__(self, path, *, flush_interval: float = 0.5, feature_interval_s: float = 1.0,
                 record_telemetry_status: bool = True):
        self.path = Path(path)
        self.flush_interval = float(flush_interval)
        self.feature_interval_s = float(feature_interval_s)
        self.error: str | None = None  # first write failure; later records are dropped
        self.rows_written = 0
        self._queue: deque = deque()
        self._db_lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._nodes: dict[str, int] = {}
        self._series: dict[tuple[str, str], int] = {}
        self._next_rec = 1
        self._next_row = 1
        self._fm_last_t: dict[str, float] = {}
        self._fm_held: dict[str, FeatureMap] = {}  # newest map not stored yet, per node
        self._start_time: float | None = None
        # which telemetry this machine offers for the run's device (and why not), probed off the
        # run's thread so a reader can say why a series is absent
        self._probe_device: str | None = None
        self._record_tel = record_telemetry_status
        self._con = self._create()
        self._thread = threading.Thread(target=self._loop, name="layerscope-session-writer", daemon=True)
        self._thread.start()

    # -- setup -------------------------------------------------------------------------------
    def _create(self) -> sqlite3.Connection:
        p = self.path
        if p.is_dir():
            raise SessionError(f"cannot write session {p}: it is a folder")
        if p.exists():
            if p.stat().st_size and not _is_session_header(p):
                raise SessionError(f"cannot write session {p}: the file exists and is not a session; "
                                   "choose another name")
            try:
                # only an existing session (or an empty file) is replaced, with its WAL leftovers
                if p.stat().st_size:
                    _check_is_session(p)[0].close()
                for extra in (p, Path(f"{p}-wal"), Path(f"{p}-shm")):
                    if extra.exists():
                        extra.unlink()
            except SessionError:
                raise SessionError(f"cannot write session {p}: the file exists and is not a LayerScope "
                                   "session; choose another name") from None
            except OSError as e:
                raise SessionError(f"cannot write session {p}: {e.strerror or e}") from None
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(str(p), check_same_thread=False, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: commits survive a killed process without an fsync per batch
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
        except (OSError, sqlite3.Error) as e:
            raise SessionError(f"cannot write session {p}: {getattr(e, 'strerror', None) or e}") from None
        return con

    # -- sink --------------------------------------------------------------------------------
    def __call__(self, record) -> None:
        if self._closed or self.error:
            return
        self._queue.append(record)
        if isinstance(record, RunInfo) and self._record_tel:
            self._probe_device = str((record.device or {}).get("id") or (record.config or {}).get("device") or "cpu")
        if isinstance(record, (RunInfo, RunEnded)):
            self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self._probe_telemetry()
            self.flush()

    def _probe_telemetry(self) -> None:
        dev, self._probe_device = self._probe_device, None
        if dev is None:
            return
        try:
            from engine.run.telemetry import telemetry_status

            status = telemetry_status(dev)
        except Exception as e:  # never let a probe break the recording
            status = {"error": f"{type(e).__name__}: {e}"}
        self._queue.append(_Meta({"telemetry": status}))

    def flush(self) -> None:
        """Write everything queued so far in one transaction."""
        with self._db_lock:
            if self._con is None:
                return
            items = []
            while self._queue:
                items.append(self._queue.popleft())
            if not items or self.error:
                return
            try:
                self._con.execute("BEGIN")
                for rec in items:
                    self._write(rec)
                self._con.execute("COMMIT")
            except (sqlite3.Error, OSError, ValueError, TypeError) as e:
                try:
                    self._con.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                self.error = f"writing session {self.path} failed: {e}"

    def close(self) -> None:
        """Commit what is queued, stop the writer thread and leave a single self-contained file."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        self._probe_telemetry()
        self._queue.append(_HELD_MAPS)
        self.flush()
        with self._db_lock:
            con, self._con = self._con, None
            if con is None:
                return
            try:
                # fold the WAL back so the .lsession alone is the whole session when copied
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                con.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error:
                pass  # a reader still has it open: the WAL is folded in by the last one to close
            con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- writing (under the db lock, inside a transaction) -----------------------------------
    def _write(self, rec) -> None:
        if rec is _HELD_MAPS:
            self._write_held_feature_maps()
        elif isinstance(rec, _Meta):
            self._set_meta(**rec.values)
        elif isinstance(rec, TelemetryBatch):
            self._write_telemetry(rec)
        elif isinstance(rec, LayerTimes):
            self._write_layer_times(rec)
        elif isinstance(rec, StepRecord):
            self._con.execute("INSERT INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (
                rec.step, rec.t, rec.phase, rec.loss, rec.accuracy, rec.step_ms, rec.samples_per_s,
                rec.data_ms, rec.epoch, int(bool(rec.warmup)), int(bool(rec.profiled)), rec.peak_mem_bytes))
            self.rows_written += 1
        elif isinstance(rec, FeatureMap):
            self._write_feature_map(rec)
        elif isinstance(rec, EvalRecord):
            self._con.execute("INSERT INTO evals VALUES (?,?,?,?,?,?,?)", (
                rec.step, rec.t, rec.epoch, rec.split, rec.loss, rec.accuracy, rec.samples))
            self.rows_written += 1
        elif isinstance(rec, LogRecord):
            self._con.execute("INSERT INTO logs VALUES (?,?,?)", (rec.t, rec.level, rec.message))
            self.rows_written += 1
        elif isinstance(rec, RunInfo):
            self._write_info(rec)
        elif isinstance(rec, RunEnded):
            self._write_held_feature_maps()
            self._write_ended(rec)

    def _set_meta(self, **values) -> None:
        self._con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                              [(k, json.dumps(v)) for k, v in values.items()])

    def _write_info(self, info: RunInfo) -> None:
        from engine import __version__

        config = dict(info.config or {})
        net = config.pop("net", None)
        self._start_time = info.start_time
        self._set_meta(format=FORMAT_NAME, schema=SCHEMA_VERSION, created_by=f"layerscope {__version__}",
                       net=net, config=config, device=info.device, versions=info.versions,
                       host=info.host or socket.gethostname(), start_time=info.start_time,
                       end_time=None, status="running", error=None, message="", steps=0, extra={})
        self._con.execute("DELETE FROM layers")
        self._con.executemany("INSERT INTO layers VALUES (?,?,?,?,?,?,?,?)", [
            (r.idx, r.node_id, r.name, r.kind, _shape_text(r.out_shape), r.params, r.flops, r.act_bytes)
            for r in info.layers])
        for r in info.layers:
            self._node(r.node_id)

    def _write_ended(self, rec: RunEnded) -> None:
        end = (self._start_time + rec.t) if self._start_time is not None else time.time()
        self._set_meta(status=rec.status, message=rec.message,
                       error=rec.message if rec.status == "failed" else None,
                       end_time=end, end_t=rec.t, steps=rec.steps, extra=rec.extra or {})

    def _node(self, node_id: str) -> int:
        i = self._nodes.get(node_id)
        if i is None:
            i = len(self._nodes) + 1
            self._con.execute("INSERT INTO nodes VALUES (?, ?)", (i, node_id))
            self._nodes[node_id] = i
        return i

    def _write_layer_times(self, lt: LayerTimes) -> None:
        rec, first = self._next_rec, self._next_row
        rows = []
        for k, node_id in enumerate(lt.node_ids):
            rows.append((first + k, rec, self._node(node_id), _ns(_at(lt.fwd_ms, k)), _ns(_at(lt.bwd_ms, k)),
                         _at(lt.mem_bytes, k), _ns(_at(lt.fwd_start_ms, k)), _ns(_at(lt.bwd_start_ms, k)),
                         _at(lt.peak_bytes, k)))
        self._con.execute("INSERT INTO profiled_steps VALUES (?,?,?,?,?)", (rec, lt.step, lt.t, first, len(rows)))
        self._con.executemany("INSERT INTO layer_times_ns VALUES (?,?,?,?,?,?,?,?,?)", rows)
        self._next_rec += 1
        self._next_row += len(rows)
        self.rows_written += len(rows) + 1

    def _write_telemetry(self, batch: TelemetryBatch) -> None:
        rows = []
        for s in batch.samples:
            key = (s.source, s.metric)
            sid = self._series.get(key)
            if sid is None:
                sid = len(self._series) + 1
                self._con.execute("INSERT INTO telemetry_series VALUES (?,?,?)", (sid, s.source, s.metric))
                self._series[key] = sid
            rows.append((s.t, sid, float(s.value)))
        self._con.executemany("INSERT INTO telemetry_values VALUES (?,?,?)", rows)
        self.rows_written += len(rows)

    def _write_feature_map(self, fm: FeatureMap, force: bool = False) -> None:
        last = self._fm_last_t.get(fm.node_id)
        if not force and last is not None and fm.t - last < self.feature_interval_s:
            self._fm_held[fm.node_id] = fm
            return
        self._fm_held.pop(fm.node_id, None)
        self._fm_last_t[fm.node_id] = fm.t
        data, codec = bytes(fm.data), "raw"
        packed = zlib.compress(data, 1)
        if len(packed) < len(data) * 0.9:
            data, codec = packed, "zlib"
        self._con.execute("INSERT INTO feature_maps VALUES (?,?,?,?,?,?,?,?)", (
            fm.step, fm.node_id, _shape_text(fm.shape), data, fm.t, fm.lo, fm.hi, codec))
        self.rows_written += 1

    def _write_held_feature_maps(self) -> None:
        for fm in list(self._fm_held.values()):
            self._write_feature_map(fm, force=True)


# -- reading ---------------------------------------------------------------------------------

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


def _check_is_session(p: Path) -> tuple[sqlite3.Connection, dict]:
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


def open_session(path) -> "SessionReader":
    """Open a session file for reading; SessionError (one line) for a missing, foreign, damaged or
    too-new file."""
    return SessionReader(path)


class SessionReader:
    """Reads a session back as the records the live run produced (``records()`` replays them)."""

    def __init__(self, path):
        self.path = Path(path)
        self._con, self.meta = _check_is_session(self.path)
        self._lock = threading.Lock()
        self.version = SCHEMA_VERSION
        self._node_names = dict(self._query("SELECT id, node_id FROM nodes"))

    def _query(self, sql: str, args=()) -> list:
        with self._lock:
            try:
                return self._con.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise SessionError(f"{self.path} cannot be read ({str(e).splitlines()[0]})") from None

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def refresh(self) -> None:
        """Re-read ``meta`` and the node table (for a session another process is still writing)."""
        self.meta = {k: json.loads(v) for k, v in self._query("SELECT key, value FROM meta")}
        self._node_names = dict(self._query("SELECT id, node_id FROM nodes"))

    # -- facts -------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        """"running" (still being written, or the writer was killed), "completed", "stopped", "failed"."""
        return self.meta.get("status") or "running"

    @property
    def info(self) -> RunInfo:
        config = dict(self.meta.get("config") or {})
        if self.meta.get("net") is not None:
            config["net"] = self.meta["net"]
        return RunInfo(config=config, device=self.meta.get("device") or {},
                       versions=self.meta.get("versions") or {}, host=self.meta.get("host") or "",
                       start_time=self.meta.get("start_time") or 0.0, layers=self.layers())

    def layers(self) -> list[LayerRow]:
        return [LayerRow(idx, node_id, name, kind, tuple(json.loads(shape or "[]")), params, flops, act)
                for idx, node_id, name, kind, shape, params, flops, act
                in self._query("SELECT * FROM layers ORDER BY idx")]

    def steps(self, phase: str | None = None) -> list[StepRecord]:
        sql = "SELECT * FROM steps" + (" WHERE phase = ?" if phase else "") + " ORDER BY rowid"
        return [StepRecord(step, t, ph, loss, acc, step_ms, sps, data_ms, epoch, bool(warm), bool(prof), peak)
                for step, t, ph, loss, acc, step_ms, sps, data_ms, epoch, warm, prof, peak
                in self._query(sql, (phase,) if phase else ())]

    def layer_times(self, step_from: int | None = None, step_to: int | None = None) -> list[LayerTimes]:
        """Per-node times of the profiled steps with ``step_from <= step <= step_to``."""
        return list(self._iter_layer_times(step_from, step_to))

    def _iter_layer_times(self, step_from=None, step_to=None, chunk: int = 256) -> Iterator[LayerTimes]:
        cond, args = [], []
        if step_from is not None:
            cond.append("step >= ?")
            args.append(step_from)
        if step_to is not None:
            cond.append("step <= ?")
            args.append(step_to)
        recs = self._query("SELECT rec, step, t, first_row, n FROM profiled_steps"
                           + (" WHERE " + " AND ".join(cond) if cond else "") + " ORDER BY rec", args)
        names = self._node_names
        for i in range(0, len(recs), chunk):
            part = recs[i:i + chunk]
            lo, hi = part[0][3], part[-1][3] + part[-1][4] - 1
            rows = self._query("SELECT row, node, fwd_ns, bwd_ns, mem_bytes, fwd_start_ns, bwd_start_ns, "
                               "peak_bytes FROM layer_times_ns WHERE row BETWEEN ? AND ? ORDER BY row", (lo, hi))
            if any(r[1] not in names for r in rows):  # nodes added since we opened (live file)
                self._node_names = names = dict(self._query("SELECT id, node_id FROM nodes"))
            k = 0
            for rec, step, t, first, n in part:
                while k < len(rows) and rows[k][0] < first:
                    k += 1
                j = k
                while j < len(rows) and rows[j][0] < first + n:
                    j += 1
                got, k = rows[k:j], j
                cols = list(zip(*got)) if got else [()] * 8
                peaks = list(cols[7])
                yield LayerTimes(step=step, t=t, node_ids=[names.get(k, str(k)) for k in cols[1]],
                                 fwd_ms=[None if v is None else v / _NS for v in cols[2]],
                                 bwd_ms=[None if v is None else v / _NS for v in cols[3]],
                                 fwd_start_ms=[None if v is None else v / _NS for v in cols[5]],
                                 bwd_start_ms=[None if v is None else v / _NS for v in cols[6]],
                                 mem_bytes=list(cols[4]),
                                 peak_bytes=peaks if any(v is not None for v in peaks) else [])

    def _count(self, table: str) -> int:
        return self._query(f"SELECT count(*) FROM {table}")[0][0]

    def profiled_step_count(self) -> int:
        return self._count("profiled_steps")

    def telemetry_series(self) -> list[tuple[str, str]]:
        """Every (source, metric) recorded, e.g. ("nvml:0", "power_w")."""
        return [(s, m) for s, m in self._query("SELECT source, metric FROM telemetry_series ORDER BY id")]

    def telemetry(self, source: str | None = None, metric: str | None = None) -> list[TelemetrySample]:
        """Telemetry samples in time order, optionally of one source and/or metric."""
        cond, args = [], []
        if source is not None:
            cond.append("s.source = ?")
            args.append(source)
        if metric is not None:
            cond.append("s.metric = ?")
            args.append(metric)
        sql = ("SELECT v.t, s.source, s.metric, v.value FROM telemetry_values v JOIN telemetry_series s "
               "ON s.id = v.series" + (" WHERE " + " AND ".join(cond) if cond else "") + " ORDER BY v.rowid")
        return [TelemetrySample(t, s, m, v) for t, s, m, v in self._query(sql, args)]

    def _iter_telemetry(self, chunk: int = 20000) -> Iterator[TelemetrySample]:
        series = {i: (s, m) for i, s, m in self._query("SELECT id, source, metric FROM telemetry_series")}
        last = 0
        while True:
            rows = self._query("SELECT rowid, t, series, value FROM telemetry_values WHERE rowid > ? "
                               "ORDER BY rowid LIMIT ?", (last, chunk))
            for rowid, t, sid, value in rows:
                s, m = series.get(sid, ("?", "?"))
                yield TelemetrySample(t, s, m, value)
            if len(rows) < chunk:
                return
            last = rows[-1][0]

    def series(self, source: str, metric: str) -> tuple[list[float], list[float]]:
        """One telemetry series as (times, values); both empty when it was not recorded."""
        rows = self._query("SELECT v.t, v.value FROM telemetry_values v JOIN telemetry_series s ON s.id = v.series "
                           "WHERE s.source = ? AND s.metric = ? ORDER BY v.rowid", (source, metric))
        return [r[0] for r in rows], [r[1] for r in rows]

    def feature_maps(self, node_id: str | None = None) -> list[FeatureMap]:
        sql = ("SELECT step, t, node_id, shape, data, lo, hi, codec FROM feature_maps"
               + (" WHERE node_id = ?" if node_id else "") + " ORDER BY rowid")
        out = []
        for step, t, nid, shape, data, lo, hi, codec in self._query(sql, (node_id,) if node_id else ()):
            try:
                raw = zlib.decompress(data) if codec == "zlib" else bytes(data)
            except zlib.error:
                raise SessionError(f"{self.path} is damaged (a feature map of {nid} cannot be decoded)") from None
            out.append(FeatureMap(step, t, nid, tuple(json.loads(shape)), raw, lo, hi))
        return out

    def evals(self) -> list[EvalRecord]:
        return [EvalRecord(*r) for r in self._query(
            "SELECT step, t, epoch, split, loss, accuracy, samples FROM evals ORDER BY rowid")]

    def logs(self) -> list[LogRecord]:
        return [LogRecord(*r) for r in self._query("SELECT t, level, message FROM logs ORDER BY rowid")]

    def ended(self) -> RunEnded | None:
        """The run's end record, or None when it never ended (still running, or the process died)."""
        m = self.meta
        if m.get("status") in (None, "running"):
            return None
        t = m.get("end_t")
        if t is None and m.get("end_time") is not None:
            t = m["end_time"] - (m.get("start_time") or 0.0)
        return RunEnded(t=t or 0.0, status=m["status"], message=m.get("message") or "",
                        steps=m.get("steps") or 0, extra=m.get("extra") or {})

    def records(self) -> Iterator:
        """Every record in time order: RunInfo first, RunEnded last (if the run ended). Telemetry
        comes back as one TelemetryBatch per sampler tick. A generator, so a long session is never
        held in memory at once."""
        yield self.info

        def batches():
            cur, cur_t = [], None
            for s in self._iter_telemetry():
                if cur and s.t != cur_t:
                    yield TelemetryBatch(cur)
                    cur = []
                cur.append(s)
                cur_t = s.t
            if cur:
                yield TelemetryBatch(cur)

        streams = [self.steps(), self._iter_layer_times(), batches(), self.feature_maps(), self.evals(),
                   self.logs()]

        def key(r):
            return r.samples[0].t if isinstance(r, TelemetryBatch) else r.t

        yield from heapq.merge(*streams, key=key)
        end = self.ended()
        if end is not None:
            yield end
