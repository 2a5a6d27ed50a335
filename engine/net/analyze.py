"""What PyTorch itself says about every node of a spec: output shape, parameter count, forward
and backward FLOPs (measured on the meta device under FlopCounterMode) and, per precision, the
dtype each node really outputs under autocast (measured on fake tensors under the same autocast).

Measuring a node (building its module on ``meta`` and counting its FLOPs) is the expensive
part, so each result is cached under everything it depends on: the kind (its name, builder and
check), every resolved parameter (with its Python type), every input shape, which inputs carry a
gradient and torch's default dtype (the dtype measurement adds the input dtypes, precision and
device type). An edit therefore re-measures only the nodes whose key changed: the edited node and
the nodes downstream of it whose input shapes changed.

Nodes are measured at a batch of 2 and the counts halved: training-mode batch norm needs more
than one value per channel (a 1x1 map at batch 1 has one, ResNet-18 at 32x32 has such maps), and
every FLOP count is linear in the batch.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from engine.errors import Problem, SpecError
from engine.net.registry import LayerKind, get_kind
from engine.net.spec import INPUT_ID, NetSpec, check_objects, check_structure, topo_order

_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}
_BATCH = 2  # see the module docstring

# LayerNet's own instance attributes (engine/net/model.py): a node id equal to one would collide
# with its submodule name. test_analyze checks every attribute of a built LayerNet is covered.
LAYERNET_ATTRS = frozenset({"spec", "output_id", "plan", "failed_node", "_plan", "_free_after", "_steps"})
_reserved: frozenset | None = None


def bytes_per_element(precision: str) -> int:
    """Bytes per tensor element at ``precision`` ('fp32' 4, 'fp16' 2, 'bf16' 2); ValueError otherwise."""
    try:
        return _DTYPE_BYTES[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; one of {', '.join(_DTYPE_BYTES)}") from None


def reserved_names() -> frozenset:
    """Every name a node id cannot take because the built LayerNet already has an attribute of
    that name: those of the ``nn.Module`` class (``forward``, ``cuda``), those ``nn.Module.__init__``
    sets on each instance (``training``, ``_parameters``) and LayerNet's own (``plan``, ``spec``)."""
    global _reserved
    if _reserved is None:
        _reserved = frozenset(dir(nn.Module)) | frozenset(vars(nn.Module())) | LAYERNET_ATTRS
    return _reserved


def reserved_id(node_id: str) -> bool:
    """Whether ``node_id`` would clash with an attribute of the built module (see ``reserved_names``)."""
    return node_id in reserved_names()


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
    # backward FLOPs per sample as FlopCounterMode counts them: weight gradients, plus the input
    # gradient only where an input carries one (not for a layer fed by the net input); None: unknown
    bwd_flops: int | None = None
    _net: Any = field(default=None, repr=False, compare=False)  # the NetInfo holding it (dtypes)

    @property
    def out_numel(self) -> int:
        n = 1
        for d in self.out_shape:
            n *= d
        return n

    def element_bytes(self, precision: str = "fp32", device_type: str = "cpu") -> int:
        """Bytes per element of this node's output under ``precision``: 4 for fp32; under fp16/bf16
        autocast on ``device_type`` the size of the dtype the node really outputs (a convolution's
        half, a LocalResponseNorm's fp32, an add of fp32 and half fp32), measured per net (see
        ``NetInfo.out_dtypes``). A LayerInfo standing alone (no NetInfo) assumes the precision's size."""
        size = bytes_per_element(precision)
        if precision == "fp32" or self._net is None:
            return size
        return self._net.out_dtypes(precision, device_type)[self.id].itemsize

    def activation_bytes(self, batch_size: int = 1, precision: str = "fp32", device_type: str = "cpu") -> int:
        """Bytes of this node's output for a batch: elements x batch x ``element_bytes(precision, device_type)``."""
        return self.out_numel * batch_size * self.element_bytes(precision, device_type)


