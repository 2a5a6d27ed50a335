"""What the two import paths share (``engine.net.imported`` is the entry point): the
``ImportedNet`` result, measuring one node, the exact mapping of modules and functional ops onto
registry kinds, op names and node ids.

Mapping is exact or not at all: a module maps to a kind when its type is the kind's own module
type and every attribute (compared between the user's module and the one the kind builds, after
checking each param against the kind's schema) is equal; in-place flags are not compared (the
values are the same). Anything else stays an opaque node.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from engine.errors import LayerScopeError
from engine.net.analyze import analyze, reserved_id
from engine.net.model import LayerNet
from engine.net.registry import get_kind
from engine.net.spec import INPUT_FIELDS, INPUT_ID, InputSpec, NetSpec

BATCH = 2  # measured at a batch of 2 and halved (training-mode batch norm needs 2 values)
_ID_MAX = 64


@dataclass
class ImportedNet:
    """An imported model: ``spec`` (its graph as a net, storable in sessions), ``model`` (the
    LayerNet that runs the user's modules; ``model.plan`` follows the spec), ``traced`` (False:
    the hook fallback), ``notice`` (one line when the fallback was used), ``names`` (node id ->
    the model's own name: qualified module name or fx node name), ``notes`` (other remarks, one
    line each: parameters never used, ...)."""

    source: str
    spec: NetSpec
    model: LayerNet
    notice: str | None
    traced: bool
    names: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def module_params(self) -> int:
        """Parameters of the running model (shared ones once), from ``model.parameters()``."""
        return sum(p.numel() for p in self.model.parameters())


def first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0].strip() if lines else type(e).__name__

# ---- small modules for what is not a module of the user's --------------------------------------

class AttrHolder(nn.Module):
    """A model's tensor attribute used directly in forward (``self.scale * x``): returns it. A
    parameter stays the same Parameter object (shared, trained, counted once)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        if isinstance(value, nn.Parameter):
            self.value = value
        else:
            self.register_buffer("value", value)

    def forward(self):
        return self.value


def first_tensor(v):
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, (list, tuple)):
        for x in v:
            t = first_tensor(x)
            if t is not None:
                return t
    if isinstance(v, dict):
        return first_tensor(list(v.values()))
    return None


def measure_node(module: nn.Module, xs: list, in_grads: tuple) -> tuple:
    """(out, forward FLOPs, backward FLOPs) of one node module on inputs ``xs`` (batch ``BATCH``):
    FlopCounterMode over ``module(*xs)``, then over ``out.backward()`` with a gradient for the
    inputs flagged in ``in_grads`` (non-leaf copies, so an in-place op may run)."""
    leaves = []
    for x, g in zip(xs, in_grads):
        if isinstance(x, torch.Tensor) and x.is_floating_point() and g:
            leaf = x.detach().requires_grad_(True)
            leaves.append(leaf.clone())
        elif isinstance(x, torch.Tensor):
            leaves.append(x.detach())
        else:
            leaves.append(x)
    with FlopCounterMode(display=False) as counter:
        out = module(*leaves)
        flops = int(counter.get_total_flops())
        t = first_tensor(out)
        if t is not None and t.requires_grad and t.is_floating_point():
            t.backward(torch.ones_like(t) if t.device.type != "meta" else torch.empty_like(t))
        bwd = int(counter.get_total_flops()) - flops
    return out, flops, bwd


# ---- exact kind mapping ----------------------------------------------------------------------------

def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _pv(v):
    """A pair as the registry's int_pair value: n when both are equal, else [h, w]."""
    a, b = _pair(v)
    return a if a == b else [a, b]


def _dim(d, rank: int):
    """A dim normalised for a tensor of ``rank`` (batch included)."""
    return d % rank if isinstance(d, int) and rank else d


