"""The memory view's saved-for-backward bars, its step-timeline tab and the layer table's saved and
share-of-peak columns draw engine.layer_memory_table / engine.memory_timeline (hand-made records)."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import fmt
from tests.app.test_views import run_info, snapshot, steps_and_times
from engine.records import LayerTimes, StepRecord

EVENTS = [("a", "forward", "a", 1024), ("b", "forward", "b", 1024), ("b", "forward", "a", -1024),
          ("c", "forward", "c", 80), ("b", "backward", "b", -1024)]


def counted_records():
    recs = [run_info(), *steps_and_times(2)]
    recs.append(StepRecord(3, 0.3, "train", 1.0, 0.5, 10.0, 200.0, profiled=True))
    recs.append(LayerTimes(3, 0.3, ["a", "b", "c"], [1.0, 0.5, 3.0], [2.0, 0.5, 1.0], [0.0, 1.0, 1.5],
                           [6.0, 5.5, 4.5], [1024, 1024, 80], saved_bytes=[0, 1024, 0], out_bytes=[1024, 1024, 80],
                           memory_events=EVENTS, memory_source="saved-tensor accounting"))
    recs += steps_and_times(4)[-2:]  # later steps that did not count memory
    return recs


@pytest.fixture
def memory_view(qtbot):
    from app.views.memory_view import MemoryView

    v = MemoryView()
    qtbot.addWidget(v)
    v.resize(900, 420)
    v.show()
    return v


def test_memory_view_draws_saved_bytes_and_the_timeline(memory_view):
    v = memory_view
    snap = snapshot(counted_records())
    assert snap.last_memory_layer_times is not None and snap.last_layer_times.saved_bytes == []
    v.push(snap, force=True)
    assert v.saved_shown
    widths = v.bars.opts["width"]
    assert list(np.nan_to_num(widths)) == [0, 1024, 0]
    table = engine.layer_memory_table(snap)
    title = v.layer_plot.titleLabel.text
    assert "saved for backward" in title and fmt.fmt_bytes(table["peak_bytes"]) in title
    v.tabs.setCurrentWidget(v.timeline_view)
    v.push(snap, force=True)
    tl = v.timeline_view.timeline
    assert tl == engine.memory_timeline(snap)
    assert tl["peak"]["bytes"] == 2048 and tl["peak"]["alive"] == ["a", "b"]
    x, y = v.timeline_view.curve.getData()
    assert list(y) == [p[1] for p in tl["points"]]
    assert f"peak {fmt.fmt_bytes(2048)}" in v.timeline_view.peak_label.toPlainText()
    assert len(v.timeline_view.fwd_bars.opts["x0"]) == 3 and len(v.timeline_view.bwd_bars.opts["x0"]) == 3


def test_without_counted_steps_the_view_says_so(memory_view):
    v = memory_view
    v.push(snapshot([run_info(), *steps_and_times(3)]), force=True)
    assert not v.saved_shown
    assert "activation" in v.layer_plot.titleLabel.text
    assert v.timeline_view.timeline is None and "No memory timeline yet" in v.timeline_view.notice.text()


def test_layer_table_saved_and_share_of_peak_columns(qtbot):
    from app.views.layer_table import COLUMNS, LayerTableView

    v = LayerTableView()
    qtbot.addWidget(v)
    v.show()
    snap = snapshot(counted_records())
    v.push(snap, force=True)
    keys = [c[0] for c in COLUMNS]
    table = {r["id"]: r for r in engine.layer_memory_table(snap)["layers"]}
    for row in range(v.model.rowCount()):
        r = v.model.row(row)
        assert r["saved"] == table[r["id"]]["saved_bytes"]
        assert r["peak_share"] == table[r["id"]]["share_of_peak"]
    b = [v.model.row(i)["id"] for i in range(v.model.rowCount())].index("b")
    shown = v.model.data(v.model.index(b, keys.index("saved")))
    assert shown == fmt.fmt_bytes(1024)
    assert v.model.data(v.model.index(b, keys.index("peak_share"))) == fmt.fmt_pct(table["b"]["share_of_peak"])
    assert 0 < table["b"]["share_of_peak"] < 1
