"""Session file: round trip of every record type, incremental commits, crash safety, bad files."""
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.records import (EvalRecord, FeatureMap, LayerRow, LayerTimes, LogRecord, RunEnded, RunInfo,
                            StepRecord, TelemetryBatch, TelemetrySample)
from engine.session import SessionError, SessionWriter, open_session
from engine.session.schema import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[2]

LAYERS = [LayerRow(0, "conv1", "conv1", "conv2d", (6, 28, 28), 156, 235_200, 6 * 28 * 28 * 4 * 8),
          LayerRow(1, "relu1", "relu1", "relu", (6, 28, 28), 0, 4704, 6 * 28 * 28 * 4 * 8),
          LayerRow(2, "pool1", "pool1", "maxpool2d", (6, 14, 14), 0, 0, 6 * 14 * 14 * 4 * 8),
          LayerRow(3, "fc", "fc", "linear", (10,), 11_770, 23_520, 10 * 4 * 8)]


def make_records(steps=12, warmup=2, batch=8, mode="train", telemetry=True, speed=1.0, end="completed",
                 energy_w=None):
    """A hand-built, plausible run: every record type, times consistent with each other.

    ``speed`` divides every layer time (to make a faster "B" run); ``energy_w`` adds a GPU energy
    counter rising at that many watts."""
    ids = [r.node_id for r in LAYERS]
    base_f = [0.40, 0.05, 0.10, 0.20]
    base_b = [0.80, 0.06, 0.12, 0.30] if mode == "train" else [None] * 4
    recs = [RunInfo(config={"net": {"format": "layerscope-net", "name": "tiny"}, "mode": mode,
                            "batch_size": batch, "precision": "fp32", "device": "cpu"},
                    device={"id": "cpu", "name": "Test CPU"}, versions={"torch": "2.x"}, host="testhost",
                    start_time=1_700_000_000.0, layers=list(LAYERS))]
    t = 0.01
    for s in range(steps):
        jitter = 1 + 0.01 * (s % 3)
        fwd = [f * jitter / speed for f in base_f]
        bwd = [None if b is None else b * jitter / speed for b in base_b]
        fs, acc = [], 0.0
        for f in fwd:
            fs.append(acc)
            acc += f + 0.01
        bs = []
        for b in reversed(bwd):
            bs.insert(0, None if b is None else acc)
            acc += (b or 0) + 0.01
        step_ms = acc + 0.05
        data_ms = 0.02  # the step starts at t, waits for its batch, then computes from t + data_ms
        t_end = t + (data_ms + step_ms) / 1000
        recs.append(StepRecord(s, t, mode, 2.3 - 0.1 * s if mode == "train" else None,
                               0.1 + 0.05 * s if mode == "train" else None, step_ms,
                               batch / ((step_ms + data_ms) / 1000), data_ms=data_ms, epoch=0, warmup=s < warmup,
                               profiled=s >= warmup))
        if s >= warmup:  # like the run, warm-up steps carry no layer times
            recs.append(LayerTimes(s, t + data_ms / 1000, ids, fwd, bwd, fs, bs, [r.act_bytes for r in LAYERS]))
        if telemetry:
            samples = [TelemetrySample(t_end, "psutil", "cpu_pct", 50.0 + s),
                       TelemetrySample(t_end, "psutil", "rss_bytes", 1e8 + s * 1e5)]
            if energy_w is not None:
                samples += [TelemetrySample(t_end, "nvml:0", "power_w", energy_w),
                            TelemetrySample(t_end, "nvml:0", "energy_j", energy_w * t_end)]
            recs.append(TelemetryBatch(samples))
        t = t_end + 0.001
    recs.append(FeatureMap(steps - 1, t, "conv1", (2, 3, 3), bytes(range(18)), -1.0, 2.0))
    recs.append(EvalRecord(steps, t, 0, "test", 1.5, 0.61, 360))
    recs.append(LogRecord(t, "info", "dataset: synthetic"))
    if end:
        recs.append(RunEnded(t + 0.01, end, "stopped by user" if end == "stopped" else "", steps,
                             {"test_accuracy": 0.61}))
    return recs


def write_session(path, recs, **kw):
    w = SessionWriter(path, **kw)
    for r in recs:
        w(r)
    w.close()
    return path


