"""Each monitor view, fed LiveSnapshots built from hand-made records (no run, no torch)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.run.live import LiveFeed
from engine.records import (FeatureMap, LayerRow, LayerTimes, LogRecord, RunEnded, RunInfo, StepRecord,
                            TelemetryBatch, TelemetrySample)


def snapshot(records):
    feed = LiveFeed(window=50)
    for r in records:
        feed(r)
    return feed.snapshot()


def run_info(device="cpu", batch=2, mode="train"):
    rows = [LayerRow(0, "a", "conv2d", "conv2d", (4, 8, 8), 40, 1_000_000, 1024),
            LayerRow(1, "b", "relu", "relu", (4, 8, 8), 0, 0, 1024),
            LayerRow(2, "c", "linear", "linear", (10,), 2570, 2560, 80)]
    dev = {"id": device, "name": device, "kind": device.split(":")[0], "memory_total": None}
    return RunInfo({"net": {"name": "tiny"}, "mode": mode, "batch_size": batch, "precision": "fp32"}, dev, {}, "h",
                   0.0, rows)


def steps_and_times(n=4):
    out = []
    for s in range(1, n + 1):
        out.append(StepRecord(s, s * 0.1, "train", 2.0 / s, 0.1 * s, 10.0, 200.0, profiled=True))
        out.append(LayerTimes(s, s * 0.1, ["a", "b", "c"], [1.0, 0.5, 3.0], [2.0, 0.5, None],
                              [None] * 3, [None] * 3, [1024, 1024, 80]))
    return out


@pytest.fixture
def views(qtbot):
    from app.views.feature_view import FeatureMapView
    from app.views.layer_table import LayerTableView
    from app.views.log_view import LogView
    from app.views.memory_view import MemoryView
    from app.views.power_view import PowerView
    from app.views.timing_view import LayerTimeView
    from app.views.training_view import TrainingView

    made = {}
    for cls in (LayerTimeView, TrainingView, FeatureMapView, LayerTableView, MemoryView, PowerView, LogView):
        v = cls()
        qtbot.addWidget(v)
        v.resize(700, 400)
        v.show()
        made[cls.__name__] = v
    return made


def test_time_view_means_sorting_and_tooltip(views):
    v = views["LayerTimeView"]
    v.push(snapshot([run_info(), *steps_and_times()]), force=True)
    rows = v.rows()
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["fwd_ms"] == pytest.approx(1.0) and rows[0]["bwd_ms"] == pytest.approx(2.0)
    assert rows[0]["share"] == pytest.approx(0.3)  # 3 ms of a 10 ms step
    assert rows[0]["gflops"] == pytest.approx(1_000_000 * 2 / 1e-3 / 1e9)
    assert np.isnan(rows[2]["bwd_ms"])  # not measured stays absent
    v.sort_combo.setCurrentIndex(1)  # total time
    assert [r["id"] for r in v.rows()] == ["a", "c", "b"]
    tip = v.tooltip_for_row(0)
    assert "1.00 ms" in tip and "30.0 %" in tip and "GFLOP/s" in tip
    assert v.heat_img.image.shape == (3, 4)


def test_time_view_says_when_profiling_is_off(views):
    v = views["LayerTimeView"]
    info = run_info()
    info.config["profile_every"] = 0
    v.push(snapshot([info, StepRecord(1, 0.1, "train", 1.0, 0.5, 5.0, 100.0)]), force=True)
    assert "off" in v.notice.text()
    assert v.rows() == []


def test_training_view_points_and_benchmark_note(views):
    v = views["TrainingView"]
    v.push(snapshot([run_info(), *steps_and_times(6)]), force=True)
    assert v.point_counts()["loss"] == 6
    assert "loss 0.3333" in v.stats.text()
    bench = [run_info(mode="benchmark")] + [StepRecord(s, s * 0.1, "benchmark", None, None, 5.0, 400.0)
                                            for s in range(1, 4)]
    v.push(snapshot(bench), force=True)
    assert "benchmark" in v.notice.text() and v.notice.isVisible()


def test_feature_view_tiles_channels(views):
    from app.views.feature_view import tile

    maps = np.arange(6 * 4 * 5, dtype=np.uint8).reshape(6, 4, 5)
    grid, rows, cols = tile(maps, gap=1)
    assert rows * cols >= 6 and grid.shape == (rows * 5 - 1, cols * 6 - 1)
    assert (grid[:4, :5] == maps[0]).all() and grid[0, 5] == -1
    v = views["FeatureMapView"]
    v.set_layers(["a", "b", "c"])
    fm = FeatureMap(1, 0.1, "a", (6, 4, 5), maps.tobytes(), -1.0, 1.0)
    v.push(snapshot([run_info(), fm]), force=True)
    assert v.shown() is fm
    assert v.current_layer() == "a"
    assert "6 channels of 4×5" in v.caption.text()
    got = []
    v.layer_chosen.connect(got.append)
    v.select_layer("c")
    assert got == ["c"]


def test_table_sorts_numbers_and_copies_tsv(views, qtbot):
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication

    v = views["LayerTableView"]
    v.push(snapshot([run_info(), *steps_and_times()]), force=True)
    from app.views.layer_table import COLUMNS

    v.table.sortByColumn([c[0] for c in COLUMNS].index("params"), Qt.DescendingOrder)
    text = v.as_tsv(selected_only=False).splitlines()
    # the measured times come right after the name (a narrow dock shows them without scrolling)
    assert text[0].startswith("Layer\tFwd ms\tBwd ms\tShare\tGFLOP/s\tKind\tOutput shape\tParams")
    assert [ln.split("\t")[0] for ln in text[1:]] == ["c", "a", "b"]
    v.table.selectRow(0)
    qtbot.keyClick(v.table, Qt.Key_C, Qt.ControlModifier)
    clip = QGuiApplication.clipboard().text().splitlines()
    assert len(clip) == 2 and clip[1].startswith("c\t3.00\t") and "\tlinear\t10\t" in clip[1]


def test_power_view_never_draws_absent_series(views):
    v = views["PowerView"]
    v.set_telemetry_status({"nvml": {"available": False, "reason": "NVML not available: no driver"},
                            "rapl": {"available": False, "reason": "RAPL not readable: permission denied"},
                            "psutil": {"available": True, "reason": ""}})
    tel = TelemetryBatch([TelemetrySample(0.1, "psutil", "cpu_pct:0", 50.0),
                          TelemetrySample(0.1, "psutil", "cpu_pct:1", 20.0)])
    v.push(snapshot([run_info(), tel]), force=True)
    avail = v.available()
    assert avail["cpu"] and not avail["power"] and not avail["util"] and not avail["energy"]
    assert "not available" in v.notes["power"].toPlainText() and "cpu" in v.notes["power"].toPlainText()
    text = v.notice.text()
    assert "no driver" in text and "permission denied" in text


def test_power_view_gpu_series_and_energy_per_sample(views):
    import engine

    recs = [run_info(device="cuda:0", batch=10)]
    for k in range(31):
        t = k * 0.1
        recs.append(StepRecord(k + 1, t, "train", 1.0, 0.5, 100.0, 100.0))
        recs.append(TelemetryBatch([TelemetrySample(t, "nvml:0", "power_w", 200.0),
                                    TelemetrySample(t, "nvml:0", "energy_j", 200.0 * t)]))
    snap = snapshot(recs)
    windows, total = engine.snapshot_energy(snap, "nvml:0")
    ys = [w["j_per_sample"] for w in windows]
    assert len(ys) >= 2 and ys == pytest.approx([2.0] * len(ys))  # 200 W, 100 samples/s
    assert total["j_per_sample"] == pytest.approx(2.0)
    v = views["PowerView"]
    v.push(snap, force=True)
    # the view draws those windows and shows their total (the figure the JSON export reports)
    curve = v.curves["energy"]["GPU"]
    assert list(curve.yData) == ys and list(curve.xData) == [w["end"] for w in windows]
    assert v.energy_figures["GPU"] == total
    assert "GPU 2.00 J" in v.plots["energy"].titleLabel.text
    avail = v.available()
    assert avail["power"] and avail["energy"] and not avail["temp"]
    assert "does not report" in v.notes["temp"].toPlainText()


def test_memory_view_cpu_and_gpu(views):
    v = views["MemoryView"]
    cpu = [run_info(), TelemetryBatch([TelemetrySample(0.1, "psutil", "rss_bytes", 1e8),
                                       TelemetrySample(0.1, "psutil", "sys_mem_used_bytes", 2e9)]),
           *steps_and_times(2)]
    v.push(snapshot(cpu), force=True)
    assert v.shown_series() == {"rss", "sys"}
    gpu = [run_info(device="cuda:0"), StepRecord(1, 0.1, "train", 1.0, 0.5, 5.0, 100.0, peak_mem_bytes=5e8),
           TelemetryBatch([TelemetrySample(0.1, "nvml:0", "mem_used_bytes", 1e9)])]
    v.push(snapshot(gpu), force=True)
    assert v.shown_series() == {"gpu_used", "peak"}
    assert "Allocated/reserved memory: not recorded" in v.notice.text()  # no torch allocator telemetry in it
    torch_tel = TelemetryBatch([TelemetrySample(0.1 * i, "torch:cuda:0", m, (i + 1) * base)
                                for i in range(3) for m, base in (("allocated_bytes", 2e8),
                                                                  ("reserved_bytes", 4e8))])
    v.push(snapshot([*gpu, torch_tel]), force=True)
    assert v.shown_series() == {"gpu_used", "peak", "allocated", "reserved"}
    assert "Allocated/reserved" not in v.notice.text() and "Reserved" not in v.notice.text()
    x, y = v.curves["reserved"].getData()
    assert list(y) == [4e8, 8e8, 12e8]
    x, y = v.curves["allocated"].getData()
    assert list(y) == [2e8, 4e8, 6e8]


def test_log_view_takes_each_line_once_and_shows_failure(views):
    v = views["LogView"]
    feed = LiveFeed()
    feed(run_info())
    feed(LogRecord(0.1, "info", "dataset: synthetic"))
    v.push(feed.snapshot(), force=True)
    feed(LogRecord(0.2, "warning", "slow fp16"))
    v.push(feed.snapshot(), force=True)
    v.push(feed.snapshot(), force=True)
    feed(RunEnded(0.3, "failed", "CUDA out of memory at batch 64"))
    v.push(feed.snapshot(), force=True)
    messages = [m for _lvl, m in v.lines]
    assert messages.count("dataset: synthetic") == 1 and messages.count("slow fp16") == 1
    assert v.lines[-1] == ("error", "run failed: CUDA out of memory at batch 64")


def test_hidden_view_catches_up_when_shown(views):
    v = views["TrainingView"]
    v.hide()
    before = v.draws
    v.push(snapshot([run_info(), *steps_and_times(3)]))
    assert v.draws == before
    v.show()
    assert v.draws == before + 1 and v.point_counts()["loss"] == 3


@pytest.mark.parametrize("name", ["timing_view", "memory_view", "power_view", "training_view", "feature_view",
                                  "layer_table", "log_view"])
def test_each_view_opens_alone(name, tmp_path):
    import importlib

    out = tmp_path / f"{name}.png"
    mod = importlib.import_module(f"app.views.{name}")
    assert mod.main(["--screenshot", str(out)]) == 0
    assert out.stat().st_size > 1000


def test_percent_axes_show_zero_to_hundred(views, qtbot):
    """Percentages are drawn on 0-100, whatever the data (a CPU pinned near 100 % once showed 99.2-100)."""
    recs = [run_info()]
    for k in range(20):
        t = 0.1 * k
        recs.append(TelemetryBatch([TelemetrySample(t, "psutil", "cpu_pct:0", 99.2 + 0.04 * k),
                                    TelemetrySample(t, "psutil", "cpu_pct:1", 99.5),
                                    TelemetrySample(t, "nvml:0", "gpu_util_pct", 97.0 + 0.1 * k)]))
    pv = views["PowerView"]
    pv.push(snapshot(recs), force=True)
    qtbot.wait(10)
    for key in ("cpu", "util"):
        lo, hi = pv.plots[key].vb.viewRange()[1]
        assert lo <= 0.5 and 99.5 <= hi <= 102, (key, lo, hi)
    tv = views["TrainingView"]
    tv.push(snapshot([run_info(), *[StepRecord(s, s * 0.1, "train", 0.1, 0.991 + 0.0001 * s, 10.0, 200.0)
                                    for s in range(1, 30)]]), force=True)
    qtbot.wait(10)
    lo, hi = tv.acc_plot.vb.viewRange()[1]
    assert lo <= 0.5 and 99.5 <= hi <= 102, (lo, hi)


def test_feature_view_says_first_of_all_channels_groups_and_enlarges_on_click(views, qtbot):
    """Item 8: 32 captured channels of a 96-channel layer say so; a group of 8 can be chosen; a click
    on a map enlarges it with its own value range; another click goes back to the grid."""
    from PySide6.QtCore import QPoint, Qt

    from app import style

    style.configure_pyqtgraph()
    rows = [LayerRow(0, "big", "conv2d", "conv2d", (96, 12, 12), 10, 10, 10)]
    info = RunInfo({"net": {"name": "n"}, "mode": "train"}, {"id": "cpu"}, {}, "h", 0.0, rows)
    maps = np.zeros((32, 12, 12), dtype=np.uint8)
    for k in range(32):
        maps[k] = k * 4 + np.arange(12, dtype=np.uint8)[None, :]  # channel k spans k*4 .. k*4+11
    fm = FeatureMap(5, 0.5, "big", (32, 12, 12), maps.tobytes(), 0.0, 2.55)
    v = views["FeatureMapView"]
    v.resize(700, 500)
    v.set_layers(["big"])
    v.push(snapshot([info, fm]), force=True)
    assert "first 32 of 96 channels of 12×12" in v.caption.text()
    assert v.shown_channels() == list(range(32))
    v.set_channels(9)
    assert v.shown_channels() == list(range(8, 16)) and "showing 9–16" in v.caption.text()
    # a real click on the middle of the second tile of the group (channel 10)
    subset, nrows, cols, h, w = v._layout
    centre = v.image.mapToScene(pg_point(1 * (w + 2) + w / 2, h / 2))
    at = v.glw.mapFromScene(centre)
    qtbot.mouseClick(v.glw.viewport(), Qt.LeftButton, pos=QPoint(int(at.x()), int(at.y())))
    assert v.enlarged() == 9
    text = v.caption.text()
    assert "channel 10 of 96" in text and "values 0.36 … 0.47" in text, text
    qtbot.mouseClick(v.glw.viewport(), Qt.LeftButton, pos=QPoint(int(at.x()), int(at.y())))
    assert v.enlarged() is None and v.shown_channels() == list(range(8, 16))


def pg_point(x, y):
    from PySide6.QtCore import QPointF

    return QPointF(x, y)


def test_memory_view_says_when_a_big_net_has_more_layers_than_rows(qtbot):
    """A big net's per-layer memory shows as many rows as fit and says how many layers there are."""
    import engine
    from app.views.memory_view import MemoryView

    spec = engine.load_preset("resnet18")
    info = engine.analyze(spec)
    rows = [engine.LayerRow(i, l.id, l.id, l.kind, l.out_shape, l.params, l.flops, l.activation_bytes(4))
            for i, l in enumerate(info.layers)]
    feed = engine.LiveFeed(window=5)
    feed(engine.RunInfo({"net": spec.to_dict(), "mode": "train", "batch_size": 4, "device": "cpu"},
                        {"id": "cpu"}, {}, "h", 0.0, rows))
    view = MemoryView()
    qtbot.addWidget(view)
    view.resize(600, 400)
    view.show()
    view.update_snapshot(feed.snapshot())
    title = view.layer_plot.titleLabel.text
    assert f"of {len(rows)} layers, drag to scroll" in title, title