@dataclass
class NetInfo:
    """Per-node shapes, parameters and FLOPs, in topological order.

    ``layers`` are the nodes that are built and run (those feeding the output); ``unused`` the
    measured nodes that do not feed the output (not built, not run, not in the totals; each has a
    warning in ``warnings``). From ``analyze(spec)`` every node is in one of them and ``problems``
    is empty. From ``analyze(spec, partial=True)`` they hold only the nodes that could be measured
    (not broken and not fed by a broken node) and ``problems`` every problem found; the totals
    then cover only the measured part.
    """

    spec: NetSpec
    layers: list[LayerInfo]
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # the net runs, but this is likely a mistake
    unused: list[LayerInfo] = field(default_factory=list)

    def __post_init__(self):
        self._dtypes: dict[tuple[str, str], dict[str, torch.dtype]] = {}
        for layer in self.layers + self.unused:
            layer._net = self

    @property
    def ok(self) -> bool:
        """True when the net is complete and valid (it can be built and run); warnings allowed."""
        return not self.problems

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    @property
    def bwd_flops(self) -> int | None:
        """Backward FLOPs per sample of the built nodes (None if a node's count is unknown)."""
        counts = [layer.bwd_flops for layer in self.layers]
        return None if any(c is None for c in counts) else sum(counts)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample output shape by node id (unused nodes too), plus ``'input'``: the net input's (C, H, W)."""
        out = {INPUT_ID: self.spec.input.shape}
        out.update((layer.id, layer.out_shape) for layer in self.layers + self.unused)
        return out

    def out_dtypes(self, precision: str, device_type: str = "cpu") -> dict[str, torch.dtype]:
        """The dtype each measured node outputs under ``precision`` autocast on ``device_type``,
        by node id: fp32 everywhere for 'fp32'. Walks the net in order with each node's real input
        dtypes (the net input is fp32), on fake tensors; cached per node. A device type torch
        cannot fake here (``'cuda'`` on a build without CUDA) is measured with the CPU's rules."""
        bytes_per_element(precision)
        if precision == "fp32":
            return {layer.id: torch.float32 for layer in self.layers + self.unused}
        if device_type not in ("cpu", "cuda") or (device_type == "cuda" and not torch.cuda.is_available()):
            device_type = "cpu"
        key = (precision, device_type)
        if key not in self._dtypes:
            by_id = {layer.id: layer for layer in self.layers + self.unused}
            dtypes: dict[str, torch.dtype] = {INPUT_ID: torch.float32}
            for i in topo_order(self.spec):
                layer = by_id.get(self.spec.nodes[i].id)
                if layer is None:
                    continue
                kind = get_kind(layer.kind)
                in_dtypes = tuple(dtypes[r] for r in self.spec.inputs_of(i))
                dtypes[layer.id] = _dtype_cached(kind, kind.resolved(self.spec.nodes[i].params),
                                                 layer.in_shapes, in_dtypes, precision, device_type)
            del dtypes[INPUT_ID]
            self._dtypes[key] = dtypes
        return self._dtypes[key]

    def activation_bytes(self, batch_size: int = 1, precision: str = "fp32", device_type: str = "cpu") -> int:
        """Bytes of every built node's output for a batch at ``precision`` (each at its real dtype)."""
        return sum(layer.activation_bytes(batch_size, precision, device_type) for layer in self.layers)

    def input_bytes(self, batch_size: int = 1, precision: str = "fp32") -> int:
        """Bytes of one input batch at ``precision``: C x H x W x batch x bytes per element."""
        c, h, w = self.spec.input.shape
        return c * h * w * batch_size * bytes_per_element(precision)

    def layer(self, node_id: str) -> LayerInfo | None:
        """The measured node ``node_id`` (built or unused), None when not measured."""
        for layer in self.layers + self.unused:
            if layer.id == node_id:
                return layer
        return None


# ---- the per-node cache -------------------------------------------------------------------------

class CacheInfo(NamedTuple):
    """Counters of the node-measurement cache since the last ``clear_cache()``."""

    hits: int
    misses: int  # measurements (module built on meta, FLOPs counted; or a dtype measured)
    size: int
    max_size: int


CACHE_MAX = 4096
_cache: OrderedDict[tuple, Any] = OrderedDict()
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


def _key(kind: LayerKind, params: dict, in_shapes: list[tuple[int, ...]], *extra) -> tuple | None:
    # the builder and check functions themselves (by identity): a kind replaced at run time never
    # reads back what its predecessor measured
    key = (kind.name, kind.build, kind.check, tuple(sorted((k, _freeze(v)) for k, v in params.items())),
           tuple(in_shapes), torch.get_default_dtype(), *extra)
    try:
        hash(key)
    except TypeError:  # a value no check knows; measure it every time rather than guess
        return None
    return key


