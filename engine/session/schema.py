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
import math
import shutil
import sqlite3
import tempfile
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
                            bwd_start_ns INTEGER, peak_bytes INTEGER, minor_faults INTEGER,
                            fault_ns REAL, saved_bytes INTEGER, out_bytes INTEGER);
CREATE VIEW layer_times AS
    SELECT p.step AS step, n.node_id AS node_id, l.fwd_ns / 1e6 AS fwd_ms, l.bwd_ns / 1e6 AS bwd_ms,
           l.mem_bytes AS mem_bytes, l.fwd_start_ns / 1e6 AS fwd_start_ms,
           l.bwd_start_ns / 1e6 AS bwd_start_ms, l.peak_bytes AS peak_bytes, p.t AS t,
           l.minor_faults AS minor_faults, l.fault_ns AS fault_ns
    FROM layer_times_ns l JOIN profiled_steps p ON p.rec = l.rec JOIN nodes n ON n.id = l.node;
CREATE TABLE telemetry_series(id INTEGER PRIMARY KEY, source TEXT NOT NULL, metric TEXT NOT NULL,
                              UNIQUE(source, metric));
CREATE TABLE telemetry_values(t REAL, series INTEGER, value REAL);
CREATE VIEW telemetry AS
    SELECT v.t AS t, s.source AS source, s.metric AS metric, v.value AS value
    FROM telemetry_values v JOIN telemetry_series s ON s.id = v.series;
CREATE TABLE feature_maps(step INTEGER, node_id TEXT, shape TEXT, data BLOB, t REAL, lo REAL,
                          hi REAL, codec TEXT, first_channel INTEGER, channels_total INTEGER);
CREATE TABLE evals(step INTEGER, t REAL, epoch INTEGER, split TEXT, loss REAL, accuracy REAL,
                   samples INTEGER);
CREATE TABLE logs(t REAL, level TEXT, message TEXT);
CREATE TABLE memory_events(rec INTEGER, step INTEGER, source TEXT, t_ns INTEGER, at_node TEXT,
                           phase TEXT, owner TEXT, delta_bytes INTEGER);
CREATE TABLE layer_energy(node_id TEXT NOT NULL, pass TEXT NOT NULL, window INTEGER, seconds REAL,
                          joules REAL, reps REAL, updates INTEGER, rep_ms REAL, edge_s REAL);
CREATE TABLE node_stats(node INTEGER, col TEXT, n INTEGER, sum INTEGER, min INTEGER, max INTEGER, at TEXT,
                        PRIMARY KEY(node, col));
