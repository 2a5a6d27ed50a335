"""layerscope sweep / engine.sweep: the cross product, one process and one session per
configuration, study.json, resume, failures that do not stop the sweep, the allocator axis."""
import json
import threading
import time
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.errors import LayerScopeError
from engine.run.allocator import TUNED_ENV, allocator_env, detect_allocator
from engine.session import open_session
from engine.sweep import read_study, run_sweep, write_study, is_study
from engine.sweep.runner import plan_study
from engine.sweep.axes import check_axes, combinations, config_key, config_label, parse_axis

QUICK = ["--device", "cpu", "--steps", "2", "--warmup", "0", "--telemetry-hz", "0"]
DONE_WHEN = ["sweep", "lenet5", *QUICK, "--precision", "fp32,bf16", "--batch-size", "16,64"]


def _stats(folder: Path) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.glob("*.lsession"))}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The issue's Done-when sweep, run once for the tests below: (folder, exit code, output)."""
    folder = tmp_path_factory.mktemp("sweep") / "study"
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([*DONE_WHEN, "--out", str(folder)])
    return folder, rc, out.getvalue()


def test_done_when_four_sessions_and_study_json(swept):
    folder, rc, out = swept
    assert rc == 0, out
    study = read_study(folder)
    assert study.kind == "sweep" and study.net == "lenet5"
    assert study.axes == {"device": ["cpu"], "precision": ["fp32", "bf16"], "batch_size": [16, 64]}
    assert study.fixed["steps"] == 2 and study.fixed["warmup"] == 0 and study.fixed["mode"] == "train"
    assert [c.key for c in study.configs] == ["cpu-fp32-b16", "cpu-fp32-b64", "cpu-bf16-b16", "cpu-bf16-b64"]
    assert [c.label for c in study.configs] == ["fp32 b16", "fp32 b64", "bf16 b16", "bf16 b64"]
    assert all(c.status == "done" and c.reason is None and c.seconds > 0 for c in study.configs)
    assert sorted(p.name for p in folder.glob("*.lsession")) == sorted(c.session for c in study.configs)
    assert study.sessions() == [folder.resolve() / c.session for c in study.configs]
    for c, path in zip(study.configs, study.sessions()):
        with open_session(path) as r:
            assert r.status == "completed"
            cfg = r.info.config
            assert (cfg["precision"], cfg["batch_size"], cfg["device"]) == \
                   (c.values["precision"], c.values["batch_size"], "cpu")
            assert len([s for s in r.steps() if not s.warmup]) == 2
    # the raw file is the documented format
    raw = json.loads((folder / "study.json").read_text())
    assert raw["format"] == "layerscope-study" and raw["version"] == 1
    assert raw["command"][:3] == ["layerscope", "sweep", "lenet5"]
    assert set(raw["configs"][0]) == {"key", "label", "values", "session", "status", "reason", "seconds"}
    assert "config 4/4 bf16 b64: done" in out and "step ms" in out


