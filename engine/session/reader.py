"""Reading a session: ``open_session`` gives a ``SessionReader`` returning the same record types
the live run produced, from a finished session or one another process is still writing.

Reading never executes anything stored in the file; a missing, foreign, damaged or too-new file
is a one-line ``SessionError``.
"""
from __future__ import annotations

import heapq
import json
import sqlite3
import threading
import zlib
from pathlib import Path
from typing import Iterator

from engine.records import (EvalRecord, FeatureMap, LayerRow, LayerTimes, LogRecord, RunEnded, RunInfo,
                                StepRecord, TelemetryBatch, TelemetrySample)
from engine.session.schema import SCHEMA_VERSION, SessionError, check_is_session, meta_problem, ms_from_ns


def open_session(path) -> "SessionReader":
    """Open a session file for reading; SessionError (one line) for a missing, foreign, damaged or
    too-new file."""
    return SessionReader(path)


class SessionReader:
    """Reads a session back as the records the live run produced (``records()`` replays them)."""

    def __init__(self, path):
        self.path = Path(path)
        self._con, self.meta = check_is_session(self.path)
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
        meta = {}
        for k, v in self._query("SELECT key, value FROM meta"):
            try:
                meta[k] = json.loads(v)
            except (TypeError, ValueError):
                meta[k] = v
        problem = meta_problem(meta)
        if problem:
            raise SessionError(f"{self.path} holds a value LayerScope cannot read ({problem})")
        self.meta = meta
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
                                 fwd_ms=[ms_from_ns(v) for v in cols[2]],
                                 bwd_ms=[ms_from_ns(v) for v in cols[3]],
                                 fwd_start_ms=[ms_from_ns(v) for v in cols[5]],
                                 bwd_start_ms=[ms_from_ns(v) for v in cols[6]],
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
