"""Live remote viewing: a served run's records reach a viewer in order; hostile input is refused
without touching the run."""
from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.records import FeatureMap, LogRecord, RunEnded, RunInfo, StepRecord
from engine.remote import server as server_mod
from engine.remote.client import RemoteRun
from engine.remote.server import RecordServer
from engine.remote.wire import MAX_SERVER_FRAME, decode_record, encode_record, recv_frame, send_frame

ROOT = Path(__file__).resolve().parents[2]


def _steps(n, start=0):
    return [StepRecord(step=i, t=i * 0.01, phase="train", loss=1.0 / (i + 1), accuracy=None, step_ms=1.5,
                       samples_per_s=100.0) for i in range(start, start + n)]


def _info():
    return RunInfo(config={"mode": "train"}, device={"id": "cpu"}, versions={}, host="h", start_time=0.0)


def _hello(sock, token, since=0):
    send_frame(sock, {"type": "hello", "version": 1, "token": token, "since": since})
    return recv_frame(sock, MAX_SERVER_FRAME)


def _records_until_end(sock):
    out = []
    while True:
        f = recv_frame(sock, MAX_SERVER_FRAME)
        if f["type"] == "record":
            seq, rec = decode_record(f)
            out.append((seq, rec))
            if isinstance(rec, RunEnded):
                return out
        else:
            out.append((None, f))


def test_records_round_trip_through_the_wire():
    fm = FeatureMap(step=3, t=0.5, node_id="conv1", shape=(2, 2, 2), data=bytes(range(8)), lo=-1.0, hi=2.0,
                    first_channel=4, channels_total=6)
    for rec in (_info(), fm, _steps(1)[0], LogRecord(t=1.0, level="info", message="x"),
                RunEnded(t=2.0, status="completed", steps=5, extra={"a": [1, 2]})):
        seq, back = decode_record(encode_record(7, rec))
        assert seq == 7 and back == rec


def test_a_served_profile_reaches_a_viewer_in_order(tmp_path):
    """A real `layerscope profile --serve` process; the viewer receives every record, in order,
    and what it receives is what the server's session file holds."""
    out = tmp_path / "served.lsession"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "profile", "lenet5", "--steps", "12", "--warmup", "1",
                             "--batch-size", "4", "--threads", "1", "--out", str(out), "--serve", "127.0.0.1:0",
                             "--serve-linger", "20", "-q"], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "token" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        m = re.search(r"on (127\.0\.0\.1):(\d+) .*token (\S+)", line)
        assert m, line
        got = []
        remote = RemoteRun(f"{m[1]}:{m[2]}", m[3], [got.append])
        result = remote.run()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    assert result.status == "completed" and remote.missed == 0
    assert isinstance(got[0], RunInfo) and isinstance(got[-1], RunEnded)
    steps = [r.step for r in got if isinstance(r, StepRecord) and r.phase == "train"]
    assert steps == list(range(1, 14))
    import engine

    with engine.open_session(out) as r:
        file_steps = [(s.step, s.step_ms) for s in r.steps() if s.phase == "train"]
        file_layers = {lt.step: lt.fwd_ms for lt in r.layer_times()}
    assert [(s.step, s.step_ms) for s in got if isinstance(s, StepRecord) and s.phase == "train"] == file_steps
    from engine.records import LayerTimes

    got_layers = {lt.step: lt.fwd_ms for lt in got if isinstance(lt, LayerTimes)}
    assert got_layers.keys() == file_layers.keys()
    for k in got_layers:
        assert got_layers[k] == pytest.approx(file_layers[k], abs=1e-6)


def test_wrong_token_garbage_and_huge_frames_are_refused_and_the_run_goes_on(monkeypatch):
    monkeypatch.setattr(server_mod, "HELLO_TIMEOUT_S", 0.5)
    with RecordServer(token="right") as srv:
        addr = ("127.0.0.1", srv.port)
        srv(_info())
        s1 = socket.create_connection(addr)
        assert _hello(s1, "wrong") == {"type": "refused", "message": "wrong token"}
        s2 = socket.create_connection(addr)
        s2.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")      # garbage: read as a huge length
        assert recv_frame(s2, MAX_SERVER_FRAME)["type"] == "refused"
        s3 = socket.create_connection(addr)
        s3.sendall(struct.pack(">I", 0xFFFFFFFF))            # a 4 GiB frame announced
        assert "over the limit" in recv_frame(s3, MAX_SERVER_FRAME)["message"]
        s4 = socket.create_connection(addr)
        s4.sendall(struct.pack(">I", 5) + b"\xff\xfe{}x")    # not UTF-8 JSON
        assert recv_frame(s4, MAX_SERVER_FRAME)["type"] == "refused"
        s5 = socket.create_connection(addr)                  # half-open: says nothing
        s5.settimeout(5)
        assert recv_frame(s5, MAX_SERVER_FRAME)["type"] == "refused"
        for s in (s1, s2, s3, s4, s5):
            s.close()
        for rec in _steps(5):                                # the run's sink is unaffected
            srv(rec)
        srv(RunEnded(t=1.0, status="completed", steps=5))
        good = socket.create_connection(addr)
        assert _hello(good, "right")["type"] == "welcome"
        recs = [r for s, r in _records_until_end(good) if s is not None]
        assert [type(r).__name__ for r in recs] == ["RunInfo"] + ["StepRecord"] * 5 + ["RunEnded"]
        assert srv.stats()["refused"] == 5


