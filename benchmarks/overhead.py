"""What LayerScope costs against the user's own training loop, and what per-layer profiling adds.

Arms, all on the same ``LayerNet`` (SGD with momentum 0.9, lr 0.01, synthetic data, one thread
by default, telemetry off), measured side by side and interleaved round by round (the order
rotates each round), each arm's step time = the gap between consecutive step starts:

- hand:            a hand-written PyTorch loop (batches gathered from an in-memory pool,
                   zero_grad / forward / cross-entropy / backward / step / loss.item());
- hand+profiler:   the same loop under ``torch.profiler`` (CPU activity);
- ls:              LayerScope in-process (``engine.run.Run``, a LiveFeed as sink), unprofiled;
- ls+profile:      the same, every layer profiled every step;
- cli / cli+profile: ``layerscope profile NET --threads 1 --batch-size 64 --telemetry-hz 0``
                   writing a session (step time from the session's step start times), unprofiled
                   and profiled every step.

Per net it prints a table (median ms/step, IQR as % of the median, ratio to hand, per-round
ratio range; for the in-process arms also the run thread's CPU time per step, its ratio and the
range of the per-round CPU ratios) and the headline lines

    <arm>_ratio: X.XXX      median step / the hand loop's median step (one run, same rounds)
    <arm>_cpu_ratio: X.XXX  median over rounds of (arm's median CPU ms/step / hand's), in-process
                            arms: on a loaded machine wall time measures the other processes too

    <arm>_paired_ratio: X.XXX  median over rounds of (arm's median / hand's median in that
                            round): each round's arms ran back to back, so a machine that is
                            slower for a while slows them alike
    <arm>_stepwise_ratio: X.XXX  ls and ls+profile with a hand-written step run right after
                            each LayerScope step in the same thread (``stepwise``): the least
                            noisy figure; LayerScope pays all its record work in its own thread

The probe uses its compiled stamps where they can be built (``engine.run.native``; the header
says which; ``LAYERSCOPE_NATIVE=0`` measures the Python hooks), and a CPU training step's
accuracy is worked out by its record's first reader (``engine.run.step.DeferredStepRecord``):
in the stepwise arms that is the run's own thread, in the others the viewer's or the writer's.

Target (issue 9): ls+profile and cli+profile <= 1.03 for lenet5 and alexnet-article. A shared
machine is noisy: look at the load average printed, the IQRs and the per-round ranges.

Allocator (``--malloc``): glibc serves large blocks from fresh mmaps until its dynamic threshold
has grown, and gives heap tops back past its trim threshold, so whether an activation costs
first-touch page faults depends on the process's allocation history; on this VM the same loop
ran at 7.4 ms/step with ~0 faults and at 11 ms with ~1,700 faults per step, for every arm,
hand-written loop included. ``--malloc tuned`` reruns the benchmark with the thresholds fixed
(LayerScope's ``tuned`` CPU allocator, ``engine.run.allocator.TUNED_ENV``; the CLI arms inherit
it), which measures LayerScope's own cost without that noise; ``--malloc default`` (the default)
runs as a user's process does. The faults per step of each in-process arm are printed either way.
``--legacy`` runs the former profiled-vs-plain step interleaving (overhead_ratio, coverage).
Usage: python benchmarks/overhead.py [--net lenet5 --net alexnet-article] [--rounds 5]
       [--seconds 2] [--threads 1] [--batch-size 64] [--skip-cli] [--malloc default|tuned] [--legacy]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine.run.live import LiveFeed  # noqa: E402
from engine.records import LayerTimes, RunEnded, StepRecord  # noqa: E402
from engine.run.loop import Run, RunConfig  # noqa: E402


def one_run(spec, args, steps: int, profile_every: int, warmup: int):
    """One Run; returns [(wall s, cpu s, compute ms, profiled)] per measured step, and its LayerTimes.

    A step lasts from the last record of the step before to its own last record (this sink is
    the last one, so the LiveFeed has taken each record in by then): data, compute, probe read-out
    and record delivery all count. ``cpu`` is process CPU time over the same span, which other
    processes on a shared machine disturb far less than wall time.
    """
    ends: dict[int, tuple[float, float]] = {}
    meta: dict[int, StepRecord] = {}
    lts: list[LayerTimes] = []

    def collect(rec):
        step = getattr(rec, "step", None)
        if step is None or isinstance(rec, RunEnded):
            return
        if isinstance(rec, StepRecord):
            meta[step] = rec
        elif isinstance(rec, LayerTimes):
            lts.append(rec)
        ends[step] = (time.perf_counter(), time.process_time())

    cfg = RunConfig(net=spec, mode=args.mode, device=args.device, batch_size=args.batch_size,
                    steps=steps, warmup=warmup, profile_every=profile_every, threads=args.threads,
                    telemetry_hz=0, dataset="synthetic", seed=0)
    result = Run(cfg, [LiveFeed(), collect]).run()
    if result.status != "completed":
        raise SystemExit(f"run failed: {result.message}")
    rows = []
    for step in sorted(meta):
        if meta[step].warmup or step - 1 not in ends:
            continue
        (w0, c0), (w1, c1) = ends[step - 1], ends[step]
        rows.append((w1 - w0, c1 - c0, meta[step].step_ms, meta[step].profiled))
    return rows, lts


def coverage(spec, args, reps: int) -> tuple[float, float]:
    """(sum of layer forward times / plain forward time, same / the probed forward's own span)."""
    import torch

    from engine.run.devices import resolve_device
    from engine.run.probes import Probe

    device = resolve_device(args.device)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # the runs restored the process default; match them
    torch.manual_seed(0)
    model = engine.build_model(spec).to(device).train(args.mode == "train")
    x = torch.randn(args.batch_size, *spec.input.shape, device=device)
    probe = Probe(model, device)
    plain, summed, span = [], [], []

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # note: sync point (benchmark timing only)

    grad = torch.enable_grad() if args.mode == "train" else torch.inference_mode()
    with grad:
        for i in range(reps + 2):
            sync()
            t0 = time.perf_counter()
            out = model(x)
            sync()
            t1 = time.perf_counter()
            del out
            probe.begin_step()
            t2 = time.perf_counter()
            out = probe.forward(x)
            sync()
            t3 = time.perf_counter()
            lt = probe.collect(i, 0.0)
            probe.detach()
            del out
            if i >= 2:  # first passes warm the allocator and caches
                plain.append(t1 - t0)
                span.append(t3 - t2)
                summed.append(sum(lt.fwd_ms) / 1000.0)
    torch.set_num_threads(prev_threads)
    return (statistics.median(summed) / statistics.median(plain),
            statistics.median(s / p for s, p in zip(summed, span)))


def med(xs) -> float:
    return statistics.median(xs) if xs else float("nan")


def iqr_pct(xs) -> float:
    if len(xs) < 2:
        return float("nan")
    q = statistics.quantiles(xs, n=4)
    return 100.0 * (q[2] - q[0]) / statistics.median(xs)


def report_rounds(title, rounds) -> tuple[float, float]:
    """rounds: (first, plain rows, profiled rows); returns (wall ratio, cpu ratio) over all rounds."""
    print(f"  {title}")
    print(f"  {'round':>5}  {'first':>8}  {'plain ms':>9}  {'profiled ms':>11}  {'ratio':>6}  "
          f"{'plain cpu-ms':>12}  {'prof cpu-ms':>11}  {'cpu ratio':>9}")
    for i, (first, a, b) in enumerate(rounds):
        w0, w1 = med([r[0] for r in a]), med([r[0] for r in b])
        c0, c1 = med([r[1] for r in a]), med([r[1] for r in b])
        print(f"  {i + 1:>5}  {first:>8}  {w0 * 1000:>9.2f}  {w1 * 1000:>11.2f}  {w1 / w0:>6.3f}  "
              f"{c0 * 1000:>12.2f}  {c1 * 1000:>11.2f}  {c1 / c0:>9.3f}")
    a = [r for x in rounds for r in x[1]]
    b = [r for x in rounds for r in x[2]]
    w0, w1 = [r[0] for r in a], [r[0] for r in b]
    c0, c1 = [r[1] for r in a], [r[1] for r in b]
    ratios = [med([r[0] for r in x[2]]) / med([r[0] for r in x[1]]) for x in rounds]
    print(f"  wall: plain {med(w0) * 1000:.2f} ms/step (IQR {iqr_pct(w0):.1f}% of median), profiled "
          f"{med(w1) * 1000:.2f} ms/step (IQR {iqr_pct(w1):.1f}%); per-round ratios "
          f"{min(ratios):.3f}..{max(ratios):.3f}")
    print(f"  process CPU time: plain {med(c0) * 1000:.2f} ms/step (IQR {iqr_pct(c0):.1f}%), profiled "
          f"{med(c1) * 1000:.2f} ms/step (IQR {iqr_pct(c1):.1f}%); ratio {med(c1) / med(c0):.3f}")
    return med(w1) / med(w0), med(c1) / med(c0)


def legacy_main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--net", action="append", help="preset name or net file (repeatable)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--mode", default="train", choices=("train", "infer", "benchmark"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=None,
                   help="measured steps per arm per round (default: about 3 s worth, 3..40)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores but one)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what overhead_ratio is computed from (cpu: process CPU time, for a busy machine)")
    p.add_argument("--legacy", action="store_true")
    p.add_argument("--separate-runs", action="store_true",
                   help="also compare whole plain runs against whole profiled runs")
    args = p.parse_args(argv)
    nets = args.net or ["lenet5", "alexnet-article"]
    args.threads = args.threads or max(1, (os.cpu_count() or 1) - 1)
    load_before = os.getloadavg()
    print(f"device {args.device}, mode {args.mode}, batch {args.batch_size}, threads {args.threads}, "
          f"{args.rounds} rounds, load average {load_before[0]:.2f} (1 min) on {os.cpu_count()} cores")
    for name in nets:
        spec = engine.resolve_net(name)
        steps = args.steps
        if steps is None:
            rows, _ = one_run(spec, args, 2, 0, 1)
            steps = int(min(40, max(3, round(3.0 / med([r[0] for r in rows])))))
        print(f"\n{name}: {steps} measured steps per arm per round")
        rounds = []
        for r in range(args.rounds):
            # profile_every=2 profiles odd steps; one warm-up step more flips which comes first
            warmup = args.warmup + (r % 2)
            rows, lts = one_run(spec, args, 2 * steps, 2, warmup)
            assert lts, "no LayerTimes from the profiled steps"
            rounds.append(("profiled" if rows[0][3] else "plain", [x for x in rows if not x[3]],
                           [x for x in rows if x[3]]))
        wall, cpu = report_rounds("steps interleaved (one run, profile_every=2)", rounds)
        if args.separate_runs:
            rounds = []
            for r in range(args.rounds):
                order = (0, 1) if r % 2 == 0 else (1, 0)
                got = {pe: one_run(spec, args, steps, pe, args.warmup)[0] for pe in order}
                rounds.append(("plain" if order[0] == 0 else "profiled", got[0], got[1]))
            report_rounds("runs interleaved (profile_every=0 vs 1)", rounds)
        cov, cov_span = coverage(spec, args, reps=max(5, min(30, steps)))
        print(f"  in-pass coverage (layer sum / the profiled pass's own span): {cov_span:.3f}")
        print(f"  overhead by wall time {wall:.3f}, by process CPU time {cpu:.3f} (headline: {args.clock})")
        print(f"coverage: {cov:.3f}")
        print(f"overhead_ratio: {wall if args.clock == 'wall' else cpu:.3f}")
    load_after = os.getloadavg()
    print(f"\nload average {load_after[0]:.2f} at the end (1 min; other processes share these cores)",
          file=sys.stderr)
    return 0

