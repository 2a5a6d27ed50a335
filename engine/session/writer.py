"""Writing a session: ``SessionWriter``, the record sink that records a run into a session file.

It queues records and a background thread writes them in one transaction at most every
``flush_interval`` seconds (and at once for ``RunInfo`` and ``RunEnded``), in WAL mode, so a killed
process leaves a readable file holding everything up to the last batch with status ``running``.
The layout it writes is ``engine.session.schema`` (documented in ``docs/session-format.md``).
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sqlite3
import threading
import time
import zlib
from collections import deque
from pathlib import Path

from engine.records import (CommTimes, EvalRecord, FeatureMap, LayerEnergy, LayerTimes, LogRecord, RunEnded, RunInfo,
                            StepRecord, TelemetryBatch, TelemetryStatus)
from engine.session.aggregates import write_aggregates
from engine.session.lock import SessionClaim, adopt_claim
from engine.session.schema import (COMM_TABLE_SQL, FORMAT_NAME, SCHEMA_SQL, SCHEMA_VERSION, SessionError, ns_from_ms,
                                   shape_text)


def _column(values, n: int) -> list:
    """``values`` as a list of exactly ``n`` (None where the record has fewer)."""
    values = list(values or ())
    return values[:n] if len(values) >= n else values + [None] * (n - len(values))


def _ns_column(values_ms, n: int) -> list:
    """``ns_from_ms`` of each of ``_column(values_ms, n)``, in one pass."""
    return [None if v is None else int(round(v * 1_000_000)) for v in _column(values_ms, n)]


_HELD_MAPS = object()  # queue marker: store the feature maps held back by the rate limit


class SessionWriteError(SessionError):
    """The session file could not be written (disk full, I/O error): the recording has stopped."""


class SessionWriter:
    """A record sink writing one run into a session file, incrementally and thread-safely.

    ``writer(record)`` only appends to a queue (no disk I/O in the caller); a writer thread
    commits the queue every ``flush_interval`` seconds, and ``RunInfo``/``RunEnded`` are committed
    before the call returns. Feature maps are kept at most one per ``feature_interval_s`` per node
    (the last one of the run is always kept) and zlib-compressed, so long runs stay small.
    Call ``close()`` when done (also a context manager).

    The file is claimed first (``engine.session.lock``): a file another writer holds is refused
    ("… is being written by process N"), an existing session is replaced only with ``force=True``
    and any other existing file never (``SessionError``). A claim taken earlier in this process
    with ``claim_session`` (the CLI does, to refuse before the run) is adopted. When a write fails
    (disk full, I/O error) ``error`` says so and which steps the file holds, and the next
    ``writer(record)`` raises ``SessionWriteError``. Every ``checkpoint_interval_s`` seconds the
    WAL is checkpointed into the main file. ``close()`` stores the per-node and per-step
    aggregates a summary reads (``engine.session.aggregates.write_aggregates``; a few SQL passes,
    ~4 s per million layer rows; ``aggregates=False`` leaves them out, and readers compute them).

    A ``TelemetryStatus`` record (the run's own sampler status, probed once: which sources and
    metrics were read and why the others were absent) is stored as meta ``telemetry``; the last
    one written wins.
    """

    def __init__(self, path, *, flush_interval: float = 0.5, feature_interval_s: float = 1.0,
                 force: bool = False, checkpoint_interval_s: float = 5.0, aggregates: bool = True):
        self.path = Path(path)
        self.aggregates = aggregates  # store the per-node aggregates at close (engine.session.aggregates)
        self.flush_interval = float(flush_interval)
        self.checkpoint_interval_s = float(checkpoint_interval_s)
        self._last_checkpoint = time.monotonic()
        self._steps_done = 0  # highest step number committed to the file
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
        # the file is ours alone while we write it (a second writer is refused, see lock.py)
        self._claim: SessionClaim = adopt_claim(self.path, force=force)
        try:
            self._con = self._create()
        except BaseException:
            self._claim.release()
            raise
        self._thread = threading.Thread(target=self._loop, name="layerscope-session-writer", daemon=True)
        self._thread.start()

    # -- setup -------------------------------------------------------------------------------
    def _create(self) -> sqlite3.Connection:
        p = self.path
        try:
            con = sqlite3.connect(str(p), check_same_thread=False, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: commits survive a killed process without an fsync per batch
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript("BEGIN;" + SCHEMA_SQL + "COMMIT;")
            con.execute("INSERT OR REPLACE INTO meta VALUES ('writer_pid', ?)", (json.dumps(os.getpid()),))
        except (OSError, sqlite3.Error) as e:
            raise SessionError(f"cannot write session {p}: {getattr(e, 'strerror', None) or e}") from None
        return con

    # -- sink --------------------------------------------------------------------------------
    def __call__(self, record) -> None:
        if self.error:
            # raised so the run hears of it (it drops this sink and logs why); the claim holds it too
            raise SessionWriteError(self.error)
        if self._closed:
            return
        self._queue.append(record)
        if isinstance(record, (RunInfo, RunEnded)):
            self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()
            if time.monotonic() - self._last_checkpoint >= self.checkpoint_interval_s:
                self.checkpoint()

    def checkpoint(self) -> None:
        """Copy the committed pages from the ``-wal`` into the main file (done every
        ``checkpoint_interval_s`` seconds by the writer thread), so that a copy of the main file
        alone lacks at most that much. Passive: never waits for a reader."""
        with self._db_lock:
            self._last_checkpoint = time.monotonic()
            if self._con is None or self.error:
                return
            try:
                self._con.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as e:
                self._failed(e)

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
                last = self._steps_done
                for rec in items:
                    self._write(rec)
                    if isinstance(rec, StepRecord) and rec.step is not None:
                        last = max(last, int(rec.step))
                self._con.execute("COMMIT")
                self._steps_done = last
            except (sqlite3.Error, OSError, ValueError, TypeError) as e:
                try:
                    self._con.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                self._failed(e)

    def _failed(self, e: BaseException) -> None:
        """Note the first write failure (later records are dropped) in words a person can act on."""
        if self.error:
            return
        held = (f"the session holds steps 1..{self._steps_done}" if self._steps_done
                else "the session holds no steps")
        full = (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or \
            (isinstance(e, sqlite3.Error) and ("disk is full" in str(e) or "SQLITE_FULL" in str(e)))
        if full:
            self.error = f"disk full while writing {self.path}; {held}; free some space and run again"
        else:
            self.error = f"writing session {self.path} failed ({getattr(e, 'strerror', None) or e}); {held}"
        self._claim.error = self.error

    def close(self) -> None:
        """Commit what is queued, stop the writer thread and leave a single self-contained file."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        self._queue.append(_HELD_MAPS)
        self.flush()
        with self._db_lock:
            con, self._con = self._con, None
            if con is None:
                self._claim.release()
                return
            try:
                # fold the WAL back so the .lsession alone is the whole session when copied
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                con.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error:
                pass  # a reader still has it open: the WAL is folded in by the last one to close
            if self.aggregates and not self.error:
                # the per-node figures a summary reads, once (not stored when the file is still in
                # WAL mode: readers then compute them from the rows)
                write_aggregates(con, self.path)
            con.close()
            self._claim.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- writing (under the db lock, inside a transaction) -----------------------------------
    def _write(self, rec) -> None:
        if rec is _HELD_MAPS:
            self._write_held_feature_maps()
        elif isinstance(rec, TelemetryStatus):  # the run's own sampler status, probed once
            self._set_meta(telemetry=rec.status)
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
        elif isinstance(rec, LayerEnergy):
            self._write_layer_energy(rec)
        elif isinstance(rec, CommTimes):
            self._write_comm(rec)

    def _write_comm(self, rec: CommTimes) -> None:
        """A data-parallel step's buckets (table ``comm_buckets``, made with the first one)."""
        if not getattr(self, "_comm_table", False):
            self._con.execute(COMM_TABLE_SQL)
            self._comm_table = True
        self._con.executemany("INSERT INTO comm_buckets VALUES (?,?,?,?,?,?,?)", [
            (rec.step, rec.t, b, ns_from_ms(s), ns_from_ms(e), n, json.dumps(nodes))
            for b, s, e, n, nodes in zip(rec.bucket, rec.start_ms, rec.end_ms, rec.bytes, rec.nodes)])
        self.rows_written += len(rec.bucket)

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
        self._con.executemany("INSERT INTO layers VALUES (?,?,?,?,?,?,?,?,?)", [
            (r.idx, r.node_id, r.name, r.kind, shape_text(r.out_shape), r.params, r.flops, r.act_bytes,
             r.bwd_flops)
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
        n = len(lt.node_ids)
        nodes = self._nodes
        ids = [nodes.get(x) or self._node(x) for x in lt.node_ids]
        faults = _column(lt.minor_faults, n)
        # stored with each row of a step whose faults were counted
        fault_ns = float(lt.fault_ns) if lt.minor_faults and lt.fault_ns is not None else None
        # column by column (the writer thread shares the GIL with the run: few Python calls a row)
        rows = list(zip(range(first, first + n), [rec] * n, ids, _ns_column(lt.fwd_ms, n), _ns_column(lt.bwd_ms, n),
                        _column(lt.mem_bytes, n), _ns_column(lt.fwd_start_ms, n), _ns_column(lt.bwd_start_ms, n),
                        _column(lt.peak_bytes, n), [None if f is None else int(f) for f in faults],
                        [None if f is None else fault_ns for f in faults], _column(lt.saved_bytes, n),
                        _column(lt.out_bytes, n)))
        self._con.execute("INSERT INTO profiled_steps VALUES (?,?,?,?,?)", (rec, lt.step, lt.t, first, len(rows)))
        self._con.executemany("INSERT INTO layer_times_ns (row, rec, node, fwd_ns, bwd_ns, mem_bytes, fwd_start_ns, "
                              "bwd_start_ns, peak_bytes, minor_faults, fault_ns, saved_bytes, out_bytes) "
                              "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        if lt.memory_events:
            self._write_memory_events(rec, lt)
        self._next_rec += 1
        self._next_row += len(rows)
        self.rows_written += len(rows) + 1

    def _write_memory_events(self, rec: int, lt: LayerTimes) -> None:
        """One row per timeline event of a step (``LayerTimes.memory_events``): CUDA events
        carry their time, CPU ones the node and phase they happen at the end of."""
        rows = []
        for e in lt.memory_events:
            if len(e) == 3:  # CUDA allocator history: (t_ms, owner, delta)
                rows.append((rec, lt.step, lt.memory_source, ns_from_ms(e[0]), None, None, e[1], int(e[2])))
            else:  # saved-tensor accounting: (at_node, phase, owner, delta)
                rows.append((rec, lt.step, lt.memory_source, None, e[0], e[1], e[2], int(e[3])))
        self._con.executemany("INSERT INTO memory_events VALUES (?,?,?,?,?,?,?,?)", rows)
        self.rows_written += len(rows)

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
        self._con.execute("INSERT INTO feature_maps VALUES (?,?,?,?,?,?,?,?,?,?)", (
            fm.step, fm.node_id, shape_text(fm.shape), data, fm.t, fm.lo, fm.hi, codec, fm.first_channel,
            fm.channels_total))
        self.rows_written += 1

    def _write_held_feature_maps(self) -> None:
        for fm in list(self._fm_held.values()):
            self._write_feature_map(fm, force=True)

    def _write_layer_energy(self, rec: LayerEnergy) -> None:
        """The per-layer energy replay: its raw windows into ``layer_energy`` (idle windows as node
        '' and pass 'idle'), everything else (counter, parameters, reason) as meta ``layer_energy``."""
        data = dict(rec.data)
        rows = [("", "idle", k, w["seconds"], w["joules"], w.get("reps", 0), w.get("updates"), None, w.get("edge_s"))
                for k, w in enumerate(data.pop("idle", None) or [])]
        for entry in data.pop("layers", None) or []:
            rows += [(entry["node_id"], entry["pass"], k, w["seconds"], w["joules"], w["reps"], w.get("updates"),
                      entry.get("rep_ms"), w.get("edge_s")) for k, w in enumerate(entry["windows"])]
        self._con.execute("CREATE TABLE IF NOT EXISTS layer_energy(node_id TEXT NOT NULL, pass TEXT NOT NULL, "
                          "window INTEGER, seconds REAL, joules REAL, reps REAL, updates INTEGER, rep_ms REAL, edge_s REAL)")
        self._con.execute("DELETE FROM layer_energy")
        self._con.executemany("INSERT INTO layer_energy VALUES (?,?,?,?,?,?,?,?,?)", rows)
        self._set_meta(layer_energy={**data, "t": rec.t})
        self.rows_written += len(rows)
