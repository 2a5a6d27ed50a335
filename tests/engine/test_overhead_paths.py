"""The profiled step's cheaper paths (issue 9, item 26) give the same figures as before."""
from __future__ import annotations

import random

import numpy as np
import pytest

from engine.records import LayerRow, LayerTimes, RunInfo, StepRecord
from engine.run.live import LiveFeed

IDS = ["a", "b", "c"]


def _records(n, seed=0):
    rng = random.Random(seed)
    out = [RunInfo(config={"mode": "train"}, device={"id": "cpu"}, versions={}, host="h", start_time=0.0,
                   layers=[LayerRow(i, x, x, "relu", (1,), 0, 0, 4) for i, x in enumerate(IDS)])]
    for s in range(1, n + 1):
        ids = IDS if s % 7 else IDS[:2]  # now and then a subset of the nodes
        out.append(StepRecord(s, s * 0.01, "train", 1.0, 0.5, 5.0, 100.0, 0.1, None, False, True, None))
        out.append(LayerTimes(s, s * 0.01, list(ids), [rng.random() for _ in ids],
                              [None if rng.random() < 0.1 else rng.random() for _ in ids], [0.0] * len(ids),
                              [0.0] * len(ids), [rng.choice([None, 64 * s]) for _ in ids]))
    return out


def _same(a, b):
    for name in ("heat_steps", "heat_fwd", "heat_bwd", "layer_fwd_mean", "layer_bwd_mean", "layer_mem", "history"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.profiled_steps == b.profiled_steps and a.last_layer_times is b.last_layer_times
    assert a.version == b.version and a.node_ids == b.node_ids


@pytest.mark.parametrize("n", [5, 260, 700])  # within, at and past what the feed queues before folding
def test_live_feed_queues_layer_times_and_folds_them_the_same(n):
    recs = _records(n)
    eager, lazy = LiveFeed(heat_steps=200), LiveFeed(heat_steps=200)
    for i, r in enumerate(recs):
        eager(r)
        eager.snapshot()  # a view polling after every record: nothing stays queued
        lazy(r)
        if i == len(recs) // 3:
            lazy.snapshot()
    assert len(lazy._pending) > 0 or n > 250  # the run's thread only queued them
    _same(eager.snapshot(), lazy.snapshot())