ARMS = ("hand", "hand+profiler", "ls", "ls+profile", "cli", "cli+profile")


def hand_step(spec, args):
    """``step(i)``: one step of the hand-written training loop (its own model, optimizer and pool)."""
    import torch

    torch.manual_seed(0)
    model = engine.build_model(spec).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pool = torch.randn(512, *spec.input.shape)
    labels = torch.randint(0, spec.input.classes, (512,))
    g = torch.Generator().manual_seed(0)
    loss_fn = torch.nn.functional.cross_entropy

    def step(i):
        idx = torch.randint(0, 512, (args.batch_size,), generator=g)
        x, y = pool[idx], labels[idx]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def stepwise(spec, args, steps: int, profile_every: int) -> tuple[list[float], list[float]]:
    """(LayerScope's step seconds, the hand loop's step seconds), the two alternating step by
    step in one thread: a sink of the Run (the last one, after the LiveFeed) runs one hand-written
    step after each LayerScope step. A machine that is slower for a while slows both alike, so
    this is the least noisy comparison. LayerScope's step = the gap between consecutive step
    starts less the hand step between them; no viewer polls the feed, so every record is folded
    in the run's thread, charged to LayerScope."""
    hand = hand_step(spec, args)
    starts, hands = [], []

    def sink(rec):
        if isinstance(rec, StepRecord) and rec.phase != "test":
            starts.append(rec.t)
            t0 = time.perf_counter()
            hand(len(starts))
            hands.append(time.perf_counter() - t0)

    cfg = RunConfig(net=spec, mode="train", device="cpu", batch_size=args.batch_size, steps=steps + args.warmup + 1,
                    warmup=0, profile_every=profile_every, threads=args.threads, telemetry_hz=0,
                    dataset="synthetic", seed=0, optimizer="sgd", lr=0.01, momentum=0.9)
    res = Run(cfg, [LiveFeed(), sink]).run()
    if res.status != "completed":
        raise SystemExit(f"run failed: {res.message}")
    w = args.warmup
    ls = [b - a - h for a, b, h in zip(starts[w:], starts[w + 1:], hands[w:])]
    return ls, hands[w + 1:]