def test_round_trip_every_record_type(tmp_path):
    recs = make_records()
    p = write_session(tmp_path / "a.lsession", recs)
    r = open_session(p)
    assert r.status == "completed"
    info = r.info
    assert info.config["net"]["name"] == "tiny" and info.config["mode"] == "train"
    assert info.layers == LAYERS and info.host == "testhost" and info.device["name"] == "Test CPU"
    steps = [x for x in recs if isinstance(x, StepRecord)]
    assert r.steps() == steps
    lts = [x for x in recs if isinstance(x, LayerTimes)]
    back = r.layer_times()
    assert len(back) == len(lts)
    for a, b in zip(lts, back):
        assert (a.step, a.t, a.node_ids, a.mem_bytes) == (b.step, b.t, b.node_ids, b.mem_bytes)
        assert a.fwd_ms == pytest.approx(b.fwd_ms, abs=1e-6)
        assert a.bwd_ms == pytest.approx(b.bwd_ms, abs=1e-6)
        assert a.fwd_start_ms == pytest.approx(b.fwd_start_ms, abs=1e-6)
        assert a.bwd_start_ms == pytest.approx(b.bwd_start_ms, abs=1e-6)
        assert b.peak_bytes == []
    assert [lt.step for lt in r.layer_times(3, 5)] == [3, 4, 5]
    tel = r.telemetry(metric="cpu_pct")
    assert [s.value for s in tel] == [50.0 + s for s in range(12)]
    assert ("psutil", "rss_bytes") in r.telemetry_series()
    fm = r.feature_maps("conv1")[0]
    assert fm.shape == (2, 3, 3) and fm.data == bytes(range(18)) and (fm.lo, fm.hi) == (-1.0, 2.0)
    assert r.evals() == [x for x in recs if isinstance(x, EvalRecord)]
    assert r.logs() == [x for x in recs if isinstance(x, LogRecord)]
    assert r.ended() == recs[-1]
    # records() replays the run: RunInfo first, RunEnded last, the same multiset of records
    replay = list(r.records())
    assert isinstance(replay[0], RunInfo) and replay[-1] == recs[-1]
    assert sorted(type(x).__name__ for x in replay) == sorted(type(x).__name__ for x in recs)
    ts = [x.samples[0].t if isinstance(x, TelemetryBatch) else x.t for x in replay[1:-1]]
    assert ts == sorted(ts)
    r.close()


def test_contract_tables_readable_with_plain_sqlite(tmp_path):
    p = write_session(tmp_path / "a.lsession", make_records(steps=3, warmup=0))
    con = sqlite3.connect(p)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
    assert meta["status"] == "completed" and meta["net"]["name"] == "tiny" and "versions" in meta
    row = con.execute("SELECT step, node_id, fwd_ms, bwd_ms, mem_bytes FROM layer_times "
                      "WHERE node_id = 'conv1' ORDER BY step").fetchall()
    assert [x[0] for x in row] == [0, 1, 2] and row[0][2] == pytest.approx(0.4)
    assert con.execute("SELECT count(*) FROM telemetry WHERE source='psutil' AND metric='cpu_pct'").fetchone()[0] == 3
    cols = [c[1] for c in con.execute("PRAGMA table_info(steps)")]
    assert cols[:7] == ["step", "t", "phase", "loss", "accuracy", "step_ms", "samples_per_s"]
    cols = [c[1] for c in con.execute("PRAGMA table_info(layers)")]
    assert cols[:7] == ["idx", "node_id", "name", "kind", "out_shape", "params", "flops"]
    cols = [c[1] for c in con.execute("PRAGMA table_info(feature_maps)")]
    assert cols[:4] == ["step", "node_id", "shape", "data"]
    con.close()
    # closed cleanly: one self-contained file, no WAL left beside it
    assert not Path(f"{p}-wal").exists()


def test_written_incrementally_before_close(tmp_path):
    p = tmp_path / "live.lsession"
    recs = make_records(end=None)
    w = SessionWriter(p, flush_interval=0.05)
    try:
        for r in recs:
            w(r)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = open_session(p)
            n = len(r.steps())
            r.close()
            if n == 12:
                break
            time.sleep(0.05)
        r = open_session(p)
        assert r.status == "running" and r.ended() is None
        assert len(r.layer_times()) == 10  # 12 steps, 2 of them warm-up
        r.close()
    finally:
        w.close()


