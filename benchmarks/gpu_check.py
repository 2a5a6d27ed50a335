"""Every GPU check in one script, for a CUDA machine (needs only torch, numpy, psutil, nvidia-ml-py).

For resnet18 and alexnet, train and infer, fp32 and bf16 it prints one row with:
- overhead_ratio: median profiled step / median plain step, profiled and plain steps alternating
  in one run through the real loop (target <= 1.05 on CUDA);
- vs_profiler: per-layer forward time from LayerScope's CUDA events against torch.profiler's
  kernel time summed per layer (each layer wrapped in record_function), for layers whose kernels
  take >= 50 us: the share of those layers within 10%, and the worst ratio;
- energy per sample (J) from NVML's total-energy counter deltas over >= 1 s windows, and the
  telemetry rate achieved (ticks per second) with the sampler at 10 Hz.
Then (issue 11) a small sweep: resnet18 train, fp32/bf16/fp16 x channels_last (--quick on a CPU:
fp32/bf16), one session each in --sweep-dir with its study.json, compared per sample; the
measured ceilings per precision (with the vendor figures of a known GPU, for reference) and the
roofline of the fp32 run, all written into --out.

Usage: python benchmarks/gpu_check.py [--device cuda] [--steps 40] [--quick] [--out FILE] [--sweep-dir DIR]
[--sweep-only] [--layer-energy-only] [--le-window S --le-repeats K --le-min-updates N --le-cooldown S]; the last section replays every layer
of resnet18 alone for its energy per sample (per-layer energy, NVML), with coverage.
(--device cpu runs the same logic on the CPU as a dry run; the profiler comparison then uses CPU
op time and says so.) Never changes clocks, power limits or GPU modes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine  # noqa: E402
from engine.run.live import LiveFeed  # noqa: E402
from engine.records import LayerTimes, StepRecord, TelemetryBatch  # noqa: E402
from engine.run.loop import Run, RunConfig  # noqa: E402

BATCH = {"resnet18": 64, "alexnet": 128}


def default_threads() -> int:
    """What a run uses when not told: all cores but one (engine.run.config)."""
    import os

    return max(1, (os.cpu_count() or 1) - 1)


def loop_check(spec, device, mode, precision, batch, steps, threads):
    """Overhead, per-layer event times, energy and telemetry rate from one run of the real loop."""
    steps_rec, lts, tel = [], [], []

    def sink(rec):
        if isinstance(rec, StepRecord):
            steps_rec.append(rec)
        elif isinstance(rec, LayerTimes):
            lts.append(rec)
        elif isinstance(rec, TelemetryBatch):
            tel.append(rec)

    cfg = RunConfig(net=spec, mode=mode, device=device, precision=precision, batch_size=batch,
                    steps=steps, warmup=5, profile_every=2, dataset="synthetic", telemetry_hz=10.0,
                    cudnn_benchmark=True, seed=0, threads=threads)
    res = Run(cfg, [LiveFeed(), sink]).run()
    if res.status != "completed":
        return {"error": res.message}
    measured = [s for s in steps_rec if not s.warmup]
    prof = [s.step_ms for s in measured if s.profiled]
    plain = [s.step_ms for s in measured if not s.profiled]
    fwd = {}
    for lt in lts:
        for nid, ms in zip(lt.node_ids, lt.fwd_ms):
            if ms is not None:
                fwd.setdefault(nid, []).append(ms)
    out = {"overhead_ratio": statistics.median(prof) / statistics.median(plain) if prof and plain else None,
           "step_ms": statistics.median(plain) if plain else None,
           "fwd_ms": {k: statistics.median(v) for k, v in fwd.items()}}
    # telemetry rate and energy per sample (NVML source of this device)
    ticks = [b.samples[0].t for b in tel if b.samples]
    if len(ticks) > 2:
        out["telemetry_hz"] = (len(ticks) - 1) / (ticks[-1] - ticks[0])
    ts, ej = [], []
    for b in tel:
        for s in b.samples:
            if s.source.startswith("nvml") and s.metric == "energy_j":
                ts.append(s.t)
                ej.append(s.value)
    if ej:
        from engine.analysis.energy import energy_per_sample

        e = energy_per_sample(ts, ej, measured)
        out["j_per_sample"] = e["j_per_sample"] if e else None
    else:
        out["j_per_sample"] = None
    return out


def profiler_check(spec, device, mode, precision, batch, threads, reps=10):
    """torch.profiler's kernel time per layer: each layer's call wrapped in record_function, with
    the run's thread count (a one-thread run against an all-core profile compares nothing)."""
    import torch

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _profiler_check(spec, device, mode, precision, batch, reps)
    finally:
        torch.set_num_threads(prev_threads)