def _measure(kind: LayerKind, params: dict, in_shapes: list[tuple[int, ...]], in_grads: tuple) -> tuple:
    """('ok', out_shape, parameters, flops, bwd_flops) or ('bad', message) for one node."""
    if kind.measure is not None:  # figures stored in the params (an imported model's opaque node)
        return kind.measure(params, in_shapes)
    try:
        bad = kind.check(params, in_shapes) if kind.check else None
        if bad:
            return ("bad", bad)
        with torch.device("meta"):
            module = kind.build(params, in_shapes)
            xs = [torch.empty((_BATCH, *s), requires_grad=g) for s, g in zip(in_shapes, in_grads)]
        with FlopCounterMode(display=False) as counter:
            out = module(*xs)
            flops = int(counter.get_total_flops())
            if out.requires_grad:
                out.backward(torch.empty_like(out))
            bwd = int(counter.get_total_flops()) - flops
    except Exception as e:  # any torch complaint about a user's net becomes a node message
        return ("bad", f"cannot compute its output: {_first_line(e)}")
    out_shape = tuple(int(d) for d in out.shape[1:])
    if any(d <= 0 for d in out_shape):
        return ("bad", f"the output shrinks to {'x'.join(map(str, out_shape))}")
    return ("ok", out_shape, sum(p.numel() for p in module.parameters()), flops // _BATCH, bwd // _BATCH)


def _measure_dtype(kind: LayerKind, params: dict, in_shapes, in_dtypes, precision: str,
                   device_type: str) -> torch.dtype:
    """The dtype ``kind`` outputs for inputs of ``in_dtypes`` under autocast, on fake tensors
    (the meta device ignores autocast; a fake CPU/CUDA tensor goes through it as a real one).
    Should faking a CUDA tensor fail here, the CPU's autocast rules are used. A kind measured
    from its stored figures (``LayerKind.measure``: an imported model's opaque node) outputs its
    inputs' promoted dtype (fp32 with no input): its own autocast rule is not known."""
    if kind.measure is not None:
        out = in_dtypes[0] if in_dtypes else torch.float32
        for d in in_dtypes[1:]:
            out = torch.promote_types(out, d)
        return out
    if device_type == "cuda":
        try:
            return _measure_dtype_on(kind, params, in_shapes, in_dtypes, precision, "cuda")
        except Exception:  # a CUDA build that cannot fake the device: the CPU's rules, not a crash
            pass
    return _measure_dtype_on(kind, params, in_shapes, in_dtypes, precision, "cpu")


def _measure_dtype_on(kind: LayerKind, params: dict, in_shapes, in_dtypes, precision: str,
                      device_type: str) -> torch.dtype:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(), torch.device(device_type):
        module = kind.build(params, in_shapes)
        xs = [torch.empty((_BATCH, *s), dtype=d) for s, d in zip(in_shapes, in_dtypes)]
        with torch.no_grad(), torch.autocast(device_type, dtype=_AUTOCAST[precision]):
            return module(*xs).dtype


def _cached(key: tuple | None, compute):
    global _hits, _misses
    if key is not None:
        with _lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                _hits += 1
                return hit
    result = compute()
    with _lock:
        _misses += 1
        if key is not None:
            _cache[key] = result
            while len(_cache) > CACHE_MAX:
                _cache.popitem(last=False)
    return result


def _measure_cached(kind: LayerKind, params: dict, in_shapes: list[tuple[int, ...]], in_grads: tuple) -> tuple:
    return _cached(_key(kind, params, in_shapes, "measure", in_grads),
                   lambda: _measure(kind, params, in_shapes, in_grads))


def _dtype_cached(kind: LayerKind, params: dict, in_shapes, in_dtypes: tuple, precision: str,
                  device_type: str) -> torch.dtype:
    return _cached(_key(kind, params, in_shapes, "dtype", in_dtypes, precision, device_type),
                   lambda: _measure_dtype(kind, params, in_shapes, in_dtypes, precision, device_type))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ---- analysis -----------------------------------------------------------------------------------

def feeding_output(spec: NetSpec) -> set[str]:
    """The ids of the nodes the net's output (its last node) depends on, the output included."""
    if not spec.nodes:
        return set()
    index = {n.id: i for i, n in enumerate(spec.nodes)}
    last = spec.nodes[-1].id
    seen, stack = {last}, [last]
    while stack:
        i = index.get(stack.pop())
        if i is None:
            continue
        for r in spec.inputs_of(i):
            if r not in seen:
                seen.add(r)
                stack.append(r)
    return seen


def batch_problem(info: NetInfo, batch_size: int, mode: str = "train") -> str | None:
    """Why the net cannot train at ``batch_size``, or None. Training-mode batch norm normalises
    each channel over batch x height x width values and needs more than one: a batch of 1 on a
    1x1 map (ResNet-18 at 32x32 after layer4) fails inside torch. Inference uses running statistics."""
    if mode != "train":
        return None
    for layer in info.layers:
        if layer.kind == "batchnorm2d":
            h, w = layer.out_shape[1:]
            if batch_size * h * w <= 1:
                return (f"batch norm '{layer.id}' sees a {h}x{w} map, so training needs a batch of at least 2 "
                        f"(it normalises each channel over the batch); use a batch size of 2 or more")
    return None


def analyze(spec: NetSpec, partial: bool = False) -> NetInfo:
    """Check a spec completely and measure every node on the meta device, in one pass.

    Problems come in order: the objects' types, structure (ids, kinds, params, references,
    cycles; see ``check_structure``), then each node's shape problems in topological order,
    then the output check (the last node must give ``classes`` scores). A node with a
    structural problem, or fed by a broken node, is skipped rather than blamed. A node that does
    not feed the output is a warning (``NetInfo.warnings``), not a problem: it goes to
    ``NetInfo.unused`` and is neither built nor run.

    ``partial=False``: returns a NetInfo of every node, or raises SpecError listing every
    problem. ``partial=True``: never raises for a problem of the net (a malformed spec object
    included); returns a NetInfo whose ``layers`` are the nodes that could be measured and whose
    ``problems`` lists every problem (``info.ok`` is False when there are any).
    """
    problems = check_objects(spec)
    if problems:
        if not partial:
            raise SpecError(problems)
        # an empty stand-in, so that NetInfo's properties can still be read
        return NetInfo(NetSpec(), [], problems)
    problems = check_structure(spec)
    # a node named 'input' is blamed by check_structure; references to 'input' still mean the net input
    broken: set[str] = {p.node for p in problems if p.node} - {INPUT_ID}
    shapes: dict[str, tuple[int, ...]] = {INPUT_ID: spec.input.shape}
    grads: dict[str, bool] = {INPUT_ID: False}  # whether a node's output carries a gradient
    feeds = feeding_output(spec)
    layers: list[LayerInfo] = []
    unused: list[LayerInfo] = []
    for i in topo_order(spec):
        node = spec.nodes[i]
        if node.id in broken or node.id == INPUT_ID:
            continue
        refs = spec.inputs_of(i)
        if any(r not in shapes for r in refs):  # fed by a broken node, or by one in a cycle
            broken.add(node.id)
            continue
        if reserved_id(node.id):
            problems.append(Problem(node.id, f"'{node.id}' is a reserved name (an attribute of the built "
                                             f"model); choose another id"))
            broken.add(node.id)
            continue
        kind = get_kind(node.kind)
        in_shapes = [shapes[r] for r in refs]
        in_grads = tuple(grads[r] for r in refs)
        result = _measure_cached(kind, kind.resolved(node.params), in_shapes, in_grads)
        if result[0] == "bad":
            problems.append(Problem(node.id, result[1]))
            broken.add(node.id)
            continue
        _, out_shape, n_params, flops, bwd = result
        shapes[node.id] = out_shape
        grads[node.id] = any(in_grads) or n_params > 0
        info = LayerInfo(i, node.id, node.kind, in_shapes, out_shape, n_params, flops, bwd)
        (layers if node.id in feeds else unused).append(info)
    warnings = [Problem(n.id, f"does not feed the net's output '{spec.nodes[-1].id}', so it is not built "
                              f"or run; connect it or delete it")
                for n in spec.nodes if n.id not in feeds and not n.id.startswith("#") and n.id != INPUT_ID]
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
    return NetInfo(spec, layers, problems, warnings, unused)