def test_thread_safe_from_two_threads(tmp_path):
    p = tmp_path / "threads.lsession"
    w = SessionWriter(p, flush_interval=0.01)
    w(make_records(steps=1)[0])

    def telemetry():
        for i in range(500):
            w(TelemetryBatch([TelemetrySample(i * 0.01, "psutil", "cpu_pct", float(i))]))

    th = threading.Thread(target=telemetry)
    th.start()
    for i in range(500):
        w(StepRecord(i, i * 0.01, "train", 1.0, 0.5, 1.0, 100.0))
    th.join()
    w(RunEnded(6.0, "completed", steps=500))
    w.close()
    r = open_session(p)
    assert [s.step for s in r.steps()] == list(range(500))
    assert [s.value for s in r.telemetry()] == [float(i) for i in range(500)]


def test_feature_maps_rate_limited_and_last_kept(tmp_path):
    recs = [r for r in make_records(steps=2, end=None) if not isinstance(r, FeatureMap)]
    maps = [FeatureMap(i, i * 0.25, "conv1", (1, 2, 2), bytes([i, 0, 0, 0]), 0.0, 1.0) for i in range(10)]
    p = write_session(tmp_path / "fm.lsession", recs + maps, feature_interval_s=1.0)
    got = open_session(p).feature_maps("conv1")
    # t = 0, 1.0, 2.0 pass the 1 s limit; t = 2.25 is the last one and is kept
    assert [m.step for m in got] == [0, 4, 8, 9]
    assert got[-1].array().tolist() == [[[9, 0], [0, 0]]]


def test_compressible_feature_map_stored_compressed(tmp_path):
    big = FeatureMap(0, 0.0, "conv1", (8, 32, 32), bytes(8 * 32 * 32), 0.0, 1.0)
    p = write_session(tmp_path / "z.lsession", make_records(steps=1, end=None) + [big])
    con = sqlite3.connect(p)
    codec, n = con.execute("SELECT codec, length(data) FROM feature_maps WHERE step=0 AND shape='[8,32,32]'").fetchone()
    con.close()
    assert codec == "zlib" and n < 8 * 32 * 32 // 10
    assert open_session(p).feature_maps()[-1].data == bytes(8 * 32 * 32)


def test_failed_run_keeps_error(tmp_path):
    recs = make_records(steps=2, end=None) + [RunEnded(1.0, "failed", "CUDA out of memory at batch 512", 2)]
    r = open_session(write_session(tmp_path / "f.lsession", recs))
    assert r.status == "failed" and r.meta["error"] == "CUDA out of memory at batch 512"
    assert r.ended().message == "CUDA out of memory at batch 512"