def hand_loop(spec, args, steps: int, profiler: bool = False) -> tuple[list[float], list[float]]:
    """Per-step seconds (gap between step starts) of a hand-written training loop, as wall time
    and as the process's CPU time (``time.process_time``: what other processes on a shared machine
    disturb far less)."""
    step = hand_step(spec, args)
    starts, cpu = [], []
    ctx = None
    if profiler:
        from torch.profiler import ProfilerActivity, profile

        ctx = profile(activities=[ProfilerActivity.CPU])
        ctx.__enter__()
    try:
        for i in range(args.warmup + steps + 1):
            starts.append(time.perf_counter())
            cpu.append(time.process_time())
            step(i)
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
    starts, cpu = starts[args.warmup:], cpu[args.warmup:]
    return [b - a for a, b in zip(starts, starts[1:])], [b - a for a, b in zip(cpu, cpu[1:])]


def ls_loop(spec, args, steps: int, profile_every: int) -> tuple[list[float], list[float]]:
    """Per-step seconds of LayerScope in-process: wall (gap between StepRecord.t of consecutive
    steps) and the process's CPU time between consecutive StepRecords (this sink runs in the
    run's thread, after the LiveFeed; process CPU time includes the viewer's thread).

    As in the app, a viewer polls the LiveFeed's snapshot at 30 Hz from another thread (the app's
    RunBridge timer, ``app.bridge.POLL_HZ``): that is where the queued records are folded into
    the arrays a view draws, and where a profiled step's per-layer lists are worked out."""
    import threading

    t, cpu = [], []

    def sink(rec):
        if isinstance(rec, StepRecord) and not rec.warmup:
            t.append(rec.t)
            cpu.append(time.process_time())

    feed, done = LiveFeed(), threading.Event()

    def viewer():
        version = None
        while not done.wait(1 / 30):
            snap = feed.snapshot(version)
            if snap is not None:
                version = snap.version

    cfg = RunConfig(net=spec, mode="train", device="cpu", batch_size=args.batch_size, steps=steps + 1,
                    warmup=args.warmup, profile_every=profile_every, threads=args.threads, telemetry_hz=0,
                    dataset="synthetic", seed=0, optimizer="sgd", lr=0.01, momentum=0.9)
    polling = threading.Thread(target=viewer, daemon=True)
    polling.start()
    try:
        res = Run(cfg, [feed, sink]).run()
    finally:
        done.set()
        polling.join()
    if res.status != "completed":
        raise SystemExit(f"run failed: {res.message}")
    return [b - a for a, b in zip(t, t[1:])], [b - a for a, b in zip(cpu, cpu[1:])]


