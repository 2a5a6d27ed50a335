"""Long sessions (issue 9, item 27): the summary is aggregated in SQL and the trace is streamed,
and both give exactly the figures the record-list path gives; the spread (p5..p95) of item 28."""
from __future__ import annotations

import json
import random
import sqlite3
import tracemalloc

import pytest

from engine.analysis import layers as L
from engine.analysis.stats import percentile
from engine.analysis.summary import layer_summary, summary
from engine.export import CSV_COLUMNS, export_csv, export_trace, trace_events
from engine.records import LayerRow, LayerTimes, RunEnded, RunInfo, StepRecord
from engine.session import SessionWriter, open_session

IDS = ["conv1", "relu1", "pool1", "fc1", "extra"]
ROWS = [LayerRow(i, n, n, k, (4, 4), 10, f, 64) for i, (n, k, f) in
        enumerate([("conv1", "conv2d", 1000), ("relu1", "relu", 0), ("pool1", "maxpool2d", 0), ("fc1", "linear", 500)])]


def records(steps: int, warmup: int = 3, profiled_warmup: bool = True, seed: int = 1, end=True):
    """A training run whose times vary (heavy tail, ties, None values, a node only some steps see)."""
    rng = random.Random(seed)
    out = [RunInfo(config={"mode": "train", "batch_size": 8, "device": "cpu"}, device={"id": "cpu"}, versions={},
                   host="h", start_time=0.0, layers=list(ROWS))]
    t = 0.0
    for s in range(1, warmup + steps + 1):
        warm = s <= warmup
        ids = IDS if s % 3 else IDS[:-1]
        fwd = [round(rng.lognormvariate(-1, 0.6), 4) for _ in ids]
        bwd = [None if (k == 1 and s % 5 == 0) else rng.choice([0.25, 0.5, rng.random()]) for k in range(len(ids))]
        fwd[0] = 50.0 if warm else fwd[0]  # a slow warm-up step: must not move any figure
        starts = [0.01 * k for k in range(len(ids))]
        out.append(StepRecord(s, t, "train", 1.0, 0.5, sum(fwd) + 1.0, 8000.0, 0.01, None, warm, True, None))
        if not warm or profiled_warmup:
            out.append(LayerTimes(s, t, list(ids), fwd, bwd, starts, starts, [64 * (k + 1) + s % 2 for k in range(len(ids))],
                                  [1000 + s] * len(ids) if s % 2 else []))
        t += 0.01
    if end:
        out.append(RunEnded(t, "completed", "", warmup + steps, {}))
    return out


def write(path, recs, **kw):
    with SessionWriter(path, **kw) as w:
        for r in recs:
            w(r)
    return path


@pytest.mark.parametrize("steps,profiled_warmup", [(1, True), (2, False), (37, True), (200, False)])
def test_sql_aggregates_equal_the_record_path_exactly(tmp_path, steps, profiled_warmup):
    recs = records(steps, profiled_warmup=profiled_warmup)
    path = write(tmp_path / "s.lsession", recs)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with open_session(path) as r:
        assert r.has_aggregates()  # the writer stored them at close
        from_sql = summary(r)
        replayed = summary(list(r.records()))
    assert from_sql == replayed  # every figure, bit for bit: one percentile method, exact ns means
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before  # reading never writes
    slow = write(tmp_path / "slow.lsession", recs, aggregates=False)  # the same run, no stored figures
    with open_session(slow) as r:
        assert not r.has_aggregates()
        assert summary(r) == from_sql


def test_sql_aggregates_of_a_session_still_being_written(tmp_path):
    path = write(tmp_path / "s.lsession", records(40, end=False))
    with open_session(path) as r:
        assert r.status == "running"
        assert summary(r) == summary(list(r.records()))  # no index made: the same figures by sorting


def test_sql_medians_are_python_percentiles(tmp_path):
    recs = records(101)
    path = write(tmp_path / "s.lsession", recs)
    lts = [x for x in recs if isinstance(x, LayerTimes) and x.step > 3]
    with open_session(path) as r:
        rows = {x["id"]: x for x in layer_summary(r)}
    for k, nid in enumerate(IDS[:-1]):
        fwd = [lt.fwd_ms[k] for lt in lts]
        for key, q in (("fwd_p5_ms", 5), ("fwd_median_ms", 50), ("fwd_p95_ms", 95)):
            assert rows[nid][key] == pytest.approx(percentile(fwd, q), abs=1e-6), (nid, key)
        assert rows[nid]["fwd_p5_ms"] <= rows[nid]["fwd_median_ms"] <= rows[nid]["fwd_p95_ms"]
    assert rows["extra"]["samples"] == len([lt for lt in lts if "extra" in lt.node_ids])


