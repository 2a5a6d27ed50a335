"""What the pre-run fit check costs: vgg11 at batch 4096 on the CPU refused before the first step,
and the dry run, each in a fresh process. Prints ``name: value`` lines:

    refusal_s            wall time of `layerscope profile vgg11 --batch-size 4096 --mode benchmark` (exit 2)
    refusal_peak_rss_mb  its peak resident memory (VmHWM; torch itself is ~300 MB of it)
    dry_run_s            wall time of the same with --dry-run
    dry_run_peak_rss_mb  its peak resident memory
    fake_pass_s          one fake-tensor pass of vgg11 at batch 4096 (in this process)
    memory_step_ratio    lenet5 profiled step with the saved-tensor accounting / without (CPU, median of 30)

Usage: python benchmarks/memory_fit.py
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CODE = ("import sys, resource\nfrom engine.cli.main import main\nrc = main(sys.argv[1:])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
        "print('peak_kb', hwm[0].split()[1] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
        "file=sys.stderr)\nsys.exit(rc)\n")


def _run(args):
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CODE, *args], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    took = time.perf_counter() - t0
    kb = int([ln for ln in r.stderr.splitlines() if ln.startswith("peak_kb")][0].split()[1])
    return took, kb / 1024, r.returncode


def main() -> int:
    base = ["profile", "vgg11", "--device", "cpu", "--batch-size", "4096", "--mode", "benchmark", "--steps", "1",
            "--telemetry-hz", "0", "-q", "--out", os.devnull + ".lsession"]
    took, mb, rc = _run(base)
    print(f"refusal_s: {took:.2f}")
    print(f"refusal_peak_rss_mb: {mb:.0f}")
    print(f"refusal_exit: {rc}")
    took, mb, rc = _run([*base, "--dry-run"])
    print(f"dry_run_s: {took:.2f}")
    print(f"dry_run_peak_rss_mb: {mb:.0f}")

    import torch

    import engine
    from engine.run.limits import measure_activations
    from engine.run.probes import Probe

    info = engine.analyze(engine.resolve_net("vgg11"))
    t0 = time.perf_counter()
    measure_activations(info, 4096)
    print(f"fake_pass_s: {time.perf_counter() - t0:.2f}")

    spec = engine.resolve_net("lenet5")
    model = engine.build_model(spec)
    model.train()
    x = torch.randn(64, *spec.input.shape)
    probe = Probe(model, torch.device("cpu"))

    def step(counted: bool) -> float:
        probe.memory._last = -1e18 if counted else time.perf_counter() + 1e9
        t0 = time.perf_counter()
        probe.begin_step()
        out = probe.forward(x)
        out.sum().backward()
        probe.end_backward()
        probe.collect(0, 0.0)
        probe.detach()
        return time.perf_counter() - t0

    for _ in range(5):
        step(True), step(False)
    with_, without = [], []
    for _ in range(30):  # interleaved, so drift of the machine hits both alike
        with_.append(step(True))
        without.append(step(False))
    print(f"memory_step_ratio: {statistics.median(with_) / statistics.median(without):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
