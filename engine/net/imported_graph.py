"""The traced path of ``engine.net.imported``: an fx graph -> a NetSpec and the LayerNet running it.

Which fx nodes become spec nodes: those whose value is a tensor (``call_module``,
``call_function``, ``call_method``, ``get_attr``) and that feed the model's output, after ``keep_side_effects``
made every call that acts without its result being read feed it (an in-place call is what later
readers of its tensor read; another unread module call feeds ``after_effects`` on the output), so
every call the user's forward makes runs, in its order. Every other
node (a size, a shape, a tuple and the ``getitem`` picking from it) is computed inside each node
that uses it: the node's module is then a small ``GraphModule`` holding it and the op.
"""
from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
import torch.nn as nn

from engine.errors import LayerScopeError
from engine.net.analyze import analyze
from engine.net.imported_parts import (BATCH, AttrHolder, ImportedNet, first_line, check_output_dtype, check_params, input_spec, map_call,
                                 map_module, measure_node, node_id, op_name, output_classes)
from engine.net.layers import shapes_text
from engine.net.model import LayerNet
from engine.net.registry import get_kind
from engine.net.spec import INPUT_ID, NetSpec, Node


class _Recorder(fx.Interpreter):
    """Runs a GraphModule, keeping every node's value by node name."""

    def __init__(self, gm):
        super().__init__(gm)
        self.values: dict = {}

    def run_node(self, n):
        v = super().run_node(n)
        self.values[n.name] = v
        return v


def _values(gm: fx.GraphModule, shape) -> tuple[dict, fx.GraphModule, str]:
    """Every node's value for a batch of ``BATCH``: on a meta copy of the model, or, when an op
    cannot run on meta, on a CPU copy with a random input. Returns (values, the copy, device)."""
    first_error = None
    for device in ("meta", "cpu"):
        try:
            twin = copy.deepcopy(gm).to(device)
        except Exception as e:
            raise LayerScopeError(f"the model cannot be copied to be measured: {type(e).__name__}: "
                                  f"{first_line(e)}") from None
        twin.train(gm.training)
        x = (torch.empty(BATCH, *shape, device="meta") if device == "meta"
             else torch.randn(BATCH, *shape, generator=torch.Generator().manual_seed(0)))
        rec = _Recorder(twin)
        try:
            with torch.no_grad():
                rec.run(x)
            return rec.values, twin, device
        except Exception as e:
            first_error = first_error or e
            if device == "cpu":
                c, h, w = shape
                raise LayerScopeError(f"the model fails on a {c}x{h}x{w} input: {type(e).__name__}: "
                                      f"{first_line(e)}") from None
    raise AssertionError(first_error)  # pragma: no cover


def _ancestors(node: fx.Node, is_tensor) -> list[fx.Node]:
    """The non-tensor nodes ``node`` needs (not through tensor nodes or the input), in graph order."""
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        for a in n.all_input_nodes:
            if a not in seen and not is_tensor(a) and a.op != "placeholder":
                seen.add(a)
                stack.append(a)
    return list(seen)  # ordered by _subgraph


def _frontier(node: fx.Node, inner: list, is_tensor) -> list[fx.Node]:
    """The tensor nodes (and the input) the node and its inner nodes read, in argument order."""
    out = []
    for n in [node, *inner]:
        for a in _flat_nodes((n.args, n.kwargs)):
            if (is_tensor(a) or a.op == "placeholder") and a not in out:
                out.append(a)
    return out


def _flat_nodes(args) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(args, lambda a: found.append(a) or a)
    return found


def _subgraph(root: nn.Module, node: fx.Node, inner: list, inputs: list, order: dict) -> fx.GraphModule:
    """A GraphModule computing ``node`` (and its inner nodes) from ``inputs``; the modules and
    attributes it calls are ``root``'s own objects (shared, not copied)."""
    g = fx.Graph()
    env = {}
    for i, a in enumerate(inputs):
        env[a] = g.placeholder(f"in{i}")
    for n in sorted(inner, key=order.__getitem__) + [node]:
        env[n] = g.node_copy(n, lambda a: env[a])
    g.output(env[node])
    return fx.GraphModule(root, g, class_name=f"Op_{node.name}")


def after_effects(value, *effects):
    """``value`` itself: the node that keeps calls whose result nothing reads (an ``nn.ReLU``
    called for its side effect, a module updating a buffer) in the graph, so they run in order."""
    return value


_INPLACE_OPS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor, operator.ilshift,
                operator.irshift, operator.imatmul}


