"""The fallback of ``engine.net.imported`` for a model fx cannot trace (data-dependent control
flow, ``if x.sum() > 0:``): time each leaf module with forward hooks.

The graph is what one run of the model shows, plus what it did not: a node per leaf-module call
(a module without children), in the order of that first run, each fed by the calls whose output
tensors it received (by identity). An input that functional ops made since the last call (a
relu, a flatten, an add) gets a node of its own before the call, ``<call>_in`` ("functional ops
before ..."), fed by the previous node and shaped as the tensor the module received, so every
node's inputs have the shapes its module really got (``in_shapes``; analyze and roofline count
those bytes). Every leaf module the run did not call (another branch) is a node too, placed
after the module registered before it and fed by it, with its own parameters; its FLOPs and
output shape are unknown (0, empty) and ``ImportedNet.notes`` says so. A last node ``tail``
holds the functional ops after the last module, fed by every node nothing else reads. A call
maps to a registry kind by the traced path's exact rule (``map_module`` on the shapes it
received; a second use of a module with weights stays opaque with 0 parameters); everything
else is opaque.

Figures, per sample, from that run at a batch of 2 on the CPU (random input; the model's
weights and batch-norm statistics are put back afterwards): a call's forward FLOPs are what
FlopCounterMode counted between its forward pre-hook and hook, an ``_in`` node's what it counted
between the previous call's end and that pre-hook; a call's backward FLOPs come from running the
module alone on the inputs it received (``measure_node``); ``tail`` holds what the whole forward
and backward counted beyond those, and the parameters no leaf module holds.

Timing (``HookedNet.forward(x, on_output)``): the probe sees each call's output from its forward
hook and each ``_in`` node's tensor from the call's forward pre-hook, in plan order, so a node's
time runs from the previous report to its own: functional ops whose result no module receives
count in the next node's time, and a node's backward lasts until the next node's gradient
arrives (coarser than the traced graph). A node that does not run in a step (another branch
taken) is reported when the next module call starts, with its time ~0 (the hooks' own cost) and
no backward. A call out of the plan's order (a module the import run did not see, running before
one placed ahead of it) is not reported: its time goes to the next node reported.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from engine.errors import LayerScopeError
from engine.net.analyze import analyze
from engine.net.imported_parts import (BATCH, ImportedNet, first_line, first_tensor, check_output_dtype, check_params, input_spec,
                                 map_module, measure_node, node_id, output_classes)
from engine.net.layers import shapes_text
from engine.net.model import LayerNet
from engine.net.spec import INPUT_ID, NetSpec, Node

TAIL = "tail"
ROOT = "model"  # the HookedNet's submodule holding the user's model (no node takes this id)


def _notice(reason: str) -> str:
    return (f"fx could not trace the model ({reason}): timing each leaf module with hooks; functional ops "
            f"between modules (add, cat, relu calls) are one node per module input they make, and backward per "
            f"module is coarser")


class HookedNet(LayerNet):
    """A LayerNet that runs a user's module as a whole and shows the probe each plan node's output
    from hooks (registered only while ``on_output`` is given). ``keys``: one entry per plan node but
    the last (``tail``, reported with the model's output): ``("call", module, occ, 0)`` is reported
    from the forward hook of the module's ``occ``-th call in one forward, ``("before", module, occ,
    pos)`` from its forward pre-hook with the call's ``pos``-th argument (the functional ops that
    made it). Parameters are the user's module's (``self.model``)."""

    def __init__(self, spec: NetSpec, info, root: nn.Module, keys: list[tuple]):
        super().__init__(spec, info, modules={})
        self.add_module(ROOT, root)
        self._ids = [step.node_id for step in self.plan]
        leaves: list[nn.Module] = []
        where: dict[int, int] = {}
        self._post: dict[tuple[int, int], int] = {}
        self._pre: dict[tuple[int, int], tuple[int, int]] = {}
        for k, (when, m, occ, pos) in enumerate(keys):
            if id(m) not in where:
                where[id(m)] = len(leaves)
                leaves.append(m)
            if when == "before":
                self._pre[(where[id(m)], occ)] = (k, pos)
            else:
                self._post[(where[id(m)], occ)] = k
        self.__dict__["_leaves"] = leaves  # the same objects as inside self.model, not registered twice

    def forward(self, x, on_output=None):
        """The user's model on ``x``; with ``on_output(k, node_id, out)`` each node of the plan is
        reported as it ends, in plan order (see the module docstring)."""
        self.__dict__["failed_node"] = None
        root = self._modules[ROOT]
        if on_output is None:
            return root(x)
        ids, post, pre, n = self._ids, self._post, self._pre, len(self._ids)
        state = {"cursor": 0}
        reported = weakref.WeakValueDictionary()  # id -> tensor reported this step (ids are reused once freed)
        occ = [0] * len(self._leaves)

        def report(k, t):
            if k < state["cursor"]:
                return  # out of the plan's order: its time goes to the next node reported
            for j in range(state["cursor"], k):  # nodes this step skipped: time ~0, no backward
                on_output(j, ids[j], t.detach())
            on_output(k, ids[k], t)
            reported[id(t)] = t
            state["cursor"] = k + 1

        def make_pre(i):
            def hook(mod, args):
                e = pre.get((i, occ[i]))
                first = e[0] if e is not None else post.get((i, occ[i]))
                t = first_tensor(args)
                if first is not None and t is not None and first > state["cursor"]:
                    # nodes this step skipped (another branch), reported before this call starts: ~0 ms
                    for j in range(state["cursor"], first):
                        on_output(j, ids[j], t.detach())
                    state["cursor"] = first
                if e is not None and e[1] < len(args):
                    a = args[e[1]]
                    if isinstance(a, torch.Tensor) and reported.get(id(a)) is not a:
                        report(e[0], a)
                return None
            return hook

        def make(i):
            def hook(mod, args, out):
                c = occ[i]
                occ[i] = c + 1
                k = post.get((i, c))
                t = first_tensor(out)
                if k is not None and t is not None:
                    report(k, t)
                return None
            return hook

        handles = [m.register_forward_pre_hook(make_pre(i)) for i, m in enumerate(self._leaves)]
        handles += [m.register_forward_hook(make(i)) for i, m in enumerate(self._leaves)]
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


def _op(m: nn.Module) -> str:
    mod = type(m)
    return ("nn." if mod.__module__.startswith("torch.nn") else "") + mod.__name__


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
            end = int(counter.get_total_flops())
            calls.append({"name": name, "module": mod, "occ": occ, "args": a, "out": t, "f0": f0, "end": end,
                          "flops": end - f0})
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
        out_shape_all = tuple(int(d) for d in out.shape[1:])
        classes = output_classes(source, out_shape_all, classes)
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
    entries: list[tuple[Node, tuple]] = []  # (node, HookedNet key), in plan order
    names: dict[str, str] = {}
    counted: set = set()
    seen_modules: set = set()
    shape_of: dict[str, tuple] = {INPUT_ID: tuple(shape)}
    fn_flops = 0
    prev_end = 0

    def last_id() -> str:
        return entries[-1][0].id if entries else INPUT_ID

    for k, c in enumerate(calls):
        nid = node_id(c["name"].replace(".", "_"), used)
        names[nid] = c["name"] if c["occ"] == 0 else f"{c['name']} (call {c['occ'] + 1})"
        tensors = [(pos, a) for pos, a in enumerate(c["args"]) if isinstance(a, torch.Tensor)]
        got = [tuple(int(d) for d in a.shape[1:]) for _, a in tensors]
        ins: list[str] = []
        made = False
        for pos, a in tensors:
            if id(a) in producer:
                ins.append(producer[id(a)])
            elif not made:  # made by functional ops since the last call: a node of its own, timed
                made = True
                src = last_id()
                fid = node_id(f"{nid}_in", used)
                names[fid] = f"functional ops before {names[nid]}"
                flops = max(0, c["f0"] - prev_end)
                fn_flops += flops
                out_shape = tuple(int(d) for d in a.shape[1:])
                entries.append((Node(fid, "opaque", {
                    "op": f"functional ops before {c['name']}", "in_shapes": shapes_text([shape_of[src]]),
                    "out_shape": "x".join(map(str, out_shape)), "params": 0, "flops": flops // BATCH,
                    "bwd_flops": 0}, [src]), ("before", c["module"], c["occ"], pos)))
                shape_of[fid] = out_shape
                producer[id(a)] = fid
                ins.append(fid)
            else:
                ins.append(last_id())
        prev_end = c["end"]
        ins = list(dict.fromkeys(ins)) or [last_id()]
        producer[id(c["out"])] = nid
        out_shape = tuple(int(d) for d in c["out"].shape[1:])
        shape_of[nid] = out_shape
        m = c["module"]
        mapped = None
        exact_edges = [shape_of[i] for i in ins] == got
        if exact_edges and (id(m) not in seen_modules or not any(True for _ in m.parameters())):
            mapped = map_module(m, got)  # the traced path's rule: exact or opaque
        seen_modules.add(id(m))
        new = [p for p in m.parameters() if id(p) not in counted]
        counted.update(id(p) for p in new)
        if mapped:
            node = Node(nid, mapped[0], dict(mapped[1]), ins)
        else:
            node = Node(nid, "opaque", {
                "op": _op(m), "module": c["name"], "in_shapes": shapes_text(got) if exact_edges else "",
                "out_shape": "x".join(map(str, out_shape)), "params": sum(p.numel() for p in new),
                "flops": c["flops"] // BATCH, "bwd_flops": bwd[k] // BATCH}, ins)
        entries.append((node, ("call", m, c["occ"], 0)))
    # leaf modules this run did not call (another branch): after the module registered before them
    notes = []
    order = [m for _, m in leaves]
    for r, (name, m) in enumerate(leaves):
        if id(m) in seen_modules:
            continue
        seen_modules.add(id(m))
        at = 0
        for q in range(r - 1, -1, -1):
            hit = [j for j, (_, key) in enumerate(entries) if key[1] is order[q] and key[0] == "call"]
            if hit:
                at = hit[0] + 1
                break
        nid = node_id(name.replace(".", "_"), used)
        names[nid] = name
        new = [p for p in m.parameters() if id(p) not in counted]
        counted.update(id(p) for p in new)
        src = entries[at - 1][0].id if at else INPUT_ID
        entries.insert(at, (Node(nid, "opaque", {
            "op": _op(m), "module": name, "out_shape": "", "params": sum(p.numel() for p in new),
            "flops": 0, "bwd_flops": 0}, [src]), ("call", m, 0, 0)))
        notes.append(nid)
    nodes = [n for n, _ in entries]
    keys = [key for _, key in entries]
    consumed = {i for n in nodes for i in n.inputs}
    rest = [p for p in module.parameters() if id(p) not in counted]
    sinks = [n.id for n in nodes if n.id not in consumed] or [INPUT_ID]
    tail = node_id(TAIL, used)
    names[tail] = "functional ops after the last module"
    nodes.append(Node(tail, "opaque", {
        "op": "functional ops after the last module", "out_shape": "x".join(map(str, out_shape_all)),
        "params": sum(p.numel() for p in rest),
        "flops": max(0, total_fwd - sum(c["flops"] for c in calls) - fn_flops) // BATCH,
        "bwd_flops": max(0, total_bwd - sum(bwd)) // BATCH}, sinks))
    stem = source.split(":", 1)[1] if source.startswith("torchvision:") else source
    spec = NetSpec(input_spec(shape, classes), nodes, name=f"{type(module).__name__} ({stem})",
                   description=f"imported from {source}; fx could not trace it ({reason}), so each leaf module "
                               f"is timed with hooks")
    info = analyze(spec)
    model = HookedNet(spec, info, module, keys)
    imported = ImportedNet(source, spec, model, _notice(reason), False, names)
    if notes:
        imported.notes.append(f"{', '.join(notes)} did not run when the model was imported (another branch): "
                              f"{'their' if len(notes) > 1 else 'its'} FLOPs and output shape are unknown "
                              f"(0 and none); times are measured when they run")
    check_params(imported, module)
    return imported