def _profiler_check(spec, device, mode, precision, batch, reps):
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    dev = torch.device(device)
    model = engine.build_model(spec).to(dev)
    model.train(mode == "train")
    x = torch.randn(batch, *spec.input.shape, device=dev)
    y = torch.randint(0, spec.input.classes, (batch,), device=dev)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def forward():
        values = {"input": x}
        for s in model.plan:
            with record_function("ls::" + s.node_id):
                values[s.node_id] = getattr(model, s.node_id)(*[values[r] for r in s.inputs])
        return values[model.output_id]

    def step():
        ctx = torch.autocast(dev.type, dtype=dtype) if dtype else torch.autocast(dev.type, enabled=False)
        if mode == "train":
            with ctx:
                loss = torch.nn.functional.cross_entropy(forward(), y)
            loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode(), ctx:
                forward()

    for _ in range(3):
        step()
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()  # note: sync point (outside the measured region)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(reps):
            step()
        if cuda:
            torch.cuda.synchronize()  # note: sync point
    per = {}
    for ev in prof.events():
        if ev.name.startswith("ls::"):
            t = ev.device_time_total if cuda else ev.cpu_time_total
            per.setdefault(ev.name[4:], []).append(t / 1000.0)
    del model
    return {k: sum(v) / reps for k, v in per.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="resnet18 fp32 only")
    ap.add_argument("--out", help="also write the rows as JSON here")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for both the LayerScope run and the profiler (default: all cores but one)")
    ap.add_argument("--sweep-only", action="store_true", help="only the sweep, ceilings and roofline (issue 11)")
    ap.add_argument("--sweep-dir", default=None, help="folder for the sweep's sessions and study.json "
                    "(default: a new temporary folder)")
    ap.add_argument("--layer-energy-only", action="store_true", help="only the per-layer energy section")
    ap.add_argument("--le-window", type=float, default=1.0, help="per-layer energy: shortest window (s)")
    ap.add_argument("--le-repeats", type=int, default=3, help="per-layer energy: windows per layer and pass")
    ap.add_argument("--le-min-updates", type=int, default=5, help="per-layer energy: counter updates per window")
    ap.add_argument("--le-cooldown", type=float, default=0.2, help="per-layer energy: idle seconds between layers")
    ap.add_argument("--le-out", default=None, help="per-layer energy: keep the run's session file here")
    args = ap.parse_args(argv)
    import torch

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("no CUDA device: run with --device cpu for a dry run")
            return 2
        name = torch.cuda.get_device_name(torch.device(args.device))
    else:
        name = "cpu"
    from engine.run.telemetry import telemetry_status

    st = telemetry_status()
    print(f"# gpu_check {datetime.date.today()} on {name}; torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}; nvml: {st.get('nvml', {}).get('reason') or 'available'}")
    threads = args.threads or default_threads()
    print(f"# threads: {threads} for the LayerScope run and for torch.profiler alike")
    if args.layer_energy_only:
        layer_energy_section(args.device, threads, args)
        return 0
    nets = ["resnet18"] if args.quick else ["resnet18", "alexnet"]
    combos = [(n, m, p) for n in nets for m in ("train", "infer")
              for p in (("fp32",) if args.quick else ("fp32", "bf16"))]
    if args.sweep_only:
        combos = []
    rows, worst_over = [], 0.0
    hdr = f"{'net':9} {'mode':5} {'prec':4} {'step_ms':>8} {'overhead':>8} {'layers>=50us':>12} " \
          f"{'within10%':>9} {'worst':>6} {'J/sample':>9} {'tel_hz':>6}"
    print(hdr)
    for net, mode, prec in combos:
        spec = engine.load_preset(net)
        batch = BATCH[net] if args.device != "cpu" else 8
        t0 = time.time()
        lc = loop_check(spec, args.device, mode, prec, batch, args.steps, threads)
        if "error" in lc:
            print(f"{net:9} {mode:5} {prec:4} failed: {lc['error']}")
            rows.append({"net": net, "mode": mode, "precision": prec, "error": lc["error"]})
            continue
        pc = profiler_check(spec, args.device, mode, prec, batch, threads)
        big = [(k, lc["fwd_ms"][k] / v) for k, v in pc.items() if v >= 0.05 and k in lc["fwd_ms"]]
        within = sum(1 for _, r in big if abs(r - 1) <= 0.10)
        worst = max(big, key=lambda kr: abs(kr[1] - 1)) if big else (None, float("nan"))
        worst_over = max(worst_over, lc["overhead_ratio"] or 0)
        jps = lc.get("j_per_sample")
        print(f"{net:9} {mode:5} {prec:4} {lc['step_ms']:8.2f} {lc['overhead_ratio']:8.3f} {len(big):12d} "
              f"{within:9d} {worst[1]:6.2f} {jps if jps is None else round(jps, 4)!s:>9} "
              f"{lc.get('telemetry_hz', float('nan')):6.1f}   ({time.time() - t0:.0f}s)")
        rows.append({"net": net, "mode": mode, "precision": prec, "batch": batch, **{k: v for k, v in lc.items()
                     if k != "fwd_ms"}, "layers_ge_50us": len(big), "within_10pct": within,
                     "worst_layer": worst[0], "worst_ratio": worst[1],
                     "per_layer": {k: {"layerscope_ms": lc["fwd_ms"][k], "profiler_ms": pc[k]} for k, _ in big}})
    extra = sweep_and_ceilings(args, threads)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": name, "date": str(datetime.date.today()),
                                              "rows": rows, **extra}, indent=1, default=str))
    print(f"overhead_ratio_max: {worst_over:.3f}")
    layer_energy_section(args.device, threads, args)
    return 0


