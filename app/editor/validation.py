"""What the engine says about the net being edited: ``Validation`` (one
``engine.analyze(spec, partial=True)`` per edit) and ``NetSummary`` (batch totals).

Torch is never imported here at module level; ``validate`` imports it through ``engine.analyze``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import engine
from engine import NetSpec, Problem


@dataclass
class Validation:
    """What the engine says about the current net (one ``engine.analyze(spec, partial=True)``).

    ``shapes`` and ``layers`` also cover the valid part of an invalid net (the nodes not
    fed by a broken node), so edges keep their shape labels while a net is being built.
    """

    ok: bool
    problems: list[Problem]
    info: object                                            # the engine NetInfo (partial when not ok)
    shapes: dict[str, tuple] = field(default_factory=dict)  # node id (and 'input') -> per-sample shape
    layers: dict[str, object] = field(default_factory=dict)  # node id -> engine LayerInfo

    @property
    def reason(self) -> str:
        """One line saying why the net cannot run ('' when it can)."""
        if self.ok:
            return ""
        if not self.problems:
            return "the net is not valid"
        first = str(self.problems[0])
        more = len(self.problems) - 1
        return first + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")

    def node_problems(self, node_id: str) -> list[str]:
        return [p.message for p in self.problems if p.node == node_id]

    @property
    def bad_nodes(self) -> set[str]:
        return {p.node for p in self.problems if p.node}


@dataclass
class NetSummary:
    """Totals for a batch: parameters, forward FLOPs, activation bytes and a training-memory estimate.

    ``complete`` is False when the net is invalid and the totals cover only its valid part.
    ``train_bytes_estimate`` = weights + gradients + optimiser state (3 x 4 bytes per
    parameter, fp32 master weights) + activations kept for backward + the input batch.
    """

    params: int
    flops_per_sample: int
    flops: int
    activation_bytes: int
    input_bytes: int
    train_bytes_estimate: int
    complete: bool



def validate(spec: NetSpec) -> Validation:
    """The engine's one-pass analysis of ``spec``: every problem, and shapes, parameters and
    FLOPs of every node it could measure (nodes are measured once and cached by the engine)."""
    info = engine.analyze(spec, partial=True)
    return Validation(info.ok, list(info.problems), info, info.shapes, {layer.id: layer for layer in info.layers})


def opaque_op(node) -> str | None:
    """The op name of a node LayerScope cannot edit (an imported model's op with no layer kind:
    a kind outside the palette's families, or unknown), else None. Such nodes are read-only."""
    kind = engine.get_kind(node.kind)
    if kind is not None and kind.family in engine.FAMILIES:
        return None
    op = node.params.get("op") if isinstance(node.params, dict) else None
    return str(op) if op else node.kind


def unsaveable_reason(spec: NetSpec) -> str:
    """One line saying why ``spec`` cannot be saved as a LayerScope net ('' when it can): every
    node must map to a layer kind."""
    ops = [opaque_op(n) for n in spec.nodes]
    ops = [op for op in ops if op is not None]
    if not ops:
        return ""
    shown = sorted(set(ops))
    names = ", ".join(shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")
    return (f"cannot save as a LayerScope net: {len(ops)} node{'s' if len(ops) > 1 else ''} "
            f"({names}) {'have' if len(ops) > 1 else 'has'} no LayerScope layer kind; the model runs from its file")