def cli_loop(name, args, steps: int, profile_every: int) -> list[float]:
    """Per-step seconds from the session ``layerscope profile`` writes (gaps between step starts)."""
    from engine.session import open_session

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.lsession"
        cmd = [sys.executable, "-m", "engine.cli", "profile", name, "--threads", str(args.threads), "--batch-size",
               str(args.batch_size), "--telemetry-hz", "0", "--steps", str(steps + 1), "--warmup", str(args.warmup),
               "--profile-every", str(profile_every), "--optimizer", "sgd", "--lr", "0.01", "--momentum", "0.9",
               "--out", str(out), "--quiet"]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
        if res.returncode != 0:
            raise SystemExit(f"CLI run failed ({res.returncode}): {res.stderr.strip()[-400:]}")
        with open_session(out) as r:
            t = [s.t for s in r.steps() if not s.warmup and s.phase != "test"]
    return [b - a for a, b in zip(t, t[1:])], []  # another process: no per-step CPU time here


def arm(name, spec, args, which: str, steps: int) -> list[float]:
    if which == "hand":
        return hand_loop(spec, args, steps)
    if which == "hand+profiler":
        return hand_loop(spec, args, steps, profiler=True)
    if which in ("ls", "ls+profile"):
        return ls_loop(spec, args, steps, 1 if which.endswith("profile") else 0)
    return cli_loop(name, args, steps, 1 if which.endswith("profile") else 0)


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--legacy" in argv:
        return legacy_main([a for a in argv if a != "--legacy"])
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--net", action="append", help="preset name (repeatable)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0, help="about this long per arm per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-cli", action="store_true", help="in-process arms only")
    p.add_argument("--skip-stepwise", action="store_true", help="no step-by-step comparison")
    p.add_argument("--malloc", choices=("default", "tuned"), default="default",
                   help="tuned: rerun with glibc's mmap/trim thresholds fixed (see the module docstring)")
    args = p.parse_args(argv)
    if args.malloc == "tuned":
        from engine.run.allocator import TUNED_ENV

        if any(os.environ.get(k) != v for k, v in TUNED_ENV.items()):  # set before the process starts
            os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], {**os.environ, **TUNED_ENV})
    import resource
    nets = args.net or ["lenet5", "alexnet-article"]
    prev = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    arms = [a for a in ARMS if not (args.skip_cli and a.startswith("cli"))]
    from engine.run.native import stamps_module
    from engine.run.native import status as native_status

    stamps_module()  # built before anything is timed (once per torch), as a run's setup does
    print(f"cpu, train, batch {args.batch_size}, threads {args.threads}, {args.rounds} rounds, arms interleaved; "
          f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores; malloc {args.malloc}; "
          f"probe stamps: {native_status()}")
    for name in nets:
        spec = engine.resolve_net(name)
        probe, _ = hand_loop(spec, args, 3)
        steps = int(min(400, max(4, round(args.seconds / med(probe)))))
        print(f"\n{name}: {steps} measured steps per arm per round")
        got = {a: [] for a in arms}
        cpu = {a: [] for a in arms}
        per_round = {a: [] for a in arms}
        per_round_cpu = {a: [] for a in arms}
        faults = {a: [] for a in arms}  # minor page faults per step, in-process arms
        for r in range(args.rounds):
            order = arms[r % len(arms):] + arms[:r % len(arms)]
            meds, cmeds = {}, {}
            for a in order:
                torch.set_num_threads(args.threads)
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                xs, cs = arm(name, spec, args, a, steps)
                if cs:
                    faults[a].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / max(1, len(xs)))
                got[a] += xs
                cpu[a] += cs
                meds[a], cmeds[a] = med(xs), med(cs)
            for a in arms:
                per_round[a].append(meds[a] / meds["hand"])
                per_round_cpu[a].append(cmeds[a] / cmeds["hand"])
        base, cbase = med(got["hand"]), med(cpu["hand"])
        print(f"  {'arm':14} {'ms/step':>8} {'IQR %':>6} {'ratio':>6} {'paired':>6} {'per-round ratios':>17}   "
              f"{'cpu ms':>7} {'cpu ratio':>9} {'per-round cpu ratios':>21} {'faults/step':>11}")
        for a in arms:
            m = med(got[a])
            line = (f"  {a:14} {m * 1000:8.3f} {iqr_pct(got[a]):6.1f} {m / base:6.3f} {med(per_round[a]):6.3f} "
                    f"{min(per_round[a]):8.3f}..{max(per_round[a]):.3f}")
            if cpu[a]:
                c = med(cpu[a])
                rs = sorted(per_round_cpu[a])
                line += f"   {c * 1000:7.3f} {c / cbase:9.3f} {rs[0]:12.3f}..{rs[-1]:.3f} {med(faults[a]):11.1f}"
            print(line)
        for a in arms[1:]:
            key = f"{name.replace('-', '_')}_{a.replace('+', '_').replace('-', '_')}"
            print(f"{key}_ratio: {med(got[a]) / base:.3f}")
            print(f"{key}_paired_ratio: {med(per_round[a]):.3f}")
        if not args.skip_stepwise:
            print(f"  step by step (LayerScope and the hand loop alternating in one thread, {args.rounds} runs "
                  f"of {steps} steps each):")
            for a, pe in (("ls", 0), ("ls+profile", 1)):
                ls_s, hand_s, ratios = [], [], []
                for _ in range(args.rounds):
                    x, h = stepwise(spec, args, steps, pe)
                    ls_s += x
                    hand_s += h
                    ratios.append(med(x) / med(h))
                key = f"{name.replace('-', '_')}_{a.replace('+', '_')}"
                print(f"  {a:14} {med(ls_s) * 1000:8.3f} ms/step against the hand loop's {med(hand_s) * 1000:.3f}; "
                      f"per-run ratios {min(ratios):.3f}..{max(ratios):.3f}")
                print(f"{key}_stepwise_ratio: {med(ls_s) / med(hand_s):.3f}")
            if cpu[a]:
                # the median of the per-round ratios: each round's arms ran back to back
                print(f"{key}_cpu_ratio: {med(per_round_cpu[a]):.3f}")
    torch.set_num_threads(prev)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end (1 min)", file=sys.stderr)
    return 0

if __name__ == "__main__":
    sys.exit(main())
