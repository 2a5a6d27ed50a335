"""LiveFeed: bounded whatever the run length, consistent under concurrent writers and readers."""
import threading

import numpy as np
import pytest

from engine.run.live import STEP_COLUMNS, LiveFeed
from engine.records import (EvalRecord, FeatureMap, LayerRow, LayerTimes, LogRecord, RunEnded, RunInfo,
                                StateChanged, StepRecord, TelemetryBatch, TelemetrySample)

NODES = ["conv1", "relu1", "fc"]


def _info():
    rows = [LayerRow(i, n, n, "conv2d", (1,), 0, 0, 0) for i, n in enumerate(NODES)]
    return RunInfo({"mode": "train"}, {"id": "cpu"}, {}, "host", 0.0, rows)


def _step(i, loss=1.0):
    return StepRecord(i, i * 0.01, "train", loss, 0.5, 2.0, 32 / 0.002, 0.1, None, i <= 2, True, None)


def _lt(i, fwd=(1.0, 2.0, 3.0), bwd=(2.0, None, 6.0)):
    return LayerTimes(i, i * 0.01, list(NODES), list(fwd), list(bwd), [0.0, 1.0, 3.0], [6.0, 8.0, 9.0],
                      [100, 200, 300], [])


def test_records_land_in_the_snapshot():
    feed = LiveFeed(window=4)
    assert feed.snapshot().state == "idle"
    feed(_info())
    for i in range(1, 11):
        feed(_step(i, loss=float(i)))
        feed(_lt(i, fwd=(1.0, 2.0, float(i))))
    feed(TelemetryBatch([TelemetrySample(0.1, "psutil", "cpu_percent", 50.0),
                         TelemetrySample(0.1, "nvml:0", "power_w", 120.0)]))
    feed(FeatureMap(3, 0.3, "conv1", (1, 2, 2), bytes([0, 1, 2, 3]), -1.0, 1.0))
    feed(EvalRecord(10, 1.0, 1, "test", 0.3, 0.9, 100))
    feed(LogRecord(0.2, "info", "hello"))
    s = feed.snapshot()
    assert s.state == "running" and s.info.layers[0].node_id == "conv1"
    assert [r.step for r in s.steps] == [7, 8, 9, 10]  # window of 4
    assert s.column("loss").tolist() == [float(i) for i in range(1, 11)]
    assert s.column("warmup").tolist()[:3] == [1.0, 1.0, 0.0]
    assert s.node_ids == tuple(NODES)
    np.testing.assert_allclose(s.layer_fwd_mean, [1.0, 2.0, np.mean([7, 8, 9, 10])])
    assert np.isnan(s.layer_bwd_mean[1]) and s.layer_bwd_mean[2] == 6.0
    assert s.heat_fwd.shape == (3, 10) and s.heat_steps.tolist() == list(range(1, 11))
    assert s.series("nvml:0", "power_w").tolist() == [[0.1, 120.0]]
    assert s.series("nvml:0", "energy_j") is None  # absent stays absent
    assert s.feature.node_id == "conv1"
    assert s.evals[0].accuracy == 0.9 and s.logs[0].message == "hello"
    feed(RunEnded(2.0, "completed", "", 10))
    assert feed.snapshot().state == "completed"


def test_snapshot_is_immutable_and_versioned():
    feed = LiveFeed()
    feed(_info())
    feed(_step(1))
    s = feed.snapshot()
    assert feed.snapshot(s.version) is None
    assert feed.snapshot() is s  # nothing new: the same copy, no work
    for arr in (s.history, s.layer_fwd_mean, s.heat_fwd):
        assert not arr.flags.writeable
    feed(_step(2))
    s2 = feed.snapshot(s.version)
    assert s2.version == s.version + 1 and len(s.history) == 1 and len(s2.history) == 2


def test_bounded_for_long_runs():
    feed = LiveFeed(window=10, heat_steps=20, history=100, telemetry_points=50, max_logs=5, max_evals=3,
                    max_series=4)
    feed(_info())
    for i in range(1, 1001):
        feed(_step(i))
        feed(_lt(i))
        feed(TelemetryBatch([TelemetrySample(i, "psutil", f"m{i % 6}", float(i))]))
        feed(LogRecord(i, "info", str(i)))
        feed(EvalRecord(i, i, None, "test", 1.0, 0.5, 1))
    s = feed.snapshot()
    assert len(s.steps) == 10 and s.history.shape == (100, len(STEP_COLUMNS))
    assert s.history[-1, 0] == 1000 and s.history[0, 0] == 901
    assert s.heat_fwd.shape == (3, 20) and s.heat_steps[-1] == 1000
    assert len(s.telemetry) == 4 and all(len(v) == 50 for v in s.telemetry.values())
    assert feed.dropped_series > 0
    assert len(s.logs) == 5 and s.logs[-1].message == "1000" and len(s.evals) == 3


