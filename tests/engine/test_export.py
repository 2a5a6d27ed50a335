"""Per-layer summary, exports (trace, CSV, HTML, JSON) and comparison, from hand-built sessions."""
import csv
import json
import re
from html.parser import HTMLParser

import pytest

from engine.analysis.compare import compare
from engine.export import CSV_COLUMNS, export_csv, export_html, export_json, export_trace, trace_events
from engine.records import LayerTimes, StepRecord
from engine.session import open_session
from engine.analysis.stats import percentile
from engine.analysis.summary import layer_summary, run_summary, summary
from tests.engine.test_session import LAYERS, make_records, write_session


@pytest.fixture
def session(tmp_path):
    return open_session(write_session(tmp_path / "a.lsession", make_records()))


def test_percentile_matches_numpy_linear():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95) == pytest.approx(9.55)
    assert percentile([], 50) is None


def test_layer_summary_statistics(session):
    rows = layer_summary(session)
    assert [r["id"] for r in rows] == [r.node_id for r in LAYERS]
    conv = rows[0]
    # 10 steady steps (2 warm-up), jitter 1.00/1.01/1.02 on 0.40 ms forward, 0.80 ms backward
    fwd = [0.40 * (1 + 0.01 * (s % 3)) for s in range(2, 12)]
    assert conv["samples"] == 10
    assert conv["fwd_mean_ms"] == pytest.approx(sum(fwd) / 10)
    assert conv["fwd_median_ms"] == pytest.approx(percentile(fwd, 50))
    assert conv["fwd_p95_ms"] == pytest.approx(percentile(fwd, 95))
    assert conv["bwd_median_ms"] == pytest.approx(2 * conv["fwd_median_ms"])
    assert conv["kind"] == "conv2d" and conv["out_shape"] == [6, 28, 28] and conv["params"] == 156
    assert conv["fwd_gflops"] == pytest.approx(235_200 * 8 / (conv["fwd_median_ms"] / 1000) / 1e9)
    assert conv["total_gflops"] == pytest.approx(3 * 235_200 * 8 / ((conv["fwd_median_ms"] + conv["bwd_median_ms"]) / 1000) / 1e9)
    steps = [s for s in session.steps() if not s.warmup]
    step_ms = sum(s.step_ms for s in steps) / len(steps)
    assert conv["share"] == pytest.approx((conv["fwd_mean_ms"] + conv["bwd_mean_ms"]) / step_ms)
    assert 0.9 < sum(r["share"] for r in rows) < 1.0  # the rest is gaps, loss and optimizer
    assert rows[2]["fwd_gflops"] is None  # maxpool: FLOPs 0 counted -> no rate, not a fake one
    assert conv["act_bytes"] == LAYERS[0].act_bytes


def test_warmup_layer_times_are_excluded():
    recs = make_records()
    ids = [r.node_id for r in LAYERS]
    # a slow warm-up step that did get profiled: must not move the statistics
    recs.insert(2, LayerTimes(0, 0.0, ids, [100.0] * 4, [100.0] * 4, [0.0] * 4, [0.0] * 4, [0] * 4))
    a = layer_summary(recs)
    b = layer_summary(make_records())
    assert a[0]["fwd_p95_ms"] == pytest.approx(b[0]["fwd_p95_ms"])
    assert a[0]["fwd_p95_ms"] < 1.0


def test_summary_from_records_equals_summary_from_file(session):
    recs = make_records()
    for x, y in zip(layer_summary(recs), layer_summary(session), strict=True):
        assert x.keys() == y.keys()
        for k in x:  # the file keeps times in whole nanoseconds
            assert x[k] == (pytest.approx(y[k], rel=1e-5) if isinstance(y[k], float) else y[k]), k
    a, b = run_summary(recs), run_summary(session)
    for k in ("steps", "steady_steps", "warmup_steps", "profiled_steps", "step_ms_median", "samples_per_s",
              "test_accuracy", "status", "loss"):
        assert a[k] == pytest.approx(b[k]), k
    assert b["steps"] == 12 and b["warmup_steps"] == 2 and b["profiled_steps"] == 10
    assert b["test_accuracy"] == 0.61 and b["status"] == "completed"
    assert b["j_per_sample"] is None and "Power was not recorded" in b["power_note"]


