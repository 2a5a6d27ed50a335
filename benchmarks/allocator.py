"""What the CPU allocator costs: a plain ``model(x)`` inference loop under glibc's defaults against
the ``tuned`` allocator (``engine.run.allocator.TUNED_ENV``: mmap and trim thresholds raised),
and jemalloc / tcmalloc where this machine has them.

Each allocator runs in its own process (the allocator is chosen by the environment a process
starts with), on the same net, batch and thread count; the arms alternate round by round so a
change in the machine's load hits both. Per arm, from the child's own clocks and counters:
ms per forward (``perf_counter``, median over the passes), minor page faults and system CPU time
over the timed passes (``getrusage(RUSAGE_SELF)``: ``ru_minflt``, ``ru_stime``).

Prints ``name: value`` lines, e.g.

    default_ms_per_forward: 797.1
    default_minor_faults: 990123
    tuned_ms_per_forward: 646.0
    tuned_to_default_ratio: 0.810       (ms per forward, tuned / default, same run)
    tuned_fault_ratio: 0.117

Usage: python benchmarks/allocator.py [--net resnet18] [--batch-size 16] [--threads 1]
       [--passes 12] [--rounds 1] [--allocator default --allocator tuned ...]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(net: str, batch: int, threads: int, passes: int) -> dict:
    """One arm, in this process: warm up, then time ``passes`` forwards; the figures as a dict."""
    import resource
    import time

    import torch

    from engine.net.model import build_model
    from engine.net.presets import resolve_net
    from engine.run.allocator import detect_allocator

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = resolve_net(net)
    model = build_model(spec).eval()
    x = torch.randn(batch, *spec.input.shape)
    with torch.inference_mode():
        for _ in range(2):  # warm-up: first-touch of weights, oneDNN primitive caches
            model(x)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        times = []
        for _ in range(passes):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1e3)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    name, env = detect_allocator()
    return {"allocator": name, "env": env, "ms": statistics.median(times),
            "minor_faults": r1.ru_minflt - r0.ru_minflt, "sys_s": r1.ru_stime - r0.ru_stime,
            "user_s": r1.ru_utime - r0.ru_utime}


def run_arm(allocator: str, args) -> dict:
    from engine.run.allocator import allocator_env

    env = allocator_env(allocator)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--child", "--net", args.net, "--batch-size", str(args.batch_size),
           "--threads", str(args.threads), "--passes", str(args.passes)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net", default="resnet18")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--passes", type=int, default=12)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--allocator", action="append", default=None,
                   help="arms (default: default, tuned, and jemalloc / tcmalloc where found)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.net, args.batch_size, args.threads, args.passes)))
        return
    from engine.run.allocator import CPU_ALLOCATORS, allocator_problem

    arms = args.allocator or [a for a in CPU_ALLOCATORS if allocator_problem(a) is None]
    for a in CPU_ALLOCATORS:
        if a not in arms and allocator_problem(a):
            print(f"# {a}: {allocator_problem(a)}")
    print(f"# {args.net} batch {args.batch_size}, {args.threads} thread(s), inference, {args.passes} passes "
          f"x {args.rounds} round(s); load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    results: dict[str, list[dict]] = {a: [] for a in arms}
    for r in range(args.rounds):
        for a in (arms if r % 2 == 0 else arms[::-1]):
            results[a].append(run_arm(a, args))
    figures = {}
    for a, rs in results.items():
        ms = statistics.median(x["ms"] for x in rs)
        faults = sum(x["minor_faults"] for x in rs)
        sys_s = sum(x["sys_s"] for x in rs)
        figures[a] = (ms, faults, sys_s)
        print(f"{a}_detected: {rs[0]['allocator']}")
        print(f"{a}_ms_per_forward: {ms:.1f}")
        print(f"{a}_minor_faults: {faults}")
        print(f"{a}_sys_s: {sys_s:.2f}")
    if "default" in figures:
        base = figures["default"]
        for a, (ms, faults, _) in figures.items():
            if a != "default":
                print(f"{a}_to_default_ratio: {ms / base[0]:.3f}")
                print(f"{a}_fault_ratio: {faults / max(base[1], 1):.3f}")
    print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
