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


class _Net:
    """Three steps: ``a`` computes, ``same`` hands back a's tensor (no backward of its own), ``side``
    computes a value the loss never uses (its backward hook never fires)."""

    def __init__(self):
        import torch

        from engine.net.model import PlanStep

        self.w = torch.ones(4, requires_grad=True)
        self.plan = (PlanStep("a", ("input",), ()), PlanStep("same", ("a",), ()), PlanStep("side", ("input",), ()))
        self.failed_node = None

    def parameters(self):  # what the probe's saved-tensor accounting leaves out (weights)
        return iter([self.w])

    def buffers(self):
        return iter([])

    def forward(self, x, on_output=None):
        a = x * self.w
        on_output(0, "a", a)
        on_output(1, "same", a)
        side = x * (self.w * 2)
        on_output(2, "side", side)
        return a


@pytest.mark.parametrize("steps", [1, 3])
def test_probe_backward_read_out_keeps_zero_and_none_apart(steps):
    import torch

    from engine.run.probes import Probe

    net = _Net()
    probe = Probe(net, torch.device("cpu"), count_faults=False)
    for i in range(steps):  # the per-step resets leave nothing of the step before
        probe.begin_step()
        with torch.enable_grad():
            out = probe.forward(torch.ones(2, 4))
            out.sum().backward()
        probe.end_backward()
        lt = probe.collect(i, 0.0)
        probe.detach()
        assert lt.node_ids == ["a", "same", "side"]
        assert lt.bwd_ms[0] is not None and lt.bwd_ms[0] >= 0.0  # timed
        assert lt.bwd_ms[1] == 0.0  # no backward of its own
        assert lt.bwd_ms[2] is None  # hooked, but the gradient never reached it
    probe.begin_step()  # an inference step after training steps: no backward figures at all
    with torch.no_grad():
        probe.forward(torch.ones(2, 4))
    lt = probe.collect(steps, 0.0)
    assert lt.bwd_ms == [None, None, None]
