"""Reading a session: ``open_session`` gives a ``SessionReader`` returning the same record types
the live run produced, from a finished session or one another process is still writing.

Reading never executes anything stored in the file; a missing, foreign, damaged or too-new file
is a one-line ``SessionError``.
"""
from __future__ import annotations

import bisect
import heapq
import json
import sqlite3
import threading
import zlib
from pathlib import Path
from typing import Iterator

from engine.records import (EvalRecord, FeatureMap, LayerRow, LayerTimes, LogRecord, RunEnded, RunInfo,
                                StepRecord, TelemetryBatch, TelemetrySample, LayerEnergy)
from engine.session.aggregates import SessionAggregates
from engine.session.schema import (SCHEMA_VERSION, SessionError, check_is_session, meta_problem, ms_from_ns,
                                   read_meta)


def open_session(path) -> "SessionReader":
    """Open a session file for reading; SessionError (one line) for a missing, foreign, damaged or
    too-new file."""
    return SessionReader(path)


class SessionReader(SessionAggregates):
    """Reads a session back as the records the live run produced (``records()`` replays them);
    the SQL aggregates (``aggregates``, ``node_order_stats``, ``step_layer_sums``,
    ``has_aggregates``) come from ``engine.session.aggregates``. Reading never writes into the file."""

    def __init__(self, path):
        self.path = Path(path)
        self._con, self.meta = check_is_session(self.path)
        self._lock = threading.Lock()
        self.version = SCHEMA_VERSION
        self._index: tuple[list[int], list[float]] | None = None
        self._has_events: bool | None = None
        self._node_names = dict(self._query("SELECT id, node_id FROM nodes"))
        # page-fault columns: absent in sessions written before they were recorded
        lt_cols = {r[1] for r in self._query('PRAGMA table_info("layer_times_ns")')}
        self._fault_cols = ("minor_faults, fault_ns" if {"minor_faults", "fault_ns"} <= lt_cols
                            else "NULL, NULL")

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
        with self._lock:
            try:
                meta = read_meta(self._con)
            except sqlite3.Error as e:
                raise SessionError(f"{self.path} cannot be read ({str(e).splitlines()[0]})") from None
        problem = meta_problem(meta)
        if problem:
            raise SessionError(f"{self.path} holds a value LayerScope cannot read ({problem})")
        self.meta = meta
        self._index = None
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
        # a session written before bwd_flops was recorded has 8 columns: its rows get None
        return [LayerRow(idx, node_id, name, kind, tuple(json.loads(shape or "[]")), params, flops, act,
                         *rest[:1])
                for idx, node_id, name, kind, shape, params, flops, act, *rest
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
        where, args = self._step_range(step_from, step_to)
        last = -1 if step_from is None else self._first_rowid_at("profiled_steps", "step", step_from) - 1
        while True:  # paged by rec, so a long session is never listed whole
            part = self._query("SELECT rec, step, t, first_row, n FROM profiled_steps WHERE rec > ?" + where
                               + " ORDER BY rec LIMIT ?", [last, *args, chunk])
            if not part:
                return
            last = part[-1][0]
            yield from self._layer_times_of(part)
            if len(part) < chunk:
                return

    def _count(self, table: str) -> int:
        return self._query(f"SELECT count(*) FROM {table}")[0][0]

    def profiled_step_count(self) -> int:
        return self._count("profiled_steps")

    # -- streams (long sessions: a chunk at a time) -------------------------------------------
    @staticmethod
    def _step_range(step_from, step_to) -> tuple[str, list]:
        cond, args = [], []
        if step_from is not None:
            cond.append("step >= ?")
            args.append(step_from)
        if step_to is not None:
            cond.append("step <= ?")
            args.append(step_to)
        return "".join(" AND " + c for c in cond), args

    def profiled_steps_in(self, step_from: int | None = None, step_to: int | None = None):
        """(how many profiled steps lie in ``step_from..step_to``, ``step_at(i)``: the step number of
        the i-th of them, 0-based, in recording order)."""
        cond, args = self._step_range(step_from, step_to)
        total = self._query(f"SELECT count(*) FROM profiled_steps WHERE 1{cond}", args)[0][0]

        def step_at(i: int) -> int:
            return self._query(f"SELECT step FROM profiled_steps WHERE 1{cond} ORDER BY rec LIMIT 1 OFFSET ?",
                               [*args, i])[0][0]
        return total, step_at

    def iter_layer_times(self, step_from: int | None = None, step_to: int | None = None,
                         limit: int | None = None, chunk: int = 256) -> Iterator[LayerTimes]:
        """``layer_times`` as a generator reading ``chunk`` profiled steps at a time (at most
        ``limit`` of them), so a long session is never in memory at once."""
        cond, args = self._step_range(step_from, step_to)
        last, left = 0, limit
        while left is None or left > 0:
            n = chunk if left is None else min(chunk, left)
            recs = self._query(f"SELECT rec FROM profiled_steps WHERE rec > ?{cond} ORDER BY rec LIMIT ?",
                               [last, *args, n])
            if not recs:
                return
            lo, hi = recs[0][0], recs[-1][0]
            # the rows of these records only: the same reader code, bounded to this chunk
            for lt in self._iter_layer_times_recs(lo, hi, cond, args):
                yield lt
            last = hi
            if left is not None:
                left -= len(recs)
            if len(recs) < n:
                return

    def _iter_layer_times_recs(self, rec_lo: int, rec_hi: int, cond: str, args: list) -> Iterator[LayerTimes]:
        recs = self._query("SELECT rec, step, t, first_row, n FROM profiled_steps WHERE rec BETWEEN ? AND ?"
                           f"{cond} ORDER BY rec", [rec_lo, rec_hi, *args])
        if not recs:
            return
        yield from self._layer_times_of(recs)

    def _layer_times_of(self, recs: list) -> Iterator[LayerTimes]:
        """One LayerTimes per ``(rec, step, t, first_row, n)`` of ``recs`` (in rec order), from one
        range read of ``layer_times_ns``."""
        lo, hi = recs[0][3], recs[-1][3] + recs[-1][4] - 1
        rows = self._query("SELECT row, node, fwd_ns, bwd_ns, mem_bytes, fwd_start_ns, bwd_start_ns, "
                           f"peak_bytes, {self._fault_cols}, {self._memory_cols} FROM layer_times_ns "
                           "WHERE row BETWEEN ? AND ? ORDER BY row", (lo, hi))
        events = self._events_of(recs[0][0], recs[-1][0])
        names = self._node_names
        if any(r[1] not in names for r in rows):  # nodes added since we opened (live file)
            self._node_names = names = dict(self._query("SELECT id, node_id FROM nodes"))
        k = 0
        for rec, step, t, first, n in recs:
            while k < len(rows) and rows[k][0] < first:
                k += 1
            j = k
            while j < len(rows) and rows[j][0] < first + n:
                j += 1
            got, k = rows[k:j], j
            cols = list(zip(*got)) if got else [()] * 10
            peaks = list(cols[7])
            faults = list(cols[8]) if any(v is not None for v in cols[8]) else []
            fault_ns = next((v for v in cols[9] if v is not None), None) if faults else None
            saved, outs = list(cols[10]), list(cols[11])
            yield LayerTimes(step=step, t=t, node_ids=[names.get(x, str(x)) for x in cols[1]],
                             fwd_ms=[ms_from_ns(v) for v in cols[2]], bwd_ms=[ms_from_ns(v) for v in cols[3]],
                             fwd_start_ms=[ms_from_ns(v) for v in cols[5]],
                             bwd_start_ms=[ms_from_ns(v) for v in cols[6]], mem_bytes=list(cols[4]),
                             peak_bytes=peaks if any(v is not None for v in peaks) else [],
                             minor_faults=faults, fault_ns=fault_ns,
                             saved_bytes=saved if any(v is not None for v in saved) else [],
                             out_bytes=outs if any(v is not None for v in outs) else [],
                             memory_events=events.get(rec, (None, []))[1],
                             memory_source=events.get(rec, (None, []))[0])

    def _iter_chunks(self, sql: str, args: list, chunk: int) -> Iterator[tuple]:
        """Rows of ``sql`` (which selects rowid first and has a ``rowid > ?`` condition and a
        ``LIMIT ?``), ``chunk`` at a time, without the rowid."""
        last = -1
        while True:
            rows = self._query(sql, [last, *args, chunk])
            for r in rows:
                yield r[1:]
            if len(rows) < chunk:
                return
            last = rows[-1][0]

    def iter_steps(self, chunk: int = 512) -> Iterator[StepRecord]:
        """``steps()`` as a generator, ``chunk`` rows at a time."""
        for step, t, ph, loss, acc, step_ms, sps, data_ms, epoch, warm, prof, peak in self._iter_chunks(
                "SELECT rowid, * FROM steps WHERE rowid > ? ORDER BY rowid LIMIT ?", [], chunk):
            yield StepRecord(step, t, ph, loss, acc, step_ms, sps, data_ms, epoch, bool(warm), bool(prof), peak)

    def iter_series(self, source: str, metric: str, chunk: int = 20000) -> Iterator[tuple[float, float]]:
        """One telemetry series as (t, value) pairs, ``chunk`` at a time (``series`` as a generator)."""
        ids = self._query("SELECT id FROM telemetry_series WHERE source = ? AND metric = ?", (source, metric))
        if not ids:
            return
        last = -1
        while True:
            rows = self._query("SELECT rowid, t, value FROM telemetry_values WHERE series = ? AND rowid > ? "
                               "ORDER BY rowid LIMIT ?", (ids[0][0], last, chunk))
            for _, t, v in rows:
                yield t, v
            if len(rows) < chunk:
                return
            last = rows[-1][0]

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
        sql = (f"SELECT step, t, node_id, shape, data, lo, hi, codec, {self._fm_window} FROM feature_maps"
               + (" WHERE node_id = ?" if node_id else "") + " ORDER BY rowid")
        return [self._feature_map(*r) for r in self._query(sql, (node_id,) if node_id else ())]

    def evals(self) -> list[EvalRecord]:
        return [EvalRecord(*r) for r in self._query(
            "SELECT step, t, epoch, split, loss, accuracy, samples FROM evals ORDER BY rowid")]

    def comm_times(self) -> list:
        """A data-parallel run's per-step bucket all-reduce times (``CommTimes``, step order);
        empty for a run of one process (no ``comm_buckets`` table)."""
        from engine.records import CommTimes

        if not self._query("SELECT 1 FROM sqlite_master WHERE name = 'comm_buckets'"):
            return []
        out: list[CommTimes] = []
        for step, t, b, s, e, n, nodes in self._query(
                "SELECT step, t, bucket, start_ns, end_ns, bytes, nodes FROM comm_buckets ORDER BY rowid"):
            if not out or out[-1].step != step:
                out.append(CommTimes(step, t, [], [], [], [], []))
            ct = out[-1]
            ct.bucket.append(b)
            ct.start_ms.append(s / 1e6)
            ct.end_ms.append(e / 1e6)
            ct.bytes.append(n)
            try:
                ct.nodes.append([str(x) for x in json.loads(nodes)])
            except (TypeError, ValueError):
                ct.nodes.append([])
        return out

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

    # -- the step index and record iteration ---------------------------------------------------
    def step_index(self) -> tuple[list[int], list[float], list[int]]:
        """(steps, start times, rowids) of every recorded training/inference step (not test
        batches), in order: the index a player seeks in. Read once per open (three numbers a step);
        ``refresh`` re-reads it for a file still being written."""
        if self._index is None:
            rows = self._query("SELECT step, t, rowid FROM steps WHERE phase != 'test' ORDER BY rowid")
            self._index = ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        return self._index

    def _iter_rows(self, sql: str, args: list, t_lo: float, t_hi: float, chunk: int):
        """Rows of ``sql`` (selecting rowid first, then t) with t_lo <= t < t_hi, paged by rowid."""
        last = -1
        while True:
            rows = self._query(sql + " WHERE rowid > ? AND t >= ? AND t < ? ORDER BY rowid LIMIT ?",
                               [last, t_lo, t_hi, chunk])
            yield from rows
            if len(rows) < chunk:
                return
            last = rows[-1][0]

    def _first_rowid_at(self, table: str, col: str, value: float) -> int:
        """The first rowid of a table written in ``col`` order whose ``col`` is at or after ``value``
        (binary search on rowid, so a long table is not scanned)."""
        lo_hi = self._query(f"SELECT min(rowid), max(rowid) FROM {table}")[0]
        if lo_hi[0] is None:
            return 0
        lo, hi = lo_hi
        while lo < hi:
            mid = (lo + hi) // 2
            row = self._query(f"SELECT rowid, {col} FROM {table} WHERE rowid >= ? ORDER BY rowid LIMIT 1", (mid,))
            if row and row[0][1] < value:
                lo = row[0][0] + 1
            else:
                hi = mid
        return lo

    def records(self, first_step: int | None = None, last_step: int | None = None, *,
                since_t: float | None = None, kinds: tuple | None = None) -> Iterator:
        """The records of steps ``first_step`` to ``last_step`` (both included; None: from the start /
        to the end) in step order, as the live run sent them: each StepRecord, then that step's
        LayerTimes and FeatureMap, with the telemetry, logs and evaluations recorded while it ran.

        RunInfo comes first when ``first_step`` is None, RunEnded last when ``last_step`` is None or
        the last step (and the run ended). ``since_t`` (seconds since the run started) moves the
        start of the time-bound records (telemetry, logs, evaluations) earlier or later than the
        first step's start; ``kinds`` (record classes) limits what is read at all.

        A generator, paged through the file: a long session is never held in memory at once, and a
        player seeking to step N reads from about N, not from step 0.
        """
        want = (lambda cls: True) if kinds is None else (lambda cls: cls in kinds)
        steps, starts, rowids = self.step_index()
        lo = 0 if first_step is None else bisect.bisect_left(steps, first_step)
        hi = len(steps) - 1 if last_step is None else bisect.bisect_right(steps, last_step) - 1
        to_end = hi >= len(steps) - 1
        if first_step is None and want(RunInfo):
            yield self.info
        inf = float("inf")
        t_lo = -inf if first_step is None else (starts[lo] if lo < len(steps) else inf)
        t_hi = inf if to_end else starts[hi + 1]
        tb_lo = t_lo if since_t is None else since_t
        r_lo = 0 if first_step is None else (rowids[lo] if lo < len(steps) else inf)
        r_hi = inf if to_end else rowids[hi + 1]
        s_lo = -inf if first_step is None else (steps[lo] if lo < len(steps) else inf)
        s_hi = inf if last_step is None else (steps[hi] if hi >= 0 else -inf)
        # a step's own records (layer times, feature map) belong between its start and the next
        # step's: a stored ``t`` outside that (files written while the CPU probe stamped its own
        # clock there) is placed by the step number instead, so a replay to step N shows step N's
        spans = {steps[k]: (starts[k], starts[k + 1] if k + 1 < len(steps) else inf)
                 for k in range(max(lo, 0), hi + 1)} if hi >= lo else {}

        def placed(step, t):
            a, b = spans.get(step, (t, t))
            return t if a <= t < b else a
        chunk = 512
        streams = []
        if want(StepRecord) and hi >= lo:
            def step_stream():  # by rowid: the test batches between two steps come with the first
                last = r_lo - 1
                while True:
                    rows = self._query("SELECT rowid, t, step, phase, loss, accuracy, step_ms, samples_per_s, "
                                       "data_ms, epoch, warmup, profiled, peak_mem_bytes FROM steps "
                                       "WHERE rowid > ? AND rowid < ? ORDER BY rowid LIMIT ?", (last, r_hi, chunk))
                    for rowid, t, step, ph, loss, acc, ms, sps, data_ms, epoch, warm, prof, peak in rows:
                        yield (t, 0, rowid), StepRecord(step, t, ph, loss, acc, ms, sps, data_ms, epoch,
                                                        bool(warm), bool(prof), peak)
                    if len(rows) < chunk:
                        return
                    last = rows[-1][0]
            streams.append(step_stream())
        if want(LayerTimes) and hi >= lo:
            def lt_stream():
                for lt in self._iter_layer_times(None if s_lo == -inf else s_lo, None if s_hi == inf else s_hi):
                    yield (placed(lt.step, lt.t), 1, lt.step), lt
            streams.append(lt_stream())
        if want(FeatureMap) and hi >= lo:
            def fm_stream():
                last = -1 if s_lo == -inf else self._first_rowid_at("feature_maps", "step", s_lo) - 1
                window = self._fm_window
                while True:
                    rows = self._query(f"SELECT rowid, step, t, node_id, shape, data, lo, hi, codec, {window} "
                                       "FROM feature_maps WHERE rowid > ? AND step >= ? AND step <= ? ORDER BY rowid "
                                       "LIMIT ?", (last, s_lo, s_hi, 64))
                    for rowid, *row in rows:
                        yield (placed(row[0], row[1]), 2, rowid), self._feature_map(*row)
                    if len(rows) < 64:
                        return
                    last = rows[-1][0]
            streams.append(fm_stream())
        if want(TelemetryBatch):
            streams.append(self._telemetry_stream(tb_lo, t_hi))
        if want(EvalRecord):
            streams.append(((r[1], 0, r[0]), EvalRecord(*r[2:])) for r in self._iter_rows(
                "SELECT rowid, t, step, t, epoch, split, loss, accuracy, samples FROM evals", [], tb_lo, t_hi, chunk))
        if want(LogRecord):
            streams.append(((r[1], 0, r[0]), LogRecord(*r[1:])) for r in self._iter_rows(
                "SELECT rowid, t, level, message FROM logs", [], tb_lo, t_hi, chunk))
        for _key, rec in heapq.merge(*streams, key=lambda kr: kr[0]):
            yield rec
        if to_end and want(LayerEnergy) and self.layer_energy_data() is not None:  # sent after the last step
            yield LayerEnergy(self.meta["layer_energy"].get("t") or 0.0, self.layer_energy_data())
        if to_end and want(RunEnded):
            end = self.ended()
            if end is not None:
                yield end

    def _telemetry_stream(self, t_lo: float, t_hi: float, chunk: int = 20000):
        """One TelemetryBatch per sampler tick with t_lo <= t < t_hi, keyed for ``records``' merge."""
        series = {i: (s, m) for i, s, m in self._query("SELECT id, source, metric FROM telemetry_series")}
        start = 0 if t_lo == float("-inf") else self._first_rowid_at("telemetry_values", "t", t_lo)
        cur, cur_t = [], None
        last = start - 1
        while True:
            rows = self._query("SELECT rowid, t, series, value FROM telemetry_values WHERE rowid > ? "
                               "ORDER BY rowid LIMIT ?", (last, chunk))
            for rowid, t, sid, value in rows:
                if t >= t_hi:
                    rows = ()
                    break
                if cur and t != cur_t:
                    yield (cur_t, 0, 0), TelemetryBatch(cur)
                    cur = []
                if t >= t_lo:
                    s, m = series.get(sid, ("?", "?"))
                    cur.append(TelemetrySample(t, s, m, value))
                    cur_t = t
            if len(rows) < chunk:
                break
            last = rows[-1][0]
        if cur:
            yield (cur_t, 0, 0), TelemetryBatch(cur)

    def telemetry_start(self, before_t: float, points: int) -> float:
        """The time from which every telemetry series has at most ``points`` samples before
        ``before_t``: where a bounded replay (a feed keeping ``points`` per series) must start.
        Reads backwards from ``before_t`` only as far as that needs."""
        n_series = self._query("SELECT count(*) FROM telemetry_series")[0][0]
        if not n_series:
            return before_t
        end = self._first_rowid_at("telemetry_values", "t", before_t) if before_t != float("inf") else \
            (self._query("SELECT max(rowid) FROM telemetry_values")[0][0] or 0) + 1
        counts: dict[int, int] = {}
        full = 0
        chunk = max(4096, points * n_series)
        t_start = before_t
        while end > 0:
            rows = self._query("SELECT rowid, t, series FROM telemetry_values WHERE rowid < ? ORDER BY rowid DESC "
                               "LIMIT ?", (end, chunk))
            if not rows:
                return float("-inf")
            for rowid, t, sid in rows:
                c = counts.get(sid, 0) + 1
                counts[sid] = c
                if c == points + 1:  # this series already has its ``points`` later samples
                    full += 1
                    if full == n_series:
                        return t_start
                if c <= points:
                    t_start = t
            end = rows[-1][0]
        return float("-inf")

    def feature_step_before(self, step: int) -> int | None:
        """The step of the last feature map recorded at or before ``step``; None when there is none."""
        return self._query("SELECT max(step) FROM feature_maps WHERE step <= ?", (step,))[0][0]

    @property
    def _memory_cols(self) -> str:
        """The select list of the saved/output bytes columns, or "NULL, NULL" in files written
        before they were added (nothing counted)."""
        cols = getattr(self, "_mem_cols", None)
        if cols is None:
            have = {r[1] for r in self._query('PRAGMA table_info("layer_times_ns")')}
            cols = "saved_bytes, out_bytes" if {"saved_bytes", "out_bytes"} <= have else "NULL, NULL"
            self._mem_cols = cols
        return cols

    def memory_events(self, step: int | None = None) -> tuple[int | None, str | None, list[tuple]]:
        """(step, source, events) of the memory timeline recorded at ``step`` (None: the first
        step that has one). Events as ``LayerTimes.memory_events``: CUDA ``(t_ms, owner, delta)``,
        CPU ``(at_node, phase, owner, delta)``. (None, None, []) when the session has none (also
        a file written before the table existed)."""
        if not self._query("SELECT 1 FROM sqlite_master WHERE name = 'memory_events'"):
            return None, None, []
        if step is None:
            got = self._query("SELECT min(step) FROM memory_events")
            step = got[0][0] if got else None
            if step is None:
                return None, None, []
        rows = self._query("SELECT source, t_ns, at_node, phase, owner, delta_bytes FROM memory_events "
                           "WHERE step = ? ORDER BY rowid", (step,))
        if not rows:
            return None, None, []
        source = rows[0][0]
        ev = [(ms_from_ns(t), owner, int(d)) if t is not None else (at, ph, owner, int(d))
              for _src, t, at, ph, owner, d in rows]
        return step, source, ev

    def _events_of(self, rec_lo: int, rec_hi: int) -> dict:
        """{rec: (source, events)} of the profiled records ``rec_lo..rec_hi`` that have timeline events."""
        if self._has_events is None:
            self._has_events = bool(self._query("SELECT 1 FROM sqlite_master WHERE name = 'memory_events'"))
        if not self._has_events:
            return {}
        out: dict = {}
        for rec, src, t, at, ph, owner, d in self._query(
                "SELECT rec, source, t_ns, at_node, phase, owner, delta_bytes FROM memory_events "
                "WHERE rec BETWEEN ? AND ? ORDER BY rowid", (rec_lo, rec_hi)):
            e = (ms_from_ns(t), owner, int(d)) if t is not None else (at, ph, owner, int(d))
            out.setdefault(rec, (src, []))[1].append(e)
        return out

    def memory_steps(self) -> list[int]:
        """The steps whose memory timeline the session holds (empty for files without the table)."""
        if not self._query("SELECT 1 FROM sqlite_master WHERE name = 'memory_events'"):
            return []
        return [r[0] for r in self._query("SELECT DISTINCT step FROM memory_events ORDER BY step")]

    @property
    def _fm_window(self) -> str:
        """The select list of a map's channel window: its columns, or "0, NULL" in files written
        before they were added (those maps are the layer's first channels)."""
        cols = {r[1] for r in self._query('PRAGMA table_info("feature_maps")')}
        return "first_channel, channels_total" if {"first_channel", "channels_total"} <= cols else "0, NULL"

    def _feature_map(self, step, t, nid, shape, data, lo, hi, codec, first=0, total=None) -> FeatureMap:
        try:
            raw = zlib.decompress(data) if codec == "zlib" else bytes(data)
        except zlib.error:
            raise SessionError(f"{self.path} is damaged (a feature map of {nid} cannot be decoded)") from None
        return FeatureMap(step, t, nid, tuple(json.loads(shape)), raw, lo, hi, int(first or 0),
                          None if total is None else int(total))

    def layer_energy_data(self) -> dict | None:
        """The per-layer energy replay as the run sent it (``LayerEnergy.data``: counter, parameters,
        reason, idle and per-layer windows), or None when the run had none (meta ``layer_energy``
        and table ``layer_energy``; figures: ``engine.analysis.layer_energy``)."""
        meta = self.meta.get("layer_energy")
        if not isinstance(meta, dict):
            return None
        data = {k: v for k, v in meta.items() if k != "t"}
        data["idle"], data["layers"] = [], []
        rows = []
        if self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'layer_energy'"):
            rows = self._query("SELECT node_id, pass, seconds, joules, reps, updates, rep_ms, edge_s FROM layer_energy "
                               "ORDER BY rowid")
        entries: dict = {}
        for node_id, kind, seconds, joules, reps, updates, rep_ms, edge_s in rows:
            w = {"seconds": seconds, "joules": joules, "reps": reps, "updates": updates, "edge_s": edge_s}
            if kind == "idle":
                data["idle"].append(w)
                continue
            entry = entries.get((node_id, kind))
            if entry is None:
                entry = entries[(node_id, kind)] = {"node_id": node_id, "pass": kind, "rep_ms": rep_ms, "windows": []}
                data["layers"].append(entry)
            entry["windows"].append(w)
        return data

