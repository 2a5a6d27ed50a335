"""Sub-commands that run and read sessions: ``profile``, ``export``, ``summary``, ``compare``,
``devices``. Registered into ``engine.cli`` (exit codes: 0 ok, 1 failed run, 2 bad input,
130 interrupted)."""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

from engine.cli.main import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, print_table
from engine.errors import LayerScopeError
from engine.run.records import EvalRecord, LogRecord, RunEnded, StepRecord
from engine.analysis.summary import fmt_bytes

EXIT_INTERRUPTED = 130


# -- formatting ---------------------------------------------------------------------------------

def _f(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.{max(digits - 1 - int(math.log10(a)), 0)}f}"
    return f"{v:.{digits}g}"


def _duration(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


# -- profile ------------------------------------------------------------------------------------

class Progress:
    """A record sink printing progress: one carriage-return line on a terminal (redrawn at most
    ~8 times a second), plain lines every ``every_s`` seconds otherwise. Log warnings/errors and
    evaluations are printed as they come."""

    def __init__(self, run=None, out=None, tty: bool | None = None, every_s: float = 5.0, quiet: bool = False):
        self.run = run
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.every_s = every_s
        self.quiet = quiet
        self._lock = threading.Lock()
        self._last_draw = 0.0
        self._first: tuple[float, int] | None = None
        self._line_open = False
        self._last: StepRecord | None = None

    def __call__(self, rec) -> None:
        if isinstance(rec, StepRecord):
            if rec.phase != "test":
                self._step(rec)
        elif isinstance(rec, LogRecord):
            if rec.level != "info" or not self.quiet:
                self._print(f"{rec.level}: {rec.message}" if rec.level != "info" else rec.message)
        elif isinstance(rec, EvalRecord):
            ep = f"epoch {rec.epoch}: " if rec.epoch is not None else ""
            self._print(f"{ep}{rec.split} loss {rec.loss:.4f}, accuracy {rec.accuracy:.4f} ({rec.samples} samples)")
        elif isinstance(rec, RunEnded):
            with self._lock:
                if self._last is not None and not self.quiet:
                    self._draw(self._last, final=True)
                self._end_line()

    def _print(self, text: str) -> None:
        with self._lock:
            self._end_line()
            print(text, file=self.out, flush=True)

    def _end_line(self) -> None:
        if self._line_open:
            print(file=self.out, flush=True)
            self._line_open = False

    def _step(self, rec: StepRecord) -> None:
        now = time.monotonic()
        with self._lock:
            self._last = rec
            if self._first is None:
                self._first = (now, self._done())
            if self.quiet:
                return
            if now - self._last_draw >= (0.125 if self.tty else self.every_s):
                self._last_draw = now
                self._draw(rec)

    def _done(self) -> int:
        return self.run.progress[0] if self.run is not None else 0

    def _draw(self, rec: StepRecord, final: bool = False) -> None:
        done, total = self.run.progress if self.run is not None else (rec.step + 1, 0)
        done = max(done, 1)
        rate = None
        if self._first is not None:
            dt = time.monotonic() - self._first[0]
            if dt >= 0.5 and done > self._first[1]:  # a rate from a blink of time is noise
                rate = (done - self._first[1]) / dt
        eta = (total - done) / rate if rate and total else None
        parts = [f"step {done}/{total}" if total else f"step {done}"]
        if rec.epoch is not None:
            parts.append(f"epoch {rec.epoch}")
        parts.append(f"{_f(rate)} steps/s" if rate else "- steps/s")
        if rec.loss is not None:
            parts.append(f"loss {rec.loss:.4f}")
        if rec.warmup:
            parts.append("warm-up")
        if not final:
            parts.append(f"ETA {_duration(eta)}")
        text = "  ".join(parts)
        if self.tty:
            bar = ""
            if total:
                n = 24
                k = int(n * min(done, total) / total)
                bar = "[" + "#" * k + "." * (n - k) + "] "
            self.out.write("\r" + bar + text + " " * 4)
            self.out.flush()
            self._line_open = True
        else:
            print(text, file=self.out, flush=True)


def _default_out(net: str, device: str) -> Path:
    stem = Path(net).stem if (os.sep in net or net.endswith(".json")) else net
    dev = device.replace(":", "")
    return Path("runs") / f"{stem}-{dev}-{time.strftime('%Y%m%d-%H%M%S')}.lsession"


def _check_out(path: Path) -> None:
    from engine.session.store import _SQLITE_MAGIC

    if path.is_dir():
        raise LayerScopeError(f"--out {path} is a folder; give a file name such as {path / 'run.lsession'}")
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            if f.read(16) != _SQLITE_MAGIC:
                raise LayerScopeError(f"--out {path} exists and is not a session file; choose another name")
    parent = path.parent if str(path.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise LayerScopeError(f"cannot write the session file {path}: {probe} is not a writable folder")


def _check_dataset(name: str) -> None:
    from engine.data import BUILTIN, DOWNLOADABLE, canonical_name

    if canonical_name(name) is None and not Path(name).expanduser().exists():
        if any(sep in name for sep in ("/", "\\", "~")) or name.startswith("."):
            raise LayerScopeError(f"--dataset: no such folder or file: {name}")
        raise LayerScopeError(f"--dataset: unknown dataset '{name}'; built in: {', '.join(BUILTIN)}; "
                              f"downloadable: {', '.join(DOWNLOADABLE)}; or give a folder path")


def _download(name: str, root) -> None:
    """Fetch a downloadable dataset into the cache (checksums verified) unless it is there already."""
    from engine.data import DOWNLOADABLE, canonical_name, download, is_downloaded

    canon = canonical_name(name)
    if canon not in DOWNLOADABLE:
        raise LayerScopeError(f"--download: only {', '.join(DOWNLOADABLE)} can be downloaded, not '{name}'")
    if is_downloaded(canon, root):
        return
    tty = sys.stderr.isatty()
    last = [0.0]

    def progress(done, total):
        now = time.monotonic()
        if now - last[0] < (0.2 if tty else 5.0) and done != total:
            return
        last[0] = now
        pct = f"{100 * done / total:5.1f}%" if total else ""
        line = f"downloading {canon}: {done / 1e6:.1f} MB {pct}"
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    path = download(canon, root, progress=progress)  # DatasetError (one line) -> exit 2
    print(("\n" if tty else "") + f"downloaded {canon} to {path}", file=sys.stderr)


def cmd_profile(args) -> int:
    from engine.net.presets import resolve_net

    spec = resolve_net(args.net)  # LayerScopeError -> exit 2
    from engine.net.graph import analyze

    analyze(spec)  # every problem of the net, before torch spends time on it
    from engine.run.loop import Run, RunConfig

    cfg = RunConfig(net=spec, mode=args.mode, device=args.device, precision=args.precision,
                    batch_size=args.batch_size, steps=None if args.epochs else args.steps,
                    epochs=args.epochs, warmup=args.warmup, dataset=args.dataset, data_root=args.data_root,
                    profile_every=args.profile_every, feature_node=args.feature_node, optimizer=args.optimizer,
                    lr=args.lr, momentum=args.momentum, seed=args.seed, threads=args.threads,
                    channels_last=args.channels_last, cudnn_benchmark=args.cudnn_benchmark,
                    telemetry_hz=args.telemetry_hz, save_checkpoint=args.save_checkpoint,
                    checkpoint_every=args.checkpoint_every, load_checkpoint=args.load_checkpoint)
    problems = cfg.problems()
    if problems:
        raise LayerScopeError(problems)
    _check_dataset(args.dataset)
    if args.download:
        _download(args.dataset, args.data_root)
    if args.load_checkpoint and not Path(args.load_checkpoint).expanduser().exists():
        raise LayerScopeError(f"--load-checkpoint: no such file or folder: {args.load_checkpoint}")
    from engine.run.devices import resolve_device

    device = resolve_device(args.device)  # a device that does not exist is bad input
    dev = f"cuda:{device.index or 0}" if device.type == "cuda" else device.type
    out = Path(args.out) if args.out else _default_out(args.net, dev)
    _check_out(out)
    cfg.out = str(out)
    progress = Progress(quiet=args.quiet)
    run = Run(cfg, sinks=[progress])
    progress.run = run  # for the step totals (warm-up included) in the progress line
    interrupted = []

    def on_signal(signum, frame):
        if interrupted:  # a second Ctrl-C: leave at once (the session holds what was committed)
            raise KeyboardInterrupt
        interrupted.append(signum)
        run.stop()

    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, on_signal)
    try:
        result = run.run()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if result.session_path and Path(result.session_path).exists():
        print(f"session: {result.session_path}")
        _print_brief(result.session_path)
    err = result.extra.get("session_error")
    if err:
        print(f"warning: {err}", file=sys.stderr)
    if result.status == "failed":
        print(f"run failed: {result.message}", file=sys.stderr)
        return EXIT_FAILED
    if result.status == "stopped":
        print(f"run stopped after {result.steps} steps", file=sys.stderr)
        return EXIT_INTERRUPTED if interrupted else EXIT_FAILED
    if args.epochs and result.extra.get("test_accuracy") is not None:
        print(f"test_accuracy: {result.extra['test_accuracy']:.4f}")
    return EXIT_OK


def _print_brief(path) -> None:
    from engine.session.store import open_session
    from engine.analysis.summary import run_summary

    try:
        with open_session(path) as r:
            s = run_summary(r)
    except LayerScopeError as e:
        print(f"warning: {e}", file=sys.stderr)
        return
    line = (f"{s['steps']} steps ({s['warmup_steps']} warm-up, {s['profiled_steps']} profiled), "
            f"median step {_f(s['step_ms_median'])} ms, {_f(s['samples_per_s'])} samples/s")
    if s["j_per_sample"] is not None:
        line += f", {_f(s['j_per_sample'])} J/sample ({s['energy_source']})"
    print(line)


# -- export / summary / compare ------------------------------------------------------------------

def _open(path):
    from engine.session.store import open_session

    return open_session(path)  # SessionError (a LayerScopeError) -> one line, exit 2


def _default_export_path(session: Path, fmt: str) -> Path:
    suffix = {"trace": ".trace.json", "csv": ".csv", "html": ".html", "json": ".summary.json"}[fmt]
    name = session.name[: -len(session.suffix)] if session.suffix else session.name
    return session.with_name(name + suffix)


def _parse_range(text: str | None) -> tuple[int | None, int | None]:
    if not text:
        return None, None
    a, sep, b = text.partition(":")
    try:
        lo = int(a) if a.strip() else None
        hi = int(b) if sep and b.strip() else (lo if not sep else None)
    except ValueError:
        raise LayerScopeError(f"--steps must look like FROM:TO (e.g. 100:200), not {text!r}") from None
    return lo, hi


def cmd_export(args) -> int:
    from engine.export import formats as ex

    session = Path(args.session)
    lo, hi = _parse_range(args.steps)
    out = Path(args.out) if args.out else _default_export_path(session, args.format)
    with _open(session) as r:
        try:
            if args.format == "trace":
                obj = ex.trace_events(r, lo, hi, max_steps=args.max_steps or None)
                ex._write_text(out, json.dumps(obj, separators=(",", ":")))
                meta = obj["otherData"]
                if meta["profiled_steps_in_trace"] < meta["profiled_steps_total"]:
                    print(f"note: the trace holds {meta['profiled_steps_in_trace']} of {meta['profiled_steps_total']} "
                          f"profiled steps (--max-steps 0 for all, --steps FROM:TO to choose)", file=sys.stderr)
            elif args.format == "csv":
                ex.export_csv(r, out)
            elif args.format == "html":
                ex.export_html(r, out)
            else:
                ex.export_json(r, out)
        except OSError as e:
            raise LayerScopeError(f"cannot write {out}: {e.strerror or e}") from None
    if r.status == "running":
        print(f"note: {session} has no end record (still running, or its process was killed); "
              "exported what it holds", file=sys.stderr)
    print(f"wrote {out}")
    return EXIT_OK


def cmd_summary(args) -> int:
    from engine.analysis.summary import summary

    with _open(args.session) as r:
        s = summary(r)
        info = r.info
    if args.json:
        from engine.export.formats import _jsonable

        print(json.dumps(_jsonable(s), indent=1))
        return EXIT_OK
    run, rows = s["run"], s["layers"]
    train = any(x["bwd_median_ms"] for x in rows)
    head = ["node", "kind", "output", "params", "MFLOPs", "fwd ms", "fwd p95"]
    if train:
        head += ["bwd ms", "bwd p95"]
    head += ["share", "GFLOP/s", "act"]
    table = []
    for x in rows:
        r = [x["id"], x["kind"] or "", "x".join(map(str, x["out_shape"] or [])), _f(x["params"]),
             _f(x["flops"] / 1e6 if x["flops"] is not None else None), _f(x["fwd_median_ms"]), _f(x["fwd_p95_ms"])]
        if train:
            r += [_f(x["bwd_median_ms"]), _f(x["bwd_p95_ms"])]
        r += [f"{x['share'] * 100:.1f}%" if x["share"] is not None else "-", _f(x["total_gflops"]),
              fmt_bytes(x["act_bytes"])]
        table.append(r)
    dev = info.device or {}
    print(f"{run['net'] or 'net'}: {run['mode']} on {dev.get('name') or run['device']} ({run['device']}), "
          f"{run['precision']}, batch {run['batch_size']}")
    status = run["status"]
    if status == "running":
        status += " (no end recorded: the run is still going, or its process was killed)"
    elif run["message"]:
        status += f" ({run['message']})"
    print(f"status: {status}\n")
    print_table(table, head, right=set(range(3, len(head))))
    print()
    print(f"steps: {run['steps']} ({run['warmup_steps']} warm-up, excluded; {run['profiled_steps']} profiled)")
    print(f"step time: median {_f(run['step_ms_median'])} ms, p95 {_f(run['step_ms_p95'])} ms; "
          f"layers: forward {_f(run['layers_fwd_ms_median'])} ms"
          + (f", backward {_f(run['layers_bwd_ms_median'])} ms" if run["layers_bwd_ms_median"] else ""))
    print(f"throughput: {_f(run['samples_per_s'])} samples/s")
    if run["j_per_sample"] is not None:
        e = run["energy"][run["energy_source"]]
        print(f"energy: {_f(run['j_per_sample'])} J/sample, {_f(e['j_per_step'])} J/step, "
              f"{_f(e['avg_power_w'])} W average ({run['energy_source']}, {_f(e['seconds'])} s of steady steps)")
    else:
        print(f"energy: not measured. {run['power_note'] or ''}".rstrip())
    mem = [f"peak allocated {fmt_bytes(run['peak_mem_bytes'])}" if run["peak_mem_bytes"] else None,
           f"GPU used max {fmt_bytes(run['gpu_mem_max_bytes'])}" if run["gpu_mem_max_bytes"] else None,
           f"process RSS max {fmt_bytes(run['rss_max_bytes'])}" if run["rss_max_bytes"] else None]
    if any(mem):
        print("memory: " + ", ".join(m for m in mem if m))
    if run["loss"] is not None:
        print(f"final loss {run['loss']:.4f}" + (f", accuracy {run['accuracy']:.4f}" if run["accuracy"] is not None else ""))
    if run["test_accuracy"] is not None:
        print(f"test_accuracy: {run['test_accuracy']:.4f}")
    return EXIT_OK


def cmd_compare(args) -> int:
    from engine.export.formats import _jsonable, compare

    with _open(args.a) as a, _open(args.b) as b:
        c = compare(a, b)
    if args.json:
        print(json.dumps(_jsonable(c), indent=1))
        return EXIT_OK

    def who(x):
        return f"{x['net']} {x['mode']} on {x['device_name'] or x['device']} ({x['precision']}, batch {x['batch_size']})"

    print(f"A: {args.a}: {who(c['a'])}")
    print(f"B: {args.b}: {who(c['b'])}\n")
    rows = []
    for x in c["layers"]:
        a_ms = None if x["a_fwd_ms"] is None else x["a_fwd_ms"] + (x["a_bwd_ms"] or 0.0)
        b_ms = None if x["b_fwd_ms"] is None else x["b_fwd_ms"] + (x["b_bwd_ms"] or 0.0)
        rows.append([x["id"], x["kind"] or "", _f(a_ms), _f(b_ms),
                     f"{x['speedup']:.2f}x" if x["speedup"] is not None else ("only in A" if not x["in_b"]
                                                                             else "only in B" if not x["in_a"] else "-")])
    print_table(rows, ["node", "kind", "A ms", "B ms", "speed-up"], right={2, 3, 4})
    print("\n(ms: median forward + backward per step; speed-up = A / B, above 1 means B is faster)")
    print(f"step time speed-up: {_f(c['step_speedup'])}x")
    print(f"throughput ratio (B / A): {_f(c['throughput_ratio'])}")
    if c["energy_per_sample_ratio"] is not None:
        print(f"energy per sample ratio (B / A): {_f(c['energy_per_sample_ratio'])} "
              f"({_f(c['a']['j_per_sample'])} J vs {_f(c['b']['j_per_sample'])} J)")
    if c["energy_note"]:
        print(f"energy: {c['energy_note']}")
    return EXIT_OK


# -- devices ------------------------------------------------------------------------------------

def cmd_devices(args) -> int:
    from engine.run.devices import list_devices, resolve_device
    from engine.run.telemetry import Telemetry, telemetry_status

    machine = telemetry_status()
    devices = list_devices()
    per_device = {}
    for d in devices:
        st = Telemetry(d.id).status()
        if d.kind != "cuda":
            st.pop("nvml", None)  # a CPU or MPS run never reads NVML
        per_device[d.id] = st
    no_cuda = None
    if not any(d.kind == "cuda" for d in devices):
        try:
            resolve_device("cuda")
        except LayerScopeError as e:
            no_cuda = str(e)
    if args.json:
        print(json.dumps({"devices": [dict(d.to_dict(), telemetry=per_device[d.id]) for d in devices],
                          "telemetry": machine, "cuda": no_cuda}, indent=1))
        return EXIT_OK
    rows = []
    for d in devices:
        tel = ", ".join(f"{k.upper() if k != 'psutil' else k}" for k, v in per_device[d.id].items() if v["available"])
        rows.append([d.id, d.name, fmt_bytes(d.memory_total), fmt_bytes(d.memory_free), tel or "none"])
    print_table(rows, ["device", "name", "memory", "free", "telemetry"], right={2, 3})
    if no_cuda:
        print(f"\nno CUDA device: {no_cuda}")
    print("\ntelemetry sources:")
    names = {"nvml": "NVML (GPU power, energy, memory, clocks)", "psutil": "psutil (CPU, memory)",
             "rapl": "RAPL (CPU package energy)"}
    for key in ("nvml", "psutil", "rapl"):
        st = machine.get(key, {})
        mark = "yes" if st.get("available") else "no "
        print(f"  {mark}  {names[key]}: {st.get('reason', '')}")
    for d in devices:
        if d.kind == "cuda":
            st = per_device[d.id].get("nvml", {})
            if st and st.get("reason") and st.get("available"):
                print(f"  {d.id}: {st['reason']}")
    return EXIT_OK


# -- registration -------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {v}")
    return v


def register(sub) -> None:
    """Add profile / export / summary / compare / devices to the ``layerscope`` parser."""
    s = sub.add_parser("profile", help="run a net with per-layer profiling and record a session file")
    s.add_argument("net", help="preset name (lenet5, alexnet-article, alexnet, vgg11, resnet18) or net JSON path")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    s.add_argument("--mode", choices=("train", "infer", "benchmark"), default="train")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--steps", type=_positive_int, default=50, help="measured steps (default 50)")
    g.add_argument("--epochs", type=_positive_int, default=None, help="passes over the train split, each "
                   "followed by a test evaluation (instead of --steps)")
    s.add_argument("--batch-size", type=_positive_int, default=32)
    s.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    s.add_argument("--dataset", default="synthetic", help="synthetic, digits, mnist, fashion-mnist, cifar10 or a folder")
    s.add_argument("--data-root", default=None, help="folder of downloaded datasets")
    s.add_argument("--download", action="store_true",
                   help="download mnist / fashion-mnist / cifar10 first if missing (checksums verified)")
    s.add_argument("--profile-every", type=_nonneg_int, default=1, help="profile one step in K (0: never)")
    s.add_argument("--warmup", type=_nonneg_int, default=3, help="warm-up steps, excluded from statistics")
    s.add_argument("--lr", type=float, default=0.01)
    s.add_argument("--momentum", type=float, default=0.9)
    s.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    s.add_argument("--seed", type=_nonneg_int, default=0)
    s.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (default: all cores but one)")
    s.add_argument("--channels-last", action="store_true")
    s.add_argument("--cudnn-benchmark", action="store_true")
    s.add_argument("--feature-node", default=None, help="node whose feature maps are recorded")
    s.add_argument("--telemetry-hz", type=float, default=10.0, help="telemetry rate (0: off; default 10)")
    s.add_argument("--out", default=None, help="session file (default runs/<net>-<device>-<time>.lsession)")
    s.add_argument("--save-checkpoint", default=None, metavar="DIR", help="save weights into DIR at the end")
    s.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N",
                   help="also save every N steps (with --save-checkpoint)")
    s.add_argument("--load-checkpoint", default=None, metavar="PATH", help="start from these weights "
                   "(a file, or a folder's latest)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=cmd_profile)

    s = sub.add_parser("export", help="export a session: Chrome trace, CSV, HTML report or JSON summary")
    s.add_argument("session")
    s.add_argument("--format", choices=("trace", "csv", "html", "json"), required=True)
    s.add_argument("--out", default=None, help="output file (default: next to the session)")
    s.add_argument("--steps", default=None, metavar="FROM:TO", help="trace: profiled steps to include")
    s.add_argument("--max-steps", type=_nonneg_int, default=2000, help="trace: at most this many profiled "
                   "steps (0: all; default 2000)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("summary", help="per-layer table and run totals of a session")
    s.add_argument("session")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("compare", help="per-layer speed-up and energy ratio of session B against A")
    s.add_argument("a")
    s.add_argument("b")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("devices", help="devices and which telemetry each has (with reasons when absent)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_devices)
