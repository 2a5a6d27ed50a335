"""``LiveFeed``: a record sink that keeps the latest state of a run, bounded, for views to poll.

The run thread (and the telemetry thread) push records in; the GUI pulls an immutable
``LiveSnapshot`` at its frame rate. Latest wins and every buffer has a fixed size, so a run of
any length costs the same memory. Feeding it the records of a session file draws that file
exactly like a live run.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from engine.records import (EvalRecord, FeatureMap, LayerTimes, LogRecord, RunEnded, RunInfo, StateChanged,
                                StepRecord, TelemetryBatch, TelemetryStatus, LayerEnergy)

STEP_COLUMNS = ("step", "t", "loss", "accuracy", "step_ms", "samples_per_s", "data_ms",
                "peak_mem_bytes", "warmup", "epoch")


class _Ring:
    """Fixed-capacity rows of float64 columns; ``array()`` gives them oldest first."""

    def __init__(self, capacity: int, columns: int):
        self.buf = np.full((capacity, columns), np.nan)
        self.capacity = capacity
        self.n = 0  # rows ever appended

    def append(self, row) -> None:
        self.buf[self.n % self.capacity] = row
        self.n += 1

    def extend(self, rows: np.ndarray) -> None:
        """Append the rows of a (k, columns) array, oldest first (only the last ``capacity`` stay)."""
        k = len(rows)
        if k > self.capacity:
            self.n += k - self.capacity
            rows = rows[-self.capacity:]
            k = self.capacity
        i = self.n % self.capacity
        first = min(k, self.capacity - i)
        self.buf[i:i + first] = rows[:first]
        if first < k:
            self.buf[:k - first] = rows[first:]
        self.n += k

    def array(self) -> np.ndarray:
        if self.n <= self.capacity:
            out = self.buf[:self.n].copy()
        else:
            i = self.n % self.capacity
            out = np.concatenate((self.buf[i:], self.buf[:i]))
        out.flags.writeable = False
        return out


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class LiveSnapshot:
    """A copy of the feed's state at one version; numpy arrays are read-only.

    ``history`` has one column per name in ``STEP_COLUMNS`` (NaN where not measured).
    ``heat_fwd``/``heat_bwd`` are node x step matrices of the last profiled steps
    (``heat_steps`` are their step numbers). ``telemetry`` maps (source, metric) to an
    N x 2 array of (t, value). ``state`` and ``progress`` come from the run's StateChanged,
    StepRecord and RunEnded records: the one way a GUI learns what the worker is doing.
    """

    version: int
    state: str  # "idle" | "running" | "paused" | "evaluating" | "saving" | "completed" | "stopped" | "failed"
    info: RunInfo | None
    ended: RunEnded | None
    last_step: StepRecord | None
    steps: tuple[StepRecord, ...]
    history: np.ndarray
    node_ids: tuple[str, ...]
    layer_fwd_mean: np.ndarray
    layer_bwd_mean: np.ndarray
    layer_mem: np.ndarray
    profiled_steps: int  # LayerTimes records in the mean window
    last_layer_times: LayerTimes | None
    heat_steps: np.ndarray
    heat_fwd: np.ndarray
    heat_bwd: np.ndarray
    telemetry: dict = field(default_factory=dict)
    feature: FeatureMap | None = None
    evals: tuple[EvalRecord, ...] = ()
    logs: tuple[LogRecord, ...] = ()
    progress: tuple[int, int] = (0, 0)  # (steps done, steps planned), warm-up included; total 0 while setting up
    phase: str = ""  # StateChanged.phase of the latest change
    telemetry_status: dict | None = None  # the run's own sampler status (TelemetryStatus), None before it
    last_memory_layer_times: LayerTimes | None = None  # the latest LayerTimes that counted memory (engine.run.memory)
    layer_energy: dict | None = None  # the per-layer energy replay's data (LayerEnergy), None without one

    def series(self, source: str, metric: str) -> np.ndarray | None:
        """(t, value) rows of one telemetry series, None when it was never reported."""
        return self.telemetry.get((source, metric))

    def column(self, name: str) -> np.ndarray:
        """One column of ``history`` by name (e.g. "loss")."""
        return self.history[:, STEP_COLUMNS.index(name)]


class LiveFeed:
    """Thread-safe bounded sink of the latest run state; poll ``snapshot(since_version)``.

    ``window``: steps and LayerTimes kept for means and the recent-step list; ``heat_steps``:
    columns of the node x step heat strip; ``telemetry_points``: points per telemetry series.
    """

    def __init__(self, window: int = 50, *, heat_steps: int = 200, history: int = 3000,
                 telemetry_points: int = 3000, max_series: int = 256, max_logs: int = 500,
                 max_evals: int = 1000):
        self.window = int(window)
        self.heat_len = int(heat_steps)
        self.history_len = int(history)
        self.telemetry_points = int(telemetry_points)
        self.max_series = int(max_series)
        self.max_logs = int(max_logs)
        self.max_evals = int(max_evals)
        self._lock = threading.Lock()
        self._version = 0
        self._cache: LiveSnapshot | None = None
        self.dropped_series = 0
        self._reset()

    def _reset(self) -> None:
        self._info: RunInfo | None = None
        self._ended: RunEnded | None = None
        self._steps: deque = deque(maxlen=self.window)
        self._history = _Ring(self.history_len, len(STEP_COLUMNS))
        self._node_ids: list[str] = []
        self._index: dict[str, int] = {}
        self._lt: deque = deque(maxlen=self.window)
        self._pending: list[LayerTimes] = []  # taken in, not yet in the arrays (see ``_fold``)
        self._pending_steps: list[StepRecord] = []  # taken in, not yet in the history ring
        self._pending_max = max(self.window, self.heat_len)
        self._last_lt: LayerTimes | None = None
        self._last_mem_lt: LayerTimes | None = None
        self._heat_steps = _Ring(self.heat_len, 1)
        self._heat_fwd: _Ring | None = None
        self._heat_bwd: _Ring | None = None
        self._mem: np.ndarray = np.zeros(0)
        self._telemetry: dict[tuple[str, str], _Ring] = {}
        self._feature: FeatureMap | None = None
        self._evals: deque = deque(maxlen=self.max_evals)
        self._logs: deque = deque(maxlen=self.max_logs)
        self._state: StateChanged | None = None
        self._done = 0
        self._telemetry_status: dict | None = None
        self._layer_energy: dict | None = None

    @property
    def version(self) -> int:
        """Grows by one with every record taken in."""
        return self._version

    def _set_nodes(self, node_ids: list[str]) -> None:
        self._node_ids = list(node_ids)
        self._index = {n: i for i, n in enumerate(self._node_ids)}
        n = len(self._node_ids)
        self._lt.clear()
        self._heat_steps = _Ring(self.heat_len, 1)
        self._heat_fwd = _Ring(self.heat_len, n)
        self._heat_bwd = _Ring(self.heat_len, n)
        self._mem = np.full(n, np.nan)

    def __call__(self, rec) -> None:
        """Take one record in (any thread)."""
        with self._lock:
            if isinstance(rec, StepRecord):
                if rec.phase != "test":
                    self._done = rec.step
                self._steps.append(rec)
                # into the history ring when a snapshot is taken, like LayerTimes (see ``_fold``)
                self._pending_steps.append(rec)
                if len(self._pending_steps) >= self._pending_max:
                    self._fold_steps()
            elif isinstance(rec, LayerTimes):
                # folded into the arrays when a snapshot is taken (the views poll at their frame
                # rate; a run profiles every step): the run's thread only queues it
                # (its fields are not read here: a probe's record works them out when first read)
                self._pending.append(rec)
                self._last_lt = rec
                if len(self._pending) > self._pending_max:
                    self._fold()
            elif isinstance(rec, TelemetryBatch):
                for s in rec.samples:
                    ring = self._telemetry.get((s.source, s.metric))
                    if ring is None:
                        if len(self._telemetry) >= self.max_series:
                            self.dropped_series += 1
                            continue
                        ring = self._telemetry[(s.source, s.metric)] = _Ring(self.telemetry_points, 2)
                    ring.append((s.t, s.value))
            elif isinstance(rec, FeatureMap):
                self._feature = rec
            elif isinstance(rec, EvalRecord):
                self._evals.append(rec)
            elif isinstance(rec, LogRecord):
                self._logs.append(rec)
            elif isinstance(rec, RunInfo):
                self._reset()
                self._info = rec
                self._set_nodes([row.node_id for row in rec.layers])
            elif isinstance(rec, StateChanged):
                self._state = rec
                self._done = rec.done
            elif isinstance(rec, TelemetryStatus):
                self._telemetry_status = rec.status
            elif isinstance(rec, RunEnded):
                self._ended = rec
                self._done = rec.steps
            elif isinstance(rec, LayerEnergy):
                self._layer_energy = rec.data
            else:
                return
            self._version += 1

    def _fold_steps(self) -> None:
        """Take the queued StepRecords into the history ring, in one array (under the lock)."""
        pending, self._pending_steps = self._pending_steps, []
        if pending:
            self._history.extend(np.array(
                [(r.step, r.t, r.loss, r.accuracy, r.step_ms, r.samples_per_s, r.data_ms, r.peak_mem_bytes,
                  r.warmup, r.epoch) for r in pending], dtype=float))  # None -> NaN, a bool -> 0/1

    def _fold(self) -> None:
        """Take the queued StepRecords and LayerTimes into the arrays, in arrival order (under the
        lock). LayerTimes over the run's full node list go in as one array per run of them; a
        record over other nodes goes in by itself."""
        self._fold_steps()
        pending, self._pending = self._pending, []
        run: list[LayerTimes] = []
        for rec in pending:
            if rec.saved_bytes or rec.memory_events:
                self._last_mem_lt = rec
            if rec.node_ids == self._node_ids and self._node_ids:
                run.append(rec)
                continue
            self._take_layer_times(run)
            run = []
            if set(rec.node_ids) - set(self._node_ids) or not self._node_ids:
                self._set_nodes(rec.node_ids)
            if rec.node_ids == self._node_ids:
                run.append(rec)
            else:
                self._take_subset(rec)
        self._take_layer_times(run)

    def _take_layer_times(self, recs: list[LayerTimes]) -> None:
        """LayerTimes over exactly ``_node_ids``, oldest first."""
        if not recs:
            return
        # numpy turns None into NaN for a float array: no per-node Python loop
        fwd = np.array([r.fwd_ms for r in recs], dtype=float)
        bwd = np.array([r.bwd_ms for r in recs], dtype=float)
        mem = np.array([r.mem_bytes for r in recs], dtype=float)
        self._remember(fwd, bwd, mem, [r.step for r in recs])

    def _take_subset(self, rec: LayerTimes) -> None:
        """A LayerTimes over a subset of the nodes: each placed by id."""
        idx = [self._index[nid] for nid in rec.node_ids]
        full = np.full((3, 1, len(self._node_ids)), np.nan)
        full[0, 0, idx], full[1, 0, idx], full[2, 0, idx] = (np.array(v, dtype=float)
                                                             for v in (rec.fwd_ms, rec.bwd_ms, rec.mem_bytes))
        self._remember(full[0], full[1], full[2], [rec.step])

    def _remember(self, fwd: np.ndarray, bwd: np.ndarray, mem: np.ndarray, steps: list[int]) -> None:
        """(k, nodes) arrays of k profiled steps, oldest first, into the window, heat rings and
        the latest known memory per node."""
        known = ~np.isnan(mem)
        have = known.any(axis=0)
        if have.any():
            last = len(mem) - 1 - np.argmax(known[::-1], axis=0)  # each node's latest known row
            self._mem[have] = mem[last[have], np.flatnonzero(have)]
        self._lt.extend(zip(fwd, bwd))
        self._heat_steps.extend(np.array(steps, dtype=float)[:, None])
        self._heat_fwd.extend(fwd)
        self._heat_bwd.extend(bwd)

    def snapshot(self, since_version: int | None = None) -> LiveSnapshot | None:
        """An immutable copy of the state; None when nothing changed since ``since_version``."""
        with self._lock:
            if since_version is not None and since_version == self._version:
                return None
            if self._cache is not None and self._cache.version == self._version:
                return self._cache
            self._fold()
            n = len(self._node_ids)
            if self._lt:
                f = np.stack([a for a, _ in self._lt])
                b = np.stack([c for _, c in self._lt])
                fwd_mean, bwd_mean = _nanmean(f), _nanmean(b)
            else:
                fwd_mean = np.full(n, np.nan)
                bwd_mean = np.full(n, np.nan)
            empty = np.zeros((n, 0))
            heat_f = self._heat_fwd.array().T if self._heat_fwd is not None else empty
            heat_b = self._heat_bwd.array().T if self._heat_bwd is not None else empty
            if self._ended is not None:
                state = self._ended.status
            elif self._state is not None:
                state = self._state.state
            elif self._info is not None:
                state = "running"
            else:
                state = "idle"
            total = self._state.total if self._state is not None else 0
            snap = LiveSnapshot(
                version=self._version, state=state, info=self._info, ended=self._ended,
                last_step=self._steps[-1] if self._steps else None, steps=tuple(self._steps),
                history=self._history.array(), node_ids=tuple(self._node_ids),
                layer_fwd_mean=_frozen(fwd_mean), layer_bwd_mean=_frozen(bwd_mean),
                layer_mem=_frozen(self._mem.copy()), profiled_steps=len(self._lt),
                last_layer_times=self._last_lt, heat_steps=_frozen(self._heat_steps.array()[:, 0].copy()),
                heat_fwd=_frozen(np.ascontiguousarray(heat_f)), heat_bwd=_frozen(np.ascontiguousarray(heat_b)),
                telemetry={k: r.array() for k, r in self._telemetry.items()}, feature=self._feature,
                evals=tuple(self._evals), logs=tuple(self._logs), progress=(self._done, total),
                phase=self._state.phase if self._state is not None else "",
                telemetry_status=self._telemetry_status, last_memory_layer_times=self._last_mem_lt,
                layer_energy=self._layer_energy)
            self._cache = snap
            return snap

    def clear(self) -> None:
        """Forget everything (a new run or file is about to be fed in)."""
        with self._lock:
            self._reset()
            self._version += 1


def _nanmean(a: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(a)
    count = ok.sum(axis=0)
    total = np.where(ok, a, 0.0).sum(axis=0)
    out = np.full(a.shape[1], np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out
