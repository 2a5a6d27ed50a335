"""What PyTorch itself says about every node of a spec: output shape, parameter count and
forward FLOPs, measured on the meta device under FlopCounterMode.

Measuring a node (building its module on ``meta`` and counting its FLOPs) is the expensive
part, so each result is cached under everything it depends on: the kind (its name, builder and
check), every resolved parameter (with its Python type), every input shape and torch's default
dtype. An edit
therefore re-measures only the nodes whose key changed: the edited node and the nodes
downstream of it whose input shapes changed.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from engine.errors import Problem, SpecError
from engine.net.registry import LayerKind, get_kind
from engine.net.spec import INPUT_ID, NetSpec, check_structure, topo_order

_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}

# LayerNet's own attribute names (engine/net/model.py): a node id equal to one would collide with
# its submodule name. test_analyze checks every attribute of a built LayerNet is covered.
LAYERNET_ATTRS = frozenset({"spec", "output_id", "plan", "failed_node", "_plan", "_free_after", "_steps"})


def bytes_per_element(precision: str) -> int:
    """Bytes per tensor element at ``precision`` ('fp32' 4, 'fp16' 2, 'bf16' 2); ValueError otherwise."""
    try:
        return _DTYPE_BYTES[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; one of {', '.join(_DTYPE_BYTES)}") from None


def reserved_id(node_id: str) -> bool:
    """Whether ``node_id`` would clash with an attribute of the built module (an ``nn.Module``
    method such as ``forward`` or one of LayerNet's own, such as ``plan``)."""
    return hasattr(nn.Module, node_id) or node_id in LAYERNET_ATTRS


@dataclass
class LayerInfo:
    """What PyTorch says about one node, per sample."""

    index: int  # position of the node in ``spec.nodes``
    id: str
    kind: str
    in_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...]
    params: int
    flops: int  # forward FLOPs per sample, as FlopCounterMode counts them (a multiply-add is 2)

    @property
    def out_numel(self) -> int:
        n = 1
        for d in self.out_shape:
            n *= d
        return n

    def activation_bytes(self, batch_size: int = 1, precision: str = "fp32") -> int:
        """Bytes of this node's output for a batch: elements x batch x bytes_per_element(precision)."""
        return self.out_numel * batch_size * bytes_per_element(precision)


@dataclass
class NetInfo:
    """Per-node shapes, parameters and FLOPs, in topological order.

    From ``analyze(spec)`` every node is here and ``problems`` is empty. From
    ``analyze(spec, partial=True)`` ``layers`` holds only the nodes that could be measured
    (not broken and not fed by a broken node) and ``problems`` every problem found; the
    totals then cover only the measured part.
    """

    spec: NetSpec
    layers: list[LayerInfo]
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the net is complete and valid (it can be built and run)."""
        return not self.problems

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample output shape by node id, plus ``'input'``: the net input's (C, H, W)."""
        out = {INPUT_ID: self.spec.input.shape}
        out.update((layer.id, layer.out_shape) for layer in self.layers)
        return out

    def activation_bytes(self, batch_size: int = 1, precision: str = "fp32") -> int:
        """Bytes of every measured node's output for a batch at ``precision``."""
        return sum(layer.activation_bytes(batch_size, precision) for layer in self.layers)

    def input_bytes(self, batch_size: int = 1, precision: str = "fp32") -> int:
        """Bytes of one input batch at ``precision``: C x H x W x batch x bytes per element."""
        c, h, w = self.spec.input.shape
        return c * h * w * batch_size * bytes_per_element(precision)

    def layer(self, node_id: str) -> LayerInfo | None:
        for layer in self.layers:
            if layer.id == node_id:
                return layer
        return None


# ---- the per-node cache -------------------------------------------------------------------------

class CacheInfo(NamedTuple):
    """Counters of the node-measurement cache since the last ``clear_cache()``."""

    hits: int
    misses: int  # nodes measured (module built on meta, FLOPs counted)
    size: int
    max_size: int


CACHE_MAX = 4096
_cache: OrderedDict[tuple, tuple] = OrderedDict()
_lock = threading.Lock()  # the GUI thread and a run's thread may analyze at the same time
_hits = 0
_misses = 0


def cache_info() -> CacheInfo:
    """Hits, misses (= measurements) and size of the node cache."""
    with _lock:
        return CacheInfo(_hits, _misses, len(_cache), CACHE_MAX)


def clear_cache() -> None:
    """Forget every cached measurement and reset the counters."""
    global _hits, _misses
    with _lock:
        _cache.clear()
        _hits = _misses = 0


