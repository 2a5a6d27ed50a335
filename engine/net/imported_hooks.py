"""The fallback of ``engine.net.imported`` for a model fx cannot trace (data-dependent control
flow, ``if x.sum() > 0:``): time each leaf module with forward hooks.

The graph is what one run of the model shows: a node per leaf-module call (a module without
children), in the order of that first run, each fed by the calls whose output tensors it
received (by identity; by the previous call when its input came from a functional op), and a
last node ``tail`` for the functional ops after the last module, fed by every call nothing else
reads. Every node is opaque (the edges are seen, not traced, so no kind is claimed).

Figures, per sample, from that run at a batch of 2 on the CPU (random input; the model's
weights and batch-norm statistics are put back afterwards): a call's forward FLOPs are what
FlopCounterMode counted between its forward pre-hook and hook; its backward FLOPs come from
running the module alone on the inputs it received (``measure_node``); ``tail`` holds what the
whole forward and backward counted beyond the calls' sum, and the parameters no call's module
holds.

Timing (``HookedNet.forward(x, on_output)``): the probe sees each call's output from its forward
hook, in plan order, so a node's time runs from the previous call's end to its own end:
functional ops between modules (add, cat, relu calls) count in the next module's time, and a
node's backward lasts until the next node's gradient arrives (coarser than the traced graph). A
call that does not happen in a step (another branch taken) is reported with its time ~0 and no
backward.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from engine.errors import LayerScopeError
from engine.net.analyze import analyze
from engine.net.imported_parts import (BATCH, ImportedNet, first_line, first_tensor, check_output_dtype, check_params, input_spec,
                                 measure_node, node_id, output_classes)
from engine.net.model import LayerNet
from engine.net.spec import INPUT_ID, NetSpec, Node

TAIL = "tail"
ROOT = "model"  # the HookedNet's submodule holding the user's model (no node takes this id)


def _notice(reason: str) -> str:
    return (f"fx could not trace the model ({reason}): timing each leaf module with hooks; functional ops "
            f"between modules (add, cat, relu calls) are counted in the next module's time and backward per "
            f"module is coarser")


class HookedNet(LayerNet):
    """A LayerNet that runs a user's module as a whole and shows the probe each leaf-module call's
    output from forward hooks (registered only while ``on_output`` is given): plan = the leaf calls
    of the first run, then ``tail``. Parameters are the user's module's (``self.model``)."""

    def __init__(self, spec: NetSpec, info, root: nn.Module, keys: list[tuple[nn.Module, int]]):
        super().__init__(spec, info, modules={})
        self.add_module(ROOT, root)
        self._ids = [step.node_id for step in self.plan]
        # distinct leaf modules, and plan index by (leaf index, occurrence in one forward)
        leaves: list[nn.Module] = []
        where: dict[int, int] = {}
        self._index: dict[tuple[int, int], int] = {}
        for k, (m, occ) in enumerate(keys):
            if id(m) not in where:
                where[id(m)] = len(leaves)
                leaves.append(m)
            self._index[(where[id(m)], occ)] = k
        self.__dict__["_leaves"] = leaves  # the same objects as inside self.model, not registered twice

    def forward(self, x, on_output=None):
        """The user's model on ``x``; with ``on_output(k, node_id, out)`` each leaf call of the plan
        is reported as it ends, in plan order (see the module docstring)."""
        self.__dict__["failed_node"] = None
        root = self._modules[ROOT]
        if on_output is None:
            return root(x)
        ids, index, n = self._ids, self._index, len(self._ids)
        state = {"cursor": 0}
        occ = [0] * len(self._leaves)

        def make(i):
            def hook(mod, args, out):
                c = occ[i]
                occ[i] = c + 1
                k = index.get((i, c))
                t = first_tensor(out)
                if k is None or k < state["cursor"] or t is None:
                    return None  # not in the plan: its time goes to the next call reported
                for j in range(state["cursor"], k):  # calls this step skipped: time ~0, no backward
                    on_output(j, ids[j], t.detach())
                on_output(k, ids[k], t)
                state["cursor"] = k + 1
                return None
            return hook

        handles = [m.register_forward_hook(make(i)) for i, m in enumerate(self._leaves)]
        try:
            out = root(x)
            for j in range(state["cursor"], n - 1):
                on_output(j, ids[j], out.detach())
            on_output(n - 1, ids[n - 1], out)
        except BaseException:
            self.__dict__["failed_node"] = ids[min(state["cursor"], n - 1)]
            raise
        finally:
            for h in handles:
                h.remove()
        return out


def _leaves(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in module.named_modules() if name and not any(True for _ in m.children())]


def import_hooked(source: str, module: nn.Module, shape, classes, reason: str) -> ImportedNet:
    """The ImportedNet of a model fx cannot trace (see the module docstring)."""
    leaves = _leaves(module)
    calls: list[dict] = []
    state = {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()}
    was_training = module.training
    module.train(True)
    x = torch.randn(BATCH, *shape, generator=torch.Generator().manual_seed(0))
    producer = {id(x): INPUT_ID}
    counts: dict[int, int] = {}
    counter = FlopCounterMode(display=False)
    pending: dict[int, list] = {}

    def pre(mod, args):
        pending.setdefault(id(mod), []).append((int(counter.get_total_flops()), args))

    def make_post(name):
        def post(mod, args, out):
            f0, a = pending[id(mod)].pop()
            t = first_tensor(out)
            occ = counts.get(id(mod), 0)
            counts[id(mod)] = occ + 1
            if t is None:
                return None
            calls.append({"name": name, "module": mod, "occ": occ, "args": a, "out": t,
                          "flops": int(counter.get_total_flops()) - f0})
            return None
        return post

    handles = []
    for name, m in leaves:
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(make_post(name)))
    try:
        with counter:
            out = module(x)
            t_out = first_tensor(out)
            if not isinstance(out, torch.Tensor):
                raise LayerScopeError(f"{source} returns a {type(out).__name__}; LayerScope needs one tensor of "
                                      f"class scores (N x classes)")
            total_fwd = int(counter.get_total_flops())
            if t_out.requires_grad:
                t_out.backward(torch.ones_like(t_out))
            total_bwd = int(counter.get_total_flops()) - total_fwd
        for h in handles:
            h.remove()
        handles.clear()
        out_shape = tuple(int(d) for d in out.shape[1:])
        classes = output_classes(source, out_shape, classes)
        check_output_dtype(source, out)
        # each call's backward, alone on the inputs it received
        bwd = []
        for c in calls:
            tensors = [a for a in c["args"]]
            grads = tuple(isinstance(a, torch.Tensor) and a.requires_grad for a in tensors)
            try:
                _, _, b = measure_node(c["module"], tensors, grads)
            except Exception:
                b = 0
            bwd.append(b)
    except LayerScopeError:
        raise
    except Exception as e:
        c, h, w = shape
        raise LayerScopeError(f"the model fails on a {c}x{h}x{w} input: {type(e).__name__}: "
                              f"{first_line(e)}") from None
    finally:
        for h in handles:
            h.remove()
        module.load_state_dict(state, strict=False)
        for p in module.parameters():
            p.grad = None
        module.train(was_training)

    used = {ROOT}
    nodes: list[Node] = []
    names: dict[str, str] = {}
    counted: set = set()
    consumed: set = set()
    keys: list[tuple[nn.Module, int]] = []
    for k, c in enumerate(calls):
        nid = node_id(c["name"].replace(".", "_"), used)
        names[nid] = c["name"] if c["occ"] == 0 else f"{c['name']} (call {c['occ'] + 1})"
        ins = [producer[id(a)] for a in c["args"] if isinstance(a, torch.Tensor) and id(a) in producer]
        ins = list(dict.fromkeys(ins)) or [nodes[-1].id if nodes else INPUT_ID]
        consumed.update(ins)
        producer[id(c["out"])] = nid
        new = [p for p in c["module"].parameters() if id(p) not in counted]
        counted.update(id(p) for p in new)
        mod = type(c["module"])
        op = ("nn." if mod.__module__.startswith("torch.nn") else "") + mod.__name__
        nodes.append(Node(nid, "opaque", {
            "op": op, "module": c["name"], "out_shape": "x".join(str(int(d)) for d in c["out"].shape[1:]),
            "params": sum(p.numel() for p in new), "flops": c["flops"] // BATCH, "bwd_flops": bwd[k] // BATCH},
            ins))
        keys.append((c["module"], c["occ"]))
    rest = [p for p in module.parameters() if id(p) not in counted]
    sinks = [n.id for n in nodes if n.id not in consumed] or [INPUT_ID]
    tail = node_id(TAIL, used)
    names[tail] = "functional ops after the last module"
    nodes.append(Node(tail, "opaque", {
        "op": "functional ops after the last module", "out_shape": "x".join(map(str, out_shape)),
        "params": sum(p.numel() for p in rest),
        "flops": max(0, total_fwd - sum(c["flops"] for c in calls)) // BATCH,
        "bwd_flops": max(0, total_bwd - sum(bwd)) // BATCH}, sinks))
    keys.append((None, 0))
    stem = source.split(":", 1)[1] if source.startswith("torchvision:") else source
    spec = NetSpec(input_spec(shape, classes), nodes, name=f"{type(module).__name__} ({stem})",
                   description=f"imported from {source}; fx could not trace it ({reason}), so each leaf module "
                               f"is timed with hooks and every node is opaque")
    info = analyze(spec)
    model = HookedNet(spec, info, module, keys[:-1])
    imported = ImportedNet(source, spec, model, _notice(reason), False, names)
    check_params(imported, module)
    return imported
