"""layerscope profile / export / summary / compare / devices, end to end on the CPU."""
import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.run import telemetry as tm
from engine.cli.main import main
from engine.cli.output import Progress
from engine.records import LogRecord, RunEnded, StateChanged, StepRecord
from engine.session import open_session
from tests.engine.test_telemetry import FakeNvml

ROOT = Path(__file__).resolve().parents[2]
LENET = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1", "relu3", "fc2", "relu4", "fc3"]
QUICK = ["--device", "cpu", "--batch-size", "4", "--threads", "1", "--warmup", "1", "--telemetry-hz", "20"]


@pytest.fixture(scope="module")
def lenet_session(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run.lsession"
    assert main(["profile", "lenet5", "--mode", "train", "--steps", "6", *QUICK, "--out", str(out), "-q"]) == 0
    return out


def test_profile_writes_layer_times_for_every_node(lenet_session, capsys):
    r = open_session(lenet_session)
    assert r.status == "completed" and r.info.config["mode"] == "train"
    lts = r.layer_times()
    assert len(lts) == 6  # every measured step profiled, warm-up not
    for lt in lts:
        assert lt.node_ids == LENET
        assert all(v > 0 for v in lt.fwd_ms) and all(v > 0 for v in lt.bwd_ms)
    con = sqlite3.connect(lenet_session)  # the contract table, as any SQLite client sees it
    assert con.execute("SELECT count(*) FROM layer_times WHERE fwd_ms > 0 AND bwd_ms > 0").fetchone()[0] == 6 * 12
    con.close()
    # memory is read every tick (the CPU load needs 40 ms between two ticks: a 30 ms run may have none)
    assert ("psutil", "rss_bytes") in r.telemetry_series()


def test_export_formats_parse(lenet_session, tmp_path, capsys):
    outs = {}
    for fmt in ("trace", "csv", "html", "json"):
        outs[fmt] = tmp_path / f"out.{fmt}"
        assert main(["export", str(lenet_session), "--format", fmt, "--out", str(outs[fmt])]) == 0
        assert f"wrote {outs[fmt]}" in capsys.readouterr().out
    trace = json.loads(outs["trace"].read_text())
    fwd = [e for e in trace["traceEvents"] if e["ph"] == "X" and e.get("cat") == "forward"]
    bwd = [e for e in trace["traceEvents"] if e["ph"] == "X" and e.get("cat") == "backward"]
    assert sorted({e["name"] for e in fwd}) == sorted(LENET) and len(fwd) == len(bwd) == 6 * 12
    assert any(e["ph"] == "C" for e in trace["traceEvents"])
    rows = list(csv.DictReader(outs["csv"].open()))
    assert [x["id"] for x in rows] == LENET and all(float(x["fwd_median_ms"]) > 0 for x in rows)
    assert "<svg" in outs["html"].read_text() and "conv2" in outs["html"].read_text()
    assert "Per-layer probe: " in outs["html"].read_text()  # how the layers were timed, as summary says
    assert len(json.loads(outs["json"].read_text())["layers"]) == 12


def test_export_default_path_next_to_session(lenet_session, capsys):
    assert main(["export", str(lenet_session), "--format", "csv"]) == 0
    assert lenet_session.with_name("run.csv").exists()


def test_summary_and_compare(lenet_session, tmp_path, capsys):
    assert main(["summary", str(lenet_session)]) == 0
    out = capsys.readouterr().out
    for nid in LENET:
        assert nid in out
    assert "status: completed" in out and "samples/s" in out and "Power was not recorded" in out
    from engine.run.native import status

    # how the layers were timed is recorded with the run and said (this process's loader agrees)
    want = "native" if status() == "native" else "python ("
    assert f"profiled; per-layer probe: {want}" in out
    b = tmp_path / "infer.lsession"
    assert main(["profile", "lenet5", "--mode", "infer", "--steps", "4", *QUICK, "--out", str(b), "-q"]) == 0
    capsys.readouterr()
    assert main(["compare", str(lenet_session), str(b)]) == 0
    out = capsys.readouterr().out
    assert "speed-up" in out and "conv1" in out and "samples/s" in out
    assert main(["compare", str(lenet_session), str(b), "--json"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert c["runs"][0]["mode"] == "train" and c["runs"][1]["mode"] == "infer"
    assert c["layers"][0]["per_run"][1]["fwd_speedup"] > 0


def test_epochs_print_test_accuracy_last(tmp_path, capsys):
    out = tmp_path / "e.lsession"
    rc = main(["profile", "lenet5", "--epochs", "1", "--dataset", "digits", "--device", "cpu", "--batch-size", "128",
               "--threads", "1", "--warmup", "1", "--profile-every", "4", "--lr", "0.05", "--out", str(out), "-q"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("test_accuracy: 0.") and len(lines[-1].split(": ")[1]) == 6
    assert f"session: {out}" in lines
    assert open_session(out).evals()


def test_failed_run_exits_1_with_message(tmp_path, capsys):
    out = tmp_path / "nan.lsession"
    rc = main(["profile", "lenet5", "--steps", "30", *QUICK, "--lr", "1e30", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "run failed:" in err and "loss" in err
    r = open_session(out)
    assert r.status == "failed" and "loss" in r.meta["error"]


@pytest.mark.parametrize("argv, words", [
    (["profile", "no-such-net"], "no-such-net"),
    (["profile", "lenet5", "--steps", "0"], "--steps"),
    (["profile", "lenet5", "--batch-size", "lots"], "--batch-size"),
    (["profile", "lenet5", "--mode", "fly"], "--mode"),
    (["profile", "lenet5", "--device", "cuda:7"], "cuda"),
    (["profile", "lenet5", "--device", "tpu"], "unknown device"),
    (["profile", "lenet5", "--dataset", "./nowhere"], "no such folder"),
    (["profile", "lenet5", "--dataset", "imagenet22k"], "unknown dataset"),
    (["profile", "lenet5", "--lr", "-1"], "lr"),
    (["profile", "lenet5", "--load-checkpoint", "/nonexistent/ckpt"], "--load-checkpoint"),
    (["profile", "lenet5", "--feature-node", "conv9"], "conv9"),
    (["export", "x.lsession", "--format", "pdf"], "--format"),
    (["summary"], "session"),
])
def test_bad_input_exits_2_in_one_line(argv, words, capsys, tmp_path):
    if argv[0] == "profile":
        argv = [*argv, "--out", str(tmp_path / "x.lsession"), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words.lower() in err.lower() and "\n" not in err and "Traceback" not in err, err


def test_out_that_is_a_folder_or_foreign_file(tmp_path, capsys):
    assert main(["profile", "lenet5", "--steps", "1", *QUICK, "--out", str(tmp_path)]) == 2
    assert "folder" in capsys.readouterr().err
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    assert main(["profile", "lenet5", "--steps", "1", *QUICK, "--out", str(notes)]) == 2
    assert "not a session" in capsys.readouterr().err and notes.read_text() == "keep me"


def test_damaged_sessions_exit_2(lenet_session, tmp_path, capsys):
    raw = lenet_session.read_bytes()
    cases = {"trunc.lsession": raw[: len(raw) // 3], "junk.lsession": b"\x00garbage" * 100, "empty.lsession": b""}
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        for argv in (["summary", str(p)], ["export", str(p), "--format", "html"], ["compare", str(lenet_session), str(p)]):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip()
            assert str(p) in err and "\n" not in err and "Traceback" not in err, err
    assert main(["summary", str(tmp_path / "missing.lsession")]) == 2
    assert "not found" in capsys.readouterr().err


def _wait_for_steps(path: Path, n: int, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists():
            try:
                with open_session(path) as r:
                    if len(r.steps()) >= n:
                        return
            except Exception:
                pass  # the file may be mid-creation
        time.sleep(0.2)
    raise AssertionError("the run never got going")


def _profile_proc(out: Path):
    cmd = [sys.executable, "-m", "engine.cli", "profile", "lenet5", "--steps", "100000", *QUICK, "--out", str(out)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigkill_mid_run_leaves_readable_session(tmp_path, capsys):
    out = tmp_path / "killed.lsession"
    proc = _profile_proc(out)
    try:
        _wait_for_steps(out, 5, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert main(["summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "status: running" in text and "conv1" in text
    r = open_session(out)
    assert r.status == "running" and len(r.layer_times()) >= 1
    assert main(["export", str(out), "--format", "trace", "--out", str(tmp_path / "k.json")]) == 0
    assert json.loads((tmp_path / "k.json").read_text())["traceEvents"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_cleanly_and_stopped_run_exports(tmp_path, capsys):
    out = tmp_path / "stopped.lsession"
    proc = _profile_proc(out)
    try:
        _wait_for_steps(out, 5, proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "run stopped" in stderr and f"session: {out}" in stdout
    r = open_session(out)
    assert r.status == "stopped" and r.ended() is not None
    for fmt in ("trace", "csv", "html", "json"):
        assert main(["export", str(out), "--format", fmt, "--out", str(tmp_path / f"s.{fmt}")]) == 0
    assert "stopped" in (tmp_path / "s.html").read_text()


def test_devices_says_why_nvml_is_absent(monkeypatch, capsys):
    monkeypatch.setattr(tm, "_import_pynvml", lambda: FakeNvml(missing_library=True))
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "cpu" in out and "NVML not available: NVML Shared Library Not Found" in out
    assert main(["devices", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["devices"][0]["id"] == "cpu" and d["telemetry"]["nvml"]["available"] is False


def test_devices_real_machine(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "telemetry sources:" in out and "psutil" in out


def _feed(progress, n=5):
    progress(LogRecord(0.0, "info", "dataset: synthetic"))
    progress(StateChanged(0.0, "running", 0, 10, "train"))
    for i in range(n):
        progress(StepRecord(i, i * 0.01, "train", 2.0 - i * 0.1, 0.1, 10.0, 100.0, warmup=i == 0))
    progress(RunEnded(1.0, "completed", "", n))


def test_progress_terminal_redraws_one_line():
    buf = io.StringIO()
    _feed(Progress(out=buf, tty=True))
    text = buf.getvalue()
    assert text.startswith("dataset: synthetic\n") and "\r[" in text and "step 5/10" in text and "loss" in text
    assert text.endswith("\n") and text.count("\n") == 2  # the log line, and the closed progress line


def test_progress_plain_lines_when_not_a_terminal():
    buf = io.StringIO()
    _feed(Progress(out=buf, tty=False, every_s=0.0))
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue() and lines[0] == "dataset: synthetic"
    assert all(x.startswith("step ") for x in lines[1:]) and "ETA" in lines[1]


def test_download_flag_rejects_builtin_dataset(tmp_path, capsys):
    from engine.cli.main import main

    rc = main(["profile", "lenet5", "--dataset", "digits", "--download", "--steps", "1",
               "--out", str(tmp_path / "x.lsession")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == "--download: only mnist, fashion-mnist, cifar10 can be downloaded, not 'digits'"


def test_download_flag_uses_the_cache_when_present(tmp_path, monkeypatch, capsys):
    import engine.data as data
    from engine.cli.main import main

    calls = []
    monkeypatch.setattr(data, "is_downloaded", lambda name, root=None: True)
    monkeypatch.setattr(data, "download", lambda *a, **k: calls.append(a))
    rc = main(["profile", "lenet5", "--dataset", "mnist", "--download", "--steps", "1",
               "--data-root", str(tmp_path), "--out", str(tmp_path / "x.lsession")])
    assert calls == []  # already there: nothing fetched
    assert rc == 2  # the (empty) cache folder is then bad input: get_dataset's one-liner, before the run
    assert "MNIST" in capsys.readouterr().err


def test_profile_flags_are_generated_from_run_config(capsys):
    import engine
    from engine.cli.main import build_parser
    from engine.cli.profile import config_from_args
    from engine.run.config import RunConfig

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    actions = {a.dest: a for a in sub.choices["profile"]._actions}
    flagged = [s for s in RunConfig.settings() if s.flag]
    assert {"batch_size", "steps", "epochs", "lr", "precision", "mode", "threads"} <= {s.name for s in flagged}
    for s in flagged:
        a = actions[s.name]
        assert a.option_strings == [s.flag]
        assert a.default == s.default == RunConfig.__dataclass_fields__[s.name].default
        assert tuple(a.choices or ()) == s.choices
        assert a.help == s.help
    # the CLI's own flags are not settings
    assert {"out", "download", "quiet"} <= set(actions) and not RunConfig.setting("out").flag
    # a bound declared on a setting is the parser's bound, in one line
    assert main(["profile", "lenet5", "--batch-size", "0"]) == 2
    assert "expected a whole number >= 1, got 0" in capsys.readouterr().err
    spec = engine.load_preset("lenet5")
    assert config_from_args(parser.parse_args(["profile", "lenet5"]), spec) == RunConfig(net=spec)
    got = config_from_args(parser.parse_args(["profile", "lenet5", "--epochs", "2", "--precision", "bf16"]), spec)
    assert (got.epochs, got.steps, got.precision) == (2, None, "bf16")


def test_profile_without_out_writes_into_the_shared_runs_folder(isolated_user_folders, capsys):
    import engine

    assert main(["profile", "lenet5", "--steps", "1", *QUICK, "-q"]) == 0
    written = list(engine.runs_dir().glob("lenet5-cpu-*.lsession"))
    assert len(written) == 1 and engine.runs_dir().is_relative_to(isolated_user_folders)
    assert f"session: {written[0]}" in capsys.readouterr().out