def test_percentile_ranks_is_the_one_method():
    for n in (1, 2, 3, 10, 101, 1000):
        values = sorted(random.Random(n).random() for _ in range(n))
        for q in (0, 5, 50, 95, 100):
            lo, hi, w = L.percentile_ranks(n, q)
            assert {lo, hi} <= L.order_ranks(n, (q,))
            at = {i: values[i] for i in L.order_ranks(n, (q,))}
            assert L.interpolate(at[lo], at[hi], w) == percentile(values, q)


def test_spread_is_in_the_rows_and_the_csv(tmp_path):
    path = write(tmp_path / "s.lsession", records(30))
    with open_session(path) as r:
        rows = layer_summary(r)
        csv_path = export_csv(r, tmp_path / "s.csv")
    for key in ("fwd_p5_ms", "bwd_p5_ms"):
        assert key in CSV_COLUMNS
        assert all(key in x for x in rows)
    head = csv_path.read_text().splitlines()[0].split(",")
    assert "fwd_p5_ms" in head and "fwd_p95_ms" in head


def test_streamed_trace_equals_the_in_memory_trace(tmp_path):
    path = write(tmp_path / "s.lsession", records(50))
    with open_session(path) as r:
        for kw in ({}, {"max_steps": 7}, {"step_from": 10, "step_to": 20}, {"max_steps": None}):
            out = export_trace(r, tmp_path / "t.json", **kw)
            assert json.loads(out.read_text()) == json.loads(json.dumps(trace_events(r, **kw))), kw


def _peak_kib(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def test_trace_export_and_summary_memory_do_not_grow_with_the_session(tmp_path):
    from engine.analysis.summary import _sql_node_stats

    short = write(tmp_path / "short.lsession", records(600, profiled_warmup=False))
    long = write(tmp_path / "long.lsession", records(4000, profiled_warmup=False))
    peaks = {}
    for name, path in (("short", short), ("long", long)):
        with open_session(path) as r:
            assert r.has_aggregates()
            peaks[name] = (_peak_kib(lambda: export_trace(r, tmp_path / f"{name}.json", max_steps=None)),
                           _peak_kib(lambda: _sql_node_stats(r)))
    # ~7x the steps: the trace export's peak stays within its fixed buffers
    assert peaks["long"][0] < 1.3 * peaks["short"][0] + 128, peaks
    # the per-layer figures come out of SQLite without any per-step list
    assert peaks["long"][1] < 1.3 * peaks["short"][1] + 64, peaks


@pytest.mark.parametrize("column,value", [("fwd_ns", "'x'"), ("bwd_ns", "x'00ff'"), ("fwd_ns", "9e999"),
                                          ("bwd_ns", "-9e999"), ("fwd_ns", "-9e999")])
@pytest.mark.parametrize("indexed", [True, False])
def test_odd_layer_time_refused_with_and_without_indexes(tmp_path, column, value, indexed):
    from engine.session.schema import SessionError

    path = write(tmp_path / "s.lsession", records(30, end=indexed))  # a running session gets no indexes
    with sqlite3.connect(path) as con:
        con.execute(f"UPDATE layer_times_ns SET {column} = {value} WHERE row = 7")
    with open_session(path) as r:
        assert not r.has_aggregates()  # changed since the writer stored them (or never stored)
        with pytest.raises(SessionError):
            summary(r)


def test_energy_windows_inlined_span_is_step_span():
    from engine.analysis.energy import energy_windows, step_span

    rng = random.Random(3)
    steps, t = [], 0.0
    for s in range(400):  # a test phase in between, data waits present and absent, shuffled order
        phase = "test" if 200 <= s < 220 else "train"
        data = None if s % 3 else rng.random()
        steps.append(StepRecord(s, t, phase, 1.0, 0.5, rng.uniform(5, 20), 6400.0, data, None, False, True, None))
        t += rng.uniform(0.006, 0.03)
    rng.shuffle(steps)
    ts = [0.05 * k for k in range(int(t / 0.05) + 2)]
    joules = [3.0 * x + 0.1 * (k % 2) for k, x in enumerate(ts)]
    inlined = energy_windows(ts, joules, steps)
    assert len(inlined) > 3
    assert inlined == energy_windows(ts, joules, steps, span=lambda s: step_span(s))