def test_energy_per_sample_and_layer_estimate(tmp_path):
    # ~600 steps of ~2.4 ms: enough steady time for >= 1 s counter windows, at a constant 50 W
    r = open_session(write_session(tmp_path / "e.lsession", make_records(steps=600, energy_w=50.0)))
    s = summary(r)
    run = s["run"]
    e = run["energy"]["nvml:0"]
    assert run["energy_source"] == "nvml:0" and e["avg_power_w"] == pytest.approx(50.0, rel=1e-6)
    assert e["j_per_sample"] == pytest.approx(e["joules"] / e["samples"], rel=1e-3)
    assert run["j_per_sample"] == e["j_per_sample"] and run["power_note"] is None
    est = [x["energy_est_j_per_sample"] for x in s["layers"]]
    assert sum(est) == pytest.approx(e["j_per_sample"] * sum(x["share"] for x in s["layers"]))


def test_trace_has_a_slice_per_layer_and_counters(session, tmp_path):
    p = export_trace(session, tmp_path / "t.json")
    obj = json.loads(p.read_text())
    ev = obj["traceEvents"]
    names = {e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"steps", "forward", "backward"}
    fwd = [e for e in ev if e["ph"] == "X" and e["cat"] == "forward"]
    bwd = [e for e in ev if e["ph"] == "X" and e["cat"] == "backward"]
    assert len(fwd) == len(bwd) == 10 * len(LAYERS)
    assert {e["name"] for e in fwd} == {r.node_id for r in LAYERS}
    assert all(e["dur"] > 0 and isinstance(e["ts"], (int, float)) for e in fwd + bwd)
    steps = {e["args"].get("step"): e for e in ev if e["ph"] == "X" and e["cat"] == "step"}
    assert len(steps) == 12
    for e in fwd + bwd:  # every layer slice lies inside its step's slice
        st = next(x for x in ev if x["ph"] == "X" and x["cat"] == "step" and x["name"].endswith(f" {e['args']['step']}"))
        assert st["ts"] - 1e-3 <= e["ts"] and e["ts"] + e["dur"] <= st["ts"] + st["dur"] + 1e-3
    s3 = sorted((e for e in fwd if e["args"]["step"] == 3), key=lambda e: e["ts"])
    assert all(a["ts"] + a["dur"] <= b["ts"] for a, b in zip(s3, s3[1:]))  # forward slices do not overlap
    counters = [e for e in ev if e["ph"] == "C"]
    assert {e["name"] for e in counters} == {"CPU (psutil)", "process RSS (psutil)"}
    assert obj["otherData"]["profiled_steps_in_trace"] == 10


def test_trace_step_limit(session):
    obj = trace_events(session, max_steps=3)
    fwd = [e for e in obj["traceEvents"] if e["ph"] == "X" and e["cat"] == "forward"]
    assert len(fwd) == 3 * len(LAYERS) and obj["otherData"]["steps_in_trace"] == [2, 4]
    assert {e["args"]["step"] for e in obj["traceEvents"] if e["ph"] == "X" and e["cat"] == "step"} == {2, 3, 4}


def test_csv_per_layer(session, tmp_path):
    p = export_csv(session, tmp_path / "s.csv")
    rows = list(csv.DictReader(p.open()))
    assert list(rows[0]) == CSV_COLUMNS
    assert [r["id"] for r in rows] == [la.node_id for la in LAYERS]
    assert rows[0]["out_shape"] == "6x28x28" and float(rows[0]["fwd_median_ms"]) > 0
    assert rows[2]["fwd_gflops"] == ""  # unknown is empty, never 0


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.urls = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.urls.append(v)