KILL_SCRIPT = """
import os, signal, sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from test_session import make_records
from engine.session import SessionWriter
w = SessionWriter({path!r}, flush_interval=0.05)
for r in make_records(end=None):
    w(r)
time.sleep(0.5)   # at least one batch committed
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_leaves_readable_running_session(tmp_path):
    p = tmp_path / "killed.lsession"
    code = KILL_SCRIPT.format(root=str(ROOT), tests=str(Path(__file__).parent), path=str(p))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    r = open_session(p)
    assert r.status == "running" and r.ended() is None
    assert len(r.steps()) == 12 and len(r.layer_times()) == 10


def _bad(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_bad_files_give_one_line_errors(tmp_path):
    good = write_session(tmp_path / "good.lsession", make_records(steps=40))
    raw = good.read_bytes()
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    newer = tmp_path / "newer.lsession"
    newer.write_bytes(raw)
    con = sqlite3.connect(newer)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    cases = {
        tmp_path / "missing.lsession": "not found",
        _bad(tmp_path, "empty.lsession", b""): "empty",
        _bad(tmp_path, "text.lsession", b"hello, this is a text file\n" * 10): "not an SQLite database",
        _bad(tmp_path, "trunc.lsession", raw[: len(raw) // 2]): "truncated",
        _bad(tmp_path, "tiny.lsession", raw[:60]): "truncated",
        foreign: "not a LayerScope session",
        newer: "newer LayerScope",
        tmp_path: "folder",
    }
    for path, words in cases.items():
        with pytest.raises(SessionError) as e:
            open_session(path)
        msg = str(e.value)
        assert words in msg and "\n" not in msg, (path, msg)


def test_corrupt_pages_detected(tmp_path):
    good = write_session(tmp_path / "good.lsession", make_records(steps=40))
    raw = bytearray(good.read_bytes())
    page = int.from_bytes(raw[16:18], "big")
    for i in range(page * 2, len(raw), 7):  # scribble over everything past the first two pages
        raw[i] = 0xA5
    p = _bad(tmp_path, "corrupt.lsession", bytes(raw))
    with pytest.raises(SessionError, match="damaged"):
        r = open_session(p)
        r.layer_times()
        r.steps()


def test_writer_refuses_to_overwrite_a_foreign_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("precious")
    with pytest.raises(SessionError, match="not a session"):
        SessionWriter(p)
    assert p.read_text() == "precious"
    old = write_session(tmp_path / "old.lsession", make_records(steps=2))
    with pytest.raises(SessionError, match="already holds a session; give --force"):
        SessionWriter(old)  # a finished session is never replaced by accident
    assert len(open_session(old).steps()) == 2
    write_session(old, make_records(steps=3), force=True)  # only when asked
    assert len(open_session(old).steps()) == 3


def test_session_size_is_compact(tmp_path):
    """Size per profiled step: ~69 nodes of ResNet-18 must stay far under 5 kB (50 MB / 10k)."""
    ids = [f"layer{i // 7}_{i % 2}_conv{i % 3}" for i in range(69)]
    layers = [LayerRow(i, n, n, "conv2d", (64, 56, 56), 1000, 10**8, 64 * 56 * 56 * 4 * 32) for i, n in enumerate(ids)]
    w = SessionWriter(tmp_path / "size.lsession")
    w(RunInfo({"net": {}}, {"id": "cuda:0"}, {}, "h", 0.0, layers))
    n = 300
    for s in range(n):
        w(LayerTimes(s, s * 0.1, ids, [0.1 + i * 1e-3 for i in range(69)], [0.2 + i * 1e-3 for i in range(69)],
                     [i * 0.11 for i in range(69)], [8 + i * 0.21 for i in range(69)], [la.act_bytes for la in layers]))
        w(StepRecord(s, s * 0.1 + 0.05, "train", 1.0, 0.5, 40.0, 800.0, profiled=True))
    w.close()
    per_step = os.path.getsize(tmp_path / "size.lsession") / n
    assert per_step < 5000, per_step


def test_has_session_header_tells_sqlite_files_from_others(tmp_path):
    from engine.session import has_session_header

    session = write_session(tmp_path / "s.lsession", make_records(steps=1))
    assert has_session_header(session)
    (tmp_path / "notes.txt").write_text("SQLite format 2 is not it")
    (tmp_path / "empty.lsession").write_bytes(b"")
    assert not has_session_header(tmp_path / "notes.txt")
    assert not has_session_header(tmp_path / "empty.lsession")
    assert not has_session_header(tmp_path / "missing.lsession")
    assert not has_session_header(tmp_path)  # a folder cannot be opened as a file


def test_importing_the_session_package_is_cheap():
    """The app opens sessions before it needs torch: engine.session must not load it."""
    code = ("import sys, engine.session, engine.session.schema; from engine import open_session; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_feature_map_window_is_recorded_and_old_files_read_as_the_first_channels(tmp_path):
    """Issue 10 item 8: a map of channels 33-64 of 96 reads back as such; a file without the
    window columns (written before them) reads as the layer's first channels."""
    import sqlite3

    from engine.records import FeatureMap, StepRecord
    from engine.session.reader import SessionReader
    from engine.session.writer import SessionWriter

    path = tmp_path / "w.lsession"
    w = SessionWriter(path)
    w(StepRecord(1, 0.1, "train", 1.0, 0.5, 10.0, 100.0))
    w(FeatureMap(1, 0.1, "c", (2, 2, 2), bytes(range(8)), 0.0, 1.0, 32, 96))
    w.close()
    with SessionReader(path) as r:
        fm = r.feature_maps()[0]
        assert (fm.first_channel, fm.channels_total, fm.array().ravel().tolist()) == (32, 96, list(range(8)))
        assert [(f.first_channel, f.channels_total) for f in r.records() if isinstance(f, FeatureMap)] == [(32, 96)]
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE feature_maps DROP COLUMN channels_total")
    con.execute("ALTER TABLE feature_maps DROP COLUMN first_channel")
    con.commit()
    con.close()
    with SessionReader(path) as r:
        assert [(f.first_channel, f.channels_total) for f in r.feature_maps()] == [(0, None)]
