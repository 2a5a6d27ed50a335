"""Turn a NetSpec into an nn.Module whose submodules are named by node id, and run it.

``LayerNet.forward`` is the one walker of the net's plan: a plain step calls it through
``model(x)``; the profiler passes ``on_output`` to see every layer's output as it is made.
Shapes, parameters and FLOPs come from ``engine.net.analyze``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch.nn as nn

from engine.errors import Problem, SpecError
from engine.net.analyze import NetInfo, analyze
from engine.net.registry import get_kind
from engine.net.spec import INPUT_ID, NetSpec

__all__ = ["PlanStep", "LayerNet", "build_model"]


class PlanStep(NamedTuple):
    """One step of a LayerNet's plan: run ``node_id`` on the outputs of ``inputs`` (ids, ``'input'``
    is the net input), then drop the outputs in ``free_after`` (their last consumer has run)."""

    node_id: str
    inputs: tuple[str, ...]
    free_after: tuple[str, ...]


class LayerNet(nn.Module):
    """A net built from a spec: each node is a submodule named by its id; forward walks the plan.

    ``plan`` is the order the nodes run in; ``failed_node`` names the node whose forward raised
    during the last call (None when it succeeded or has not run).

    ``modules``: the node modules by id, already built (an imported model's own modules,
    ``engine.net.imported``); None builds each from its kind. A node missing from ``modules`` gets
    no submodule (a subclass that runs its nodes otherwise, ``imported_hooks.HookedNet``).
    """

    def __init__(self, spec: NetSpec, info: NetInfo, modules: dict | None = None):
        super().__init__()
        self.spec = spec
        index = {n.id: i for i, n in enumerate(spec.nodes)}
        self._plan: list[tuple[str, tuple[str, ...]]] = []
        for layer in info.layers:
            i = index[layer.id]
            if modules is None:
                kind = get_kind(layer.kind)
                self.add_module(layer.id, kind.build(kind.resolved(spec.nodes[i].params), layer.in_shapes))
            elif layer.id in modules:
                self.add_module(layer.id, modules[layer.id])
            self._plan.append((layer.id, tuple(spec.inputs_of(i))))
        self.output_id = spec.nodes[-1].id
        # drop each intermediate output as soon as its last consumer has run
        last_use: dict[str, int] = {}
        for step, (_, refs) in enumerate(self._plan):
            for r in refs:
                last_use[r] = step
        self._free_after = [tuple(r for r in refs if last_use[r] == step and r != self.output_id)
                            for step, (_, refs) in enumerate(self._plan)]
        self._steps = tuple(PlanStep(nid, refs, free)
                            for (nid, refs), free in zip(self._plan, self._free_after))
        self.failed_node: str | None = None

    @property
    def plan(self) -> tuple[PlanStep, ...]:
        """The nodes in the order ``forward`` runs them (topological), one PlanStep each."""
        return self._steps

    def forward(self, x, on_output: Callable[[int, str, object], None] | None = None):
        """Run the net on a batch ``x`` (N, C, H, W) and return the last node's output (N, classes).

        ``on_output(k, node_id, out)``, when given, is called right after plan step ``k``
        produced ``out``, before the next step runs. When a layer's forward (or ``on_output``)
        raises, ``failed_node`` is set to that node's id and the exception propagates unchanged.
        """
        # plain __dict__ writes: nn.Module.__setattr__ would search its registries on every call
        self.__dict__["failed_node"] = None
        values = {INPUT_ID: x}
        modules = self._modules
        nid = None
        try:
            for k, ((nid, refs), free) in enumerate(zip(self._plan, self._free_after)):
                out = modules[nid](*[values[r] for r in refs])
                if on_output is not None:
                    on_output(k, nid, out)
                values[nid] = out
                for r in free:
                    del values[r]
        except BaseException:
            self.__dict__["failed_node"] = nid
            raise
        return values[self.output_id]


def build_model(spec: NetSpec, info: NetInfo | None = None) -> LayerNet:
    """Build the trainable module on the CPU (move it with ``.to(device)``); SpecError for an invalid
    net, or for one holding an imported model's opaque nodes (only the model's source builds those:
    ``engine.net.imported.import_model``)."""
    if info is None or info.problems:
        info = analyze(spec)
    opaque = [layer.id for layer in info.layers if layer.kind == "opaque"]
    if opaque:
        more = f" (and {len(opaque) - 1} more)" if len(opaque) > 1 else ""
        raise SpecError([Problem(None, f"opaque node {opaque[0]}{more} comes from an imported model: "
                                       f"profile it from its source")])
    return LayerNet(spec, info)
