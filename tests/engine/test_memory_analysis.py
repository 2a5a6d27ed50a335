"""engine.analysis.memory on a real CPU run: which layers hold the training memory (median saved
bytes, share of the peak) and the step's memory timeline (bands, points, the peak with the layers
alive then), the same from the session and from the live feed."""
import pytest

import engine
from engine.analysis.memory import fixed_bytes, layer_memory_table, memory_timeline
from engine.run.live import LiveFeed
from tests.engine.test_memory_saved import _model, graph_saved


@pytest.fixture(scope="module")
def lenet_session(tmp_path_factory):
    path = tmp_path_factory.mktemp("mem") / "m.lsession"
    feed = LiveFeed(window=50)
    cfg = engine.RunConfig(net=engine.resolve_net("lenet5"), device="cpu", batch_size=8, steps=4, warmup=1,
                           threads=1, telemetry_hz=0, out=str(path))
    assert engine.Run(cfg, sinks=[feed]).run().status == "completed"
    return path, feed.snapshot()


def test_layer_table_holds_the_measured_saved_bytes_and_shares(lenet_session):
    import torch

    path, snap = lenet_session
    spec = engine.resolve_net("lenet5")
    expected, _ = graph_saved(_model(spec), torch.randn(8, *spec.input.shape))
    with engine.open_session(path) as r:
        t = layer_memory_table(r)
        info = r.info
    assert t["steps"] == [2]  # the first kept step (warm-up is step 1); then one a second
    got = {row["id"]: row["saved_bytes"] for row in t["layers"] if row["saved_bytes"]}
    assert got == expected
    assert [row["id"] for row in t["layers"]] == [layer.node_id for layer in info.layers]
    assert t["saved_total"] == sum(expected.values())
    assert t["peak_bytes"] == memory_timeline(path_reader(path))["peak"]["bytes"] + fixed_bytes(info)
    for row in t["layers"]:
        if row["saved_bytes"]:
            assert row["share_of_peak"] == pytest.approx(row["saved_bytes"] / t["peak_bytes"])
    assert sum(row["share_of_peak"] or 0 for row in t["layers"]) < 1
    live = layer_memory_table(snap)
    assert [(x["id"], x["saved_bytes"]) for x in live["layers"]] == [(x["id"], x["saved_bytes"]) for x in t["layers"]]


def path_reader(path):
    return engine.open_session(path)


def test_timeline_bands_points_and_peak(lenet_session):
    path, snap = lenet_session
    with engine.open_session(path) as r:
        tl = memory_timeline(r)
        lt = [x for x in r.layer_times() if x.step == tl["step"]][0]
    assert tl["source"] == "saved-tensor accounting" and tl["step"] == 2
    ids = lt.node_ids
    fwd = [b for b in tl["bands"] if b[1] == "forward"]
    assert [b[0] for b in fwd] == ids
    assert all(b[3] >= b[2] for b in tl["bands"])
    ts = [p[0] for p in tl["points"]]
    assert ts == sorted(ts)
    values = [p[1] for p in tl["points"]]
    assert max(values) == tl["peak"]["bytes"] and min(values) >= 0
    # at the end of the forward everything saved is alive (and the net output), nothing released yet
    saved = {nid: b for nid, b in zip(ids, lt.saved_bytes) if b}
    end_fwd = [v for t, v in tl["points"] if t <= fwd[-1][3]][-1]
    assert end_fwd == sum(saved.values()) + lt.out_bytes[-1]
    # the peak: the layers alive then hold exactly the peak's bytes; in lenet5 it comes while
    # relu2 writes its output with conv2's still alive (a transient the saved total does not show)
    assert sum(tl["peak"]["alive_bytes"].values()) == tl["peak"]["bytes"] >= end_fwd
    assert tl["peak"]["alive"] == ["relu1", "pool1", "conv2", "relu2"]
    assert tl["peak"]["t"] == pytest.approx(fwd[ids.index("relu2")][3])
    assert values[-1] == lt.out_bytes[-1]  # after backward only the net output is left
    live = memory_timeline(snap)  # the live record: the same, times not yet rounded to whole ns
    assert [v for _t, v in live["points"]] == values and live["peak"]["alive"] == tl["peak"]["alive"]
    assert [t for t, _v in live["points"]] == pytest.approx(ts, abs=1e-6)
    with engine.open_session(path) as r:
        assert memory_timeline(r, step=3) is None  # not counted


def test_cuda_events_make_a_timeline_from_the_baseline():
    from engine.records import LayerRow, LayerTimes, RunInfo

    lt = LayerTimes(1, 0.0, ["a", "b"], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [3.0, 2.0], [None, None],
                    memory_events=[(0.0, None, 1000), (0.5, "a", 400), (1.5, "b", 200), (2.5, "b", -200),
                                   (3.5, "a", -400)], memory_source="cuda allocator history")

    class Snap:
        info = RunInfo({"mode": "train"}, {}, {}, "", 0.0, [LayerRow(0, "a", "a", "conv2d", (1,), 10, 1, 4),
                                                              LayerRow(1, "b", "b", "relu", (1,), 0, 1, 4)])
        last_memory_layer_times = lt
    tl = memory_timeline(Snap())
    assert tl["points"][0] == (0.0, 1000) and tl["baseline"] == 1000
    assert tl["peak"] == {"t": 1.5, "bytes": 1600, "alive": ["a", "b"], "alive_bytes": {"a": 400, "b": 200}}
    assert tl["points"][-1] == (3.5, 1000)


def test_html_report_has_the_memory_section(lenet_session, tmp_path):
    from engine.export.html import export_html
    from engine.fmt import fmt_bytes

    path, _snap = lenet_session
    with engine.open_session(path) as r:
        out = export_html(r, tmp_path / "r.html")
        t = layer_memory_table(r)
        tl = memory_timeline(r)
    html = out.read_text()
    assert "Training memory: what each layer holds for backward" in html
    assert f"Memory timeline of step {tl['step']}" in html
    assert f"Peak {fmt_bytes(tl['peak']['bytes'])}" in html and "relu1 " in html
    assert f"Total {fmt_bytes(t['saved_total'])}" in html
    assert html.count("<rect") > len(tl["bands"])  # the bands strip, and the bars above


def test_html_memory_section_says_when_nothing_was_counted(tmp_path):
    from engine.export.memory_html import memory_section
    from tests.engine.test_session import make_records, write_session

    p = write_session(tmp_path / "old.lsession", make_records(steps=3))
    with engine.open_session(p) as r:
        assert "Not recorded" in memory_section(r)
