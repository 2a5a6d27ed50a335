"""Run a sweep: the cross product of the axes, one configuration at a time, each in its own
process (``python -m engine.cli profile ...``) that writes its own session into the study folder.

Why a process per configuration: the CPU allocator is chosen by the environment a process starts
with (``engine.run.allocator``), and a fresh process also isolates the runs from each other
(no warm caches, allocator state, thread pools or CUDA context carried from one to the next).
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from engine.errors import LayerScopeError
from engine.net.presets import is_import_source, resolve_net
from engine.run.allocator import allocator_env, allocator_problem
from engine.run.config import BOOL, RunConfig
from engine.sweep.axes import NOT_SWEPT, check_axes, combinations, config_key, config_label, value_problem
from engine.sweep.study import STUDY_FILE, Study, StudyConfig, read_study, write_study

SESSION_SUFFIX = ".lsession"
STOP_WAIT_S = 60.0  # a stopped child ends at its next step boundary; after this it is killed
_POLL_S = 0.25


@dataclass(frozen=True)
class SweepProgress:
    """What ``run_sweep`` reports to its ``progress`` callback (called in the sweep's thread).

    ``k``: the configuration's 1-based position of ``n``; ``label``: ``StudyConfig.label``;
    ``step``: steps its run has recorded so far (warm-up included; read from its session file);
    ``steps``: the steps planned (warm-up + measured; None when the run counts epochs);
    ``status``: "running" (repeated as steps advance), then one of "done", "failed",
    "skipped" (completed before: resumed), "stopped" (by ``stop``); ``reason``: why it failed or
    stopped; ``seconds``: how long its process ran (None while running and when skipped).
    """

    k: int
    n: int
    label: str
    step: int
    steps: int | None
    status: str
    key: str = ""
    reason: str | None = None
    seconds: float | None = None


class _NoResources(RunConfig):
    """RunConfig's own checks without the memory-fit estimate: whether a batch fits the device
    is each configuration's own outcome (recorded as failed), not bad input for the whole sweep."""

    def resource_problems(self, device=None) -> list[str]:
        return []


# the flags of `layerscope profile FILE.py:FACTORY` that say what the imported model takes; kept in a
# study's ``fixed`` settings so every configuration imports the model the same way
IMPORT_SETTINGS = {"input_shape": "--input-shape", "classes": "--classes"}


def _import_net(net: str, fixed: dict):
    """(source with an absolute file path, spec) of a model to import (``FILE.py:FACTORY`` or
    ``torchvision:NAME``); ``fixed["input_shape"]`` (C, H, W) is required, ``fixed["classes"]``
    optional. Executes the user's file (the one they named), as ``layerscope profile`` does."""
    from engine.net.imported import import_model

    if not net.startswith("torchvision:"):
        path, _, factory = net.rpartition(":")
        net = f"{Path(path).expanduser().resolve()}:{factory}"
    shape = fixed.get("input_shape")
    if shape is None:
        raise LayerScopeError(f"--input-shape C,H,W is needed to import {net} (e.g. --input-shape 3,32,32)")
    return net, import_model(net, tuple(shape), fixed.get("classes")).spec


def check_plan(spec, axes: dict, fixed: dict) -> dict:
    """Check every axis value and the fixed settings with RunConfig's declared checks, and every
    combination with ``RunConfig.problems()`` (memory fit excepted); LayerScopeError (one line) for
    the first problem. Returns the axes in the sweep's order."""
    axes = check_axes(axes)
    if not isinstance(fixed, dict):
        raise LayerScopeError("fixed settings must be a dict of setting: value")
    fixed = {k: v for k, v in fixed.items() if k not in IMPORT_SETTINGS}
    for name, value in fixed.items():
        if name in axes:
            raise LayerScopeError(f"{name} is both an axis and a fixed setting")
        if name == "cpu_allocator" or name in NOT_SWEPT:
            raise LayerScopeError(value_problem(name, value) or f"{name} must be an axis, not a fixed setting")
        problem = value_problem(name, value)
        if problem:
            raise LayerScopeError(problem)
    for values in combinations(axes):
        kw = {k: v for k, v in {**fixed, **values}.items() if k != "cpu_allocator"}
        problems = _NoResources(net=spec, **kw).problems()
        if problems:
            raise LayerScopeError(f"{config_key(values)}: {problems[0]}")
    return axes


def plan_study(net: str, axes: dict, fixed: dict, out_dir, command: list[str] | None = None,
               kind: str = "sweep") -> Study:
    """A new study (every configuration pending) for already checked ``axes`` and ``fixed``."""
    folder = Path(out_dir).expanduser().resolve()
    configs = []
    for values in combinations(axes):
        key = config_key(values)
        configs.append(StudyConfig(key=key, label=config_label(values, axes), values=values,
                                   session=key + SESSION_SUFFIX))
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Study(path=folder / STUDY_FILE, kind=kind, net=net, axes=axes, fixed=dict(fixed),
                 configs=configs, command=list(command) if command else sweep_argv(net, axes, fixed, folder),
                 created=created)


def _flag_args(settings: dict) -> list[str]:
    """``layerscope profile`` flags for RunConfig settings (bools as a bare flag when true)."""
    args: list[str] = []
    for name, value in settings.items():
        if name == "cpu_allocator" or value is None:
            continue
        if name in IMPORT_SETTINGS:  # an imported model's input: profile's own flags, not RunConfig's
            args += [IMPORT_SETTINGS[name], ",".join(str(v) for v in value) if name == "input_shape" else str(value)]
            continue
        s = RunConfig.setting(name)
        if not s.flag:
            raise LayerScopeError(f"{name} has no command-line flag; it cannot be set in a sweep")
        if s.kind == BOOL:
            if value:
                args.append(s.flag)
        else:
            args += [s.flag, str(value)]
    return args


def sweep_argv(net: str, axes: dict, fixed: dict, out_dir) -> list[str]:
    """The ``layerscope sweep`` command line that asks for this study (recorded in study.json)."""
    argv = ["layerscope", "sweep", str(net)]
    for axis, values in axes.items():
        flag = "--cpu-allocator" if axis == "cpu_allocator" else RunConfig.setting(axis).flag
        text = [("on" if v else "off") if isinstance(v, bool) else str(v) for v in values]
        argv += [flag, ",".join(text)]
    return argv + _flag_args(fixed) + ["--out", str(out_dir)]


def child_command(net: str, values: dict, fixed: dict, session: Path, force: bool) -> list[str]:
    """The argv of one configuration's process: ``python -m engine.cli profile NET ... --out S -q``."""
    cmd = [sys.executable, "-m", "engine.cli", "profile", str(net), *_flag_args({**fixed, **values}),
           "--out", str(session), "-q"]
    return cmd + (["--force"] if force else [])


def child_env(values: dict) -> dict[str, str]:
    """The environment of one configuration's process: the allocator's (``allocator_env``), the
    engine importable from where this one is, unbuffered output (the log keeps its order)."""
    env = allocator_env(values.get("cpu_allocator", "default"))
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def session_outcome(path: Path, values: dict, fixed: dict) -> str | None:
    """"completed" when ``path`` is a completed session of this configuration (its recorded config
    has these values), its meta status otherwise ("failed", "stopped", "running"), "other" for a
    session of another configuration, None when there is no readable session."""
    if not path.is_file():
        return None
    try:
        con = sqlite3.connect(_ro_uri(path), uri=True, timeout=1.0)
        try:
            meta = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('status', 'config', 'format')"))
        finally:
            con.close()
    except sqlite3.Error:
        return None
    import json

    try:
        status, config = json.loads(meta.get("status", "null")), json.loads(meta.get("config", "{}"))
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    for name, want in {**fixed, **values}.items():
        if name in IMPORT_SETTINGS:  # the imported model's input: in the recorded net, not the config
            continue
        have = config.get(name, "default" if name == "cpu_allocator" else None)
        if have != want:
            return "other"
    return status if isinstance(status, str) else None


def _ro_uri(path: Path) -> str:
    """A read-only SQLite URI for ``path`` (percent-encoded: a '?' or '#' in a folder name is safe)."""
    return Path(path).resolve().as_uri() + "?mode=ro"


def _steps_done(path: Path, since: float) -> int:
    """Steps (warm-up included, test batches not) the session at ``path`` holds, 0 when it cannot
    be read yet or was last written before ``since`` (an old file about to be replaced)."""
    try:
        if path.stat().st_mtime < since - 1.0 and not Path(f"{path}-wal").exists():
            return 0
        con = sqlite3.connect(_ro_uri(path), uri=True, timeout=0.2)
        try:
            return int(con.execute("SELECT count(*) FROM steps WHERE phase != 'test'").fetchone()[0])
        finally:
            con.close()
    except (OSError, sqlite3.Error):
        return 0


def _reason(log: Path, rc: int) -> str:
    """The child's one-line message: the last line of its output (the run's failure or the bad
    input), or how it was killed."""
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        oom = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -rc == signal.SIGKILL else ""
        return f"the run's process was killed by {name}{oom}"
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    if not lines:
        return f"the run's process ended with exit code {rc} and no message"
    last = lines[-1]
    return last[len("run failed: "):] if last.startswith("run failed: ") else last


def _planned_steps(fixed: dict) -> int | None:
    if fixed.get("epochs"):
        return None
    steps = fixed.get("steps", RunConfig.setting("steps").default)
    warmup = fixed.get("warmup", RunConfig.setting("warmup").default)
    return None if steps is None else int(steps) + int(warmup or 0)


def run_sweep(net, axes: dict, fixed: dict, out_dir, *, cooldown: float = 0.0, resume: bool = True,
              progress: Callable[[SweepProgress], None] | None = None,
              stop: threading.Event | None = None, command: list[str] | None = None) -> Study:
    """Run every configuration of ``axes`` x ``fixed`` on ``net`` into ``out_dir``; returns the Study.

    ``net``: a preset name or a net file path (as ``layerscope profile`` takes it), a model to
    import (``FILE.py:FACTORY`` or ``torchvision:NAME``, with ``fixed["input_shape"]`` = (C, H, W)
    and optionally ``fixed["classes"]``; every configuration imports it again in its own process),
    or a NetSpec (saved as ``out_dir/net.json`` for the children). ``axes``: ``{axis: [values]}`` (see
    ``engine.sweep.axes``); ``fixed``: other RunConfig settings for every configuration.
    Bad values raise LayerScopeError (one line) before anything runs.

    Each configuration runs in its own process with the allocator's environment; its output goes
    to ``out_dir/<key>.log``. A process that fails (exit code not 0: out of memory, a device or
    precision the machine lacks, an allocator not installed) marks its configuration failed with
    the run's one-line message, and the sweep goes on. study.json is rewritten (atomically) at
    every change of status.

    Resume (``resume=True``): a folder that holds a study of the same plan is continued; a
    configuration whose session is completed (and records this configuration's values) is skipped;
    failed, stopped, partial or missing ones run again (their old session is replaced). A folder
    holding a study of a different plan raises LayerScopeError. ``resume=False`` replaces the study
    and runs everything again (the --force of the CLI).

    ``cooldown``: seconds to wait between two runs (not before the first nor after a skipped one).
    ``stop``: when set, the running child is asked to stop (SIGINT: it ends at its next step and
    marks its session stopped; killed after ``STOP_WAIT_S``), that configuration returns to
    pending with the reason, and run_sweep returns. KeyboardInterrupt does the same, then re-raises.
    ``progress``: called with a ``SweepProgress`` at each start, step change and end.
    """
    from engine.net.spec import NetSpec, save

    folder = Path(out_dir).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise LayerScopeError(f"--out {folder} is a file; give a folder for the study")
    if isinstance(net, NetSpec):
        folder.mkdir(parents=True, exist_ok=True)
        spec, net = net, str(folder / "net.json")
        save(spec, net)
    elif is_import_source(str(net)):
        net, spec = _import_net(str(net), fixed)
    else:
        net = str(net)
        spec = resolve_net(net, buildable=True)
        if any(k in fixed for k in IMPORT_SETTINGS):
            raise LayerScopeError("--input-shape and --classes are for a model to import (FILE.py:FACTORY or "
                                  "torchvision:NAME); a net file or preset declares its input")
    axes = check_plan(spec, axes, fixed)
    fixed = dict(fixed)
    study = plan_study(net, axes, fixed, folder, command)
    old = read_study(folder) if (folder / STUDY_FILE).exists() else None
    if old is not None and resume:
        if not old.same_plan(study):
            raise LayerScopeError(f"{folder} holds a study of a different sweep ({' '.join(old.command) or old.kind}); "
                                  "give another --out folder, or --force to replace it")
        study.created = old.created or study.created
    ours = old is not None  # sessions named in a study.json here were written by a sweep
    folder.mkdir(parents=True, exist_ok=True)
    write_study(study)
    runner = _Runner(study, progress, stop, force_all=not resume, ours=ours)
    runner.run_all(cooldown)
    return study


class _Runner:
    """The loop of ``run_sweep`` over one study's configurations."""

    def __init__(self, study: Study, progress, stop, force_all: bool, ours: bool):
        self.study = study
        self.progress = progress
        self.stop = stop or threading.Event()
        self.force_all = force_all
        self.ours = ours
        self.steps = _planned_steps(study.fixed)

    def _report(self, k: int, c: StudyConfig, step: int, status: str, seconds=None) -> None:
        if self.progress is not None:
            self.progress(SweepProgress(k, len(self.study.configs), c.label, step, self.steps, status,
                                        key=c.key, reason=c.reason, seconds=seconds))

    def run_all(self, cooldown: float) -> None:
        ran = False
        n = len(self.study.configs)
        for k, c in enumerate(self.study.configs, 1):
            if self.stop.is_set():
                return
            path = self.study.session_path(c)
            outcome = session_outcome(path, c.values, self.study.fixed)
            if outcome == "completed" and not self.force_all:
                c.status, c.reason = "done", None
                write_study(self.study)
                self._report(k, c, self.steps or 0, "skipped", None)
                continue
            problem = allocator_problem(c.values.get("cpu_allocator", "default"))
            if problem:  # nothing to start: recorded failed with the reason, the sweep goes on
                c.status, c.reason, c.seconds = "failed", problem, None
                write_study(self.study)
                self._report(k, c, 0, "failed")
                continue
            if ran and cooldown > 0 and self.stop.wait(cooldown):
                return
            # replace an old session only when it is ours (listed by this study) or --force
            force = self.force_all or (self.ours and outcome is not None)
            self._run_one(k, n, c, path, force)
            ran = True

    def _run_one(self, k: int, n: int, c: StudyConfig, path: Path, force: bool) -> None:
        study = self.study
        log = path.with_suffix(".log")
        cmd = child_command(study.net, c.values, study.fixed, path, force)
        c.status, c.reason, c.seconds = "running", None, None
        write_study(study)
        self._report(k, c, 0, "running")
        t0 = time.time()
        with open(log, "w", encoding="utf-8") as out:
            out.write(" ".join(cmd) + "\n")
            out.flush()
            proc = subprocess.Popen(cmd, env=child_env(c.values), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            stopped = interrupted = False
            last = 0
            try:
                while proc.poll() is None:
                    if self.stop.wait(_POLL_S):
                        stopped = True
                        break
                    step = _steps_done(path, t0)
                    if step != last:
                        last = step
                        self._report(k, c, step, "running")
            except KeyboardInterrupt:
                stopped = interrupted = True
            except BaseException:  # a progress callback that raised: no child is left behind
                self._end_child(proc)
                c.status, c.reason = "pending", "the sweep ended with an error while this ran"
                write_study(study)
                raise
            if stopped:
                self._end_child(proc)
        rc = proc.wait()
        c.seconds = round(time.time() - t0, 3)
        step = _steps_done(path, t0)
        # a stop that came after the child's last step (SIGINT while it closed its session and
        # printed its summary) finds the session completed: that configuration is done
        outcome = session_outcome(path, c.values, study.fixed) if rc == 0 or stopped else None
        if stopped and outcome != "completed":
            c.status, c.reason = "pending", f"stopped at step {step}" + (f" of {self.steps}" if self.steps else "")
            write_study(study)
            self._report(k, c, step, "stopped", c.seconds)
            if interrupted:
                raise KeyboardInterrupt
            return
        if outcome == "completed":
            c.status, c.reason = "done", None
        else:
            c.status = "failed"
            if rc != 0:
                c.reason = _reason(log, rc)
            elif outcome == "other":  # e.g. a preloaded allocator that did not load
                c.reason = "the session records other settings than this configuration's (see its log)"
            else:
                c.reason = "the run ended without a completed session"
        write_study(study)
        self._report(k, c, step, c.status, c.seconds)
        if interrupted:
            raise KeyboardInterrupt

    @staticmethod
    def _end_child(proc: subprocess.Popen) -> None:
        """Ask the child to stop (SIGINT: the profile command stops its run at the next step and
        closes the session as stopped); kill it if it has not ended after ``STOP_WAIT_S``."""
        try:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
        except OSError:
            pass