# module type -> (kind, params from the module and the per-sample input rank, attributes compared
# between the user's module and the one the kind builds: equal means exact)
_MODULES = {
    nn.Conv2d: ("conv2d", lambda m, r: {
        "out_channels": m.out_channels, "kernel": _pv(m.kernel_size), "stride": _pv(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else (
            m.padding[0] if m.padding[0] == m.padding[1] else None),
        "dilation": _pv(m.dilation), "groups": m.groups, "bias": m.bias is not None},
        lambda m, r: (m.in_channels, m.out_channels, _pair(m.kernel_size), _pair(m.stride),
                      m.padding if isinstance(m.padding, str) else _pair(m.padding), _pair(m.dilation),
                      m.groups, m.bias is not None, m.padding_mode, m.transposed, _pair(m.output_padding))),
    nn.MaxPool2d: ("maxpool2d", lambda m, r: {
        "kernel": _pv(m.kernel_size), "stride": _pair(m.stride or m.kernel_size)[0],
        "padding": _pair(m.padding)[0], "ceil_mode": bool(m.ceil_mode)},
        lambda m, r: (_pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding), _pair(m.dilation),
                      m.return_indices, m.ceil_mode)),
    nn.AvgPool2d: ("avgpool2d", lambda m, r: {
        "kernel": _pv(m.kernel_size), "stride": _pair(m.stride or m.kernel_size)[0],
        "padding": _pair(m.padding)[0], "ceil_mode": bool(m.ceil_mode)},
        lambda m, r: (_pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding), m.ceil_mode,
                      m.count_include_pad, m.divisor_override)),
    nn.AdaptiveAvgPool2d: ("adaptive_avgpool2d", lambda m, r: {"output_size": _pv(m.output_size)},
                           lambda m, r: (_pair(m.output_size),)),
    nn.BatchNorm2d: ("batchnorm2d", lambda m, r: {"eps": m.eps, "momentum": m.momentum, "affine": m.affine},
                     lambda m, r: (m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)),
    nn.LocalResponseNorm: ("lrn", lambda m, r: {"size": m.size, "alpha": m.alpha, "beta": m.beta, "k": m.k},
                           lambda m, r: (m.size, m.alpha, m.beta, m.k)),
    # in-place flags are not compared: the values are the same, only where they are written differs
    nn.ReLU: ("relu", lambda m, r: {}, lambda m, r: ()),
    nn.LeakyReLU: ("leaky_relu", lambda m, r: {"negative_slope": m.negative_slope},
                   lambda m, r: (m.negative_slope,)),
    nn.Sigmoid: ("sigmoid", lambda m, r: {}, lambda m, r: ()),
    nn.Tanh: ("tanh", lambda m, r: {}, lambda m, r: ()),
    nn.GELU: ("gelu", lambda m, r: {"approximate": m.approximate}, lambda m, r: (m.approximate,)),
    nn.Softmax: ("softmax", lambda m, r: {}, lambda m, r: (_dim(m.dim, r + 1),)),
    nn.Linear: ("linear", lambda m, r: {"out_features": m.out_features, "bias": m.bias is not None},
                lambda m, r: (m.in_features, m.out_features, m.bias is not None, r)),
    nn.Flatten: ("flatten", lambda m, r: {}, lambda m, r: (_dim(m.start_dim, r + 1), _dim(m.end_dim, r + 1))),
    nn.Dropout: ("dropout", lambda m, r: {"p": m.p}, lambda m, r: (m.p,)),
}


def _kind_fits(kind_name: str, params: dict, in_shapes: list) -> bool:
    kind = get_kind(kind_name)
    if kind is None or any(v is None for v in params.values()):
        return False
    if not kind.min_inputs <= len(in_shapes) <= kind.max_inputs:
        return False
    for p in kind.params:
        if p.name in params and p.check(params[p.name]):
            return False
    try:
        return not (kind.check and kind.check(kind.resolved(params), in_shapes))
    except Exception:
        return False


def map_module(m: nn.Module, in_shapes: list) -> tuple[str, dict] | None:
    """(kind, params) when the registry kind builds exactly this module for these per-sample input
    shapes (same type and every attribute equal), else None (the node stays opaque)."""
    entry = _MODULES.get(type(m))
    if entry is None or len(in_shapes) != 1:
        return None
    kind_name, params_of, attrs = entry
    rank = len(in_shapes[0])
    try:
        params = params_of(m, rank)
    except Exception:
        return None
    if not _kind_fits(kind_name, params, in_shapes):
        return None
    kind = get_kind(kind_name)
    try:
        with torch.device("meta"):
            built = kind.build(kind.resolved(params), in_shapes)
    except Exception:
        return None
    if type(m) is nn.Linear:  # the kind's FlatLinear flattens CxHxW first: the same only on vectors
        same_type = isinstance(built, nn.Linear) and rank == 1
    else:
        same_type = type(built) is type(m)
    if not same_type or attrs(built, rank) != attrs(m, rank):
        return None
    return kind_name, params


_RELU = {F.relu, torch.relu, "relu"}
_SIGMOID = {torch.sigmoid, "sigmoid", getattr(F, "sigmoid", None)}
_TANH = {torch.tanh, "tanh", getattr(F, "tanh", None)}
_ADD = {operator.add, torch.add, "add"}
_CAT = {torch.cat, getattr(torch, "concat", torch.cat)}
_FLATTEN = {torch.flatten, "flatten"}


