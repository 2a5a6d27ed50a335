"""A study: a folder of sessions that belong together, described by ``DIR/study.json``.

The format is a contract between the sweep (this package), data-parallel runs (``kind``
"ddp", ``engine.cli.ddp``: one configuration per rank), the comparison (``engine.analysis.compare``) and the app's session browser::

    {"format": "layerscope-study", "version": 1, "kind": "sweep", "net": <name or path>,
     "created": <ISO 8601 UTC>, "command": [argv...],
     "axes": {"precision": ["fp32", "bf16"], "batch_size": [16, 64], ...only the axes given},
     "fixed": {"mode": "train", "steps": 50, ...the other settings given},
     "configs": [{"key": "cpu-fp32-b16", "label": "fp32 b16", "values": {"precision": "fp32", ...},
                  "session": "cpu-fp32-b16.lsession", "status": "pending"|"running"|"done"|"failed",
                  "reason": str|null, "seconds": float|null}]}

Axis names are ``RunConfig`` setting names (``device``, ``precision``, ``batch_size``,
``channels_last`` (JSON true/false), ``threads``) plus ``cpu_allocator``; values are JSON
scalars typed as the setting is. ``session`` is relative to the folder holding study.json.
``seconds``: wall-clock seconds the configuration's process ran (start to exit). ``reason``:
why a configuration failed (the run's one-line message), or why a pending one stopped.
Reading never executes anything from the file.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.errors import LayerScopeError

FORMAT = "layerscope-study"
VERSION = 1
STUDY_FILE = "study.json"
STATUSES = ("pending", "running", "done", "failed")


@dataclass
class StudyConfig:
    """One configuration of a study: its stable ``key`` (also the session file's stem), a short
    ``label`` for tables and legends, the axis ``values``, the ``session`` file name (relative to
    the study folder) and how it went (``status``, ``reason``, ``seconds``)."""

    key: str
    label: str
    values: dict
    session: str
    status: str = "pending"
    reason: str | None = None
    seconds: float | None = None


@dataclass
class Study:
    """A study as read from (or to be written to) ``path`` (the study.json file)."""

    path: Path
    kind: str
    net: str
    axes: dict
    fixed: dict
    configs: list[StudyConfig] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    created: str = ""

    @property
    def folder(self) -> Path:
        """The folder holding study.json and (by default) the sessions."""
        return self.path.parent

    def session_path(self, config: StudyConfig) -> Path:
        """Absolute path of one configuration's session file."""
        return self.folder / config.session

    def sessions(self) -> list[Path]:
        """The session files of the configurations that are done, in the study's order."""
        return [self.session_path(c) for c in self.configs if c.status == "done"]

    def to_dict(self) -> dict:
        """The study.json object (see the module docstring)."""
        return {"format": FORMAT, "version": VERSION, "kind": self.kind, "net": self.net,
                "created": self.created, "command": list(self.command), "axes": self.axes,
                "fixed": self.fixed, "configs": [asdict(c) for c in self.configs]}

    def same_plan(self, other: "Study") -> bool:
        """Whether two studies ask for the same runs (kind, net, axes, fixed settings): the test
        for resuming a study rather than refusing a folder that holds a different one."""
        return (self.kind, self.net, _canon(_as_sets(self.axes)), _canon(self.fixed)) == \
               (other.kind, other.net, _canon(_as_sets(other.axes)), _canon(other.fixed))


def _as_sets(axes: dict) -> dict:
    """Axes with their values in a fixed order: ``--batch-size 16,8`` asks for the runs ``8,16`` does."""
    return {k: sorted(v, key=lambda x: json.dumps(x)) if isinstance(v, list) else v for k, v in axes.items()}


def _canon(d: dict) -> str:
    return json.dumps(d, sort_keys=True)


def study_file(dir_or_json) -> Path:
    """``DIR/study.json`` for a folder, the path itself for a file."""
    p = Path(dir_or_json).expanduser()
    return p / STUDY_FILE if p.is_dir() or not p.suffix else p


def is_study(path) -> bool:
    """Whether ``path`` is a study folder or study.json (cheap: the file's ``format`` field only;
    never raises)."""
    try:
        p = study_file(path)
        if not p.is_file() or p.stat().st_size > 64 << 20:
            return False
        with open(p, encoding="utf-8") as f:
            d = json.load(f)
        return isinstance(d, dict) and d.get("format") == FORMAT
    except (OSError, ValueError):
        return False


def _fail(p: Path, why: str):
    raise LayerScopeError(f"{p}: {why}")


def read_study(dir_or_json) -> Study:
    """The study in a folder (its study.json) or a study.json path.

    Raises LayerScopeError (one line) for a missing, unreadable, foreign, newer or malformed file.
    """
    p = study_file(dir_or_json)
    if not p.is_file():
        raise LayerScopeError(f"no study here: {p} does not exist")
    try:
        with open(p, encoding="utf-8") as f:
            d = json.load(f)
    except OSError as e:
        _fail(p, f"cannot read: {e.strerror or e}")
    except ValueError as e:
        _fail(p, f"not a study (not JSON: {e})")
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        _fail(p, f"not a LayerScope study (format is not {FORMAT!r})")
    version = d.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        _fail(p, "study version is missing")
    if version > VERSION:
        _fail(p, f"study version {version} is newer than this LayerScope reads ({VERSION}); update LayerScope")
    for name, kind in (("kind", str), ("axes", dict), ("fixed", dict), ("configs", list)):
        if not isinstance(d.get(name), kind):
            _fail(p, f"study field '{name}' is missing or not a {kind.__name__}")
    configs = []
    for i, c in enumerate(d["configs"]):
        configs.append(_read_config(p, i, c))
    keys = [c.key for c in configs]
    if len(set(keys)) != len(keys):
        _fail(p, "two configurations share a key")
    command = d.get("command") or []
    return Study(path=p.resolve(), kind=d["kind"], net=str(d.get("net") or ""), axes=d["axes"],
                 fixed=d["fixed"], configs=configs, command=[str(a) for a in command]
                 if isinstance(command, list) else [], created=str(d.get("created") or ""))


def _read_config(p: Path, i: int, c) -> StudyConfig:
    if not isinstance(c, dict):
        _fail(p, f"configuration {i + 1} is not an object")
    for name, kind in (("key", str), ("session", str), ("values", dict)):
        if not isinstance(c.get(name), kind):
            _fail(p, f"configuration {i + 1}: field '{name}' is missing or not a {kind.__name__}")
    session = c["session"]
    if Path(session).is_absolute() or ".." in Path(session).parts or not session.strip():
        _fail(p, f"configuration {i + 1}: session {session!r} is not a file name inside the study folder")
    status = c.get("status", "pending")
    if status not in STATUSES:
        _fail(p, f"configuration {i + 1}: status {status!r} is not one of {', '.join(STATUSES)}")
    seconds = c.get("seconds")
    if seconds is not None and (not isinstance(seconds, (int, float)) or isinstance(seconds, bool)):
        _fail(p, f"configuration {i + 1}: seconds must be a number or null")
    reason = c.get("reason")
    return StudyConfig(key=c["key"], label=str(c.get("label") or c["key"]), values=c["values"],
                       session=session, status=status, reason=None if reason is None else str(reason),
                       seconds=None if seconds is None else float(seconds))


def write_study(study: Study) -> Path:
    """Write ``study.path`` atomically (a temporary file in the same folder, then ``os.replace``):
    a reader sees the old file or the new one, never half of one. Returns the path."""
    p = Path(study.path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(study.to_dict(), indent=1)
    fd, tmp = tempfile.mkstemp(prefix=".study-", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p
