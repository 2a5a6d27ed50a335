"""Pure edits on a copy of the net: auto-naming of node ids, the working copy every edit
starts from (``Work``), and the graph walks the model needs (ancestors, descendants, structure).
No Qt here; ``EditorModel`` turns each finished ``Work`` into one undoable command.
"""
from __future__ import annotations

import re

import engine
from engine import INPUT_ID, NetSpec, Node

_PREFIX = {"conv2d": "conv", "maxpool2d": "pool", "avgpool2d": "avgpool", "adaptive_avgpool2d": "gap",
           "batchnorm2d": "bn", "linear": "fc", "leaky_relu": "lrelu", "dropout": "drop", "concat": "cat"}


def kind_prefix(kind: str) -> str:
    """The stem of auto-named ids for ``kind`` (conv2d -> conv, so conv1, conv2 ...)."""
    if kind in _PREFIX:
        return _PREFIX[kind]
    stem = re.sub(r"[^A-Za-z0-9_]", "_", kind).rstrip("0123456789_")
    return stem if stem and not stem[0].isdigit() else "node"


def next_id(kind: str, used) -> str:
    """A fresh id for a node of ``kind``: one more than the highest number in use for its stem."""
    stem = kind_prefix(kind)
    pat = re.compile(rf"^{re.escape(stem)}(\d+)$")
    n = 1 + max((int(m.group(1)) for u in used if (m := pat.match(u))), default=0)
    while f"{stem}{n}" in used:
        n += 1
    return f"{stem}{n}"


def id_problem(new_id: str, used) -> str | None:
    """Why ``new_id`` cannot name a node next to ``used``, or None (the engine's rule)."""
    return engine.id_problem(new_id, used)


# ---- pure edits on a working copy -------------------------------------------------------------

class Work:
    """A spec copy with every node's inputs explicit; ``done()`` folds back the ones that were implicit."""

    def __init__(self, spec: NetSpec):
        self.spec = spec.copy()
        self.implicit = {n.id for n in self.spec.nodes if n.inputs is None}
        for i, n in enumerate(self.spec.nodes):
            n.inputs = spec.inputs_of(i)
        self.touched: set[str] = set()

    @property
    def nodes(self) -> list[Node]:
        return self.spec.nodes

    def ids(self) -> set[str]:
        return {n.id for n in self.nodes}

    def index(self, node_id: str) -> int:
        for i, n in enumerate(self.nodes):
            if n.id == node_id:
                return i
        raise KeyError(node_id)

    def node(self, node_id: str) -> Node:
        return self.nodes[self.index(node_id)]

    def consumers(self, node_id: str) -> list[Node]:
        return [n for n in self.nodes if node_id in n.inputs]

    def replace_ref(self, old: str, new: list[str], only: list[Node] | None = None, touch: bool = True) -> None:
        for n in (only if only is not None else self.nodes):
            if old in n.inputs:
                refs = []
                for r in n.inputs:
                    refs.extend(new if r == old else [r])
                n.inputs = refs
                if touch:
                    self.touched.add(n.id)

    def insert(self, index: int, node: Node) -> None:
        self.nodes.insert(index, node)
        self.touched.add(node.id)
        self.implicit.add(node.id)

    def done(self) -> NetSpec:
        # a node keeps implicit inputs where it had them (or is new/edited) and they still mean the same
        fold = self.implicit | self.touched
        for i, n in enumerate(self.nodes):
            default = [self.nodes[i - 1].id] if i > 0 else [INPUT_ID]
            if n.id in fold and n.inputs == default:
                n.inputs = None
        return self.spec


def ancestors(work: Work, node_id: str) -> set[str]:
    """Every id that feeds ``node_id``, directly or not (the net input included)."""
    by_id = {n.id: n for n in work.nodes}
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        v = stack.pop()
        for r in by_id[v].inputs if v in by_id else ():
            if r not in seen:
                seen.add(r)
                stack.append(r)
    return seen


def structure(spec: NetSpec) -> tuple:
    """The graph without parameters: (id, kind, inputs) per node; equal tuples draw the same items."""
    return tuple((n.id, n.kind, tuple(spec.inputs_of(i))) for i, n in enumerate(spec.nodes))


def descendants(spec: NetSpec, node_id: str) -> set[str]:
    """Every id that ``node_id`` feeds, directly or not."""
    feeds: dict[str, list[str]] = {}
    for i, n in enumerate(spec.nodes):
        for r in spec.inputs_of(i):
            feeds.setdefault(r, []).append(n.id)
    out: set[str] = set()
    stack = [node_id]
    while stack:
        for c in feeds.get(stack.pop(), ()):
            if c not in out:
                out.add(c)
                stack.append(c)
    return out
