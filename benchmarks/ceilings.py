"""The roofline's ceilings as LayerScope measures them, next to plain torch figures.

For each precision (fp32, bf16; fp16 too on CUDA) prints the measured peak FLOP/s
(``engine.run.ceilings.measure_ceilings``, not cached: measured now) and, for comparison, a plain
``torch.matmul`` of one large square size (n = 1024 on a CPU, 8192 on CUDA) timed the ordinary
way (mean of 5 after a warm-up); then the copy bandwidth (best over buffer sizes, and main
memory) next to a plain ``Tensor.clone`` of a 256 MiB tensor (allocation and page faults
included, as a user timing clone() would see).

Usage: python benchmarks/ceilings.py [--device cpu|cuda] [--threads N]
Prints ``name: value`` lines; ratios are within this one run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.run.ceilings import measure_ceilings  # noqa: E402


def _sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def plain_matmul(dev, precision: str, n: int) -> float:
    """FLOP/s of ``torch.matmul`` on two n x n tensors, mean of 5 after one warm-up."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    torch.matmul(a, b)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(5):
        torch.matmul(a, b)
    _sync(dev)
    return 5 * 2.0 * n ** 3 / (time.perf_counter() - t0)


def plain_clone(dev, nbytes: int = 256 << 20) -> float:
    """Bytes/s of ``x.clone()`` (read + write = 2 x the tensor), mean of 3 after one warm-up."""
    import torch

    x = torch.ones(nbytes // 4, device=dev)
    x.clone()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(3):
        y = x.clone()
        del y
    _sync(dev)
    return 3 * 2.0 * nbytes / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores but one)")
    args = ap.parse_args(argv)
    import os

    import torch

    import tempfile

    from engine.run import ceilings as _c

    # measured now, in this process: an empty cache folder, so no earlier (higher) figure is merged in
    os.environ["LAYERSCOPE_HOME"] = tempfile.mkdtemp(prefix="ls-ceilings-")
    _c._MEMO.clear()
    dev = torch.device(args.device)
    threads = args.threads or max(1, (os.cpu_count() or 1) - 1)
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    precisions = ("fp32", "bf16", "fp16") if dev.type == "cuda" else ("fp32", "bf16")
    n = 8192 if dev.type == "cuda" else 1024
    c = None
    print(f"device: {args.device}")
    print(f"threads: {threads if dev.type == 'cpu' else '-'}")
    print(f"torch: {torch.__version__}")
    for p in precisions:
        t0 = time.perf_counter()
        c = measure_ceilings(dev, p, threads if dev.type == "cpu" else None, use_cache=False)
        took = time.perf_counter() - t0
        plain = plain_matmul(dev, p, n)
        print(f"ceiling_peak_gflop_s_{p}: {c.peak_flop_s / 1e9:.1f}")
        print(f"plain_matmul_{n}_gflop_s_{p}: {plain / 1e9:.1f}")
        print(f"ceiling_over_plain_{p}: {c.peak_flop_s / plain:.2f}")
        print(f"ceiling_measure_s_{p}: {took:.2f}")
        if c.vendor:
            v = c.vendor.get(p)
            print(f"vendor_{c.vendor['model'].replace(' ', '_')}_gflop_s_{p}: {v / 1e9:.0f}" if v else "")
    bw = c.bandwidth_bytes_s
    print(f"ceiling_bandwidth_gb_s: {bw / 1e9:.1f}")
    print(f"ceiling_main_memory_gb_s: {c.dram_bandwidth_bytes_s / 1e9:.1f}")
    clone = plain_clone(dev)
    print(f"plain_clone_256MiB_gb_s: {clone / 1e9:.1f}")
    print(f"ceiling_main_memory_over_plain_clone: {c.dram_bandwidth_bytes_s / clone:.2f}")
    if c.vendor:
        print(f"vendor_{c.vendor['model'].replace(' ', '_')}_bandwidth_gb_s: {c.vendor['bandwidth'] / 1e9:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