PRAGMA user_version = {SCHEMA_VERSION};
"""

# made by the writer with a data-parallel run's first CommTimes record (absent in other sessions)
COMM_TABLE_SQL = """CREATE TABLE IF NOT EXISTS comm_buckets(step INTEGER, t REAL, bucket INTEGER, start_ns INTEGER,
                                                 end_ns INTEGER, bytes INTEGER, nodes TEXT)"""


class SessionError(LayerScopeError):
    """A session file that cannot be written or read (missing, not a session, damaged, too new)."""



def ns_from_ms(ms):
    """Milliseconds (float or None) as whole nanoseconds, the unit the ``*_ns`` columns hold."""
    return None if ms is None else int(round(ms * _NS))


def read_meta(con) -> dict:
    """The ``meta`` table as a dict: each value JSON-decoded, or kept as its text when it is not
    JSON (``meta_problem`` says whether what a reader needs is sound)."""
    meta = {}
    for k, v in con.execute("SELECT key, value FROM meta"):
        try:
            meta[k] = json.loads(v)
        except (TypeError, ValueError):
            meta[k] = v
    return meta


def ms_from_ns(ns):
    """Nanoseconds (int or None) from a ``*_ns`` column as float milliseconds.

    SessionError for anything else stored there (text, a blob, an infinite value): the
    per-layer table is too long to scan when a session is opened, so its values are checked here,
    as they are read."""
    if ns is None:
        return None
    if isinstance(ns, int) and not isinstance(ns, bool):
        return ns / _NS
    if isinstance(ns, float) and math.isfinite(ns):
        return ns / _NS
    shown = ns if isinstance(ns, (str, float)) else f"{len(ns)}-byte blob" if isinstance(ns, bytes) else type(ns).__name__
    raise SessionError(f"a session cannot be read: its layer_times_ns table holds {shown!r}, not a whole "
                       "number of nanoseconds")


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
    """A reason the file cannot be a whole SQLite database, from its 100-byte header and size.

    A non-empty ``NAME-wal`` beside the file may hold pages (even the first) the main file does
    not have yet (a writer that was killed, or stopped by a full disk): then only a wrong magic
    is a sure sign, and SQLite itself judges the rest when it replays the WAL.
    """
    size = p.stat().st_size
    wal = Path(f"{p}-wal")
    has_wal = wal.is_file() and wal.stat().st_size > 0
    if size == 0 and not has_wal:
        return f"{p} is empty, not a LayerScope session"
    with open(p, "rb") as f:
        head = f.read(100)
    if head and not _SQLITE_MAGIC.startswith(head[:16]):
        return f"{p} is not a LayerScope session (not an SQLite database)"
    if has_wal:
        return None
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


class _Connection(sqlite3.Connection):
    """A connection that may read a private copy of the session; the copy goes when it closes."""

    copy_dir: str | None = None

    def close(self) -> None:
        super().close()
        if self.copy_dir:
            shutil.rmtree(self.copy_dir, ignore_errors=True)
            self.copy_dir = None

    def __del__(self):
        if self.copy_dir:
            shutil.rmtree(self.copy_dir, ignore_errors=True)


def _uri(p: Path) -> str:
    return "file:" + p.resolve().as_posix().replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def _try(uri: str) -> tuple[_Connection | None, sqlite3.Error | None]:
    try:
        con = sqlite3.connect(uri, uri=True, check_same_thread=False, factory=_Connection)
    except sqlite3.Error as e:
        return None, e
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opening is lazy: force it
    except sqlite3.Error as e:
        con.close()
        return None, e
    return con, None


def _connect(p: Path) -> sqlite3.Connection:
    """A connection that sees everything committed, WAL included.

    Read-only first (works when the ``-shm`` file exists or can be made), so that reading never
    writes into a session: a WAL left by a killed writer is read, not folded into the file;
    then read-write (SQLite needs it to rebuild a WAL index it cannot keep otherwise). A session in a read-only folder whose ``-wal`` lies
    beside it without a ``-shm`` opens neither way, and ``immutable=1`` would ignore the WAL: then
    the file and its WAL are copied into a private temporary folder, read there and removed when
    the connection closes. ``mode=rw``/``ro`` never create a file. A file SQLite rejects the same
    way every time (not a database, malformed) raises that ``sqlite3.Error``.
    """
    uri = _uri(p)
    err = None
    for mode in ("?mode=ro", "?mode=rw"):
        con, err = _try(uri + mode)
        if con is not None:
            return con
        if isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.OperationalError):
            raise err  # the content is wrong (not a database, malformed): a copy would not help
    tmp = tempfile.mkdtemp(prefix="layerscope-session-")
    try:
        copy = Path(tmp) / p.name
        shutil.copyfile(p, copy)
        if Path(f"{p}-wal").is_file():
            shutil.copyfile(f"{p}-wal", f"{copy}-wal")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SessionError(f"{p} cannot be opened here and cannot be copied to read it: "
                           f"{e.strerror or e}") from None
    con, err2 = _try(_uri(copy) + "?mode=rw")
    if con is None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise err2 or err
    con.copy_dir = tmp
    return con


# meta keys whose value must be a JSON object (or null), a finite number, or text; and the keys
# inside those objects the readers compute with
_META_OBJECTS = ("config", "device", "versions", "extra", "telemetry", "layer_energy")
_META_NUMBERS = ("start_time", "end_time", "end_t", "steps")
_META_TEXTS = ("status", "message", "error", "host")
_INNER_NUMBERS = {"config": ("batch_size", "steps", "warmup", "epochs", "profile_every", "threads", "seed", "lr",
                             "momentum", "telemetry_hz", "checkpoint_every"),
                  "device": ("memory_total", "memory_free"),
                  "extra": ("test_accuracy", "test_loss", "checkpoint_step")}
_INNER_TEXTS = {"config": ("mode", "precision", "device", "dataset")}
# columns that say where a row belongs: a row without them cannot be placed
# one row per node and profiled step (millions in a long run): a scan at open would cost more
# than the summary itself, so its values are checked as they are read (``ms_from_ns``)
_SCANNED_WHEN_READ = ("layer_times_ns",)
_REQUIRED = {"steps": ("step",), "profiled_steps": ("step", "first_row", "n"), "layer_times_ns": ("rec", "node"),
             "telemetry_values": ("t", "series"), "layers": ("node_id",), "nodes": ("node_id",)}


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def meta_problem(meta: dict) -> str | None:
    """Why a session's meta values cannot be read (wrong JSON type, non-finite number), or None."""
    for k in _META_OBJECTS:
        if meta.get(k) is not None and not isinstance(meta[k], dict):
            return f"meta '{k}' is not a JSON object"
    if meta.get("net") is not None and not isinstance(meta["net"], (dict, str)):
        return "meta 'net' is not a net spec"
    for k in _META_NUMBERS:
        if meta.get(k) is not None and not _finite_number(meta[k]):
            return f"meta '{k}' is {meta[k]!r}, not a finite number"
    for k in _META_TEXTS:
        if meta.get(k) is not None and not isinstance(meta[k], str):
            return f"meta '{k}' is not text"
    for obj, keys in _INNER_NUMBERS.items():
        for k in keys:
            v = (meta.get(obj) or {}).get(k)
            if v is not None and not _finite_number(v):
                return f"meta '{obj}.{k}' is {v!r}, not a finite number"
    for obj, keys in _INNER_TEXTS.items():
        for k in keys:
            v = (meta.get(obj) or {}).get(k)
            if v is not None and not isinstance(v, str):
                return f"meta '{obj}.{k}' is {v!r}, not text"
    return None


