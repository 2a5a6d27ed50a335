"""What defines a run (``RunConfig``, declared once) and what a run returns (``RunResult``).

Every setting is one dataclass field whose ``metadata`` says its kind, bounds, choices, help
text and command-line flag. ``RunConfig.problems()`` validates from that metadata, the CLI
``profile`` flags are generated from it (``engine.cli.profile``) and the desktop run panel
takes its ranges, defaults, choices and tooltips from it (``RunConfig.setting(name)``), so a
bound or a help sentence is written in one place only.
"""
from __future__ import annotations

import math
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from engine.errors import LayerScopeError

MODES = ("train", "infer", "benchmark")
PRECISIONS = ("fp32", "fp16", "bf16")
OPTIMIZERS = ("sgd", "adam")

# bounds that come from torch and the machine: torch seeds are 64-bit; thread pools far larger
# than the cores crash OpenMP (20000 aborts in libgomp, 100000 segfaults) and never run faster,
# so a few threads per logical core (oversubscription some users measure on purpose) is the limit
SEED_MAX = 2**63 - 1
CORES = os.cpu_count() or 1
THREADS_PER_CORE = 4
THREADS_MAX = THREADS_PER_CORE * CORES

# kinds of setting: how a value is checked and how the CLI parses it
INT, FLOAT, BOOL, CHOICE, TEXT, PATH = "int", "float", "bool", "choice", "text", "path"


@dataclass(frozen=True)
class Setting:
    """The declared facts of one RunConfig field.

    ``kind``: "int" | "float" | "bool" | "choice" | "text" | "path". ``lo``/``hi``: inclusive
    bounds (``lo_open``: ``lo`` itself is not allowed); ``optional``: None is allowed;
    ``flag``: the ``layerscope profile`` option ("" when the CLI has none); ``expect``: what a
    valid text value looks like, for the one-line problem sentence; ``group``: settings sharing
    a group are alternatives (give one of them on the command line).
    """

    name: str
    kind: str
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    optional: bool = False
    choices: tuple[str, ...] = ()
    flag: str = ""
    metavar: str | None = None
    expect: str = ""
    group: str = ""