def map_call(node: fx.Node, tensor_inputs: list, in_shapes: list) -> tuple[str, dict] | None:
    """(kind, params) when a call_function / call_method node computes exactly what a registry
    kind computes (``F.relu(x)``, ``x + y`` of equal shapes, ``torch.cat([a, b], 1)``,
    ``torch.flatten(x, 1)``, sigmoid, tanh), else None. ``tensor_inputs``: the node's tensor
    arguments in order (what the kind's module is called with)."""
    t = node.target
    args, kwargs = list(node.args), dict(node.kwargs)
    if node.op == "call_method":
        args = args[1:]
        first = [node.args[0]]
    else:
        first = args[:1]
        args = args[1:]
    if t in _RELU or t in _SIGMOID or t in _TANH:
        if args or any(k != "inplace" for k in kwargs) or kwargs.get("inplace"):
            return None
        kind = "relu" if t in _RELU else "sigmoid" if t in _SIGMOID else "tanh"
        return (kind, {}) if len(tensor_inputs) == 1 and tensor_inputs == first else None
    if t in _ADD:
        if kwargs or len(args) != 1 or len(tensor_inputs) != 2 or tensor_inputs != first + args:
            return None
        return ("add", {}) if in_shapes[0] == in_shapes[1] else None
    if t in _CAT and node.op == "call_function":
        seq = first[0] if first else kwargs.pop("tensors", None)
        dim = args[0] if args else kwargs.pop("dim", 0)
        if kwargs or not isinstance(seq, (list, tuple)) or list(seq) != tensor_inputs or len(seq) < 2:
            return None
        rank = len(in_shapes[0]) + 1
        if _dim(dim, rank) != 1 or not _kind_fits("concat", {}, in_shapes):
            return None
        return "concat", {}
    if t in _FLATTEN:
        start = args[0] if args else kwargs.pop("start_dim", 0)
        end = args[1] if len(args) > 1 else kwargs.pop("end_dim", -1)
        if kwargs or len(args) > 2 or tensor_inputs != first or len(tensor_inputs) != 1:
            return None
        rank = len(in_shapes[0]) + 1
        return ("flatten", {}) if _dim(start, rank) == 1 and _dim(end, rank) == rank - 1 else None
    return None


def op_name(node: fx.Node, gm: fx.GraphModule | None = None) -> str:
    """The op of an fx node in words: ``nn.Hardswish`` (a module's type), ``torch.cat``,
    ``operator.add`` (a function), ``view`` (a tensor method), ``get_attr``."""
    if node.op == "call_module" and gm is not None:
        m = gm.get_submodule(node.target)
        mod = type(m).__module__
        prefix = "nn." if mod.startswith("torch.nn") else f"{mod}." if mod not in ("builtins", "__main__") else ""
        if prefix.startswith("_layerscope_user_model_"):
            prefix = ""
        return prefix + type(m).__name__
    if node.op == "call_method":
        return str(node.target)
    if node.op == "get_attr":
        return "get_attr"
    t = node.target
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__name__", str(t))
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod.startswith("torch") or mod == "":
        return f"torch.{name}"
    return f"{mod}.{name}"


def node_id(name: str, used: set) -> str:
    """A spec id for fx node ``name``: the name itself when it is a valid, free, unreserved id, else
    a shortened / suffixed one."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", name) or "node"
    if not re.match(r"[A-Za-z_]", base):
        base = "_" + base
    base = base[:_ID_MAX]
    cand, n = base, 1
    while cand in used or cand == INPUT_ID or reserved_id(cand):
        suffix = f"_{n}"
        cand = base[:_ID_MAX - len(suffix)] + suffix
        n += 1
    used.add(cand)
    return cand


def input_spec(shape, classes: int) -> InputSpec:
    c, h, w = shape
    return InputSpec(c, h, w, classes)


def check_output_dtype(source: str, out: torch.Tensor) -> None:
    """LayerScopeError when the model's output is not floating point (``.long()``, ``argmax``): the
    loss needs logits with a gradient."""
    if not out.is_floating_point():
        name = str(out.dtype).replace("torch.", "")
        raise LayerScopeError(f"{source}: the model's output is {name}: a classifier must return floating-point "
                              f"logits (N, classes)")


def output_classes(source: str, out_shape: tuple, classes: int | None) -> int:
    """The class count from the model's per-sample output shape; LayerScopeError when it is not a
    vector or differs from ``classes``."""
    if len(out_shape) != 1:
        got = "x".join(map(str, out_shape)) or "a single number"
        raise LayerScopeError(f"{source} outputs {got} per sample; LayerScope trains on class scores, one "
                              f"vector per sample (N x classes)")
    if classes is not None and out_shape[0] != classes:
        raise LayerScopeError(f"{source} outputs {out_shape[0]} class scores per sample but --classes is "
                              f"{classes}")
    lo, hi = INPUT_FIELDS["classes"]
    if not lo <= out_shape[0] <= hi:
        raise LayerScopeError(f"{source} outputs {out_shape[0]} values per sample, outside {lo}..{hi} classes")
    return out_shape[0]


def check_params(imported: ImportedNet, module: nn.Module) -> None:
    """Add a note when forward leaves some of the module's parameters unused (they are not in the
    profiled model), and check the spec's parameter total equals the running model's."""
    total = sum(p.numel() for p in module.parameters())
    running = imported.module_params
    if running != total:
        imported.notes.append(f"{total - running} of the model's {total} parameters are never used by forward: "
                              f"not part of the profiled model")
    info = analyze(imported.spec)
    if info.params != running:  # pragma: no cover - a bug of the import, said rather than hidden
        imported.notes.append(f"the graph counts {info.params} parameters but the model holds {running}")
