"""Turn a NetSpec into an nn.Module whose submodules are named by node id, and let PyTorch
itself tell each node's output shape, parameter count and FLOPs (meta tensors, FlopCounterMode)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from engine.errors import Problem, SpecError
from engine.net.registry import get_kind
from engine.net.spec import INPUT_ID, NetSpec, check_structure, topo_order

_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


@dataclass
class LayerInfo:
    """What PyTorch says about one node, per sample."""

    index: int
    id: str
    kind: str
    in_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...]
    params: int
    flops: int  # forward FLOPs per sample, as FlopCounterMode counts them

    @property
    def out_numel(self) -> int:
        n = 1
        for d in self.out_shape:
            n *= d
        return n

    def activation_bytes(self, batch_size: int = 1, precision: str = "fp32") -> int:
        """Bytes of this node's output for a batch."""
        return self.out_numel * batch_size * _DTYPE_BYTES.get(precision, 4)


@dataclass
class NetInfo:
    """Per-node shapes, parameters and FLOPs of a valid net, in topological order."""

    spec: NetSpec
    layers: list[LayerInfo]

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    def activation_bytes(self, batch_size: int = 1, precision: str = "fp32") -> int:
        return sum(layer.activation_bytes(batch_size, precision) for layer in self.layers)

    def layer(self, node_id: str) -> LayerInfo | None:
        for layer in self.layers:
            if layer.id == node_id:
                return layer
        return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _resolved(spec: NetSpec, i: int) -> dict:
    return get_kind(spec.nodes[i].kind).resolved(spec.nodes[i].params)


def analyze(spec: NetSpec) -> NetInfo:
    """Check a spec completely and measure every node on the meta device.

    Raises SpecError with every problem found (structure first, then shapes; a node
    fed by a broken node is skipped rather than blamed).
    """
    problems = check_structure(spec)
    if problems:
        raise SpecError(problems)
    shapes: dict[str, tuple[int, ...]] = {INPUT_ID: spec.input.shape}
    layers: list[LayerInfo] = []
    broken: set[str] = set()
    for i in topo_order(spec):
        node = spec.nodes[i]
        refs = spec.inputs_of(i)
        if any(r in broken for r in refs):
            broken.add(node.id)
            continue
        if hasattr(nn.Module, node.id):
            problems.append(Problem(node.id, f"'{node.id}' is a reserved name; choose another id"))
            broken.add(node.id)
            continue
        kind = get_kind(node.kind)
        params = _resolved(spec, i)
        in_shapes = [shapes[r] for r in refs]
        bad = kind.check(params, in_shapes) if kind.check else None
        if bad:
            problems.append(Problem(node.id, bad))
            broken.add(node.id)
            continue
        try:
            with torch.device("meta"):
                module = kind.build(params, in_shapes)
                xs = [torch.empty((1, *s)) for s in in_shapes]
            with FlopCounterMode(display=False) as counter:
                out = module(*xs)
            flops = int(counter.get_total_flops())
        except Exception as e:  # any torch complaint about a user's net becomes a node message
            problems.append(Problem(node.id, f"cannot compute its output: {_first_line(e)}"))
            broken.add(node.id)
            continue
        out_shape = tuple(int(d) for d in out.shape[1:])
        if any(d <= 0 for d in out_shape):
            problems.append(Problem(node.id, f"the output shrinks to {'x'.join(map(str, out_shape))}"))
            broken.add(node.id)
            continue
        shapes[node.id] = out_shape
        layers.append(LayerInfo(i, node.id, node.kind, in_shapes, out_shape,
                                sum(p.numel() for p in module.parameters()), flops))
    last = spec.nodes[-1].id
    if not problems and last in shapes:
        want = (spec.input.classes,)
        if shapes[last] != want:
            got = "x".join(map(str, shapes[last]))
            problems.append(Problem(last, f"the net's output is {got} but {spec.input.classes} class "
                                          f"scores are needed; end with a linear layer of "
                                          f"{spec.input.classes} outputs"))
    if problems:
        raise SpecError(problems)
    return NetInfo(spec, layers)


class LayerNet(nn.Module):
    """A net built from a spec: each node is a submodule named by its id; forward walks the graph."""

    def __init__(self, spec: NetSpec, info: NetInfo):
        super().__init__()
        self.spec = spec
        index = {n.id: i for i, n in enumerate(spec.nodes)}
        self._plan: list[tuple[str, tuple[str, ...]]] = []
        for layer in info.layers:
            i = index[layer.id]
            module = get_kind(layer.kind).build(_resolved(spec, i), layer.in_shapes)
            self.add_module(layer.id, module)
            self._plan.append((layer.id, tuple(spec.inputs_of(i))))
        self.output_id = spec.nodes[-1].id
        # drop each intermediate output as soon as its last consumer has run
        last_use: dict[str, int] = {}
        for step, (_, refs) in enumerate(self._plan):
            for r in refs:
                last_use[r] = step
        self._free_after = [tuple(r for r in refs if last_use[r] == step and r != self.output_id)
                            for step, (_, refs) in enumerate(self._plan)]

    def forward(self, x):
        values = {INPUT_ID: x}
        modules = self._modules
        for (nid, refs), free in zip(self._plan, self._free_after):
            values[nid] = modules[nid](*[values[r] for r in refs])
            for r in free:
                del values[r]
        return values[self.output_id]


def build_model(spec: NetSpec, info: NetInfo | None = None) -> LayerNet:
    """Build the trainable module on the CPU (move it with ``.to(device)``)."""
    return LayerNet(spec, info or analyze(spec))
