"""The net editor: build a net by hand. Qt widgets over one ``EditorModel``; never imports torch
at import time (the model's first validation imports it through ``engine.analyze``).

Public API (everything else is private)::

    from app.editor import (EditorModel, CanvasView, PaletteWidget, PropertyPanel, ProblemsList,
                            Validation, NetSummary, KIND_MIME)

    model = EditorModel()                  # or EditorModel(spec)
    palette = PaletteWidget(model)         # drag source; double-click appends
    canvas = CanvasView(model)             # the graph; drop target
    props = PropertyPanel(model)           # form for the selected node / the net input
    problems = ProblemsList(model)         # click a problem -> selects its node

EditorModel(QObject)
    signals   spec_changed()               any edit, undo or redo
              spec_loaded()                set_spec replaced the whole net (new / open / preset)
              validated(Validation)        after each edit (coalesced, next event-loop turn)
              selection_changed(str)       node id, 'input' (the net input) or ''
              dirty_changed(bool)          unsaved edits exist
    read      spec() -> NetSpec (copy)     spec_view() (live, read-only)   node(id)
              positions() -> {id: (x, y)}  selected() -> str   is_dirty()   undo_stack() -> QUndoStack
              validation() -> Validation   (computes now if an edit is pending)
              can_run() -> (bool, reason)  summary(batch_size, precision) -> NetSummary
    whole net set_spec(spec, clean=True)   clean: fresh history, not dirty (open/new); False: undoable
              mark_clean()                 after saving      undo() / redo()
              relayout(view=None)          select(id)
    edits     add_node(kind, after=None, insert_on_edge=None, pos=None, params=None, node_id=None) -> id
              remove_nodes(ids)  set_param(id, name, value)  reset_param(id, name)
              set_inputs(id, inputs)  connect(src, dst) -> reason|None  disconnect(src, dst)
              rename_node(old, new) -> reason|None  set_input_spec(channels=, height=, width=, classes=)
              move_nodes({id: (x, y)})  duplicate(ids) -> ids  copy_nodes(ids)  cut_nodes(ids)
              paste(anchor=None) -> ids
    Every edit is one QUndoCommand; consecutive edits of one field merge into one step.

Validation (one engine.analyze(spec, partial=True) per edit, never on import):
    ok, problems (list[engine.Problem]), info (the engine NetInfo; partial when not ok), shapes
    {id: per-sample out shape, also for the valid part of an invalid net; 'input' too},
    layers {id: engine LayerInfo}, reason (one line for a disabled Start), node_problems(id).
NetSummary: params, flops_per_sample, flops (batch, forward), activation_bytes, input_bytes,
    train_bytes_estimate, complete (False: the net is invalid and totals cover its valid part).

CanvasView(model)
    signals   status_message(str)  node_double_clicked(str)
    methods   set_node_metrics({id: {"time_ms", "mem_bytes", "gflops"}}, color_by="time"|"memory"|"flops"|None)
              clear_metrics()  fit_view()  relayout()  zoom_by(f)  zoom_reset()  selected_ids()
              delete_selection()  edit_actions() -> {name: QAction}
    edit_actions keys: undo redo cut copy paste delete duplicate select_all fit relayout zoom_in
    zoom_out zoom_reset. They carry the shortcuts (Ctrl+Z, Ctrl+Shift+Z/Ctrl+Y, Ctrl+X/C/V,
    Delete, Ctrl+D, Ctrl+A, F, L, Ctrl+=/-/0) with the canvas as shortcut context: put these
    same QAction objects in the Edit/View menus; do not create other actions with these keys
    (Qt then finds the shortcut ambiguous and runs neither).

PaletteWidget(model=None): signal kind_activated(str). Drag MIME: KIND_MIME, the kind name.
opaque_op(node) -> op name | None: an imported op with no layer kind (drawn read-only, op name shown);
unsaveable_reason(spec) -> '' | one line (a net with such nodes cannot be saved as a LayerScope net).

PropertyPanel(model).  ProblemsList(model): can_run() -> (bool, reason), signal problems_changed(int).

Each widget opens alone: ``python -m app.editor.canvas [preset]`` (also .palette, .properties,
.problems) and ``python -m app.editor`` shows all four together; ``--screenshot PATH`` saves a PNG.
"""
from __future__ import annotations

import importlib

# imported on first use, so ``python -m app.editor.canvas`` does not import itself twice
_WHERE = {"EditorModel": "model", "Validation": "validation", "NetSummary": "validation", "CanvasView": "canvas",
          "KIND_MIME": "canvas", "PaletteWidget": "palette", "PropertyPanel": "properties",
          "ProblemsList": "problems", "opaque_op": "validation", "unsaveable_reason": "validation"}


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'app.editor' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


__all__ = ["EditorModel", "Validation", "NetSummary", "CanvasView", "PaletteWidget", "PropertyPanel",
           "ProblemsList", "KIND_MIME", "opaque_op", "unsaveable_reason"]