# ---- issue 11: a small sweep (precision x channels_last) and the device ceilings ---------------

def sweep_and_ceilings(args, threads) -> dict:
    """resnet18, train, precision x channels_last, one session each (``--sweep-dir``, a study
    folder ``layerscope compare DIR`` reads), compared per sample against fp32 NCHW; then the
    measured ceilings per precision and the roofline of the fp32 run. Returns the JSON parts."""
    import tempfile

    from engine.analysis.compare import compare_runs
    from engine.analysis.roofline import roofline
    from engine.export.common import jsonable
    from engine.run.ceilings import measure_ceilings

    cpu = args.device == "cpu"
    precisions = ("fp32", "bf16") if cpu and args.quick else ("fp32", "bf16", "fp16")
    batch, steps = (8, 3) if cpu else (64, 20)
    folder = Path(args.sweep_dir or tempfile.mkdtemp(prefix="ls-gpu-sweep-"))
    print(f"# sweep: resnet18 train batch {batch}, {steps} steps, {' / '.join(precisions)} x channels_last; "
          f"sessions in {folder}")
    from engine.sweep import run_sweep

    study = run_sweep("resnet18", {"precision": list(precisions), "channels_last": [False, True]},
                      {"mode": "train", "device": args.device, "batch_size": batch, "steps": steps, "warmup": 3,
                       "dataset": "synthetic", "telemetry_hz": 10.0, "cudnn_benchmark": True, "seed": 0,
                       "threads": threads}, folder, resume=False)
    configs = [{"label": c.label, "session": c.session, "status": c.status, "reason": c.reason}
               for c in study.configs]
    for c in study.configs:
        print(f"sweep {c.key}: {c.status}" + (f" ({c.reason})" if c.reason else ""))
    done = [c for c in configs if c["status"] == "done"]
    result = {"sweep_dir": str(folder)}
    if len(done) >= 2:
        c = compare_runs([folder / x["session"] for x in done], labels=[x["label"] for x in done])
        for r, f in zip(c["runs"], c["families"]):
            print(f"{r['label']:22} step_ms_per_sample: {r['step_ms_per_sample']:.4f}  samples_per_s: "
                  f"{r['samples_per_s']:.1f}  j_per_sample: {r['j_per_sample']}  "
                  f"speedup_vs_{c['baseline'].replace(' ', '_')}: "
                  f"{c['runs'][0]['step_ms_per_sample'] / r['step_ms_per_sample']:.2f}")
        result["sweep"] = jsonable(c)
    ceilings = {}
    for prec in precisions:
        try:
            ce = measure_ceilings(args.device, prec, threads if cpu else None)
        except Exception as e:  # a precision the device lacks
            print(f"ceilings {prec}: not measured ({type(e).__name__}: {e})")
            continue
        ceilings[prec] = ce.to_dict()
        print(f"ceiling_peak_gflop_s_{prec}: {ce.peak_flop_s / 1e9:.1f}")
        if ce.vendor and ce.vendor.get(prec):
            print(f"vendor_peak_gflop_s_{prec}: {ce.vendor[prec] / 1e9:.0f} ({ce.vendor['model']}, reference)")
    if ceilings:
        any_c = next(iter(ceilings.values()))
        print(f"ceiling_bandwidth_gb_s: {any_c['bandwidth_bytes_s'] / 1e9:.1f} (main memory "
              f"{any_c['dram_bandwidth_bytes_s'] / 1e9:.1f})")
    result["ceilings"] = ceilings
    if done:
        r = roofline(folder / done[0]["session"])
        bounds = {}
        for lay in r["layers"]:
            for p in (lay["fwd"], lay["bwd"]):
                if p:
                    bounds[p["bound"]] = bounds.get(p["bound"], 0) + 1
        print(f"roofline {done[0]['label']}: {bounds}; above the roof: {r['above_roof'] or 'none'}")
        result["roofline"] = jsonable(r)
    return result