def test_html_self_contained(session, tmp_path):
    text = export_html(session, tmp_path / "r.html").read_text()
    c = _Collect()
    c.feed(text)
    assert "script" not in c.tags and "link" not in c.tags and c.urls == []
    assert c.tags.count("svg") >= 4  # layer time, memory, loss, accuracy, step time
    assert re.findall(r"https?://", text) == ["http://"] * text.count('xmlns="http://www.w3.org/2000/svg"')
    for r in LAYERS:
        assert r.node_id in text
    assert "Power was not recorded" in text and "Test CPU" in text


def test_html_power_chart_when_recorded(tmp_path):
    r = open_session(write_session(tmp_path / "p.lsession", make_records(steps=600, energy_w=50.0)))
    text = export_html(r, tmp_path / "r.html").read_text()
    assert "Power was not recorded" not in text and "J per sample" in text and "nvml:0" in text


def test_json_summary(session, tmp_path):
    obj = json.loads(export_json(session, tmp_path / "s.json").read_text())
    assert obj["format"] == "layerscope-summary" and len(obj["layers"]) == len(LAYERS)
    assert obj["run"]["status"] == "completed" and obj["net"]["name"] == "tiny"
    assert {"source": "psutil", "metric": "cpu_pct"} in obj["telemetry_series"]


@pytest.mark.parametrize("end", ["stopped", None])
def test_export_of_stopped_or_killed_run(tmp_path, end):
    recs = make_records(end=end)
    r = open_session(write_session(tmp_path / "s.lsession", recs))
    assert r.status == ("stopped" if end else "running")
    for fn, name in ((export_trace, "t.json"), (export_csv, "c.csv"), (export_html, "h.html"), (export_json, "j.json")):
        assert fn(r, tmp_path / name).stat().st_size > 100
    text = (tmp_path / "h.html").read_text()
    assert ("never recorded an end" in text) == (end is None)


def test_empty_run_exports(tmp_path):
    """A run that failed before its first step still exports (no layer times, no steps)."""
    recs = [x for x in make_records() if not isinstance(x, (LayerTimes, StepRecord))]
    r = open_session(write_session(tmp_path / "e.lsession", recs))
    export_html(r, tmp_path / "h.html")
    assert json.loads(export_trace(r, tmp_path / "t.json").read_text())["traceEvents"]
    assert len(list(csv.DictReader(export_csv(r, tmp_path / "c.csv").open()))) == len(LAYERS)


def test_compare_speedup_and_ratios(tmp_path):
    a = open_session(write_session(tmp_path / "a.lsession", make_records(steps=600, energy_w=50.0)))
    b = open_session(write_session(tmp_path / "b.lsession", make_records(steps=600, energy_w=50.0, speed=2.0)))
    c = compare(a, b)
    conv = c["layers"][0]
    assert conv["id"] == "conv1" and conv["fwd_speedup"] == pytest.approx(2.0) and conv["speedup"] == pytest.approx(2.0)
    assert c["step_speedup"] > 1.5 and c["throughput_ratio"] > 1.5
    # same power, shorter steps: B needs less energy per sample
    assert c["energy_per_sample_ratio"] == pytest.approx(c["b"]["j_per_sample"] / c["a"]["j_per_sample"])
    assert c["energy_per_sample_ratio"] < 0.8 and c["energy_note"] is None
    same = compare(a, a)
    assert all(x["speedup"] == pytest.approx(1.0) for x in same["layers"])


def test_compare_without_energy_says_why(tmp_path, session):
    b = open_session(write_session(tmp_path / "b.lsession", make_records(speed=2.0)))
    c = compare(session, b)
    assert c["energy_per_sample_ratio"] is None and "not available for A and B" in c["energy_note"]
    assert c["layers"][0]["speedup"] == pytest.approx(2.0)
