"""Fidelity of per-layer times (issue 9, item 28): the spread across steps and, on the CPU, minor
page faults per layer with a flag on layers whose time is mostly allocator cost."""
from __future__ import annotations

import sys

import pytest
import torch

import engine
from engine.analysis.layers import ALLOC_BOUND_SHARE, allocator_share
from engine.analysis.summary import layer_summary
from engine.records import LayerRow, LayerTimes, RunInfo, StepRecord
from engine.run.probes import Probe

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread page faults are Linux's")


def big_output_net():
    """A cheap layer with a ~16 MiB output after a tiny one: the fresh pages land on it."""
    return engine.from_dict({
        "format": "layerscope-net", "version": 1, "name": "fresh-pages",
        "input": {"channels": 1, "height": 64, "width": 64, "classes": 2},
        "nodes": [
            {"id": "small", "kind": "relu"},
            {"id": "wide", "kind": "conv2d", "params": {"out_channels": 128, "kernel": 1}},
            {"id": "pool", "kind": "adaptive_avgpool2d", "params": {"output_size": 1}},
            {"id": "flat", "kind": "flatten"},
            {"id": "fc", "kind": "linear", "params": {"out_features": 2}},
        ]})


_FAULTS_CHILD = """
import json, torch
import engine
from engine.run.probes import Probe, fault_cost_ns
from tests.engine.test_fidelity import big_output_net
torch.set_num_threads(1)
model = engine.build_model(big_output_net()).eval()
probe = Probe(model, torch.device("cpu"))
x = torch.randn(4, 1, 64, 64)  # "wide": 4 x 128 x 64 x 64 floats = 8 MiB of fresh memory
with torch.inference_mode():
    probe.begin_step()
    probe.forward(x)
    lt = probe.collect(1, 0.0)
    probe.detach()
print(json.dumps({"ids": lt.node_ids, "faults": lt.minor_faults, "fault_ns": lt.fault_ns,
                  "cost": fault_cost_ns()}))
"""


@linux
def test_probe_counts_minor_faults_per_layer_at_its_stamps():
    # a fresh process: in a long one, glibc's grown mmap threshold hands the 8 MiB back from pages
    # an earlier test already touched, and there is honestly no fault to count
    import json
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", _FAULTS_CHILD], cwd=root, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(got["faults"]) == len(got["ids"])
    assert all(isinstance(f, int) and f >= 0 for f in got["faults"])
    faults = dict(zip(got["ids"], got["faults"]))
    # a first touch of 8 MiB is >= 1000 pages of 4 KiB (fewer with huge pages, never none)
    assert faults["wide"] > 0 and faults["wide"] >= faults["small"]
    assert got["fault_ns"] == got["cost"] and got["fault_ns"] > 0


def test_allocator_bound_flag_from_faults_and_their_cost():
    assert allocator_share(None, 500.0, 1.0) is None and allocator_share(10, None, 1.0) is None
    assert allocator_share(1000, 600.0, 1.0) == pytest.approx(0.6)
    ids = ["conv", "relu"]
    recs = [RunInfo(config={"mode": "infer", "batch_size": 16}, device={}, versions={}, host="", start_time=0.0,
                    layers=[LayerRow(0, "conv", "conv", "conv2d", (8,), 1, 1000, 1),
                            LayerRow(1, "relu", "relu", "relu", (8,), 0, 0, 1)])]
    for s in range(1, 6):
        recs.append(StepRecord(s, s * 0.1, "infer", None, None, 12.0, 100.0, None, None, False, True))
        # relu: 2 ms, of which 3000 faults x 500 ns = 1.5 ms (75%); conv: 10 ms, 100 faults (0.5%)
        recs.append(LayerTimes(s, s * 0.1, ids, [10.0 + s * 0.1, 2.0], [None, None], [0.0, 10.0], [None, None],
                               [0, 0], [], [100, 3000], 500.0))
    rows = {r["id"]: r for r in layer_summary(recs)}
    assert rows["relu"]["minor_faults"] == 3000 and rows["relu"]["alloc_share"] == pytest.approx(0.75)
    assert rows["relu"]["alloc_bound"] is True and rows["conv"]["alloc_bound"] is False
    assert rows["conv"]["alloc_share"] < ALLOC_BOUND_SHARE
    # the spread across steps sits next to the median
    assert rows["conv"]["fwd_p5_ms"] < rows["conv"]["fwd_median_ms"] < rows["conv"]["fwd_p95_ms"]


