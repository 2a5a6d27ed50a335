"""The editor's model: the net being edited, its undo history, node positions, the selection,
and the latest validation. Every edit is one undoable command and triggers revalidation.

The pieces it is built from: ``edits`` (the working copy an edit changes, id naming),
``commands`` (the undo command), ``clipboard`` (copy/paste JSON) and ``validation``
(``Validation``/``NetSummary``). Torch is never imported here at module level; the first
validation imports it through ``engine.analyze``.
"""
from __future__ import annotations

import copy

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoStack

import engine
from engine import INPUT_ID, InputSpec, NetSpec, Node

from . import clipboard
from .commands import EditCommand, EditorState
from .edits import Work, ancestors, descendants, id_problem, next_id, structure
from .layout import NODE_H, ROW_GAP, layered_layout
from .validation import NetSummary, Validation, validate

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
        state = EditorState(spec, layered_layout(spec, self.layout_view), False)
        if clean:
            self._stack.clear()
            self._restore(state)
            self._stack.setClean()
            self.dirty_changed.emit(False)
        else:
            self._stack.push(EditCommand(self, "Replace net", self._state(), state))
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
        w = Work(self._spec)
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
        w = Work(self._spec)
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
        w = Work(self._spec)
        node = w.node(node_id)
        if node.params.get(name, object()) == value and type(node.params.get(name)) is type(value):
            return
        node.params[name] = copy.deepcopy(value)
        self._commit(f"Set {node_id}.{name}", w.done(), merge_key=("param", node_id, name))

    def reset_param(self, node_id: str, name: str) -> None:
        """Drop a parameter from the node so its registry default applies."""
        w = Work(self._spec)
        node = w.node(node_id)
        if name in node.params:
            del node.params[name]
            self._commit(f"Reset {node_id}.{name}", w.done())

    def set_inputs(self, node_id: str, inputs: list[str]) -> None:
        """Feed ``node_id`` from exactly these ids (in order)."""
        w = Work(self._spec)
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
        w = Work(self._spec)
        ids = w.ids()
        if dst == INPUT_ID or dst not in ids:
            return "the net input cannot be fed by a layer" if dst == INPUT_ID else f"no node '{dst}'"
        if src != INPUT_ID and src not in ids:
            return f"no node '{src}'"
        if src == dst:
            return "a node cannot feed itself"
        if dst in ancestors(w, src):
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
        w = Work(self._spec)
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
        w = Work(self._spec)
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

    def set_net_name(self, name: str) -> None:
        """Name the net (the spec's ``name``: the window title, the file and checkpoint names); one undo step."""
        name = name.strip()
        if name == self._spec.name:
            return
        spec = self._spec.copy()
        spec.name = name
        self._commit("Rename net", spec, merge_key=("net-name",))

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
        w = Work(self._spec)
        return clipboard.nodes_json([n for n in w.nodes if n.id in set(ids)])

    def copy_nodes(self, ids) -> bool:
        """Put the nodes on the system clipboard; False when none of them exists."""
        ids = [i for i in ids if self._spec.node(i) is not None]
        if not ids:
            return False
        clipboard.put_text(self.nodes_json(ids))
        return True

    def cut_nodes(self, ids) -> None:
        if self.copy_nodes(ids):
            self.remove_nodes(ids)

    def can_paste(self) -> bool:
        return clipboard.can_paste()

    def paste(self, anchor: str | None = None) -> list[str]:
        """Insert the clipboard's nodes after ``anchor`` (default: the selection, else the last node).

        Ids are renamed where taken; inputs from outside the pasted set come from the anchor.
        Returns the new ids ([] when the clipboard holds no nodes).
        """
        nodes = clipboard.read_nodes()
        if not nodes:
            return []
        return self._insert_block(nodes, anchor, "Paste")

    def duplicate(self, ids) -> list[str]:
        """Copy the nodes and insert the copy right after the last of them; returns the new ids."""
        w = Work(self._spec)
        wanted = [copy.deepcopy(n) for n in w.nodes if n.id in set(ids)]
        if not wanted:
            return []
        return self._insert_block(wanted, wanted[-1].id, "Duplicate")

    def _insert_block(self, nodes: list[Node], anchor: str | None, verb: str) -> list[str]:
        nodes = [n for n in nodes if engine.get_kind(n.kind) is not None]
        if not nodes:
            return []
        w = Work(self._spec)
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
    def _state(self) -> EditorState:
        return EditorState(self._spec.copy(), dict(self._pos), self._manual)

    def _below(self, node_id: str) -> tuple[float, float]:
        x, y = self._pos.get(node_id, (0.0, 0.0))
        return (x, y + NODE_H + ROW_GAP)

    def _commit(self, text: str, spec: NetSpec, *, positions=None, manual=None, hints=None,
                shift_from: str | None = None, shift_rows: int = 1, merge_key=None) -> None:
        manual = self._manual if manual is None else manual
        pos = dict(self._pos) if positions is None else dict(positions)
        if structure(spec) != structure(self._spec) and positions is None:
            if not manual:
                pos = layered_layout(spec, self.layout_view)
            else:
                ids = {INPUT_ID} | {n.id for n in spec.nodes}
                pos = {k: v for k, v in pos.items() if k in ids}
                if shift_from:
                    down = descendants(spec, shift_from) - set(hints or {})
                    pos = {k: (x, y + shift_rows * (NODE_H + ROW_GAP)) if k in down else (x, y)
                           for k, (x, y) in pos.items()}
                for k, p in (hints or {}).items():
                    pos[k] = (float(p[0]), float(p[1]))
                for n in spec.nodes:  # anything still unplaced goes below its first input
                    if n.id not in pos:
                        i = spec.nodes.index(n)
                        x, y = pos.get(spec.inputs_of(i)[0] if spec.inputs_of(i) else INPUT_ID, (0.0, 0.0))
                        pos[n.id] = (x, y + NODE_H + ROW_GAP)
        after = EditorState(spec, pos, manual)
        before = self._state()
        if (structure(after.spec) == structure(before.spec) and after.spec.to_dict() == before.spec.to_dict()
                and after.positions == before.positions and after.manual == before.manual):
            return
        self._stack.push(EditCommand(self, text, before, after, merge_key))

    def _restore(self, state: EditorState) -> None:
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
