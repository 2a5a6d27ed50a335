"""What each part of the per-layer probe costs inside a real training step, layer by layer.

The probe's work between two layers is a few Python operations, but right after a large
layer's forward or backward the CPU's caches hold that layer's tensors, not the interpreter's
objects, so each operation costs several times what a warm micro-benchmark says. This script
measures the parts where they run: one ``LayerNet`` forward + backward (SGD not needed), the
variants alternating step by step in one process (so a machine that is slower for a while slows
them alike), each a different ``on_output`` callback:

- plain:     ``model(x)``, no callback;
- call:      a callback that does nothing (the cost of being called back);
- stamp:     one ``perf_counter_ns`` stamp per layer (what the forward timing needs);
- grad_fn:   stamp + ``out.grad_fn`` (creates the Python object of the autograd node);
- hook:      stamp + the handle-free hook registration the probe uses
             (``engine.run.probes.layer_hooker``) + a resume stamp; its backward runs the hooks;
- prehook:   stamp + ``grad_fn.register_prehook`` (torch's usual way, with a handle) + resume;
- native:    the compiled stamper the probe uses where it can be built (``engine.run.native``):
             one C call per layer stamps, hooks the node with a C++ pre-hook, stamps again.

Printed per variant: median forward and backward microseconds and the difference to plain, per
step and per layer. Usage: python benchmarks/probe_costs.py [--net lenet5] [--batch-size 64]
[--steps 300] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine  # noqa: E402


def main(argv=None) -> int:
    import torch

    from engine.run.native import stamps_module
    from engine.run.native import status as native_status
    from engine.run.probes import fast_hooks, layer_hooker

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--net", default="lenet5")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = engine.resolve_net(args.net)
    model = engine.build_model(spec).train(True)
    x = torch.randn(args.batch_size, *spec.input.shape)
    n = len(model.plan)
    perf = time.perf_counter_ns
    stamps, resume = [0] * (n + 1), [0] * (n + 1)
    fired = [0] * n
    hooks = [(lambda k: (lambda grad: fired.__setitem__(k, perf())))(k) for k in range(n)]
    handles: list = []
    hooked = [False] * n
    seen: set = set()
    hook_layer = layer_hooker(hooks, handles.append, fast_hooks(), hooked, seen)

    def call(k, nid, out):
        pass

    def stamp(k, nid, out):
        stamps[k + 1] = perf()

    def grad_fn(k, nid, out):
        stamps[k + 1] = perf()
        resume[k] = out.grad_fn is None

    def hook(k, nid, out):
        stamps[k + 1] = perf()
        hook_layer(k, out)
        resume[k + 1] = perf()

    def prehook(k, nid, out):
        stamps[k + 1] = perf()
        gf = out.grad_fn
        if gf is not None and gf not in seen:
            seen.add(gf)
            handles.append(gf.register_prehook(hooks[k]))
        resume[k + 1] = perf()

    variants = {"plain": None, "call": call, "stamp": stamp, "grad_fn": grad_fn, "hook": hook, "prehook": prehook}
    module = stamps_module()
    stamper = module.Stamper(n) if module is not None else None
    if stamper is not None:
        variants["native"] = stamper.stamp
    fwd = {k: [] for k in variants}
    bwd = {k: [] for k in variants}
    names = list(variants)
    for i in range(args.steps + 20):
        for name in (names if i % 2 else names[::-1]):
            fn = variants[name]
            seen.clear()
            handles.clear()
            if stamper is not None:
                stamper.reset(False)
                stamper.start()
            t0 = perf()
            out = model.forward(x, fn) if fn is not None else model(x)
            t1 = perf()
            loss = out.sum()
            t2 = perf()
            loss.backward()
            t3 = perf()
            del out, loss
            if i >= 20:
                fwd[name].append(t1 - t0)
                bwd[name].append(t3 - t2)
    f0, b0 = statistics.median(fwd["plain"]), statistics.median(bwd["plain"])
    print(f"{args.net}, batch {args.batch_size}, {n} layers, threads {args.threads}, {args.steps} steps per variant, "
          f"handle-free hooks: {fast_hooks()}, native stamps: {native_status()}")
    print(f"  {'variant':9} {'fwd us':>9} {'+us':>7} {'+us/layer':>9}   {'bwd us':>9} {'+us':>7} {'+us/layer':>9}")
    for name in names:
        f, b = statistics.median(fwd[name]), statistics.median(bwd[name])
        print(f"  {name:9} {f / 1e3:9.1f} {(f - f0) / 1e3:7.1f} {(f - f0) / 1e3 / n:9.2f}   "
              f"{b / 1e3:9.1f} {(b - b0) / 1e3:7.1f} {(b - b0) / 1e3 / n:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
