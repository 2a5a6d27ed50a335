"""Stored aggregates (issue 9, item 27), reading never writes, page faults in sessions (leftovers)."""
from __future__ import annotations

import shutil
import sqlite3

import pytest

from engine.analysis.summary import layer_summary, run_summary, summary
from engine.records import LayerRow, LayerTimes, RunEnded, RunInfo, StepRecord
from engine.session import SessionWriter, open_session
from engine.session import aggregates as A

IDS = ["conv1", "relu1", "fc1"]
ROWS = [LayerRow(i, n, n, k, (4, 4), 10, f, 64) for i, (n, k, f) in
        enumerate([("conv1", "conv2d", 1000), ("relu1", "relu", 0), ("fc1", "linear", 500)])]


def recs(steps=30, faults=True, end=True):
    out = [RunInfo(config={"mode": "train", "batch_size": 8, "device": "cpu", "warmup": 2}, device={"id": "cpu"},
                   versions={}, host="h", start_time=0.0, layers=list(ROWS))]
    t = 0.0
    for s in range(1, steps + 1):
        warm = s <= 2
        fwd = [1.0 + 0.01 * ((s * 7 + k) % 13) for k in range(3)]
        out.append(StepRecord(s, t, "train", 1.0, 0.5, 10.0 + (s % 5), 800.0, 0.01, None, warm, True, None))
        counted = faults and s % 4 == 0
        out.append(LayerTimes(s, t, list(IDS), fwd, [0.5, 0.0, 0.25], [0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [64] * 3, [],
                              [300 + s, 0, 7] if counted else [], 5000.0 if counted else None))
        t += 0.012
    if end:
        out.append(RunEnded(t, "completed", "", steps, {}))
    return out


def write(path, records, **kw):
    with SessionWriter(path, **kw) as w:
        for r in records:
            w(r)
    return path


def test_summary_reads_the_stored_tables_not_the_rows(tmp_path, monkeypatch):
    path = write(tmp_path / "s.lsession", recs())
    with open_session(path) as r:
        expected = summary(list(r.records()))
    calls = []
    real = A.compute_aggregates
    monkeypatch.setattr(A, "compute_aggregates", lambda *a, **k: calls.append(1) or real(*a, **k))
    with open_session(path) as r:
        assert r.has_aggregates()
        assert summary(r) == expected
    assert calls == []  # the per-node figures came from node_stats
    with sqlite3.connect(path) as con:
        cols = {c for (c,) in con.execute("SELECT DISTINCT col FROM node_stats")}
    assert {"fwd_ns", "bwd_ns", "step_fwd_ns", "minor_faults"} <= cols


def test_a_session_changed_after_close_is_summarised_from_its_rows(tmp_path):
    path = write(tmp_path / "s.lsession", recs())
    with sqlite3.connect(path) as con:
        con.execute("UPDATE layer_times_ns SET fwd_ns = fwd_ns * 3 WHERE node = 1")
    with open_session(path) as r:
        assert not r.has_aggregates()  # the change counter moved: the stored figures no longer hold
        rows = {x["id"]: x for x in layer_summary(r)}
        assert summary(r) == summary(list(r.records()))
    assert rows["conv1"]["fwd_median_ms"] > 3.0


def _state(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("stored", [True, False])
def test_reading_never_writes_into_a_finished_session(tmp_path, stored):
    path = write(tmp_path / "s.lsession", recs(), aggregates=stored)
    before = _state(tmp_path)
    with open_session(path) as r:
        summary(r)
        list(r.records())
    assert _state(tmp_path) == before  # no index, no table, no journal left behind


def test_reading_a_killed_writers_session_leaves_its_files_alone(tmp_path):
    w = SessionWriter(tmp_path / "live.lsession", checkpoint_interval_s=3600)
    for r in recs(end=False):
        w(r)
    w.flush()
    killed = tmp_path / "killed"
    killed.mkdir()
    for suffix in ("", "-wal", "-shm"):  # as a killed process leaves them
        src = tmp_path / f"live.lsession{suffix}"
        if src.exists():
            shutil.copyfile(src, killed / src.name)
    w.close()
    before = _state(killed)
    with open_session(killed / "live.lsession") as r:
        assert r.status == "running" and len(r.steps()) == 30
        assert not r.has_aggregates()
        run_summary(r)
    after = _state(killed)
    assert after["live.lsession"] == before["live.lsession"]  # the WAL was read, not folded in
    assert after.get("live.lsession-wal") == before.get("live.lsession-wal")


def test_page_faults_round_trip_through_a_session(tmp_path):
    records = recs()
    path = write(tmp_path / "s.lsession", records)
    with open_session(path) as r:
        got = {lt.step: lt for lt in r.layer_times()}
    for lt in (x for x in records if isinstance(x, LayerTimes)):
        assert got[lt.step].minor_faults == lt.minor_faults
        assert got[lt.step].fault_ns == lt.fault_ns


def test_sessions_without_fault_columns_still_open(tmp_path):
    path = write(tmp_path / "s.lsession", recs(), aggregates=False)
    with sqlite3.connect(path) as con:  # as written before the columns were added
        con.execute("DROP VIEW layer_times")
        con.execute("ALTER TABLE layer_times_ns DROP COLUMN fault_ns")
        con.execute("ALTER TABLE layer_times_ns DROP COLUMN minor_faults")
        con.execute("DROP TABLE node_stats")
    with open_session(path) as r:
        lts = r.layer_times()
        rows = layer_summary(r)
    assert lts and all(lt.minor_faults == [] and lt.fault_ns is None for lt in lts)
    assert all(x["minor_faults"] is None for x in rows)


def test_fault_cost_per_layer_and_the_runs_advice(tmp_path):
    from engine.analysis.layers import FAULT_ADVICE_SHARE, run_faults

    records = recs()  # conv1: 300+step faults per counted step at 5000 ns each: ~20% of a ~12 ms step
    path = write(tmp_path / "s.lsession", records)
    with open_session(path) as r:
        s = summary(r)
    assert s == summary(records)  # the session's SQL figures are the record path's
    rows = {x["id"]: x for x in s["layers"]}
    counted = sorted(lt.minor_faults[0] for lt in records if isinstance(lt, LayerTimes) and lt.minor_faults
                     and lt.step > 2)
    median = (counted[len(counted) // 2] + counted[(len(counted) - 1) // 2]) / 2
    assert rows["conv1"]["minor_faults"] == median
    assert rows["conv1"]["fault_ms"] == pytest.approx(median * 5000.0 / 1e6)
    assert rows["conv1"]["fault_share"] == pytest.approx(rows["conv1"]["fault_ms"] / rows["conv1"]["fwd_median_ms"])
    assert rows["relu1"]["fault_ms"] == 0.0
    run = s["run"]
    total = sum(x["fault_ms"] for x in s["layers"])
    assert run["fault_ms"] == pytest.approx(total)
    assert run["fault_share"] == pytest.approx(total / run["step_ms_median"])
    assert run["fault_share"] > FAULT_ADVICE_SHARE and "minor page faults" in run["fault_advice"]
    assert "MALLOC_MMAP_THRESHOLD_" in run["fault_advice"]
    small = run_faults([{"fault_ms": 0.05, "fwd_median_ms": 3.0}], 10.0)
    assert small["fault_share"] == pytest.approx(0.005) and small["advice"] is None
    none = summary(recs(faults=False))["run"]  # not counted: absent, not zero
    assert none["fault_ms"] is None and none["fault_share"] is None and none["fault_advice"] is None


def test_cli_summary_and_html_show_the_spread_and_the_alloc_flag(tmp_path, capsys):
    from engine.cli.main import main
    from engine.export.html import html_report

    path = write(tmp_path / "s.lsession", recs())
    with open_session(path) as r:
        rows = {x["id"]: x for x in layer_summary(r)}
        html = html_report(r)
    conv1 = rows["conv1"]
    assert conv1["alloc_bound"] is True and rows["fc1"]["alloc_bound"] is False
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("conv1"))
    assert "fwd p5-p95" in out and f"{conv1['fwd_p5_ms']:.2f}-{conv1['fwd_p95_ms']:.2f}" in line
    assert "alloc-bound" in line and "alloc-bound" not in next(x for x in out.splitlines() if x.startswith("fc1"))
    assert "advice: " in out and "minor page faults" in out
    assert "fwd p5\u2013p95" in html and f"{conv1['fwd_p5_ms']:.2f}\u2013{conv1['fwd_p95_ms']:.2f}" in html
    assert "alloc-bound</td>" in html and "MALLOC_MMAP_THRESHOLD_" in html
    plain = write(tmp_path / "p.lsession", recs(faults=False))
    assert main(["summary", str(plain)]) == 0
    out = capsys.readouterr().out
    assert "alloc-bound" not in out and "advice:" not in out and "fwd p5-p95" in out