def _mutates(n: fx.Node, gm: nn.Module) -> bool:
    """Whether a call writes into its first argument: a module with ``inplace=True``, a tensor
    method or function named with a trailing ``_`` (``relu_``, ``add_``), ``inplace=True``, ``+=``."""
    if n.op == "call_module":
        return getattr(gm.get_submodule(n.target), "inplace", False) is True
    if n.op not in ("call_function", "call_method"):
        return False
    if n.kwargs.get("inplace") is True or n.target in _INPLACE_OPS:
        return True
    name = n.target if n.op == "call_method" else getattr(n.target, "__name__", "")
    return isinstance(name, str) and name.endswith("_") and not name.endswith("__")


def keep_side_effects(gm: fx.GraphModule) -> list[str]:
    """Keep every call that may act without its result being read (fx keeps them; the spec keeps
    only what feeds the output): a call writing into a tensor (``s.r(y)`` with ``inplace=True``,
    ``y.relu_()``) becomes what later readers of that tensor read (it is the same tensor), and
    any other ``call_module`` or in-place call still unread feeds an ``after_effects`` node on the
    output. Rewrites ``gm`` in place; returns the names of the calls routed through that node."""
    graph = gm.graph
    order = {n: k for k, n in enumerate(graph.nodes)}
    for s in list(graph.nodes):
        if s.users or not _mutates(s, gm) or not s.args or not isinstance(s.args[0], fx.Node):
            continue
        target = s.args[0]
        for u in list(target.users):
            if u is not s and order[u] > order[s] and u.op != "output":
                u.replace_input_with(target, s)
        out = next(n for n in graph.nodes if n.op == "output")
        if target in out.all_input_nodes and order[out] > order[s]:
            out.replace_input_with(target, s)
    loose = [n for n in graph.nodes if not n.users and (n.op == "call_module" or _mutates(n, gm))]
    if loose:
        out = next(n for n in graph.nodes if n.op == "output")
        ret = out.args[0]
        if isinstance(ret, fx.Node):
            with graph.inserting_before(out):
                kept = graph.call_function(after_effects, (ret, *loose))
            out.replace_input_with(ret, kept)
            gm.recompile()
            return [n.name for n in loose]
    gm.recompile()
    return []


def _wrappers(gm: nn.Module, nodes: list, plan: dict, order: dict) -> dict:
    """Node name -> the module that computes it with ``gm``'s modules (the model's module itself, a
    registry module for a mapped functional op, an AttrHolder or a sub-GraphModule); ``nodes``
    and ``plan`` come from the traced graph, ``gm`` is the model or its measuring copy."""
    out = {}
    for n in nodes:
        how, extra = plan[n.name]
        if how == "module":
            out[n.name] = gm.get_submodule(n.target)
        elif how == "kind":
            kind = get_kind(extra[0])
            out[n.name] = kind.build(kind.resolved(extra[1]), extra[2])
        elif how == "attr":
            out[n.name] = AttrHolder(_attr(gm, n.target))
        else:
            inner, inputs = extra
            out[n.name] = _subgraph(gm, n, inner, inputs, order)
    return out