def _freeze(v):
    # the type goes into the key: 1, 1.0 and True compare equal but may build different modules
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(_freeze(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple(sorted((str(k), _freeze(x)) for k, x in v.items())))
    return (type(v).__name__, v)


def _key(kind: LayerKind, params: dict, in_shapes: list[tuple[int, ...]]) -> tuple | None:
    # the builder and check functions themselves (by identity): a kind replaced at run time never
    # reads back what its predecessor measured
    key = (kind.name, kind.build, kind.check, tuple(sorted((k, _freeze(v)) for k, v in params.items())),
           tuple(in_shapes), torch.get_default_dtype())
    try:
        hash(key)
    except TypeError:  # a value no check knows; measure it every time rather than guess
        return None
    return key


def _measure(kind: LayerKind, params: dict, in_shapes: list[tuple[int, ...]]) -> tuple:
    """('ok', out_shape, parameters, flops) or ('bad', message) for one node."""
    try:
        bad = kind.check(params, in_shapes) if kind.check else None
        if bad:
            return ("bad", bad)
        with torch.device("meta"):
            module = kind.build(params, in_shapes)
            xs = [torch.empty((1, *s)) for s in in_shapes]
        with FlopCounterMode(display=False) as counter:
            out = module(*xs)
        flops = int(counter.get_total_flops())
    except Exception as e:  # any torch complaint about a user's net becomes a node message
        return ("bad", f"cannot compute its output: {_first_line(e)}")
    out_shape = tuple(int(d) for d in out.shape[1:])
    if any(d <= 0 for d in out_shape):
        return ("bad", f"the output shrinks to {'x'.join(map(str, out_shape))}")
    return ("ok", out_shape, sum(p.numel() for p in module.parameters()), flops)


def _measure_cached(kind: LayerKind, params: dict, in_shapes: list[tuple[int, ...]]) -> tuple:
    global _hits, _misses
    key = _key(kind, params, in_shapes)
    if key is not None:
        with _lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                _hits += 1
                return hit
    result = _measure(kind, params, in_shapes)
    with _lock:
        _misses += 1
        if key is not None:
            _cache[key] = result
            while len(_cache) > CACHE_MAX:
                _cache.popitem(last=False)
    return result


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ---- analysis -----------------------------------------------------------------------------------

def analyze(spec: NetSpec, partial: bool = False) -> NetInfo:
    """Check a spec completely and measure every node on the meta device, in one pass.

    Problems come in order: structure (ids, kinds, params, references, cycles; see
    ``check_structure``), then each node's shape problems in topological order, then the
    output check (the last node must give ``classes`` scores). A node with a structural
    problem, or fed by a broken node, is skipped rather than blamed.

    ``partial=False``: returns a NetInfo of every node, or raises SpecError listing every
    problem. ``partial=True``: never raises for a problem of the net; returns a NetInfo whose
    ``layers`` are the nodes that could be measured and whose ``problems`` lists every problem
    (``info.ok`` is False when there are any).
    """
    problems = check_structure(spec)
    # a node named 'input' is blamed by check_structure; references to 'input' still mean the net input
    broken: set[str] = {p.node for p in problems if p.node} - {INPUT_ID}
    shapes: dict[str, tuple[int, ...]] = {INPUT_ID: spec.input.shape}
    layers: list[LayerInfo] = []
    for i in topo_order(spec):
        node = spec.nodes[i]
        if node.id in broken or node.id == INPUT_ID:
            continue
        refs = spec.inputs_of(i)
        if any(r not in shapes for r in refs):  # fed by a broken node, or by one in a cycle
            broken.add(node.id)
            continue
        if reserved_id(node.id):
            problems.append(Problem(node.id, f"'{node.id}' is a reserved name; choose another id"))
            broken.add(node.id)
            continue
        kind = get_kind(node.kind)
        in_shapes = [shapes[r] for r in refs]
        result = _measure_cached(kind, kind.resolved(node.params), in_shapes)
        if result[0] == "bad":
            problems.append(Problem(node.id, result[1]))
            broken.add(node.id)
            continue
        _, out_shape, n_params, flops = result
        shapes[node.id] = out_shape
        layers.append(LayerInfo(i, node.id, node.kind, in_shapes, out_shape, n_params, flops))
    if spec.nodes:
        last = spec.nodes[-1].id
        want = (spec.input.classes,)
        if last in shapes and last not in broken and last != INPUT_ID and shapes[last] != want:
            got = "x".join(map(str, shapes[last]))
            problems.append(Problem(last, f"the net's output is {got} but {spec.input.classes} class "
                                          f"scores are needed; end with a linear layer of "
                                          f"{spec.input.classes} outputs"))
    if problems and not partial:
        raise SpecError(problems)
    return NetInfo(spec, layers, problems)