def _setting(default, kind: str, help: str, **meta):
    """A dataclass field carrying its Setting facts in ``metadata`` (name filled in later)."""
    return field(default=default, metadata={"kind": kind, "help": help, **meta})


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class RunConfig:
    """Everything that defines a run; JSON-able through ``to_dict``/``from_dict``.

    ``steps`` counts measured steps; ``warmup`` steps run before them (flagged, excluded from
    statistics). When ``epochs`` is set it wins over ``steps``: each epoch walks the train split
    once and ends with a test-split evaluation, and warm-up steps are the first steps of epoch 1.
    ``profile_every=0`` never profiles per layer. ``threads=None`` leaves one core free.
    """

    net: Any = field(default=None, metadata={"kind": "net", "help": "the net spec (NetSpec)"})
    mode: str = _setting("train", CHOICE, "train, infer (forward only) or benchmark (one random batch)",
                         choices=MODES, flag="--mode")
    device: str = _setting("auto", TEXT, "auto, cpu, cuda, cuda:N or mps (default auto)", flag="--device",
                           expect="auto, cpu, cuda, cuda:N or mps")
    precision: str = _setting("fp32", CHOICE, "fp32, or fp16 / bf16 autocast", choices=PRECISIONS,
                              flag="--precision")
    batch_size: int = _setting(32, INT, "samples per step", lo=1, flag="--batch-size")
    steps: int | None = _setting(50, INT, "measured steps (default 50)", lo=1, optional=True, flag="--steps",
                                  group="length")
    epochs: int | None = _setting(None, INT, "passes over the train split, each followed by a test "
                                  "evaluation (instead of --steps)", lo=1, optional=True, flag="--epochs",
                                  group="length")
    warmup: int = _setting(3, INT, "warm-up steps, excluded from statistics", lo=0, flag="--warmup")
    dataset: str = _setting("synthetic", TEXT, "synthetic, digits, mnist, fashion-mnist, cifar10 or a folder",
                            flag="--dataset", expect="a name or a folder path")
    data_root: str | None = _setting(None, PATH, "folder of downloaded datasets", optional=True,
                                     flag="--data-root")
    profile_every: int = _setting(1, INT, "profile one step in K (0: never)", lo=0, flag="--profile-every")
    feature_node: str | None = _setting(None, PATH, "node whose feature maps are recorded", optional=True,
                                        flag="--feature-node")
    feature_hz: float = _setting(4.0, FLOAT, "feature maps per second, at most", lo=0)
    optimizer: str = _setting("sgd", CHOICE, "sgd (with momentum) or adam", choices=OPTIMIZERS,
                              flag="--optimizer")
    lr: float = _setting(0.01, FLOAT, "learning rate", lo=0, lo_open=True, flag="--lr")
    momentum: float = _setting(0.9, FLOAT, "SGD momentum", lo=0, hi=1, flag="--momentum")
    seed: int = _setting(0, INT, "seed of the weights, the data order and random data", lo=0, hi=SEED_MAX,
                         flag="--seed", expect="torch takes a 64-bit seed")
    threads: int | None = _setting(None, INT, "CPU threads (default: all cores but one)", lo=1, hi=THREADS_MAX,
                                   optional=True, flag="--threads",
                                   expect=f"at most {THREADS_PER_CORE} per logical core; this machine has {CORES}")
    channels_last: bool = _setting(False, BOOL, "channels-last memory format", flag="--channels-last")
    cudnn_benchmark: bool = _setting(False, BOOL, "let cuDNN try algorithms for the fastest",
                                     flag="--cudnn-benchmark")
    telemetry_hz: float = _setting(10.0, FLOAT, "telemetry rate (0: off; default 10)", lo=0, hi=1000,
                                   flag="--telemetry-hz")
    out: str | None = _setting(None, PATH, "session file to record the run into", optional=True)
    save_checkpoint: str | None = _setting(None, PATH, "save weights into DIR at the end", optional=True,
                                           flag="--save-checkpoint", metavar="DIR")
    checkpoint_every: int | None = _setting(None, INT, "also save every N steps (with --save-checkpoint)", lo=1,
                                            optional=True, flag="--checkpoint-every", metavar="N")
    load_checkpoint: str | None = _setting(None, PATH, "start from these weights (a file, or a folder's latest)",
                                           optional=True, flag="--load-checkpoint", metavar="PATH")
    skip_bad_images: bool = _setting(False, BOOL, "leave out (and count) image files that cannot be decoded, "
                                     "instead of refusing the folder", flag="--skip-bad-images")

    @classmethod
    def settings(cls) -> tuple[Setting, ...]:
        """Every declared setting (all fields but ``net``), in field order."""
        return tuple(_from_field(f) for f in fields(cls) if f.metadata.get("kind") != "net")

    @classmethod
    def setting(cls, name: str) -> Setting:
        """One declared setting by field name; KeyError when there is none."""
        for s in cls.settings():
            if s.name == name:
                return s
        raise KeyError(name)

    def problems(self) -> list[str]:
        """Every setting that cannot work, one sentence each (empty when the config is fine)."""
        from engine.net.spec import NetSpec

        p: list[str] = []
        if not isinstance(self.net, NetSpec):
            p.append("net is missing: give a net spec (a preset name or a net file)")
        for s in self.settings():
            problem = _check(s, getattr(self, s.name))
            if problem:
                p.append(problem)
        if self.steps is None and self.epochs is None:
            p.append("set steps or epochs")
        if self.epochs is not None and self.mode == "benchmark":
            p.append("benchmark mode runs a number of steps on one random batch; it has no epochs")
        if isinstance(self.net, NetSpec) and isinstance(self.feature_node, str):
            if self.net.node(self.feature_node) is None:
                p.append(f"feature_node '{self.feature_node}' is not a node of {self.net.name or 'the net'}")
        if not p:
            p += self.resource_problems()
        return p

    def resource_problems(self, device=None) -> list[str]:
        """Whether the run fits the device's free memory, before anything is allocated: at most one
        sentence with the estimate and the largest batch that fits (``engine.run.limits``).
        ``problems()`` includes it once every setting is valid; ``device``: a torch device (default:
        ``self.device`` resolved)."""
        from engine.run.limits import resource_problems

        return resource_problems(self, device)

    def validate(self) -> "RunConfig":
        """Raise LayerScopeError listing every bad setting; returns self when fine."""
        p = self.problems()
        if p:
            raise LayerScopeError(p)
        return self

    def to_dict(self) -> dict:
        """JSON-able dict; the net is stored as its spec dict."""
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "net" and v is not None and hasattr(v, "to_dict"):
                v = v.to_dict()
            elif isinstance(v, os.PathLike):
                v = os.fspath(v)
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """A config from ``to_dict`` output (or hand-written JSON); LayerScopeError when bad.

        ``net`` may be a spec dict, a preset name or a net file path.
        """
        from engine.errors import Problem
        from engine.net.presets import resolve_net
        from engine.net.spec import NetSpec, from_dict as spec_from_dict

        if not isinstance(d, dict):
            raise LayerScopeError("a run config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - RECORDED)
        if unknown:
            raise LayerScopeError([Problem(None, f"unknown setting '{k}'") for k in unknown])
        kw = {k: v for k, v in d.items() if k not in RECORDED}
        net = kw.get("net")
        if isinstance(net, dict):
            kw["net"] = spec_from_dict(net)
        elif isinstance(net, str):
            kw["net"] = resolve_net(net)
        elif net is not None and not isinstance(net, NetSpec):
            raise LayerScopeError(f"net must be a net spec object, a preset name or a path, not {net!r}")
        for s in cls.settings():  # JSON "1" for 1.0 is fine
            if s.kind == FLOAT and _is_int(kw.get(s.name)):
                kw[s.name] = float(kw[s.name])
        return cls(**kw).validate()


# what a run adds to its recorded config (RunInfo.config): facts of the run, not settings
# ("batch_used": the batch really used, smaller than batch_size when the train split is;
# "cpu_allocator", "allocator_env": the allocator the run's process started with, engine.run.allocator)
RECORDED = frozenset({"batch_used", "cpu_allocator", "allocator_env"})


def _from_field(f) -> Setting:
    m = dict(f.metadata)
    default = f.default if f.default is not MISSING else None
    return Setting(name=f.name, kind=m.pop("kind"), default=default, help=m.pop("help"),
                   choices=tuple(m.pop("choices", ())), **m)


def _range(s: Setting) -> str:
    rng = f"> {s.lo}" if s.lo_open else f">= {s.lo}"
    if s.hi is not None:
        rng += f" and <= {s.hi}"
    return rng


def _check(s: Setting, v) -> str | None:
    """The one-line problem with value ``v`` for setting ``s`` (None when it is fine)."""
    if v is None and s.optional:
        return None
    if s.kind == INT:
        if not _is_int(v) or (s.lo is not None and v < s.lo) or (s.hi is not None and v > s.hi):
            why = f" ({s.expect})" if s.expect and _is_int(v) and s.hi is not None and v > s.hi else ""
            return f"{s.name} must be a whole number {_range(s)}, not {v!r}{why}"
    elif s.kind == FLOAT:
        if not _is_num(v) or v < s.lo or (s.lo_open and v == s.lo) or (s.hi is not None and v > s.hi):
            return f"{s.name} must be a number {_range(s)}, not {v!r}"
    elif s.kind == CHOICE:
        if v not in s.choices:
            return f"{s.name} must be one of {', '.join(s.choices)}, not {v!r}"
    elif s.kind == BOOL:
        if not isinstance(v, bool):
            return f"{s.name} must be true or false, not {v!r}"
    elif s.kind == TEXT:
        if not isinstance(v, str) or not v.strip():
            return f"{s.name} must be {s.expect}, not {v!r}"
    elif s.kind == PATH:
        if not isinstance(v, (str, os.PathLike)):
            return f"{s.name} must be a path or name, not {v!r}"
    return None


@dataclass
class RunResult:
    """What ``Run.run()`` returns: status "completed" | "stopped" | "failed" and a message."""

    status: str
    message: str = ""
    session_path: str | None = None
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
