"""A sweep's axes: which settings vary, their values checked by ``RunConfig``'s own declared
checks, the cross product in a stable order, and a stable key and label per configuration.

An axis is a ``RunConfig`` setting name (``device``, ``precision``, ``batch_size``,
``channels_last``, ``threads``, or any other declared setting) or ``cpu_allocator``. Values are
typed as the setting is (``channels_last``: bool; ``threads``: int).
"""
from __future__ import annotations

import itertools
import re

from engine.errors import LayerScopeError
from engine.run.allocator import CPU_ALLOCATORS
from engine.run.config import BOOL, FLOAT, INT, RunConfig, _check

# the usual axes, in the order configurations are enumerated (the first varies slowest) and
# their key parts appear; any other setting given as an axis follows them, in the order given
AXES = ("device", "precision", "batch_size", "channels_last", "threads", "cpu_allocator")
# settings a sweep cannot vary or fix: each configuration has its own session file, and one
# checkpoint folder shared by all would mix their weights
# settings a sweep does not take: each configuration writes its own session, and a data-parallel
# run is N processes writing a folder of its own (profile --nproc), not one configuration's session
NOT_SWEPT = frozenset({"out", "save_checkpoint", "checkpoint_every", "nproc", "rank", "bucket_cap_mb", "model"})
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_OFF_ON = {"off": False, "on": True, "false": False, "true": True, "0": False, "1": True,
           "no": False, "yes": True}


def axis_names() -> tuple[str, ...]:
    """Every name that can be an axis: ``AXES`` first, then the other sweepable settings."""
    rest = [s.name for s in RunConfig.settings() if s.name not in AXES and s.name not in NOT_SWEPT]
    return (*AXES, *rest)


def value_problem(axis: str, value) -> str | None:
    """Why ``value`` cannot be a value of ``axis`` (one sentence; RunConfig's declared check), or
    None. Only the value itself is checked: whether a device exists or a batch fits is found by
    the configuration's own run."""
    if axis == "cpu_allocator":
        if value not in CPU_ALLOCATORS:
            return f"cpu_allocator must be one of {', '.join(CPU_ALLOCATORS)}, not {value!r}"
        return None
    if axis in ("nproc", "rank", "bucket_cap_mb"):
        return (f"{axis} cannot be set in a sweep: a data-parallel run is its own study of ranks "
                "(layerscope profile NET --nproc N --out DIR; compare DIR)")
    if axis in NOT_SWEPT:
        return f"{axis} cannot be set in a sweep (each configuration writes its own session)"
    try:
        setting = RunConfig.setting(axis)
    except KeyError:
        return f"unknown setting '{axis}'"
    problem = _check(setting, value)
    if problem is None and axis == "device" and not _DEVICE.fullmatch(str(value).strip().lower()):
        problem = f"device must be {setting.expect}, not {value!r}"
    return problem


def parse_value(axis: str, text: str):
    """One value of ``axis`` from its command-line text, typed as the setting is; LayerScopeError
    (one line) when it cannot be."""
    text = text.strip()
    kind = "choice" if axis == "cpu_allocator" else RunConfig.setting(axis).kind
    try:
        if kind == BOOL:
            if text.lower() not in _OFF_ON:
                raise ValueError
            return _OFF_ON[text.lower()]
        if kind == INT:
            return int(text)
        if kind == FLOAT:
            return float(text)
    except ValueError:
        what = {BOOL: "off or on", INT: "a whole number", FLOAT: "a number"}[kind]
        raise LayerScopeError(f"{axis}: expected {what}, got {text!r}") from None
    return text


def parse_axis(axis: str, text: str) -> list:
    """A comma-separated list of values (``"fp32,bf16"``), each parsed and checked; repeats are
    dropped, the order kept. LayerScopeError (one line) for an empty list or a bad value."""
    values = []
    for part in text.split(","):
        if not part.strip():
            raise LayerScopeError(f"{axis}: empty value in {text!r} (give values separated by commas)")
        v = parse_value(axis, part)
        if v not in values:
            values.append(v)
    check_axes({axis: values})
    return values


def check_axes(axes: dict) -> dict:
    """``axes`` ordered as ``AXES`` then as given, every value checked; LayerScopeError (one line:
    the first problem) otherwise. Returns the ordered dict."""
    if not isinstance(axes, dict) or not axes:
        raise LayerScopeError("a sweep needs at least one axis with values")
    known = axis_names()
    for axis, values in axes.items():
        if axis not in known:
            raise LayerScopeError(value_problem(axis, None) or f"'{axis}' cannot be an axis")
        if not isinstance(values, (list, tuple)) or not values:
            raise LayerScopeError(f"axis {axis}: give at least one value")
        for v in values:
            problem = value_problem(axis, v)
            if problem:
                raise LayerScopeError(problem)
        if len(set(map(repr, values))) != len(values):
            raise LayerScopeError(f"axis {axis}: a value is given twice")
    order = [a for a in AXES if a in axes] + [a for a in axes if a not in AXES]
    return {a: list(axes[a]) for a in order}


def combinations(axes: dict) -> list[dict]:
    """The cross product of ``axes`` (already ordered by ``check_axes``): one ``{axis: value}``
    per configuration, the first axis varying slowest."""
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(axes[a] for a in names))]


def _part(axis: str, value) -> str:
    if axis == "device":
        return str(value).replace(":", "")
    if axis == "batch_size":
        return f"b{value}"
    if axis == "channels_last":
        return "cl" if value else "nchw"
    if axis == "threads":
        return f"t{value}"
    if axis in ("precision", "cpu_allocator", "mode"):
        return str(value)
    return f"{axis.replace('_', '')}{value}"


def config_key(values: dict) -> str:
    """A stable, file-name-safe key for one configuration, its parts in the axes' order:
    ``cpu-bf16-b64-cl-t2-tuned``."""
    key = "-".join(_part(a, v) for a, v in values.items())
    return re.sub(r"[^A-Za-z0-9._+-]", "_", key) or "config"


def config_label(values: dict, axes: dict) -> str:
    """A short label: the parts of the axes that take more than one value (``bf16 b64``), or the
    whole key when none does."""
    parts = [_part(a, v) for a, v in values.items() if len(axes.get(a, ())) > 1]
    return " ".join(parts) or config_key(values)
