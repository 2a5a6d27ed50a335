"""Long sessions: time and peak memory of ``summary`` and the trace export, by session length.

A lenet5-shaped training session of N profiled steps is synthesised directly with
``SessionWriter`` (no torch run: layer times are drawn from a seeded RNG, telemetry at 10 Hz of
the simulated run time), then each measurement runs in a fresh Python process, as the CLI would:

    aggregates_s: X.XX               the writer's close storing the per-node aggregates (node_stats)
    summary_s: X.XXX                 a summary (stored aggregates read), best of 3 fresh processes
                                     (wall time, open and imports included; *_cpu_s: the same
                                     process's CPU time, startup included: a loaded machine
                                     stretches wall time, not this)
    summary_from_rows_s: X.XXX       the same summary computed from the rows (a session without
                                     stored aggregates: older, killed or changed since; read-only)
    summary_rss_mb: X.X              that process's peak RSS (VmHWM; imports included)
    baseline_rss_mb: X.X             a process that only imports and opens the session
    trace_export_peak_rss_mb: X.X    ``engine.export.export_trace`` (every profiled step) peak RSS
    trace_export_s: X.XX

Targets (issue 9, item 27): summary <= 1 s and <= 150 MB RSS at 100k steps; the trace export's
peak RSS independent of the session's length.
Usage: python benchmarks/long_session.py [--steps 10000 --steps 100000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.records import (LayerRow, LayerTimes, RunEnded, RunInfo, StepRecord, TelemetryBatch,  # noqa: E402
                            TelemetrySample)
from engine.session import SessionWriter  # noqa: E402

# lenet5's nodes (kind, forward FLOPs per sample): enough for the shape of the tables
NODES = [("conv1", "conv2d", 117_600), ("relu1", "relu", 0), ("pool1", "maxpool2d", 0),
         ("conv2", "conv2d", 240_000), ("relu2", "relu", 0), ("pool2", "maxpool2d", 0),
         ("flatten", "flatten", 0), ("fc1", "linear", 48_000), ("relu3", "relu", 0),
         ("fc2", "linear", 10_080), ("relu4", "relu", 0), ("fc3", "linear", 840)]


def synthesise(path: Path, steps: int, warmup: int = 3, seed: int = 0) -> tuple[float, float]:
    """Write a finished lenet5-like training session of ``steps`` measured steps; returns (seconds
    taken, seconds of those the writer's close took: the stored aggregates, and its CPU seconds)."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    layers = [LayerRow(i, nid, nid, kind, (64, 8), 100, flops, 4096) for i, (nid, kind, flops) in enumerate(NODES)]
    ids = [n[0] for n in NODES]
    cfg = {"net_name": "lenet5", "mode": "train", "device": "cpu", "precision": "fp32", "batch_size": 64,
           "steps": steps, "warmup": warmup, "profile_every": 1}
    w = SessionWriter(path, flush_interval=5.0)
    if True:  # one block: the close below is timed on its own
        w(RunInfo(config=cfg, device={"id": "cpu", "name": "synthetic"}, versions={}, host="bench",
                  start_time=time.time(), layers=layers))
        t = 0.0
        next_tel = 0.0
        for step in range(1, warmup + steps + 1):
            fwd = [rng.lognormvariate(-1.5, 0.3) for _ in ids]
            bwd = [rng.lognormvariate(-1.2, 0.3) if k else 0.0 for k in range(len(ids))]
            f_start, s = [], 0.0
            for f in fwd:
                f_start.append(s)
                s += f
            b_start = []
            for b in reversed(bwd):
                b_start.append(s)
                s += b
            step_ms = s + 0.4
            warm = step <= warmup
            w(StepRecord(step, t, "train", 2.3 - step * 1e-6, 0.1, step_ms, 64_000 / step_ms, 0.05, None, warm,
                         True, None))
            if not warm:
                w(LayerTimes(step, t + 0.00005, ids, fwd, bwd, f_start, list(reversed(b_start)),
                             [4096] * len(ids), []))
            t += (step_ms + 0.05) / 1000.0
            if t >= next_tel:
                w(TelemetryBatch([TelemetrySample(t, "psutil", "cpu_pct", rng.uniform(90, 100)),
                                  TelemetrySample(t, "psutil", "rss_bytes", 4e8 + rng.uniform(0, 1e6)),
                                  TelemetrySample(t, "rapl:package-0", "energy_j", t * 30.0)]))
                next_tel = t + 0.1
        w(RunEnded(t, "completed", "", warmup + steps, {}))
        t_close, c_close = time.perf_counter(), time.process_time()
        w.close()
    return time.perf_counter() - t0, time.perf_counter() - t_close, time.process_time() - c_close


_MEASURE = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from engine.session import open_session
from engine.analysis.summary import summary
what, path = sys.argv[1], sys.argv[2]
t = time.perf_counter()
with open_session(path) as r:
    if what == "rows":  # as a session without stored aggregates is read
        r._stored_aggregates = lambda: None
    if what in ("summary", "rows"):
        s = summary(r)
        assert s["layers"] and s["run"]["steady_steps"] > 0
        stored = r.has_aggregates()
elapsed = time.perf_counter() - t
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"s": elapsed, "rss_mb": hwm / 1024, "cpu_s": time.process_time()}}))
"""


def measure(what: str, path: Path) -> dict:
    """Run ``what`` ("open", "summary" or "rows": the summary computed from the rows) on the
    session in a fresh Python process; its wall time (open included) and peak RSS (VmHWM)."""
    import json

    out = subprocess.run([sys.executable, "-c", _MEASURE.format(root=str(ROOT)), what, str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def trace_export(path: Path, out: Path) -> dict:
    """The trace export the app's Export menu and ``layerscope export --format trace`` run
    (``engine.export.export_trace``, every profiled step), in a fresh process."""
    code = ("import resource, sys, time; sys.path.insert(0, %r); from engine.session import open_session; "
            "from engine.export import export_trace; t = time.perf_counter(); r = open_session(%r); "
            "export_trace(r, %r, max_steps=None); "
            "print(time.perf_counter() - t, next(int(l.split()[1]) for l in open('/proc/self/status') "
            "if l.startswith('VmHWM:')) / 1024, time.process_time())"
            % (str(ROOT), str(path), str(out)))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = res.stdout.strip().splitlines()[-1].split()
    return {"s": float(line[0]), "rss_mb": float(line[1]), "cpu_s": float(line[2]),
            "size_mb": out.stat().st_size / 2**20}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, action="append", help="measured steps (repeatable)")
    p.add_argument("--keep", help="folder to keep the sessions in (default: a temporary folder)")
    args = p.parse_args(argv)
    sizes = args.steps or [10_000, 100_000]
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            path = folder / f"long-{n}.lsession"
            agg_s = agg_cpu = None
            if not path.exists():
                took, agg_s, agg_cpu = synthesise(path, n)
                print(f"\n{n} steps: session written in {took:.1f} s ({path.stat().st_size / 2**20:.1f} MiB)")
            else:
                print(f"\n{n} steps: reusing {path}")
            base = measure("open", path)
            s = min((measure("summary", path) for _ in range(3)), key=lambda d: d["s"])
            rows = measure("rows", path)
            tr = trace_export(path, folder / f"long-{n}.json")
            print(f"steps: {n}")
            if agg_s is not None:
                print(f"aggregates_s: {agg_s:.2f}")
                print(f"aggregates_cpu_s: {agg_cpu:.2f}")
            print(f"summary_s: {s['s']:.3f}")
            print(f"summary_cpu_s: {s['cpu_s']:.3f}")
            print(f"summary_from_rows_s: {rows['s']:.3f}")
            print(f"summary_from_rows_cpu_s: {rows['cpu_s']:.3f}")
            print(f"summary_rss_mb: {s['rss_mb']:.1f}")
            print(f"baseline_rss_mb: {base['rss_mb']:.1f}")
            print(f"trace_export_s: {tr['s']:.2f}")
            print(f"trace_export_cpu_s: {tr['cpu_s']:.2f}")
            print(f"trace_export_peak_rss_mb: {tr['rss_mb']:.1f}")
            print(f"trace_size_mb: {tr['size_mb']:.1f}")
            (folder / f"long-{n}.json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