def _attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def build_traced(source: str, module: nn.Module, gm: fx.GraphModule, shape, classes) -> ImportedNet:
    """The ImportedNet of a traced model (see the module docstring of ``engine.net.imported``)."""
    keep_side_effects(gm)
    graph = gm.graph
    values, twin, device = _values(gm, shape)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    x_node = placeholders[0]
    out_node = next(n for n in graph.nodes if n.op == "output")
    ret = out_node.args[0]
    if not isinstance(ret, fx.Node) or not isinstance(values.get(ret.name), torch.Tensor):
        what = type(ret).__name__ if not isinstance(ret, fx.Node) else type(values.get(ret.name)).__name__
        raise LayerScopeError(f"{source} returns a {what}; LayerScope needs one tensor of class scores "
                              f"(N x classes)")
    if ret is x_node:
        raise LayerScopeError(f"{source} returns its input unchanged; there is nothing to profile")
    out_shape = tuple(int(d) for d in values[ret.name].shape[1:])
    classes = output_classes(source, out_shape, classes)
    check_output_dtype(source, values[ret.name])

    def is_tensor(n: fx.Node) -> bool:
        return n.op in ("call_module", "call_function", "call_method", "get_attr") and \
            isinstance(values.get(n.name), torch.Tensor)

    # the nodes feeding the output (anything else is dead code: not imported)
    live, stack = {ret}, [ret]
    while stack:
        for a in stack.pop().all_input_nodes:
            if a not in live:
                live.add(a)
                stack.append(a)
    tensor_nodes = [n for n in graph.nodes if n in live and is_tensor(n)]
    # the output node last (a node computed after it but not feeding it is not live)
    tensor_nodes.remove(ret)
    tensor_nodes.append(ret)

    used: set = set()
    ids = {x_node.name: INPUT_ID}
    names: dict[str, str] = {}
    for n in tensor_nodes:
        ids[n.name] = node_id(n.name, used)
        names[ids[n.name]] = n.target if n.op in ("call_module", "get_attr") else n.name

    def shape_of(n: fx.Node) -> tuple:
        return tuple(int(d) for d in values[n.name].shape[1:]) if n is not x_node else tuple(shape)

    plan: dict = {}
    node_inputs: dict[str, list[fx.Node]] = {}
    kinds: dict[str, tuple] = {}
    seen_modules: set = set()
    for n in tensor_nodes:
        if n.op == "get_attr":
            plan[n.name] = ("attr", None)
            node_inputs[n.name] = []
            continue
        inner = _ancestors(n, is_tensor)
        direct = _flat_nodes((n.args, n.kwargs))
        simple = not inner and all(is_tensor(a) or a is x_node for a in direct)
        if n.op == "call_module" and simple and not n.kwargs and all(isinstance(a, fx.Node) for a in n.args):
            inputs = list(n.args)
            m = gm.get_submodule(n.target)
            mapped = None
            # a module used again maps again only when it holds no weights (a shared nn.ReLU): a
            # second use of weights is opaque with 0 parameters, so that they count once
            if id(m) not in seen_modules or not any(True for _ in m.parameters()):
                mapped = map_module(m, [shape_of(a) for a in inputs])
            seen_modules.add(id(m))
            plan[n.name] = ("module", None)
            node_inputs[n.name] = inputs
            if mapped:
                kinds[n.name] = mapped
            continue
        if n.op in ("call_function", "call_method") and simple:
            tensor_args = [a for a in direct]
            in_shapes = [shape_of(a) for a in tensor_args]
            mapped = map_call(n, tensor_args, in_shapes)
            if mapped:
                plan[n.name] = ("kind", (mapped[0], mapped[1], in_shapes))
                node_inputs[n.name] = tensor_args
                kinds[n.name] = mapped
                continue
        if n.op == "call_module":
            seen_modules.add(id(gm.get_submodule(n.target)))
        inputs = _frontier(n, inner, is_tensor)
        plan[n.name] = ("graph", (inner, inputs))
        node_inputs[n.name] = inputs

    order = {n: k for k, n in enumerate(graph.nodes)}
    real = _wrappers(gm, tensor_nodes, plan, order)
    twins = _wrappers(twin, tensor_nodes, plan, order)

    # measure every node alone, in order, on the values recorded for its inputs
    carries = {x_node.name: False}
    counted: set = set()
    nodes: list[Node] = []
    for n in tensor_nodes:
        inputs = node_inputs[n.name]
        xs = [values[a.name] for a in inputs]
        grads = tuple(carries.get(a.name, False) for a in inputs)
        try:
            out, flops, bwd = measure_node(twins[n.name], xs, grads)
        except Exception as e:
            raise LayerScopeError(f"cannot measure {names[ids[n.name]]} ({op_name(n, gm)}): {type(e).__name__}: "
                                  f"{first_line(e)}") from None
        t = out if isinstance(out, torch.Tensor) else None
        carries[n.name] = bool(t is not None and t.requires_grad)
        new = [p for p in real[n.name].parameters() if id(p) not in counted]
        counted.update(id(p) for p in new)
        in_ids = [ids[a.name] for a in inputs]
        in_shapes = [shape_of(a) for a in inputs]
        if n.name in kinds:
            kind, params = kinds[n.name]
            nodes.append(Node(ids[n.name], kind, dict(params), in_ids))
        else:
            nodes.append(Node(ids[n.name], "opaque", {
                "op": op_name(n, gm), "module": n.target if n.op == "call_module" else "",
                "in_shapes": shapes_text(in_shapes), "out_shape": "x".join(map(str, shape_of(n))),
                "params": sum(p.numel() for p in new), "flops": flops // BATCH, "bwd_flops": bwd // BATCH},
                in_ids))
    del twins, twin, values
    stem = source.split(":", 1)[1] if source.startswith("torchvision:") else source
    spec = NetSpec(input_spec(shape, classes), nodes, name=f"{type(module).__name__} ({stem})",
                   description=f"imported from {source} with torch.fx; node ids are the model's names with "
                               f"'.' as '_'; opaque nodes hold the figures measured at import")
    try:
        info = analyze(spec)
    except LayerScopeError as e:  # pragma: no cover - a bug of the import, reported in one line
        raise LayerScopeError(f"the imported graph of {source} does not check: {e}") from None
    model = LayerNet(spec, info, modules={ids[n.name]: real[n.name] for n in tensor_nodes})
    model.train(module.training)
    imported = ImportedNet(source, spec, model, None, True, names)
    check_params(imported, module)
    return imported