def test_no_fault_counts_means_no_flag():
    ids = ["conv"]
    recs = [RunInfo(config={"mode": "infer", "batch_size": 1}, device={}, versions={}, host="", start_time=0.0,
                    layers=[LayerRow(0, "conv", "conv", "conv2d", (8,), 1, 1000, 1)]),
            StepRecord(1, 0.0, "infer", None, None, 1.0, 1.0, None, None, False, True),
            LayerTimes(1, 0.0, ids, [1.0], [None], [0.0], [None], [0])]
    row = layer_summary(recs)[0]
    assert row["minor_faults"] is None and row["alloc_share"] is None and row["alloc_bound"] is None


def test_views_show_the_spread_and_the_allocator_flag(qtbot):
    from app.views.layer_table import COLUMNS, LayerTableView
    from app.views.timing_view import LayerTimeView
    from engine import fmt
    from engine.run.live import LiveFeed

    ids = ["conv", "relu"]
    feed = LiveFeed()
    feed(RunInfo(config={"mode": "infer", "batch_size": 16, "profile_every": 1}, device={}, versions={}, host="",
                 start_time=0.0, layers=[LayerRow(0, "conv", "conv", "conv2d", (8,), 1, 1000, 1),
                                         LayerRow(1, "relu", "relu", "relu", (8,), 0, 0, 1)]))
    for s in range(1, 21):
        feed(StepRecord(s, s * 0.1, "infer", None, None, 12.0, 100.0, None, None, False, True))
        feed(LayerTimes(s, s * 0.1, ids, [10.0 + s * 0.1, 2.0], [None, None], [0.0, 10.0], [None, None], [0, 0],
                        [], [100, 3000], 500.0))
    snap = feed.snapshot()
    expect = {r["id"]: r for r in engine.snapshot_layer_rows(snap)}
    table, timing = LayerTableView(), LayerTimeView()
    for v in (table, timing):
        qtbot.addWidget(v)
        v.resize(900, 500)
        v.show()
        v.push(snap, force=True)
    cols = [c[0] for c in COLUMNS]
    for i in range(table.model.rowCount()):
        cell = {key: table.model.data(table.model.index(i, c)) for c, key in enumerate(cols)}
        e = expect[cell["id"]]
        assert cell["fwd_spread"] == f"{fmt.fmt_ms(e['fwd_p5_ms'])}–{fmt.fmt_ms(e['fwd_p95_ms'])}"
        assert ("mostly allocator" in cell["alloc"]) is bool(e["alloc_bound"])
    drawn = {r["id"]: r for r in timing.rows()}
    assert drawn["relu"]["alloc_bound"] is True and drawn["conv"]["alloc_bound"] is False
    assert drawn["conv"]["fwd_p5_ms"] == expect["conv"]["fwd_p5_ms"]
    assert "mostly allocator cost (relu)" in timing.summary.text()


@linux
def test_faults_are_counted_at_most_once_per_interval(probe_hooks):
    model = engine.build_model(big_output_net()).eval()
    probe = Probe(model, torch.device("cpu"), fault_interval_s=3600.0, native=probe_hooks)
    x = torch.randn(2, 1, 64, 64)
    got = []
    with torch.inference_mode():
        probe.begin_step()  # a warm-up step: counted, never collected, so it uses nothing up
        probe.forward(x)
        probe.detach()
        for step in range(3):
            probe.begin_step()
            probe.forward(x)
            got.append(probe.collect(step, 0.0))
            probe.detach()
    assert len(got[0].minor_faults) == len(got[0].node_ids) and got[0].fault_ns is not None
    assert got[1].minor_faults == [] and got[1].fault_ns is None  # not counted: absent, never zero
    assert all(v is not None and v >= 0 for v in got[2].fwd_ms)  # timing goes on either way
    off = Probe(model, torch.device("cpu"), count_faults=False, native=probe_hooks)
    with torch.inference_mode():
        off.begin_step()
        off.forward(x)
        assert off.collect(0, 0.0).minor_faults == []