def test_a_stalled_viewer_never_slows_the_run_and_is_told_what_it_missed():
    with RecordServer(token="t", buffer=100) as srv:
        srv(_info())
        sock = socket.create_connection(("127.0.0.1", srv.port))
        assert _hello(sock, "t")["type"] == "welcome"
        big = [FeatureMap(step=i, t=0.0, node_id="c", shape=(32, 64, 64), data=bytes(32 * 64 * 64)) for i in range(400)]

        def produce():  # the run: 400 maps of 128 kB while the viewer reads nothing
            for fm in big:
                srv(fm)
            srv(RunEnded(t=1.0, status="completed", steps=400))

        t = threading.Thread(target=produce)
        t.start()
        t.join(10)
        assert not t.is_alive(), "the sink blocked on a viewer that reads nothing"
        frames = _records_until_end(sock)
    missed = [f for s, f in frames if s is None and f["type"] == "missed"]
    assert missed and sum(f["count"] for f in missed) > 0
    seqs = [s for s, _ in frames if s is not None]
    assert seqs == sorted(seqs) and seqs[-1] == 401
    assert len(seqs) + sum(f["count"] for f in missed) == 402


def test_a_viewer_that_reconnects_resumes_where_it_left():
    with RecordServer(token="t") as srv:
        srv(_info())
        for rec in _steps(10):
            srv(rec)
        sock = socket.create_connection(("127.0.0.1", srv.port))
        _hello(sock, "t", since=0)
        first = [decode_record(recv_frame(sock, MAX_SERVER_FRAME)) for _ in range(4)]
        sock.close()                                        # the connection drops
        for rec in _steps(5, start=10):
            srv(rec)
        srv(RunEnded(t=1.0, status="completed", steps=15))
        got = [r for _, r in first]
        remote = RemoteRun(f"127.0.0.1:{srv.port}", "t", [got.append])
        remote.next_seq = first[-1][0] + 1                  # what the viewer had
        assert remote.run().status == "completed"
    assert [r.step for r in got if isinstance(r, StepRecord)] == list(range(15))
    assert remote.missed == 0


def test_commands_need_allow_control():
    class FakeRun:
        stopped = False

        def stop(self):
            self.stopped = True

    fake = FakeRun()
    with RecordServer(token="t", control=fake) as srv:
        srv(_info())
        sock = socket.create_connection(("127.0.0.1", srv.port))
        assert _hello(sock, "t")["control"] is False
        recv_frame(sock, MAX_SERVER_FRAME)                  # RunInfo
        send_frame(sock, {"type": "command", "command": "stop"})
        srv(_steps(1)[0])
        frames = [recv_frame(sock, MAX_SERVER_FRAME) for _ in range(2)]
        ack = next(f for f in frames if f["type"] == "ack")
        assert ack["ok"] is False and "view only" in ack["message"] and not fake.stopped
    with RecordServer(token="t", control=fake, allow_control=True) as srv:
        srv(_info())
        remote = RemoteRun(f"127.0.0.1:{srv.port}", "t", [])
        th = threading.Thread(target=remote.run)
        th.start()
        deadline = time.monotonic() + 5
        while not remote.control and time.monotonic() < deadline:
            time.sleep(0.02)
        remote.stop()
        srv(_steps(1)[0])
        deadline = time.monotonic() + 5
        while not fake.stopped and time.monotonic() < deadline:
            srv(_steps(1)[0])
            time.sleep(0.05)
        assert fake.stopped
        srv(RunEnded(t=1.0, status="stopped"))
        th.join(5)


def test_cli_bad_input_is_one_line_exit_2(capsys):
    assert main(["watch", "nohost:notaport", "--token", "x"]) == 2
    assert main(["profile", "lenet5", "--serve", "127.0.0.1:99999"]) == 2
    assert main(["profile", "lenet5", "--allow-control"]) == 2  # control of a run nobody serves
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("Traceback" not in e for e in err) and "--serve" in err[2]
    # nothing listens there: the viewer gives up with one line, exit 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["watch", f"127.0.0.1:{port}", "--token", "x", "--reconnect", "0.5"]) == 2  # a wrong address
    err = capsys.readouterr().err
    assert "cannot reach" in err and "run failed" not in err
    with RecordServer(token="right") as srv:  # a wrong token is bad input too, not a failed run
        srv(_info())
        assert main(["watch", f"127.0.0.1:{srv.port}", "--token", "wrong", "-q"]) == 2
        assert "wrong token" in capsys.readouterr().err
