"""``layerscope sweep``: run a net over the cross product of settings, one session per configuration.

The axis flags take comma-separated values (``--precision fp32,bf16 --batch-size 16,64``); every
other run setting is fixed for all configurations and takes one value, as in ``profile``. The
work is ``engine.sweep.run_sweep``; this module parses, prints progress and the closing table.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from engine.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, whole_number
from engine.cli.output import fmt_num, print_table
from engine.errors import LayerScopeError
from engine.run.config import BOOL, CHOICE, FLOAT, INT, RunConfig

AXIS_FLAGS = ("device", "precision", "batch_size", "channels_last", "threads", "cpu_allocator")
_FIXED_ALWAYS = ("mode", "steps", "warmup")


def _fixed_settings():
    from engine.sweep.axes import NOT_SWEPT

    return [s for s in RunConfig.settings() if s.flag and s.name not in AXIS_FLAGS and s.name not in NOT_SWEPT]


class SweepPrinter:
    """The ``progress`` callback of the CLI: ``config k/N <label>: step s/S`` lines (at most one
    per ``every_s`` seconds per configuration) and one line when a configuration ends."""

    def __init__(self, out=None, every_s: float = 2.0, quiet: bool = False):
        self.out = out or sys.stdout
        self.every_s = every_s
        self.quiet = quiet
        self._last = 0.0

    def __call__(self, p) -> None:
        head = f"config {p.k}/{p.n} {p.label}"
        total = f"/{p.steps}" if p.steps else ""
        if p.status == "running":
            now = time.monotonic()
            if self.quiet or (p.step and now - self._last < self.every_s):
                return
            self._last = now
            line = f"{head}: step {p.step}{total}" if p.step else f"{head}: started"
        elif p.status == "done":
            line = f"{head}: done in {fmt_num(p.seconds)} s"
        elif p.status == "skipped":
            line = f"{head}: skipped (completed before)"
        elif p.status == "failed":
            line = f"{head}: failed: {p.reason}"
        else:
            line = f"{head}: {p.status}" + (f" ({p.reason})" if p.reason else "")
        print(line, file=self.out, flush=True)


def _axes_from_args(args) -> dict:
    from engine.sweep.axes import parse_axis

    axes = {}
    for name in AXIS_FLAGS:
        text = getattr(args, name)
        if text is not None:
            flag = "--" + name.replace("_", "-")
            try:
                axes[name] = parse_axis(name, text)
            except LayerScopeError as e:
                raise LayerScopeError(f"{flag}: {e}") from None
    if not axes:
        raise LayerScopeError("sweep: give at least one axis (--device, --precision, --batch-size, "
                              "--channels-last, --threads or --cpu-allocator) with comma-separated values")
    return axes


def _fixed_from_args(args) -> dict:
    fixed = {}
    for s in _fixed_settings():
        v = getattr(args, s.name)
        if v is not None:
            fixed[s.name] = v
    for name in _FIXED_ALWAYS:
        fixed.setdefault(name, RunConfig.setting(name).default)
    if fixed.get("epochs"):
        fixed["steps"] = None
    return fixed


def summary_rows(study) -> list[list[str]]:
    """One row per configuration: label, status, median step ms, samples/s (from the session's
    ``run_summary``; "-" where there is none), reason."""
    from engine.analysis.summary import run_summary
    from engine.session import open_session

    rows = []
    for c in study.configs:
        ms = sps = None
        if c.status == "done":
            try:
                with open_session(study.session_path(c)) as r:
                    s = run_summary(r)
                ms, sps = s["step_ms_median"], s["samples_per_s"]
            except LayerScopeError:
                pass
        rows.append([c.label, c.status, fmt_num(ms), fmt_num(sps), c.reason or ""])
    return rows


def cmd_sweep(args) -> int:
    """Run the sweep; exit 0 when every configuration is done, 1 when one failed, 130 interrupted."""
    from engine.cli.profile import _check_dataset
    from engine.net.model import analyze
    from engine.net.presets import resolve_net
    from engine.sweep.runner import run_sweep

    from engine.net.presets import is_import_source

    axes = _axes_from_args(args)
    fixed = _fixed_from_args(args)
    if is_import_source(args.net):
        fixed["input_shape"] = list(args.input_shape) if args.input_shape else None
        if args.classes is not None:
            fixed["classes"] = args.classes
    else:
        if args.input_shape is not None or args.classes is not None:
            raise LayerScopeError("--input-shape and --classes are for a model to import (FILE.py:FACTORY or "
                                  "torchvision:NAME); a net file or preset declares its input")
        analyze(resolve_net(args.net, buildable=True))  # LayerScopeError -> exit 2
    if fixed.get("mode") != "benchmark":
        _check_dataset(fixed.get("dataset") or RunConfig.setting("dataset").default)
    out = Path(args.out).expanduser()
    printer = SweepPrinter(quiet=args.quiet)
    try:
        study = run_sweep(args.net, axes, fixed, out, cooldown=args.cooldown, resume=not args.force,
                          progress=printer)
    except KeyboardInterrupt:
        print(f"sweep interrupted; run the same command again to resume ({out / 'study.json'})", file=sys.stderr)
        return EXIT_INTERRUPTED
    print()
    print_table(summary_rows(study), ["config", "status", "step ms", "samples/s", "reason"], right={2, 3})
    print(f"study: {study.path}")
    statuses = {c.status for c in study.configs}
    if statuses <= {"done"}:
        return EXIT_OK
    if "failed" in statuses:
        return EXIT_FAILED
    return EXIT_INTERRUPTED  # configurations left pending: stopped


def _seconds(text: str) -> float:
    import argparse
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return v


def register(sub) -> None:
    """Add sweep to the ``layerscope`` parser."""
    s = sub.add_parser("sweep", help="run a net over the cross product of settings (one session each) "
                       "into a study folder")
    s.add_argument("net", help="preset name, net JSON path, or a PyTorch model to import: FILE.py:FACTORY "
                   "(the file is executed, here and in every configuration's process) or torchvision:NAME")
    from engine.cli.profile import input_shape

    s.add_argument("--input-shape", type=input_shape, default=None, metavar="C,H,W",
                   help="an imported model's input (as for profile)")
    s.add_argument("--classes", type=int, default=None, metavar="N", help="an imported model's classes (as for profile)")
    for name in AXIS_FLAGS:
        if name == "cpu_allocator":
            help_ = ("default (glibc), tuned (glibc, mmap/trim thresholds raised), jemalloc, tcmalloc "
                     "(when installed); each configuration runs in its own process")
        else:
            setting = RunConfig.setting(name)
            help_ = setting.help + (": off,on" if setting.kind == BOOL else "")
        s.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar="V[,V...]",
                       help=f"axis: {help_}")
    groups: dict[str, object] = {}
    for setting in _fixed_settings():
        target = s
        if setting.group:
            if setting.group not in groups:
                groups[setting.group] = s.add_mutually_exclusive_group()
            target = groups[setting.group]
        kw = {"dest": setting.name, "default": None, "help": setting.help}
        if setting.metavar:
            kw["metavar"] = setting.metavar
        if setting.kind == BOOL:
            kw["action"] = "store_const"
            kw["const"] = True
        elif setting.kind == CHOICE:
            kw["choices"] = setting.choices
        elif setting.kind == INT:
            kw["type"] = whole_number(int(setting.lo)) if setting.lo is not None else int
        elif setting.kind == FLOAT:
            kw["type"] = float
        target.add_argument(setting.flag, **kw)
    s.add_argument("--cooldown", type=_seconds, default=0.0, metavar="S",
                   help="seconds to wait between runs (GPU energy readings drift up as it heats)")
    s.add_argument("--out", required=True, metavar="DIR",
                   help="study folder: one session per configuration and study.json; the same command "
                   "again resumes (completed configurations are skipped)")
    s.add_argument("--force", action="store_true",
                   help="replace a study of a different sweep in --out, and run every configuration again")
    s.add_argument("-q", "--quiet", action="store_true", help="only the line of each configuration's end")
    s.set_defaults(func=cmd_sweep)