def _wide_map(first: int, step: int = 5, total: int = 96) -> FeatureMap:
    maps = np.zeros((32, 12, 12), dtype=np.uint8)
    for k in range(32):
        maps[k] = k * 4 + np.arange(12, dtype=np.uint8)[None, :]
    return FeatureMap(step, 0.5, "big", (32, 12, 12), maps.tobytes(), 0.0, 2.55, first, total)


def test_feature_view_offers_every_window_of_the_layer_and_asks_the_run(views, qtbot):
    """Issue 10 item 8: the chooser lists 1–32, 33–64, 65–96 for a 96-channel layer; choosing
    33–64 asks for channel 32 on; the maps that come say "channels 33–64 of 96"."""
    v = views["FeatureMapView"]
    v.resize(700, 500)
    v.set_layers(["big"])
    v.push(snapshot([_wide_map(0)]), force=True)
    assert v.channel_choices()[:3] == ["1–32", "33–64", "65–96"]
    assert v.channel_choices()[3] == "1–8" and len(v.channel_choices()) == 3 + 4
    asked = []
    v.channels_requested.connect(lambda node, first: asked.append((node, first)))
    v.choose_window(33)
    assert asked == [("big", 32)]
    assert "first 32 of 96 channels" in v.caption.text() and "asked the run for channels 33–64" in v.caption.text()
    v.push(snapshot([_wide_map(32, step=6)]), force=True)
    text = v.caption.text()
    assert "channels 33–64 of 96 of 12×12" in text and "asked" not in text, text
    assert v.channels.currentText() == "33–64"
    assert v.channel_choices()[3] == "33–40"  # the groups name the layer's channels
    v.set_channels(41)
    assert v.shown_channels() == list(range(8, 16)) and "showing 41–48" in v.caption.text()
    v.enlarge(0)
    assert "channel 33 of 96" in v.caption.text()
    v.enlarge(None)
    v.choose_window(33)  # the window on screen: nothing to ask
    assert asked == [("big", 32)]
    # a layer whose channels do not split in 32s: the last window ends at its last channel
    v.push(snapshot([_wide_map(0, step=7, total=100)]), force=True)
    assert v.channel_choices()[:4] == ["1–32", "33–64", "65–96", "69–100"]


def test_feature_view_of_a_recorded_session_offers_only_what_was_recorded(views):
    v = views["FeatureMapView"]
    v.set_layers(["big"])
    v.set_recorded(True)
    v.push(snapshot([_wide_map(0)]), force=True)
    assert v.channel_choices()[0] == "all 32" and "33–64" not in v.channel_choices()
    assert "first 32 of 96 channels" in v.caption.text()
    assert "the session recorded only these channels" in v.caption.text()
    v.set_recorded(False)
    assert v.channel_choices()[:3] == ["1–32", "33–64", "65–96"]
