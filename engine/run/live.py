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

    def array(self) -> np.ndarray:
        if self.n <= self.capacity:
            out = self.buf[:self.n].copy()
        else:
            i = self.n % self.capacity
            out = np.concatenate((self.buf[i:], self.buf[:i]))
        out.flags.writeable = False
        return out


def _f(v) -> float:
    return np.nan if v is None else float(v)


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
                self._history.append((rec.step, rec.t, _f(rec.loss), _f(rec.accuracy), rec.step_ms,
                                      rec.samples_per_s, _f(rec.data_ms), _f(rec.peak_mem_bytes),
                                      float(rec.warmup), _f(rec.epoch)))
            elif isinstance(rec, LayerTimes):
                # folded into the arrays when a snapshot is taken (the views poll at their frame
                # rate; a run profiles every step): the run's thread only queues it
                self._pending.append(rec)
                self._last_lt = rec
                if rec.saved_bytes or rec.memory_events:
                    self._last_mem_lt = rec
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

    def _fold(self) -> None:
        """Take the queued LayerTimes into the arrays, in arrival order (under the lock)."""
        pending, self._pending = self._pending, []
        for rec in pending:
            self._take_layer_times(rec)

    def _take_layer_times(self, rec: LayerTimes) -> None:
        if rec.node_ids != self._node_ids:
            if set(rec.node_ids) - set(self._node_ids) or not self._node_ids:
                self._set_nodes(rec.node_ids)
        # numpy turns None into NaN for a float array: no per-node Python loop
        fwd = np.array(rec.fwd_ms, dtype=float)
        bwd = np.array(rec.bwd_ms, dtype=float)
        mem = np.array(rec.mem_bytes, dtype=float)
        if rec.node_ids != self._node_ids:  # a subset of the nodes: place each by id
            idx = [self._index[nid] for nid in rec.node_ids]
            n = len(self._node_ids)
            full = np.full((3, n), np.nan)
            full[0, idx], full[1, idx], full[2, idx] = fwd, bwd, mem
            fwd, bwd, mem = full
        known = ~np.isnan(mem)
        self._mem[known] = mem[known]
        self._lt.append((fwd, bwd))
        self._heat_steps.append((rec.step,))
        self._heat_fwd.append(fwd)
        self._heat_bwd.append(bwd)

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