def layer_energy_section(device: str, threads: int, args) -> dict:
    """Per-layer energy by replay (``--layer-energy``) on resnet18 train fp32: a run of the real
    loop (its NVML whole-step J/sample), then each layer replayed alone, forward and forward+backward;
    prints each layer's J/sample with its 95 % interval and the coverage. Without a counter (e.g.
    ``--device cpu`` here) it prints why and no figures. Windows: ``--le-window`` s,
    ``--le-repeats`` each, ``--le-min-updates`` counter updates at least."""
    import functools

    import engine.run.layer_energy as le
    from engine.analysis.layer_energy import layer_energy_summary
    from engine.session import open_session

    cpu = device == "cpu"
    spec = engine.load_preset("lenet5" if cpu and args.quick else "resnet18")
    batch = 8 if cpu else BATCH["resnet18"]
    params = dict(window_s=args.le_window, repeats=args.le_repeats, min_updates=args.le_min_updates,
                  cooldown_s=args.le_cooldown)
    print(f"# layer energy: {spec.name} train fp32 batch {batch} on {device}; windows >= {args.le_window} s and "
          f">= {args.le_min_updates} counter updates, {args.le_repeats} per pass, cooldown {args.le_cooldown} s")
    orig = le.replay_after_run
    le.replay_after_run = functools.partial(orig, **params)  # the run's replay, with this check's windows
    t0 = time.time()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(args.le_out) if args.le_out else Path(tmp) / "le.lsession"
            cfg = RunConfig(net=spec, mode="train", device=device, precision="fp32", batch_size=batch,
                            steps=20 if cpu else 60, warmup=5, profile_every=5, dataset="synthetic",
                            telemetry_hz=10.0, seed=0, threads=threads, layer_energy=True, out=str(out))
            res = Run(cfg, [LiveFeed()]).run()
            if res.status != "completed":
                print(f"layer_energy: run failed: {res.message}")
                return {"error": res.message}
            with open_session(out) as r:
                fig = layer_energy_summary(r)
                run_ms = {x["id"]: (x["fwd_median_ms"], x["bwd_median_ms"]) for x in engine.layer_summary(r)}
    finally:
        le.replay_after_run = orig
    if not fig["available"]:
        print(f"layer_energy: {fig['reason']}")
        return fig
    print(f"layer_energy_counter: {fig['counter']}{' (SIMULATED)' if fig['simulated'] else ''}")
    print(f"layer_energy_idle_w: {fig['idle_w']:.2f} +- {fig['idle_w_uncertainty'] or float('nan'):.2f}")
    print(f"{'node':12} {'fwd J/sample':>13} {'bwd J/sample':>13} {'J/sample':>11} {'+-95%':>10} "
          f"{'replay fwd ms':>13} {'run fwd ms':>10} flags")
    for node, x in fig["layers"].items():
        flags = ",".join(t for t, on in (("short", x["short"]), ("noise", x["within_noise"])) if on)
        run_fwd = (run_ms.get(node) or (None, None))[0]

        def num(v, w, d=5):
            return f"{v:{w}.{d}f}" if v is not None else f"{'-':>{w}}"
        print(f"{node:12} {num(x['fwd_j_per_sample'], 13)} {num(x['bwd_j_per_sample'], 13)} "
              f"{num(x['j_per_sample'], 11)} {num(x['j_uncertainty'], 10)} {num(x['fwd_rep_ms'], 13, 3)} "
              f"{num(run_fwd, 10, 3)} {flags}")
    for node, why in fig["errors"].items():
        print(f"{node:12} not measured: {why}")
    print(f"layer_energy_sum_j_per_sample: {fig['sum_j_per_sample']:.5f} +- {fig['sum_uncertainty'] or float('nan'):.5f}")
    print(f"layer_energy_run_j_per_sample: {fig['run_j_per_sample']}")
    print(f"layer_energy_coverage: {fig['coverage']}")
    print(f"layer_energy_coverage_above_idle: {fig['coverage_above_idle']}")
    print(f"layer_energy_seconds: {time.time() - t0:.0f}")
    return fig


if __name__ == "__main__":
    sys.exit(main())