def test_the_same_command_again_skips_every_configuration(swept, capsys):
    folder, rc, _ = swept
    before = _stats(folder)
    study_before = read_study(folder)
    capsys.readouterr()
    assert main([*DONE_WHEN, "--out", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped (completed before)") == 4
    assert _stats(folder) == before  # no session rewritten: same inode, mtime and size
    after = read_study(folder)
    assert [c.status for c in after.configs] == ["done"] * 4
    assert after.created == study_before.created


def test_a_different_command_in_the_same_folder_is_refused(swept, capsys):
    folder, _, _ = swept
    before = (folder / "study.json").read_text()
    stats = _stats(folder)
    capsys.readouterr()
    assert main(["sweep", "lenet5", *QUICK, "--precision", "fp32", "--batch-size", "16,64",
                 "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different sweep" in err and "--force" in err
    assert (folder / "study.json").read_text() == before and _stats(folder) == stats


def test_a_failing_configuration_does_not_stop_the_sweep_and_the_allocator_reaches_the_child(
        tmp_path, monkeypatch):
    # a parent's own malloc settings must not leak into a "default" child
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")
    events = []
    study = run_sweep("lenet5", {"device": ["cuda:7", "cpu"], "cpu_allocator": ["default", "tuned"]},
                      {"steps": 2, "warmup": 1, "batch_size": 4, "telemetry_hz": 0.0, "threads": 1},
                      tmp_path / "s", progress=events.append)
    by_key = {c.key: c for c in study.configs}
    assert list(by_key) == ["cuda7-default", "cuda7-tuned", "cpu-default", "cpu-tuned"]
    for key in ("cuda7-default", "cuda7-tuned"):
        c = by_key[key]
        assert c.status == "failed" and "cuda" in c.reason.lower() and "\n" not in c.reason
    assert by_key["cpu-default"].status == by_key["cpu-tuned"].status == "done"
    assert read_study(tmp_path / "s").to_dict() == study.to_dict()  # what was returned is what was written
    with open_session(study.session_path(by_key["cpu-default"])) as r:
        assert r.info.config["cpu_allocator"] == "default" and r.info.config["allocator_env"] == {}
    with open_session(study.session_path(by_key["cpu-tuned"])) as r:
        assert r.info.config["cpu_allocator"] == "tuned" and r.info.config["allocator_env"] == TUNED_ENV
    # progress: k of N, ending in each configuration's outcome; a done one reports all its steps
    ends = [e for e in events if e.status != "running"]
    assert [(e.k, e.n, e.status) for e in ends] == [(1, 4, "failed"), (2, 4, "failed"), (3, 4, "done"),
                                                   (4, 4, "done")]
    assert ends[2].step == ends[2].steps == 3 and ends[2].label == "cpu default"
    assert any(e.status == "running" and e.k == 3 for e in events)


def test_an_allocator_that_is_not_installed_is_recorded_failed_without_a_process(tmp_path, monkeypatch):
    from engine.run import allocator

    monkeypatch.setattr(allocator, "find_allocator_library", lambda name: None)
    study = run_sweep("lenet5", {"cpu_allocator": ["jemalloc", "tcmalloc"]},
                      {"steps": 1, "warmup": 0, "batch_size": 4, "device": "cpu"}, tmp_path / "s")
    assert [c.status for c in study.configs] == ["failed", "failed"]
    assert "jemalloc is not installed" in study.configs[0].reason
    assert not list((tmp_path / "s").glob("*.lsession")) and not list((tmp_path / "s").glob("*.log"))


def test_stop_ends_the_child_and_the_same_sweep_resumes_it(tmp_path):
    stop = threading.Event()
    events = []

    def progress(p):
        events.append(p)
        if p.status == "running" and p.step >= 1:
            stop.set()

    axes, fixed = {"precision": ["fp32"]}, {"steps": 600, "warmup": 0, "batch_size": 4, "device": "cpu",
                                            "threads": 1, "telemetry_hz": 0.0}
    study = run_sweep("lenet5", axes, fixed, tmp_path / "s", progress=progress, stop=stop)
    c = study.configs[0]
    assert c.status == "pending" and c.reason.startswith("stopped at step")
    assert events[-1].status == "stopped"
    with open_session(study.session_path(c)) as r:
        assert r.status == "stopped" and 0 < len(r.steps()) < 600
    again = run_sweep("lenet5", axes, fixed, tmp_path / "s")  # a stopped session of ours is replaced
    assert again.configs[0].status == "done"
    with open_session(again.session_path(again.configs[0])) as r:
        assert r.status == "completed" and len(r.steps()) == 600


def test_a_stop_after_the_last_step_leaves_the_configuration_done(tmp_path):
    """The Stop may come while the child writes its last records: a completed session is done
    (study.json and the progress say so), not "stopped at step N of N" to be skipped later."""
    from engine.sweep import runner

    class LateStop(threading.Event):  # asked to stop only once the child's session is complete
        asked = False

        def wait(self, timeout):
            sessions = list((tmp_path / "s").glob("*.lsession"))
            self.asked = bool(sessions) and runner.session_outcome(sessions[0], {"precision": "fp32"},
                                                                   fixed) == "completed"
            if not self.asked:
                time.sleep(timeout)
            return self.asked

    stop, events = LateStop(), []

    def progress(p):
        events.append(p.status)

    fixed = {"steps": 2, "warmup": 0, "batch_size": 4, "device": "cpu", "threads": 1, "telemetry_hz": 0.0}
    study = run_sweep("lenet5", {"precision": ["fp32"]}, fixed, tmp_path / "s", progress=progress, stop=stop)
    assert stop.asked  # the stop came (after the run's last step)
    assert study.configs[0].status == "done" and study.configs[0].reason is None
    assert events[-1] == "done"
    assert read_study(tmp_path / "s").configs[0].status == "done"


@pytest.mark.parametrize("flags, words", [
    (["--precision", "fp8"], "precision must be one of"),
    (["--batch-size", "0"], "batch_size must be a whole number >= 1"),
    (["--batch-size", "16,x"], "expected a whole number"),
    (["--device", "gpu"], "device must be"),
    (["--channels-last", "maybe"], "off or on"),
    (["--threads", "1,,2"], "empty value"),
    (["--cpu-allocator", "mimalloc"], "cpu_allocator must be one of"),
    (["--precision", "fp32", "--cooldown", "-1"], "--cooldown"),
    (["--precision", "fp32", "--mode", "benchmark", "--epochs", "2", "--steps", "3"], "not allowed with"),
    (["--precision", "fp32", "--mode", "benchmark", "--epochs", "2"], "benchmark mode"),
    ([], "give at least one axis"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, flags, words):
    rc = main(["sweep", "lenet5", *flags, "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "s").exists()  # nothing written for bad input


def test_out_is_required_and_a_missing_net_is_bad_input(tmp_path, capsys):
    assert main(["sweep", "lenet5", "--precision", "fp32"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["sweep", "no-such-net", "--precision", "fp32", "--out", str(tmp_path / "s")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_axes_order_keys_and_labels():
    axes = check_axes({"cpu_allocator": ["default", "tuned"], "batch_size": [64], "channels_last": [False, True],
                       "threads": [2], "precision": ["bf16"], "device": ["cpu"]})
    assert list(axes) == ["device", "precision", "batch_size", "channels_last", "threads", "cpu_allocator"]
    combos = combinations(axes)
    assert [config_key(v) for v in combos] == ["cpu-bf16-b64-nchw-t2-default", "cpu-bf16-b64-nchw-t2-tuned",
                                               "cpu-bf16-b64-cl-t2-default", "cpu-bf16-b64-cl-t2-tuned"]
    assert config_label(combos[3], axes) == "cl tuned"
    assert parse_axis("channels_last", "off,on") == [False, True]
    assert parse_axis("batch_size", "16,64,16") == [16, 64]
    with pytest.raises(LayerScopeError, match="threads must be a whole number"):
        parse_axis("threads", "0")


def test_study_files_read_write_and_refuse_foreign_ones(tmp_path):
    study = plan_study("lenet5", {"precision": ["fp32", "bf16"]}, {"steps": 2},
                                                tmp_path / "s")
    write_study(study)
    assert is_study(tmp_path / "s") and is_study(tmp_path / "s" / "study.json")
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["study.json"]  # no temporary file left
    back = read_study(tmp_path / "s")
    assert back.to_dict() == study.to_dict() and back.sessions() == []
    bad = tmp_path / "bad"
    bad.mkdir()
    for text, words in [("{", "not JSON"), ('{"format": "other"}', "not a LayerScope study"),
                        ('{"format": "layerscope-study", "version": 99}', "newer"),
                        ('{"format": "layerscope-study", "version": 1, "kind": "sweep", "axes": {}, '
                         '"fixed": {}, "configs": [{"key": "a", "values": {}, "session": "../x.lsession"}]}',
                         "inside the study folder")]:
        (bad / "study.json").write_text(text)
        with pytest.raises(LayerScopeError, match=words) as e:
            read_study(bad)
        assert "\n" not in str(e.value)
    assert not is_study(tmp_path / "nowhere")
    with pytest.raises(LayerScopeError, match="no study here"):
        read_study(tmp_path / "nowhere")


def test_allocator_environment_and_detection():
    base = {"PATH": "/bin", "MALLOC_ARENA_MAX": "2", "LD_PRELOAD": "/x/libjemalloc.so.2 /y/libother.so"}
    env = allocator_env("default", base)
    assert env == {"PATH": "/bin", "LD_PRELOAD": "/y/libother.so"}
    tuned = allocator_env("tuned", base)
    assert {k: tuned[k] for k in TUNED_ENV} == TUNED_ENV and "MALLOC_ARENA_MAX" not in tuned
    assert detect_allocator({"PATH": "/bin"}) == ("default", {})
    assert detect_allocator(dict(TUNED_ENV)) == ("tuned", TUNED_ENV)
    assert detect_allocator({"MALLOC_TRIM_THRESHOLD_": "1"})[0] == "custom"
    # a preload that is not mapped in this process (the linker only warns) is not counted
    assert detect_allocator({"LD_PRELOAD": "/nowhere/libjemalloc.so.2"})[0] == "default"


def test_force_replaces_a_study_of_a_different_command(tmp_path, monkeypatch, capsys):
    import engine
    from engine.run import allocator

    monkeypatch.setattr(allocator, "find_allocator_library", lambda name: None)  # no process starts
    folder = tmp_path / "s"
    other = plan_study("lenet5", {"precision": ["fp32", "bf16"]}, {"steps": 2}, folder)
    write_study(other)
    argv = ["sweep", "lenet5", "--device", "cpu", "--cpu-allocator", "jemalloc", "--steps", "1", "--out", str(folder)]
    assert main(argv) == 2 and "different sweep" in capsys.readouterr().err
    assert engine.read_study(folder).axes == {"precision": ["fp32", "bf16"]}
    assert main([*argv, "--force"]) == 1  # replaced; its one configuration failed: not installed
    out = capsys.readouterr().out
    study = engine.read_study(folder)
    assert study.axes == {"device": ["cpu"], "cpu_allocator": ["jemalloc"]} and engine.is_study(folder)
    assert study.configs[0].status == "failed" and "jemalloc is not installed" in out


IMPORTED = '''
import torch, torch.nn as nn, torch.nn.functional as F
class Res(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)
    def forward(self, x):
        x = F.relu(self.stem(x))
        z = F.max_pool2d(torch.cat([x, x + 1], 1), 2)
        return self.fc(torch.flatten(z, 1))
def make():
    return Res()
'''


def test_a_sweep_of_an_imported_model(tmp_path, capsys):
    """Issue 12: everything downstream works on an imported model, the sweep included: each
    configuration's process imports the user's file again (absolute path) with the same input."""
    src = tmp_path / "user_model.py"
    src.write_text(IMPORTED)
    out = tmp_path / "study"
    assert main(["sweep", f"{src}:make", "--input-shape", "3,8,8", "--classes", "10", "--precision", "fp32",
                 "--steps", "2", "--warmup", "0", "--batch-size", "4", "--out", str(out), "-q"]) == 0
    study = read_study(out)
    assert study.fixed["input_shape"] == [3, 8, 8] and [c.status for c in study.configs] == ["done"]
    with open_session(study.sessions()[0]) as r:
        assert r.meta["config"]["model"] == f"{src.resolve()}:make"
        assert {lt.node_id for lt in r.layers()} >= {"stem", "cat", "add", "fc"}
    capsys.readouterr()
    # the same command again: the completed configuration is skipped
    assert main(["sweep", f"{src}:make", "--input-shape", "3,8,8", "--classes", "10", "--precision", "fp32",
                 "--steps", "2", "--warmup", "0", "--batch-size", "4", "--out", str(out)]) == 0
    assert "skipped" in capsys.readouterr().out
    # a preset does not take an imported model's input flags
    assert main(["sweep", "lenet5", "--input-shape", "3,8,8", "--out", str(tmp_path / "x")]) == 2


def test_the_same_axes_in_another_order_are_the_same_plan(tmp_path):
    a = plan_study("lenet5", {"batch_size": [8, 16]}, {"steps": 2}, tmp_path)
    b = plan_study("lenet5", {"batch_size": [16, 8]}, {"steps": 2}, tmp_path)
    c = plan_study("lenet5", {"batch_size": [16, 32]}, {"steps": 2}, tmp_path)
    assert a.same_plan(b) and not a.same_plan(c)
