"""The editor's model: the net being edited, its undo history, node positions, the selection,
and the latest validation. Every edit is one undoable command and triggers revalidation.

Torch is never imported here at module level; the first validation imports it through
``engine.analyze``.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field

from PySide6.QtCore import QMimeData, QObject, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QUndoCommand, QUndoStack

import engine
from engine import INPUT_ID, InputSpec, NetSpec, Node, Problem

from .layout import NODE_H, ROW_GAP, layered_layout

NODES_MIME = "application/x-layerscope-nodes"
CLIP_FORMAT = "layerscope-nodes"
_PREFIX = {"conv2d": "conv", "maxpool2d": "pool", "avgpool2d": "avgpool", "adaptive_avgpool2d": "gap",
           "batchnorm2d": "bn", "linear": "fc", "leaky_relu": "lrelu", "dropout": "drop", "concat": "cat"}


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

class _Work:
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


def _ancestors(work: _Work, node_id: str) -> set[str]:
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


def _structure(spec: NetSpec) -> tuple:
    return tuple((n.id, n.kind, tuple(spec.inputs_of(i))) for i, n in enumerate(spec.nodes))


# ---- validation ----------------------------------------------------------------------------------

def validate(spec: NetSpec) -> Validation:
    """The engine's one-pass analysis of ``spec``: every problem, and shapes, parameters and
    FLOPs of every node it could measure (nodes are measured once and cached by the engine)."""
    info = engine.analyze(spec, partial=True)
    return Validation(info.ok, list(info.problems), info, info.shapes, {layer.id: layer for layer in info.layers})


# ---- undo ----------------------------------------------------------------------------------------

@dataclass
class _State:
    spec: NetSpec
    positions: dict[str, tuple[float, float]]
    manual: bool


class _EditCommand(QUndoCommand):
    """Swaps whole editor states; nets are small, so snapshots make undo exact and simple."""

    def __init__(self, model: "EditorModel", text: str, before: _State, after: _State, merge_key=None):
        super().__init__(text)
        self._model = model
        self.before = before
        self.after = after
        self.merge_key = merge_key

    def id(self) -> int:
        return 1 if self.merge_key is not None else -1

    def mergeWith(self, other) -> bool:
        if getattr(other, "merge_key", None) != self.merge_key:
            return False
        self.after = other.after
        return True

    def redo(self) -> None:
        self._model._restore(self.after)

    def undo(self) -> None:
        self._model._restore(self.before)


# ---- the model -----------------------------------------------------------------------------------

class EditorModel(QObject):
    """The net being edited. Widgets read it and edit it only through its methods."""

    spec_changed = Signal()          # any edit, undo or redo (structure, params, input, positions)
    spec_loaded = Signal()           # set_spec replaced the whole net
    validated = Signal(object)       # Validation
    selection_changed = Signal(str)  # node id, 'input', or ''
    dirty_changed = Signal(bool)

    def __init__(self, spec: NetSpec | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self._spec = NetSpec(InputSpec(), [])
        self._pos: dict[str, tuple[float, float]] = {}
        self._manual = False
        self._selected = ""
        self._validation: Validation | None = None  # computed on first need (imports torch)
        self._pending = True
        self.layout_view = (1100.0, 800.0)  # the canvas keeps this at its viewport size
        self._stack = QUndoStack(self)
        self._stack.cleanChanged.connect(self._on_clean_changed)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._validate_now)
        if spec is not None:
            self.set_spec(spec)
        else:
            self._schedule_validation()

    # -- reading -----------------------------------------------------------------------------------
    def spec(self) -> NetSpec:
        """A copy of the net being edited (safe to keep or save)."""
        return self._spec.copy()

    def spec_view(self) -> NetSpec:
        """The live spec, for widgets that only read it; never mutate it."""
        return self._spec

    def node(self, node_id: str) -> Node | None:
        return self._spec.node(node_id)

    def positions(self) -> dict[str, tuple[float, float]]:
        """Top-left corner of each node box (and of 'input') in scene units."""
        return dict(self._pos)

    def selected(self) -> str:
        return self._selected

    def undo_stack(self) -> QUndoStack:
        return self._stack

    def is_dirty(self) -> bool:
        return not self._stack.isClean()

    def mark_clean(self) -> None:
        """Call after saving: the current state becomes the unmodified one."""
        self._stack.setClean()

    def validation(self) -> Validation:
        """The current validation, computed now if an edit is still waiting for it."""
        if self._pending:
            self._validate_now()
        return self._validation

    def can_run(self) -> tuple[bool, str]:
        """(True, '') when the net can run, else (False, one-line reason for the Start button)."""
        v = self.validation()
        return v.ok, v.reason

    def summary(self, batch_size: int = 1, precision: str = "fp32") -> NetSummary:
        """Totals for ``batch_size`` samples at ``precision`` (see NetSummary)."""
        v = self.validation()
        layers = list(v.layers.values())
        params = sum(layer.params for layer in layers)
        flops = sum(layer.flops for layer in layers)
        act = sum(layer.activation_bytes(batch_size, precision) for layer in layers)
        inp = v.info.input_bytes(batch_size, precision)
        return NetSummary(params, flops, flops * batch_size, act, inp, params * 4 * 3 + act + inp, v.ok)

    # -- whole-net operations ----------------------------------------------------------------------
    def set_spec(self, spec: NetSpec, clean: bool = True) -> None:
        """Show ``spec`` (laid out afresh). ``clean``: a fresh history (file opened); else one undoable edit."""
        spec = spec.copy()
        state = _State(spec, layered_layout(spec, self.layout_view), False)
        if clean:
            self._stack.clear()
            self._restore(state)
            self._stack.setClean()
            self.dirty_changed.emit(False)
        else:
            self._stack.push(_EditCommand(self, "Replace net", self._state(), state))
        self.spec_loaded.emit()

    def undo(self) -> None:
        self._stack.undo()

    def redo(self) -> None:
        self._stack.redo()

    def select(self, node_id: str) -> None:
        """Select a node ('input' for the net input, '' for none)."""
        if node_id and node_id != INPUT_ID and self._spec.node(node_id) is None:
            node_id = ""
        if node_id != self._selected:
            self._selected = node_id
            self.selection_changed.emit(node_id)

    def relayout(self, view: tuple[float, float] | None = None) -> None:
        """Lay the whole net out again for a view of ``view`` pixels (undoable); later edits
        re-lay it out automatically until a node is moved by hand."""
        if view:
            self.layout_view = view
        self._commit("Re-layout", self._spec.copy(), positions=layered_layout(self._spec, self.layout_view),
                     manual=False)

    def fit_layout(self, view: tuple[float, float]) -> None:
        """Re-lay the net out for a view of this size without an undo step, unless nodes
        were placed by hand (the canvas calls this when it is first shown or a net is loaded)."""
        self.layout_view = view
        if self._manual:
            return
        pos = layered_layout(self._spec, view)
        if pos != self._pos:
            self._pos = pos
            self.spec_changed.emit()

    # -- node edits -------------------------------------------------------------------------------
    def add_node(self, kind: str, after: str | None = None, insert_on_edge: tuple[str, str] | None = None,
                 pos: tuple[float, float] | None = None, params: dict | None = None,
                 node_id: str | None = None) -> str:
        """Add a ``kind`` node and return its id.

        No ``after``/``insert_on_edge``: appended after the last node and fed by it.
        ``after=id``: inserted after that node; what it fed is now fed by the new node.
        ``insert_on_edge=(src, dst)``: placed on that connection. ``pos``: where it is drawn
        when the layout is manual.
        """
        if engine.get_kind(kind) is None:
            raise ValueError(f"unknown layer kind {kind!r}")
        w = _Work(self._spec)
        nid = node_id if node_id and id_problem(node_id, w.ids()) is None else next_id(kind, w.ids())
        node = Node(nid, kind, dict(params or {}), [])
        if insert_on_edge is not None:
            src, dst = insert_on_edge
            d = w.node(dst)
            if src not in d.inputs:
                raise ValueError(f"{src} does not feed {dst}")
            node.inputs = [src]
            w.insert(w.index(dst), node)
            w.replace_ref(src, [nid], only=[d])
            text = f"Insert {nid}"
        elif after is not None:
            consumers = w.consumers(after)
            node.inputs = [after]
            w.insert(0 if after == INPUT_ID else w.index(after) + 1, node)
            w.replace_ref(after, [nid], only=consumers)
            text = f"Add {nid}"
        else:
            node.inputs = [w.nodes[-1].id] if w.nodes else [INPUT_ID]
            w.insert(len(w.nodes), node)
            text = f"Add {nid}"
        anchor = node.inputs[0]
        self._commit(text, w.done(), hints={nid: pos} if pos else {nid: self._below(anchor)},
                     shift_from=nid if insert_on_edge or after else None)
        self.select(nid)
        return nid

    def remove_nodes(self, ids) -> None:
        """Delete nodes; whatever they fed is fed by their first input instead."""
        w = _Work(self._spec)
        gone = [i for i in ids if i != INPUT_ID and i in w.ids()]
        if not gone:
            return
        for nid in gone:
            node = w.node(nid)
            w.replace_ref(nid, node.inputs[:1])
            w.nodes.pop(w.index(nid))
        text = f"Delete {gone[0]}" if len(gone) == 1 else f"Delete {len(gone)} layers"
        self._commit(text, w.done())

    def set_param(self, node_id: str, name: str, value) -> None:
        """Set one parameter (consecutive edits of the same field merge into one undo step)."""
        w = _Work(self._spec)
        node = w.node(node_id)
        if node.params.get(name, object()) == value and type(node.params.get(name)) is type(value):
            return
        node.params[name] = copy.deepcopy(value)
        self._commit(f"Set {node_id}.{name}", w.done(), merge_key=("param", node_id, name))

    def reset_param(self, node_id: str, name: str) -> None:
        """Drop a parameter from the node so its registry default applies."""
        w = _Work(self._spec)
        node = w.node(node_id)
        if name in node.params:
            del node.params[name]
            self._commit(f"Reset {node_id}.{name}", w.done())

    def set_inputs(self, node_id: str, inputs: list[str]) -> None:
        """Feed ``node_id`` from exactly these ids (in order)."""
        w = _Work(self._spec)
        node = w.node(node_id)
        if node.inputs == list(inputs):
            return
        node.inputs = list(inputs)
        w.touched.add(node_id)
        self._commit(f"Connect {node_id}", w.done())

    def connect(self, src: str, dst: str) -> str | None:
        """Feed ``dst`` from ``src``: a merge node gains an input, another node's input is replaced.

        Returns None when done, else a sentence saying why not (self-loop, cycle, unknown id).
        """
        w = _Work(self._spec)
        ids = w.ids()
        if dst == INPUT_ID or dst not in ids:
            return "the net input cannot be fed by a layer" if dst == INPUT_ID else f"no node '{dst}'"
        if src != INPUT_ID and src not in ids:
            return f"no node '{src}'"
        if src == dst:
            return "a node cannot feed itself"
        if dst in _ancestors(w, src):
            return f"{dst} already feeds {src}; this connection would make a cycle"
        node = w.node(dst)
        kind = engine.get_kind(node.kind)
        if src in node.inputs and (kind is None or kind.max_inputs == 1 or len(node.inputs) >= kind.max_inputs):
            return f"{src} already feeds {dst}"
        if kind is not None and kind.max_inputs > 1:
            if len(node.inputs) >= kind.max_inputs:
                return f"{dst} takes at most {kind.max_inputs} inputs"
            node.inputs = node.inputs + [src]
        else:
            node.inputs = [src]
        w.touched.add(dst)
        self._commit(f"Connect {src} to {dst}", w.done())
        return None

    def disconnect(self, src: str, dst: str) -> None:
        """Remove one ``src`` -> ``dst`` connection."""
        w = _Work(self._spec)
        node = w.node(dst)
        if src in node.inputs:
            refs = list(node.inputs)
            refs.remove(src)
            node.inputs = refs
            w.touched.add(dst)
            self._commit(f"Disconnect {src} from {dst}", w.done())

    def rename_node(self, old: str, new: str) -> str | None:
        """Rename a node and every reference to it; returns why not, or None when done."""
        if old == new:
            return None
        w = _Work(self._spec)
        bad = id_problem(new, w.ids() - {old})
        if bad:
            return bad
        w.node(old).id = new
        if old in w.implicit:
            w.implicit.add(new)
        w.replace_ref(old, [new], touch=False)
        pos = dict(self._pos)
        if old in pos:
            pos[new] = pos.pop(old)
        was_selected = self._selected == old
        self._commit(f"Rename {old} to {new}", w.done(), positions=pos)
        if was_selected:
            self.select(new)
        return None

    def set_input_spec(self, **fields) -> None:
        """Change the net input: any of channels, height, width, classes."""
        spec = self._spec.copy()
        for k, v in fields.items():
            if k not in engine.INPUT_FIELDS:
                raise ValueError(f"unknown input field {k!r}")
            setattr(spec.input, k, int(v))
        if spec.input == self._spec.input:
            return
        self._commit("Set input", spec, merge_key=("input", tuple(sorted(fields))))

    def move_nodes(self, moves: dict[str, tuple[float, float]]) -> None:
        """Record where nodes were dragged to; from then on the layout is manual until re-laid out."""
        pos = dict(self._pos)
        changed = False
        for k, p in moves.items():
            if k in pos and tuple(pos[k]) != tuple(p):
                pos[k] = (float(p[0]), float(p[1]))
                changed = True
        if changed:
            self._commit("Move", self._spec.copy(), positions=pos, manual=True)

    # -- duplicate / clipboard ---------------------------------------------------------------------
    def nodes_json(self, ids) -> str:
        """The nodes as clipboard JSON (explicit inputs, ids as they are)."""
        w = _Work(self._spec)
        wanted = [n for n in w.nodes if n.id in set(ids)]
        return json.dumps({"format": CLIP_FORMAT, "version": 1,
                           "nodes": [{"id": n.id, "kind": n.kind, "params": n.params, "inputs": n.inputs}
                                     for n in wanted]})

    def copy_nodes(self, ids) -> bool:
        """Put the nodes on the system clipboard; False when none of them exists."""
        ids = [i for i in ids if self._spec.node(i) is not None]
        if not ids:
            return False
        text = self.nodes_json(ids)
        mime = QMimeData()
        mime.setData(NODES_MIME, text.encode("utf-8"))
        mime.setText(text)
        QGuiApplication.clipboard().setMimeData(mime)
        return True

    def cut_nodes(self, ids) -> None:
        if self.copy_nodes(ids):
            self.remove_nodes(ids)

    def can_paste(self) -> bool:
        mime = QGuiApplication.clipboard().mimeData()
        return mime is not None and (mime.hasFormat(NODES_MIME) or CLIP_FORMAT in (mime.text() or "")[:200])

    def paste(self, anchor: str | None = None) -> list[str]:
        """Insert the clipboard's nodes after ``anchor`` (default: the selection, else the last node).

        Ids are renamed where taken; inputs from outside the pasted set come from the anchor.
        Returns the new ids ([] when the clipboard holds no nodes).
        """
        mime = QGuiApplication.clipboard().mimeData()
        if mime is None:
            return []
        raw = bytes(mime.data(NODES_MIME)).decode("utf-8") if mime.hasFormat(NODES_MIME) else mime.text()
        try:
            data = json.loads(raw)
            if data.get("format") != CLIP_FORMAT:
                return []
            nodes = [Node(str(d["id"]), str(d["kind"]), dict(d.get("params") or {}),
                          [str(r) for r in d.get("inputs") or []]) for d in data["nodes"]]
        except (ValueError, TypeError, KeyError, AttributeError):
            return []
        return self._insert_block(nodes, anchor, "Paste")

    def duplicate(self, ids) -> list[str]:
        """Copy the nodes and insert the copy right after the last of them; returns the new ids."""
        w = _Work(self._spec)
        wanted = [copy.deepcopy(n) for n in w.nodes if n.id in set(ids)]
        if not wanted:
            return []
        return self._insert_block(wanted, wanted[-1].id, "Duplicate")

    def _insert_block(self, nodes: list[Node], anchor: str | None, verb: str) -> list[str]:
        nodes = [n for n in nodes if engine.get_kind(n.kind) is not None]
        if not nodes:
            return []
        w = _Work(self._spec)
        ids = w.ids()
        if anchor is None:
            anchor = self._selected or (w.nodes[-1].id if w.nodes else INPUT_ID)
        if anchor != INPUT_ID and anchor not in ids:
            anchor = w.nodes[-1].id if w.nodes else INPUT_ID
        rename: dict[str, str] = {}
        for n in nodes:
            new = n.id if id_problem(n.id, ids) is None and n.id not in rename.values() else next_id(n.kind, ids)
            rename[n.id] = new
            ids = ids | {new}
        block = []
        for n in nodes:
            refs = [rename.get(r, anchor) for r in n.inputs] or [anchor]
            block.append(Node(rename[n.id], n.kind, copy.deepcopy(n.params), refs))
        inner = {r for n in block for r in n.inputs}
        exits = [n.id for n in block if n.id not in inner]
        consumers = w.consumers(anchor) if len(exits) == 1 else []
        at = 0 if anchor == INPUT_ID else w.index(anchor) + 1
        for k, n in enumerate(block):
            w.insert(at + k, n)
        if consumers:
            w.replace_ref(anchor, [exits[0]], only=consumers)
        base = self._below(anchor)
        hints = {n.id: (base[0], base[1] + k * (NODE_H + ROW_GAP)) for k, n in enumerate(block)}
        new_ids = [n.id for n in block]
        self._commit(f"{verb} {len(block)} layer{'s' if len(block) > 1 else ''}", w.done(), hints=hints,
                     shift_from=exits[0] if consumers else None, shift_rows=len(block))
        self.select(new_ids[-1])
        return new_ids

    # -- internals ---------------------------------------------------------------------------------
    def _state(self) -> _State:
        return _State(self._spec.copy(), dict(self._pos), self._manual)

    def _below(self, node_id: str) -> tuple[float, float]:
        x, y = self._pos.get(node_id, (0.0, 0.0))
        return (x, y + NODE_H + ROW_GAP)

    def _commit(self, text: str, spec: NetSpec, *, positions=None, manual=None, hints=None,
                shift_from: str | None = None, shift_rows: int = 1, merge_key=None) -> None:
        manual = self._manual if manual is None else manual
        pos = dict(self._pos) if positions is None else dict(positions)
        if _structure(spec) != _structure(self._spec) and positions is None:
            if not manual:
                pos = layered_layout(spec, self.layout_view)
            else:
                ids = {INPUT_ID} | {n.id for n in spec.nodes}
                pos = {k: v for k, v in pos.items() if k in ids}
                if shift_from:
                    down = _descendants(spec, shift_from) - set(hints or {})
                    pos = {k: (x, y + shift_rows * (NODE_H + ROW_GAP)) if k in down else (x, y)
                           for k, (x, y) in pos.items()}
                for k, p in (hints or {}).items():
                    pos[k] = (float(p[0]), float(p[1]))
                for n in spec.nodes:  # anything still unplaced goes below its first input
                    if n.id not in pos:
                        i = spec.nodes.index(n)
                        x, y = pos.get(spec.inputs_of(i)[0] if spec.inputs_of(i) else INPUT_ID, (0.0, 0.0))
                        pos[n.id] = (x, y + NODE_H + ROW_GAP)
        after = _State(spec, pos, manual)
        before = self._state()
        if (_structure(after.spec) == _structure(before.spec) and after.spec.to_dict() == before.spec.to_dict()
                and after.positions == before.positions and after.manual == before.manual):
            return
        self._stack.push(_EditCommand(self, text, before, after, merge_key))

    def _restore(self, state: _State) -> None:
        self._spec = state.spec.copy()
        # an automatic layout follows the current view size; only hand placements are history
        self._pos = dict(state.positions) if state.manual else layered_layout(self._spec, self.layout_view)
        self._manual = state.manual
        if self._selected and self._selected != INPUT_ID and self._spec.node(self._selected) is None:
            self._selected = ""
            self.selection_changed.emit("")
        self.spec_changed.emit()
        self._schedule_validation()

    def _on_clean_changed(self, clean: bool) -> None:
        self.dirty_changed.emit(not clean)

    def _schedule_validation(self) -> None:
        self._pending = True
        self._timer.start()

    def _validate_now(self) -> None:
        self._timer.stop()
        self._pending = False
        self._validation = validate(self._spec)
        self.validated.emit(self._validation)


def _descendants(spec: NetSpec, node_id: str) -> set[str]:
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
