"""One source for every figure: a live view of a run and the JSON export of its session agree.

A real session is recorded (lenet5 on the CPU through ``engine.Run``, every step profiled,
telemetry on), then (a) its records are replayed into a ``LiveFeed`` and the monitor views are
built offscreen and fed the snapshot, as the app does when it opens a session, and (b) the JSON
export is written. Every figure both show - per-layer mean forward/backward ms, share of the
step, GFLOP/s, step time, samples/s, energy per sample - must be equal, exactly: both come from
the same ``engine.analysis`` functions over the same steps. They see the same steps because the
run is shorter than the feed's window (``LiveFeed(window=50)`` keeps the last 50 steps and
LayerTimes; its step history keeps 3000); a view that re-derived a figure its own way (GFLOP/s
at the mean time instead of the median, a share of another step time, energy over telemetry
windows instead of step windows) would disagree here.
"""
from __future__ import annotations

import json

import pytest

import engine
from engine import fmt
from engine.run.live import LiveFeed
from engine.session import open_session

STEPS, WARMUP = 6, 2


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(session path, JSON export) of a short real run."""
    from engine.export import export_json
    from engine.run.loop import RunConfig

    folder = tmp_path_factory.mktemp("one_source")
    cfg = RunConfig(net=engine.load_preset("lenet5"), device="cpu", batch_size=8, steps=STEPS, warmup=WARMUP,
                    profile_every=1, telemetry_hz=20.0, threads=1, out=str(folder / "run.lsession"))
    result = engine.Run(cfg).run()
    assert result.status == "completed", result.message
    with open_session(result.session_path) as reader:
        path = export_json(reader, folder / "run.json")
    return result.session_path, json.loads(path.read_text())


def replay(session_path, window=50, heat_steps=200):
    """The snapshot the app's views get after opening the session: its records through a LiveFeed."""
    feed = LiveFeed(window=window, heat_steps=heat_steps)
    with open_session(session_path) as reader:
        for rec in reader.records():
            feed(rec)
    return feed.snapshot()


@pytest.fixture
def views(qtbot):
    from app.views.layer_table import LayerTableView
    from app.views.power_view import PowerView
    from app.views.timing_view import LayerTimeView
    from app.views.training_view import TrainingView

    made = {}
    for cls in (LayerTimeView, LayerTableView, TrainingView, PowerView):
        v = cls()
        qtbot.addWidget(v)
        v.resize(900, 500)
        v.show()
        made[cls.__name__] = v
    return made


def test_views_and_json_export_show_the_same_figures(recorded, views):
    session_path, exported = recorded
    run, layers = exported["run"], {r["id"]: r for r in exported["layers"]}
    assert run["steps"] == STEPS + WARMUP < 50  # within the feed's window: both see every step
    snap = replay(session_path)
    for v in views.values():
        v.push(snap, force=True)

    # the layer time view holds each row's figures as drawn
    drawn = views["LayerTimeView"].rows()
    assert {r["id"] for r in drawn} == set(layers)
    for r in drawn:
        e = layers[r["id"]]
        assert r["fwd_ms"] == e["fwd_mean_ms"], r["id"]
        assert r["bwd_ms"] == e["bwd_mean_ms"], r["id"]
        assert r["share"] == e["share"], r["id"]
        assert r["gflops"] == e["fwd_gflops"], r["id"]
    # GFLOP/s is taken at the median: the check above tells a mean-based rate apart
    assert any(e["fwd_mean_ms"] != e["fwd_median_ms"] for e in layers.values() if e["fwd_gflops"])
    assert sum(1 for e in layers.values() if e["fwd_gflops"]) >= 4  # convs and linears have a rate

    # the layer table shows the export's numbers, formatted by engine.fmt
    from app.views.layer_table import COLUMNS

    table = views["LayerTableView"]
    cols = [c[0] for c in COLUMNS]
    for i in range(table.model.rowCount()):
        cell = {key: table.model.data(table.model.index(i, c)) for c, key in enumerate(cols)}
        e = layers[cell["id"]]
        assert cell["fwd_ms"] == fmt.fmt_ms(e["fwd_mean_ms"])
        assert cell["bwd_ms"] == fmt.fmt_ms(e["bwd_mean_ms"])
        assert cell["share"] == fmt.fmt_pct(e["share"])
        assert cell["gflops"] == fmt.fmt_num(e["fwd_gflops"])
        assert cell["act_bytes"] == fmt.fmt_bytes(e["act_bytes"])

    # step time and throughput
    stats = engine.snapshot_step_stats(snap)
    for k in ("step_ms_mean", "step_ms_median", "step_ms_p95", "samples_per_s"):
        assert stats[k] == run[k], k
    assert fmt.fmt_rate(run["samples_per_s"]) in views["TrainingView"].stats.text()
    # every steady step was profiled, so the share's step time is the export's mean step time
    assert f"of a {fmt.fmt_ms(run['step_ms_mean'])} ms step" in views["LayerTimeView"].summary.text()

    # the canvas colours
    metrics = engine.node_metrics(snap)
    for nid, m in metrics.items():
        e = layers[nid]
        assert m["time_ms"] == (e["fwd_mean_ms"] or 0.0) + (e["bwd_mean_ms"] or 0.0)
        assert m.get("gflops") == e["fwd_gflops"]

    # energy per sample, where this machine recorded an energy counter
    power = views["PowerView"]
    shown = {label: e["j_per_sample"] for label, e in power.energy_figures.items()}
    assert sorted(shown.values()) == sorted(e["j_per_sample"] for e in run["energy"].values())


def test_power_view_energy_per_sample_is_the_exports(tmp_path, qtbot):
    """An energy counter on every machine: a recorded session with a 50 W GPU counter, long enough
    for >= 1 s windows (602 steps), replayed with a window that holds all of them."""
    from app.views.power_view import PowerView
    from engine.export import export_json
    from tests.engine.test_session import make_records, write_session

    path = write_session(tmp_path / "e.lsession", make_records(steps=600, energy_w=50.0))
    with open_session(path) as reader:
        run = json.loads(export_json(reader, tmp_path / "e.json").read_text())["run"]
    assert run["energy_source"] == "nvml:0" and run["j_per_sample"] is not None
    view = PowerView()
    qtbot.addWidget(view)
    view.show()
    view.push(replay(path, window=1000, heat_steps=1000), force=True)
    assert view.energy_figures["GPU"] == run["energy"]["nvml:0"]
    assert f"GPU {fmt.fmt_num(run['j_per_sample'])} J" in view.plots["energy"].titleLabel.text
