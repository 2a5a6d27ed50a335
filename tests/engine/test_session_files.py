"""Files a run writes can be trusted (issue 9, items 10-15 and the session half of 24): one writer
per session, nothing overwritten without --force, disk full and read-only folders handled, odd
stored values refused in one line, NaN/inf exported as JSON null, checkpoint paths checked first."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import engine
from engine.cli.main import main
from engine.session import SessionError, SessionWriter, open_session
from engine.session.lock import claim_session
from tests.engine.test_session import make_records, write_session

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--device", "cpu", "--batch-size", "4", "--threads", "1", "--warmup", "1", "--telemetry-hz", "0"]


def _one_line_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def base_session(tmp_path_factory):
    out = tmp_path_factory.mktemp("files") / "base.lsession"
    assert main(["profile", "lenet5", "--mode", "train", "--steps", "3", *QUICK, "--out", str(out), "-q"]) == 0
    return out


def _copy(base, tmp_path, name="s.lsession"):
    p = tmp_path / name
    shutil.copyfile(base, p)
    return p


# ---- 10: one writer, unique default names, no silent overwrite -------------------------------

def test_second_writer_is_refused_naming_the_first(tmp_path):
    p = tmp_path / "busy.lsession"
    w = SessionWriter(p)
    try:
        with pytest.raises(SessionError, match=rf"is being written by process {os.getpid()}"):
            SessionWriter(p, force=True)  # not even --force takes a file being written
    finally:
        w.close()
    write_session(p, make_records(steps=2), force=True)  # free again once the first has closed


def _profile_cmd(out=None, steps=3):
    cmd = [sys.executable, "-m", "engine.cli", "profile", "lenet5", "--steps", str(steps), *QUICK, "-q"]
    return cmd + (["--out", str(out)] if out else [])


def test_two_processes_on_one_out_one_wins_other_exit_2(tmp_path):
    out = tmp_path / "same.lsession"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    procs = [subprocess.Popen(_profile_cmd(out, steps=40), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    loser = results[[p.returncode for p in procs].index(2)][1]
    assert ("is being written by process" in loser or "already holds a session" in loser), loser
    assert "Traceback" not in loser
    r = open_session(out)
    assert r.status == "completed" and len(r.steps()) == 41  # the winner's run, whole


def test_default_names_in_one_second_are_distinct(tmp_path):
    # three real processes whose clocks read the same second: each must get its own file
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LAYERSCOPE_HOME=str(tmp_path / "home"))
    code = ("import sys, time; time.strftime = lambda *a: '20260101-000000'; "
            "from engine.cli.main import main; sys.exit(main(sys.argv[1:]))")
    argv = ["profile", "lenet5", "--steps", "3", *QUICK, "-q"]
    procs = [subprocess.Popen([sys.executable, "-c", code, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    paths = {line.split("session: ", 1)[1] for o, _ in outs for line in o.splitlines() if line.startswith("session: ")}
    assert sorted(Path(p).name for p in paths) == ["lenet5-cpu-20260101-000000-2.lsession",
                                                   "lenet5-cpu-20260101-000000-3.lsession",
                                                   "lenet5-cpu-20260101-000000.lsession"]
    for p in paths:
        r = open_session(p)
        assert r.status == "completed" and len(r.steps()) == 4


def test_default_name_collision_gets_a_counter(tmp_path, monkeypatch):
    from engine.cli import profile

    base = tmp_path / "lenet5-cpu-20260101-000000.lsession"
    base.touch()  # a run that started in the same second holds the plain name
    path, claim = profile._claim_default(base)
    claim.release()
    assert path.name == "lenet5-cpu-20260101-000000-2.lsession"
    with pytest.raises(FileExistsError):
        claim_session(base, exclusive=True)


def test_finished_session_needs_force(base_session, tmp_path, capsys):
    p = _copy(base_session, tmp_path)
    before = p.read_bytes()
    err = _one_line_exit_2(["profile", "lenet5", "--steps", "1", *QUICK, "--out", str(p), "-q"], capsys)
    assert "--force" in err and p.read_bytes() == before
    assert main(["profile", "lenet5", "--steps", "1", *QUICK, "--out", str(p), "--force", "-q"]) == 0
    assert len(open_session(p).steps()) == 2


def test_foreign_sqlite_out_is_bad_input(tmp_path, capsys):
    p = tmp_path / "other.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    before = p.read_bytes()
    for extra in ([], ["--force"]):
        err = _one_line_exit_2(["profile", "lenet5", "--steps", "1", *QUICK, "--out", str(p), *extra, "-q"], capsys)
        assert "not a session" in err
    assert p.read_bytes() == before


# ---- 11: export never overwrites silently, never over a session -------------------------------

def test_export_refuses_existing_file_and_any_session(base_session, tmp_path, capsys):
    s = _copy(base_session, tmp_path)
    before = s.read_bytes()
    for extra in ([], ["--force"]):  # onto the session itself
        err = _one_line_exit_2(["export", str(s), "--format", "json", "--out", str(s), *extra], capsys)
        assert "never replaces" in err
    other = _copy(base_session, tmp_path, "other.lsession")
    _one_line_exit_2(["export", str(s), "--format", "csv", "--out", str(other), "--force"], capsys)
    _one_line_exit_2(["export", str(s), "--format", "csv", "--out", f"{s}-wal", "--force"], capsys)
    assert s.read_bytes() == before and open_session(other).status == "completed"
    notes = tmp_path / "notes.json"
    notes.write_text("mine")
    err = _one_line_exit_2(["export", str(s), "--format", "json", "--out", str(notes)], capsys)
    assert "--force" in err and notes.read_text() == "mine"
    assert main(["export", str(s), "--format", "json", "--out", str(notes), "--force"]) == 0
    assert json.loads(notes.read_text())["run"]["steps"] == 4


# ---- 12: disk full -----------------------------------------------------------------------------

def test_disk_full_fails_the_run_and_the_partial_session_opens(tmp_path, capsys, monkeypatch):
    # ENOSPC simulated with SQLite's own limit: past max_page_count every write fails with
    # SQLITE_FULL, "database or disk is full", as on a full disk (a 1 MB tmpfs gives the same;
    # mounting one needs root, so the test does not)
    real = SessionWriter._create

    def small_disk(self):
        con = real(self)
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        con.execute(f"PRAGMA max_page_count = {pages + 12}")
        return con

    monkeypatch.setattr(SessionWriter, "_create", small_disk)
    out = tmp_path / "full.lsession"
    rc = main(["profile", "lenet5", "--steps", "100000", *QUICK, "--profile-every", "1", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert f"disk full while writing {out}; the session holds " in err and "Traceback" not in err
    # how many steps fit depends on how many the writer batched (machine load): 0 is said so
    held = err.split("the session holds ", 1)[1].split(";")[0]
    n = 0 if held == "no steps" else int(held.split("steps 1..", 1)[1])
    r = open_session(out)  # the partial session opens, with the steps the message names
    assert len(r.steps()) == n and r.status == "running"


def test_session_whose_data_is_only_in_the_wal_opens(tmp_path):
    p = tmp_path / "walonly.lsession"
    w = SessionWriter(p, checkpoint_interval_s=1e9)
    for rec in make_records(steps=3):
        w(rec)
    w.flush()
    keep = tmp_path / "kept"
    keep.mkdir()
    shutil.copyfile(f"{p}-wal", keep / "walonly.lsession-wal")
    with open(keep / "walonly.lsession", "wb") as f:
        f.write(open(p, "rb").read()[:100])  # a main file short of its pages: they are in the WAL
    w.close()
    r = open_session(keep / "walonly.lsession")
    assert len(r.steps()) == 3


# ---- 13: read-only folder with a -wal; periodic checkpoints ------------------------------------

def _session_with_wal(folder: Path) -> Path:
    p = folder / "ro.lsession"
    w = SessionWriter(p, checkpoint_interval_s=1e9)
    for rec in make_records(steps=3):
        w(rec)
    w.flush()
    shutil.copyfile(p, folder / "ro.main")
    shutil.copyfile(f"{p}-wal", folder / "ro.wal")
    w.close()
    os.replace(folder / "ro.main", p)
    os.replace(folder / "ro.wal", f"{p}-wal")
    Path(f"{p}-shm").unlink(missing_ok=True)
    return p


def _can_bind_mount() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "geteuid") and os.geteuid() == 0 \
        and shutil.which("mount") is not None


@pytest.mark.skipif(not _can_bind_mount(), reason="needs root to make a read-only bind mount")
def test_session_with_wal_opens_on_a_read_only_mount(tmp_path, capsys):
    # root ignores chmod, so the read-only folder is a read-only bind mount of the session's folder
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    _session_with_wal(src)
    if subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(ro)], capture_output=True).returncode:
        pytest.skip("mount --bind -o ro is not allowed here")
    try:
        p = ro / "ro.lsession"
        with pytest.raises(sqlite3.OperationalError):  # what plain SQLite says there
            sqlite3.connect(f"file:{p}?mode=ro", uri=True).execute("SELECT count(*) FROM steps").fetchone()
        r = open_session(p)
        assert len(r.steps()) == 3 and r.status == "completed"
        r.close()
        assert main(["summary", str(p)]) == 0
        assert "status: completed" in capsys.readouterr().out
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores chmod")
def test_session_with_wal_opens_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    p = _session_with_wal(folder)
    folder.chmod(0o555)
    try:
        assert len(open_session(p).steps()) == 3
    finally:
        folder.chmod(0o755)


def test_unopenable_in_place_is_read_from_a_private_copy(tmp_path, monkeypatch):
    # the path taken in a read-only folder, forced anywhere: SQLite opens the file neither
    # read-write nor read-only where it lies ("unable to open database file")
    from engine.session import schema

    p = _session_with_wal(tmp_path)
    real = schema._try

    def in_place_fails(uri):
        if uri.startswith(schema._uri(p)):
            return None, sqlite3.OperationalError("unable to open database file")
        return real(uri)

    monkeypatch.setattr(schema, "_try", in_place_fails)
    r = open_session(p)
    assert len(r.steps()) == 3 and r.status == "completed"
    copy_dir = r._con.copy_dir
    assert copy_dir and Path(copy_dir).exists()
    r.close()
    assert not Path(copy_dir).exists()  # the private copy goes with the reader
    assert Path(f"{p}-wal").exists()  # and the original was not touched


def test_wal_checkpointed_during_the_run(tmp_path):
    p = tmp_path / "live.lsession"
    w = SessionWriter(p, flush_interval=0.05, checkpoint_interval_s=0.2)
    try:
        for rec in make_records(steps=5)[:-1]:  # everything but RunEnded: the run is still going
            w(rec)
        time.sleep(1.0)
        lone = tmp_path / "copy"
        lone.mkdir()
        shutil.copyfile(p, lone / "live.lsession")  # only the main file, as a user would copy it
    finally:
        w.close()
    assert len(open_session(lone / "live.lsession").steps()) == 5


# ---- 14: odd values inside a session ----------------------------------------------------------

ODD = {
    "text in step_ms": "UPDATE steps SET step_ms = 'fast' WHERE rowid = 2",
    "text in fwd_ns": "UPDATE layer_times_ns SET fwd_ns = 'x' WHERE row = 3",
    "blob in telemetry": "INSERT INTO telemetry_values VALUES (0.5, 1, x'00ff')",
    "text in params": "UPDATE layers SET params = 'many' WHERE idx = 0",
    "config not an object": "UPDATE meta SET value = '[1, 2]' WHERE key = 'config'",
    "config not JSON": "UPDATE meta SET value = 'mode=train' WHERE key = 'config'",
    "device a number": "UPDATE meta SET value = '7' WHERE key = 'device'",
    "start_time text": "UPDATE meta SET value = '\"yesterday\"' WHERE key = 'start_time'",
    "inf in an integer column": "UPDATE layer_times_ns SET fwd_ns = 9e999 WHERE row = 2",
    "inf in a byte count": "UPDATE layers SET act_bytes = 9e999 WHERE idx = 0",
    "step without its number": "UPDATE steps SET step = NULL WHERE rowid = 2",
    "batch size text": "UPDATE meta SET value = json_set(value, '$.batch_size', 'x') WHERE key = 'config'",
    "test accuracy text": "UPDATE meta SET value = '{\"test_accuracy\": \"x\"}' WHERE key = 'extra'",
    "out_shape not JSON": "UPDATE layers SET out_shape = '6x28x28' WHERE idx = 0",
    "out_shape not a list of sizes": "UPDATE layers SET out_shape = '[6, \"a\"]' WHERE idx = 1",
}


@pytest.mark.parametrize("case", list(ODD))
def test_odd_value_is_one_line_exit_2_everywhere(case, base_session, tmp_path, capsys):
    p = _copy(base_session, tmp_path)
    con = sqlite3.connect(p)
    con.execute(ODD[case])
    con.commit()
    con.close()
    commands = [["summary", str(p)], ["summary", str(p), "--json"], ["compare", str(base_session), str(p)],
                *(["export", str(p), "--format", f, "--out", str(tmp_path / f"o.{f}")]
                  for f in ("trace", "csv", "html", "json"))]
    for argv in commands:
        err = _one_line_exit_2(argv, capsys)
        assert "cannot be read" in err or "cannot read" in err, (argv, err)


def _strict_json(text):
    def refuse(c):
        raise AssertionError(f"non-standard JSON constant {c}")
    return json.loads(text, parse_constant=refuse)


def test_infinite_values_export_as_null(base_session, tmp_path, capsys):
    p = _copy(base_session, tmp_path)
    con = sqlite3.connect(p)
    con.execute("UPDATE steps SET step_ms = 9e999 WHERE rowid = 2")  # +inf
    con.execute("UPDATE steps SET loss = -9e999 WHERE rowid = 3")
    con.execute("UPDATE steps SET samples_per_s = 9e999")
    con.execute("UPDATE layer_times_ns SET peak_bytes = 9e999, mem_bytes = 9e999 WHERE row = 4")  # charts drew these
    con.commit()
    con.close()
    assert main(["summary", str(p)]) == 0
    _strict_json(capsys.readouterr().out and "{}")
    assert main(["summary", str(p), "--json"]) == 0
    _strict_json(capsys.readouterr().out)
    assert main(["compare", str(base_session), str(p), "--json"]) == 0
    _strict_json(capsys.readouterr().out)
    for f in ("trace", "json", "html", "csv"):
        out = tmp_path / f"o.{f}"
        assert main(["export", str(p), "--format", f, "--out", str(out)]) == 0, capsys.readouterr().err
        if f in ("trace", "json"):
            obj = _strict_json(out.read_text())
            if f == "trace":
                steps = [e for e in obj["traceEvents"] if e.get("ph") == "X" and e.get("cat") == "step"]
                assert steps
        else:
            assert "Infinity" not in out.read_text() and "inf" not in out.read_text().split()


# ---- 15 and 24: checkpoints -------------------------------------------------------------------

def test_save_checkpoint_bad_places_exit_2_before_the_run(tmp_path, capsys):
    f = tmp_path / "weights.safetensors"
    f.write_text("mine")
    cases = [str(f), str(f / "sub")]
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        cases.append(str(ro / "ck"))
    for target in cases:
        out = tmp_path / "never.lsession"
        err = _one_line_exit_2(["profile", "lenet5", "--mode", "train", "--steps", "1", *QUICK,
                                "--save-checkpoint", target, "--out", str(out), "-q"], capsys)
        assert "--save-checkpoint" in err
        assert not out.exists()  # refused before the run started
    assert f.read_text() == "mine"


def test_save_checkpoint_unwritable_folder(tmp_path, monkeypatch):
    from engine.net.checkpoint import CheckpointError, check_checkpoint_folder
    import tempfile

    def no_space(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_space)  # what a read-only mount answers root
    with pytest.raises(CheckpointError, match="is not writable"):
        check_checkpoint_folder(tmp_path / "new")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"])
def test_bad_load_checkpoint_is_exit_2(content, tmp_path, capsys):
    ck = tmp_path / "w.safetensors"
    ck.write_bytes(content)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    for target in (ck, empty, tmp_path / "missing.safetensors"):
        err = _one_line_exit_2(["profile", "lenet5", "--steps", "1", *QUICK, "--load-checkpoint", str(target),
                                "--out", str(tmp_path / "x.lsession"), "-q"], capsys)
        assert "--load-checkpoint" in err


def test_disk_full_fails_a_run_started_from_the_engine(tmp_path, monkeypatch):
    """The app starts runs through ``engine.Run`` (no CLI): a session that cannot be written ends
    the run as failed with the writer's message, not as a run that went on recording nothing."""
    import engine

    real = SessionWriter._create

    def small_disk(self):
        con = real(self)
        con.execute(f"PRAGMA max_page_count = {con.execute('PRAGMA page_count').fetchone()[0] + 12}")
        return con

    monkeypatch.setattr(SessionWriter, "_create", small_disk)
    out = tmp_path / "full.lsession"
    cfg = engine.RunConfig(net=engine.load_preset("lenet5"), device="cpu", batch_size=4, steps=100000, warmup=0,
                           threads=1, telemetry_hz=0, out=str(out))
    result = engine.Run(cfg).run()
    assert result.status == "failed"
    assert result.message.startswith(f"disk full while writing {out}; the session holds ")
    assert result.steps < 100000