def test_new_run_info_resets():
    feed = LiveFeed()
    feed(_info())
    feed(_step(1))
    feed(RunEnded(1.0, "failed", "boom"))
    feed(_info())
    s = feed.snapshot()
    assert s.state == "running" and s.ended is None and len(s.history) == 0


def test_concurrent_writers_and_reader():
    feed = LiveFeed(window=20, telemetry_points=100)
    feed(_info())
    errors = []
    stop = threading.Event()

    def run_writer():
        for i in range(1, 2001):
            feed(_step(i))
            feed(_lt(i))

    def telemetry_writer():
        i = 0
        while not stop.is_set():
            i += 1
            feed(TelemetryBatch([TelemetrySample(i, "psutil", "cpu_percent", float(i))]))

    def reader():
        last = -1
        try:
            while not stop.is_set():
                s = feed.snapshot()
                assert s.version >= last
                last = s.version
                assert s.heat_fwd.shape[1] == len(s.heat_steps)
                assert len(s.steps) <= 20
                t = s.series("psutil", "cpu_percent")
                if t is not None:
                    assert np.all(np.diff(t[:, 0]) > 0)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=telemetry_writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    run_writer()
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors
    s = feed.snapshot()
    assert s.history[-1, 0] == 2000 and s.version > 4000


def test_snapshot_carries_state_and_progress_from_records():
    feed = LiveFeed()
    snap = feed.snapshot()
    assert (snap.state, snap.progress) == ("idle", (0, 0))
    feed(_info())
    assert (feed.snapshot().state, feed.snapshot().progress) == ("running", (0, 0))  # still setting up
    feed(StateChanged(0.1, "running", 0, 20, "train"))
    feed(_step(1))
    feed(_step(2))
    snap = feed.snapshot()
    assert (snap.state, snap.progress, snap.phase) == ("running", (2, 20), "train")
    feed(StateChanged(0.2, "paused", 2, 20, "train"))
    assert (feed.snapshot().state, feed.snapshot().progress) == ("paused", (2, 20))
    feed(StateChanged(0.3, "running", 2, 20, "train"))
    feed(_step(3))
    feed(StateChanged(0.4, "evaluating", 3, 20, "test"))
    snap = feed.snapshot()
    assert (snap.state, snap.progress, snap.phase) == ("evaluating", (3, 20), "test")
    feed(RunEnded(0.5, "stopped", "stopped after step 3 of 20", 3))
    assert (feed.snapshot().state, feed.snapshot().progress) == ("stopped", (3, 20))


def _mixed_records():
    """Steps and LayerTimes with unknown (None) memory, a record over a subset of the nodes, and a
    record that brings new nodes (the feed starts over on those)."""
    recs = [_info()]
    for i in range(1, 40):
        recs.append(_step(i, loss=None if i % 7 == 0 else float(i)))
        mem = [None if (i + j) % 3 == 0 else 100 * i + j for j in range(3)]
        recs.append(LayerTimes(i, i * 0.01, list(NODES), [float(i), None, 2.0 * i], [i / 2, 1.0, None],
                               [0.0] * 3, [0.0] * 3, mem, []))
        if i == 17:
            recs.append(LayerTimes(i, 0.0, ["fc", "conv1"], [9.0, 8.0], [7.0, None], [0.0] * 2, [0.0] * 2,
                                   [None, 5], []))
        if i == 30:
            recs.append(LayerTimes(i, 0.0, [*NODES, "extra"], [1.0] * 4, [1.0] * 4, [0.0] * 4, [0.0] * 4,
                                   [1, 2, None, 4], []))
    return recs


@pytest.mark.parametrize("history", [25, 5])  # 5: one fold brings more rows than the ring holds
def test_folding_many_records_at_once_equals_taking_them_one_by_one(history):
    """The run's thread only queues records; a snapshot folds them in one go. Whatever the
    grouping, the arrays must be those of folding each record as it comes."""
    one, batched = (LiveFeed(window=8, heat_steps=12, history=history),
                    LiveFeed(window=8, heat_steps=12, history=history))
    for rec in _mixed_records():
        one(rec)
        one.snapshot()  # folds this record now
        batched(rec)
    a, b = one.snapshot(), batched.snapshot()
    assert a.node_ids == b.node_ids == (*NODES, "extra")
    for name in ("history", "layer_fwd_mean", "layer_bwd_mean", "layer_mem", "heat_steps", "heat_fwd",
                 "heat_bwd"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.history[:, 0].tolist() == list(range(40 - history, 40))  # the last steps, oldest first
    assert np.isnan(a.history[-5, 2]) and a.history[-4, 2] == 36.0  # step 35's loss was None
    assert a.heat_steps.tolist() == list(range(30, 40)) and a.profiled_steps == b.profiled_steps == 8
    # memory: each node's latest known bytes (None leaves the earlier value)
    assert a.layer_mem.tolist() == [3800.0, 3901.0, 3902.0, 4.0]
