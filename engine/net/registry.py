"""Layer kinds: one registry entry per kind with a parameter schema and a builder.

The schema is plain Python (no torch) so the GUI can draw palettes and property forms
without importing torch; builders import torch only when called.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

_MISSING = object()


def show_value(value: Any, limit: int = 60) -> str:
    """A user's value spelled as in the JSON net file (``true``, ``null``, ``"text"``), for
    messages; ``repr`` for an object JSON cannot hold; cut to ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass(frozen=True)
class Param:
    """One parameter of a layer kind: its type, default, bounds and a one-line help."""

    name: str
    type: str  # "int", "float", "bool", "choice", "int_or_choice", "int_pair", "text"
    default: Any = _MISSING
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple = ()

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def check(self, value: Any) -> str | None:
        """Return a sentence saying what is wrong with ``value``, or None when it is fine."""
        t = self.type
        if t == "text":
            if not isinstance(value, str):
                return f"'{self.name}' must be text, not {show_value(value)}"
            return None
        if t == "bool":
            if not isinstance(value, bool):
                return f"'{self.name}' must be true or false, not {show_value(value)}"
            return None
        if t == "choice":
            if value not in self.choices:
                return f"'{self.name}' must be one of {', '.join(map(str, self.choices))}, not {show_value(value)}"
            return None
        if t == "int_or_choice" and isinstance(value, str):
            if value not in self.choices:
                return f"'{self.name}' must be a whole number or one of {', '.join(self.choices)}, not {show_value(value)}"
            return None
        if t == "int_pair" and isinstance(value, list):
            if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return f"'{self.name}' must be a whole number or a pair of whole numbers, not {show_value(value)}"
            vals = value
        elif t in ("int", "int_or_choice", "int_pair"):
            if isinstance(value, bool) or not isinstance(value, int):
                return f"'{self.name}' must be a whole number, not {show_value(value)}"
            vals = [value]
        elif t == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                return f"'{self.name}' must be a number, not {show_value(value)}"
            vals = [value]
        else:  # pragma: no cover - schema bug
            raise ValueError(f"unknown param type {t}")
        for v in vals:
            if self.min is not None and v < self.min:
                return f"'{self.name}' is {v}, below its minimum {_fmt(self.min)}"
            if self.max is not None and v > self.max:
                return f"'{self.name}' is {v}, above its maximum {_fmt(self.max)}"
        return None


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class LayerKind:
    """A layer kind: name, family (palette group), schema, builder and input arity."""

    name: str
    family: str
    help: str
    params: tuple[Param, ...]
    build: Callable[..., Any] = field(compare=False)
    min_inputs: int = 1
    max_inputs: int = 1
    key_params: tuple[str, ...] = ()
    check: Callable[..., str | None] | None = field(default=None, compare=False)
    # a kind whose figures are stored in its params (the opaque nodes of an imported model):
    # ``measure(params, in_shapes) -> ("ok", out_shape, params, flops, bwd_flops) | ("bad", message)``
    # replaces building it on the meta device in ``engine.net.analyze``
    measure: Callable[..., tuple] | None = field(default=None, compare=False)

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    def defaults(self) -> dict:
        """Every parameter with a default, for a freshly dropped node."""
        return {p.name: p.default for p in self.params if not p.required}

    def resolved(self, params: dict) -> dict:
        """The given params with defaults filled in."""
        out = self.defaults()
        out.update(params)
        return out


REGISTRY: dict[str, LayerKind] = {}
# kinds a spec may hold but the palette does not offer (``kinds()`` leaves them out): the opaque
# nodes of an imported model, in a family of their own
HIDDEN: dict[str, LayerKind] = {}
HIDDEN_FAMILIES = ("imported",)

FAMILIES = ("input", "convolution", "pooling", "normalisation", "activation", "linear", "merge",
            "regularisation")


def register_layer(name: str, *, family: str, help: str, params: tuple[Param, ...] = (),
                   min_inputs: int = 1, max_inputs: int = 1, key_params: tuple[str, ...] = (),
                   check: Callable[..., str | None] | None = None,
                   measure: Callable[..., tuple] | None = None, hidden: bool = False):
    """Decorator registering a builder ``f(params, in_shapes) -> nn.Module`` as a layer kind.

    ``check(params, in_shapes)`` may return a sentence explaining why the input shapes do
    not fit (checked before PyTorch sees them, so the message names the real cause).
    ``measure``: see ``LayerKind.measure``. ``hidden``: a kind specs may hold that ``kinds()``
    (the palette) does not list.
    """
    if family not in FAMILIES and not (hidden and family in HIDDEN_FAMILIES):
        raise ValueError(f"unknown family {family!r}")

    def deco(fn):
        if name in REGISTRY or name in HIDDEN:
            raise ValueError(f"layer kind {name!r} registered twice")
        (HIDDEN if hidden else REGISTRY)[name] = LayerKind(name, family, help, tuple(params), fn, min_inputs,
                                                           max_inputs, key_params, check, measure)
        return fn

    return deco


def get_kind(name: str) -> LayerKind | None:
    """The registered kind called ``name``, hidden kinds included (None when unknown)."""
    kind = REGISTRY.get(name)
    return kind if kind is not None else HIDDEN.get(name)


def kinds() -> dict[str, LayerKind]:
    """All registered kinds by name, in registration order (not the hidden ones: ``get_kind``)."""
    return dict(REGISTRY)