def _value_problem(con: sqlite3.Connection) -> str | None:
    """The first stored value the readers cannot take: text or a blob in a numeric column, an
    infinite value in an INTEGER column (a count or a size), an empty placing column (a step
    without its number), a shape that is not a JSON list of whole numbers. One query per table,
    which SQLite ends at the first hit; ``layer_times_ns`` is checked as it is read instead. Non-finite values in REAL columns (an ``inf`` step time)
    are readable: the figures leave them out and the exports write them as null."""
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        if table in _SCANNED_WHEN_READ:
            continue
        cols = [(r[1], (r[2] or "").upper()) for r in con.execute(f'PRAGMA table_info("{table}")')]
        num = [c for c, t in cols if t in ("INTEGER", "REAL")]
        ints = {c for c, t in cols if t == "INTEGER"}
        need = [c for c in _REQUIRED.get(table, ()) if c in dict(cols)]
        # SQLite orders numbers < text < blobs: `c >= ''` finds text and blobs, `c > 9.3e18` those
        # and numbers no 64-bit integer reaches (inf); cheaper than typeof() on every value
        conds = [f"\"{c}\" >= ''" for c in num if c not in ints]
        conds += [f"\"{c}\" > 9.3e18 OR \"{c}\" < -9.3e18" for c in ints]
        conds += [f"\"{c}\" IS NULL" for c in need]
        if not conds:
            continue
        shown_cols = list(dict.fromkeys(num + need))
        row = con.execute(f'SELECT {", ".join(chr(34) + c + chr(34) for c in shown_cols)} FROM "{table}" '
                          f"WHERE {' OR '.join(conds)} LIMIT 1").fetchone()
        if row is None:
            continue
        for c, v in zip(shown_cols, row):
            if v is None and c in need:
                return f"{table}.{c} is empty in a row (NULL where a value is required)"
            if isinstance(v, (str, bytes)):
                shown = v if isinstance(v, str) else f"{len(v)}-byte blob"
                return f"{table}.{c} holds {shown!r}, not a number"
            if c in ints and isinstance(v, float) and abs(v) > 9.3e18:
                return f"{table}.{c} holds {v!r}, not a whole number"
    for table, col in (("layers", "out_shape"), ("feature_maps", "shape")):
        if table not in tables:
            continue
        for (text,) in con.execute(f"SELECT DISTINCT {col} FROM {table}"):
            if text is None and table == "layers":
                continue
            try:
                shape = json.loads(text)
            except (TypeError, ValueError):
                return f"{table}.{col} holds {text!r}, not a JSON list of sizes"
            if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                      for d in shape):
                return f"{table}.{col} holds {text!r}, not a JSON list of sizes"
    return None


def change_counter(path) -> int | None:
    """The SQLite file change counter (header bytes 24..27) of ``path``; None when unreadable.
    In rollback-journal mode (a closed session's) every committed write moves it by one."""
    try:
        with open(path, "rb") as f:
            head = f.read(28)
    except OSError:
        return None
    return int.from_bytes(head[24:28], "big") if len(head) == 28 else None


def closed_unchanged(p, meta: dict) -> bool:
    """Whether ``p`` is a session its writer closed (meta ``aggregates``, stored in its last
    transaction, names the change counter the file had then) and nothing has written to since:
    the same counter now and no ``-wal`` beside it."""
    tag = meta.get("aggregates")
    if not isinstance(tag, dict) or not isinstance(tag.get("change_counter"), int):
        return False
    wal = Path(f"{p}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return False
    return change_counter(p) == tag["change_counter"]


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
        meta = read_meta(con)
        if app_id != APPLICATION_ID and meta.get("format") != FORMAT_NAME:
            raise SessionError(f"{p} is an SQLite database but not a LayerScope session")
        if version > SCHEMA_VERSION:
            raise SessionError(f"{p} was written by a newer LayerScope (session format v{version}; this "
                               f"version reads up to v{SCHEMA_VERSION}); update LayerScope to open it")
        if version < 1:
            raise SessionError(f"{p} is an incomplete LayerScope session (no schema version)")
        # a full read of the file: skipped for a session its writer closed and nothing wrote
        # since (a damaged page there is still refused, in one line, when a reader reaches it)
        check = "ok" if closed_unchanged(p, meta) else con.execute("PRAGMA quick_check(1)").fetchone()[0]
        if check != "ok":
            raise SessionError(f"{p} is damaged ({check.splitlines()[0]}); the session cannot be read")
        problem = meta_problem(meta) or _value_problem(con)
        if problem:
            raise SessionError(f"{p} holds a value LayerScope cannot read ({problem}); the session cannot be read")
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
