"""Fidelity of per-layer CPU times: a plain stamped loop, torch.profiler and LayerScope, side by side.

For each net (default resnet18 and alexnet-article): inference, batch 16, one thread, synthetic
input, medians over 10 steps (after 3 warm-up steps), four arms in one process:

- plain A / plain B: the same LayerNet's plan run module by module, a ``perf_counter`` stamp
  after each layer, each output freed after its last consumer (``PlanStep.free_after``, as
  ``LayerNet.forward`` does); run twice, so their disagreement is the floor any tool can reach;
  minor page faults per layer (``getrusage(RUSAGE_THREAD)`` at the same stamps) are counted too;
- torch.profiler (CPU) with ``record_function`` around each layer;
- LayerScope: a real ``Run`` (every step profiled), its LayerTimes.

Per layer of >= 1 ms (plain A's median) it prints each arm's median and plain A's p5..p95 spread
and faults, then per arm against plain A:

    <net>_plain_b_within_10pct: K/N      (run-to-run floor)
    <net>_profiler_within_10pct: K/N
    <net>_layerscope_within_10pct: K/N

A layer whose time moves between arms while its faults are high is paying for first-touch page
faults / allocator work, which lands on whichever layer allocates next (LayerScope flags these
layers as allocator-bound on the CPU).
Usage: python benchmarks/fidelity.py [--net resnet18 --net alexnet-article] [--steps 10] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine  # noqa: E402
from engine.analysis.stats import percentile  # noqa: E402

WARMUP = 3


def _thread_minflt() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def plain(model, x, steps: int) -> tuple[dict, dict]:
    """({node: [ms per step]}, {node: [minor faults per step]}) of the stamped plan walk."""
    import torch

    ms, faults = {}, {}
    perf = time.perf_counter
    with torch.inference_mode():
        for i in range(WARMUP + steps):
            values = {"input": x}
            t, f = perf(), _thread_minflt()
            for step in model.plan:
                out = getattr(model, step.node_id)(*[values[r] for r in step.inputs])
                values[step.node_id] = out
                for r in step.free_after:
                    values.pop(r, None)
                t1, f1 = perf(), _thread_minflt()
                if i >= WARMUP:
                    ms.setdefault(step.node_id, []).append((t1 - t) * 1000.0)
                    faults.setdefault(step.node_id, []).append(f1 - f)
                t, f = perf(), _thread_minflt()  # the read-out is not blamed on the next layer
            del values, out
    return ms, faults


def profiler(model, x, steps: int) -> dict:
    """{node: [ms per step]}: torch.profiler's CPU time of each layer's record_function range."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    def walk():
        values = {"input": x}
        for step in model.plan:
            with record_function("ls::" + step.node_id):
                values[step.node_id] = getattr(model, step.node_id)(*[values[r] for r in step.inputs])
            for r in step.free_after:
                values.pop(r, None)

    with torch.inference_mode():
        for _ in range(WARMUP):
            walk()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                walk()
    per = {}
    for ev in prof.events():
        if ev.name.startswith("ls::"):
            per.setdefault(ev.name[4:], []).append(ev.cpu_time_total / 1000.0)
    return per


def layerscope(spec, batch: int, steps: int) -> dict:
    """{node: [ms per step]} from a real LayerScope run (infer, every step profiled, one thread)."""
    from engine.records import LayerTimes
    from engine.run.loop import Run, RunConfig

    got: dict = {}

    def sink(rec):
        if isinstance(rec, LayerTimes):
            for nid, v in zip(rec.node_ids, rec.fwd_ms):
                if v is not None:
                    got.setdefault(nid, []).append(v)

    cfg = RunConfig(net=spec, mode="infer", device="cpu", batch_size=batch, steps=steps, warmup=WARMUP,
                    profile_every=1, threads=1, telemetry_hz=0, dataset="synthetic", seed=0)
    res = Run(cfg, [sink]).run()
    if res.status != "completed":
        raise SystemExit(f"LayerScope run failed: {res.message}")
    return got


def within(a: dict, b: dict, ids: list) -> int:
    return sum(1 for n in ids if n in b and abs(statistics.median(b[n]) / statistics.median(a[n]) - 1) <= 0.10)


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--net", action="append")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)
    nets = args.net or ["resnet18", "alexnet-article"]
    print(f"infer, batch {args.batch_size}, one thread, medians over {args.steps} steps; load average "
          f"{os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")
    for name in nets:
        spec = engine.resolve_net(name)
        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            torch.manual_seed(0)
            model = engine.build_model(spec).eval()
            x = torch.randn(args.batch_size, *spec.input.shape)
            a, faults = plain(model, x, args.steps)
            prof = profiler(model, x, args.steps)
            b, _ = plain(model, x, args.steps)
        finally:
            torch.set_num_threads(prev)
        ls = layerscope(spec, args.batch_size, args.steps)
        big = [n for n in a if statistics.median(a[n]) >= 1.0]
        print(f"\n{name}: {len(big)} of {len(a)} layers take >= 1 ms")
        print(f"  {'layer':22} {'plain A':>8} {'p5..p95':>15} {'faults':>7} {'plain B':>8} {'profiler':>8} "
              f"{'LayerScope':>10}")
        for n in big:
            sp = f"{percentile(a[n], 5):.2f}..{percentile(a[n], 95):.2f}"
            print(f"  {n:22} {statistics.median(a[n]):8.2f} {sp:>15} {statistics.median(faults[n]):7.0f} "
                  f"{statistics.median(b[n]):8.2f} {statistics.median(prof.get(n, [float('nan')])):8.2f} "
                  f"{statistics.median(ls.get(n, [float('nan')])):10.2f}")
        key = name.replace("-", "_")
        print(f"{key}_plain_b_within_10pct: {within(a, b, big)}/{len(big)}")
        print(f"{key}_profiler_within_10pct: {within(a, prof, big)}/{len(big)}")
        print(f"{key}_layerscope_within_10pct: {within(a, ls, big)}/{len(big)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
