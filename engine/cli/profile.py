"""``layerscope profile``: run a net with per-layer profiling and record a session file.

Its flags are generated from ``RunConfig``'s declared settings (name, type, default, bounds,
choices, help); only what is the command line's own - the net argument, ``--out`` with its
default file name, ``--download`` and ``-q`` - is written here.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from engine.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, whole_number
from engine.cli.output import DownloadProgress, Progress, fmt_num
from engine.errors import LayerScopeError
from engine.net.presets import is_import_source
from engine.paths import runs_dir
from engine.run.config import BOOL, CHOICE, FLOAT, INT, RunConfig


def _default_out(net: str, device: str) -> Path:
    """``<net>-<device>-<YYYYmmdd-HHMMSS>.lsession`` in the runs folder (not created here); an
    imported model's net is named by its factory or torchvision name (``source_stem``)."""
    if is_import_source(net):
        from engine.net.imported import source_stem

        stem = source_stem(net)
    else:
        stem = Path(net).stem if (os.sep in net or net.endswith(".json")) else net
    dev = device.replace(":", "")
    return runs_dir() / f"{stem}-{dev}-{time.strftime('%Y%m%d-%H%M%S')}.lsession"


def _claim_default(base: Path):
    """Claim a fresh default session name, created with O_EXCL: runs started in the same second
    get ``-2``, ``-3`` ... appended instead of sharing (and overwriting) one file."""
    from engine.session.lock import claim_session

    stem = base.name[: -len(".lsession")]
    for n in range(1, 10_000):
        path = base if n == 1 else base.with_name(f"{stem}-{n}.lsession")
        try:
            return path, claim_session(path, exclusive=True)
        except FileExistsError:
            continue
    raise LayerScopeError(f"cannot find a free session name like {base} in {base.parent}")


def _check_out(path: Path) -> None:
    if path.is_dir():
        raise LayerScopeError(f"--out {path} is a folder; give a file name such as {path / 'run.lsession'}")
    parent = path.parent if str(path.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise LayerScopeError(f"cannot write the session file {path}: {probe} is not a writable folder")


def _check_save_checkpoint(folder: str) -> None:
    from engine.net.checkpoint import check_checkpoint_folder

    try:
        check_checkpoint_folder(folder)
    except LayerScopeError as e:
        raise LayerScopeError(f"--save-checkpoint: {e}") from None


def _check_dataset(name: str) -> None:
    from engine.data import BUILTIN, DOWNLOADABLE, canonical_name

    try:
        there = Path(name).expanduser().exists()
    except OSError as e:  # e.g. a folder above it that may not be entered
        raise LayerScopeError(f"--dataset: cannot reach {name}: {e.strerror or e}") from None
    if canonical_name(name) is None and not there:
        if any(sep in name for sep in ("/", "\\", "~")) or name.startswith("."):
            raise LayerScopeError(f"--dataset: no such folder or file: {name}")
        raise LayerScopeError(f"--dataset: unknown dataset '{name}'; built in: {', '.join(BUILTIN)}; "
                              f"downloadable: {', '.join(DOWNLOADABLE)}; or give a folder path")


def _open_dataset(cfg: RunConfig):
    """Open the run's dataset now (every file read, every image decoded), so that a bad one is bad
    input - one line, exit 2 - before the run starts rather than a failed run. The caller holds the
    splits through the run: while they are held, the run's own ``get_dataset`` reuses them."""
    if cfg.mode == "benchmark":  # one random batch; no dataset is read
        return None
    from engine.data import get_dataset

    return get_dataset(cfg.dataset, cfg.net.input, seed=cfg.seed, root=cfg.data_root,
                       skip_bad_images=cfg.skip_bad_images)  # DatasetError -> exit 2


def _download(name: str, root) -> None:
    """Fetch a downloadable dataset into the cache (checksums verified) unless it is there already."""
    from engine.data import DOWNLOADABLE, canonical_name, download, is_downloaded

    canon = canonical_name(name)
    if canon not in DOWNLOADABLE:
        raise LayerScopeError(f"--download: only {', '.join(DOWNLOADABLE)} can be downloaded, not '{name}'")
    if is_downloaded(canon, root):
        return
    progress = DownloadProgress(canon)
    path = download(canon, root, progress=progress)  # DatasetError (one line) -> exit 2
    progress.finished(path)


def config_from_args(args, spec) -> RunConfig:
    """The RunConfig the parsed flags describe (every flagged setting; ``--epochs`` wins over ``--steps``)."""
    kw = {s.name: getattr(args, s.name) for s in RunConfig.settings() if s.flag}
    if kw.get("epochs"):
        kw["steps"] = None
    return RunConfig(net=spec, **kw)


def input_shape(text: str) -> tuple[int, int, int]:
    """An argparse ``type`` for ``C,H,W`` (three whole numbers >= 1)."""
    import argparse

    parts = text.replace("x", ",").split(",")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 3 or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected C,H,W (three whole numbers >= 1, e.g. 3,32,32), got {text!r}")
    return vals

input_shape.__name__ = "input shape"


def import_from_args(args):
    """The ImportedNet ``args.net`` names (``--input-shape`` needed, ``--classes`` optional);
    LayerScopeError (one line) when it cannot be imported. Executes FILE.py."""
    if args.input_shape is None:
        raise LayerScopeError(f"--input-shape C,H,W is needed to import {args.net} (e.g. --input-shape 3,32,32)")
    from engine.net.imported import import_model

    return import_model(args.net, args.input_shape, args.classes)


def net_from_args(args, buildable: bool = False):
    """(spec, imported or None) for the net argument: a preset, a net file or a model to import.
    ``buildable``: a net file holding an imported model's opaque nodes is bad input too (profile
    builds the net; validate only analyses it)."""
    if is_import_source(args.net):
        imported = import_from_args(args)
        return imported.spec, imported
    from engine.net.presets import not_a_net, resolve_net

    why = not_a_net(args.net)  # res.py without :FACTORY, a session: said before the flags' checks
    if why:
        raise LayerScopeError(why)
    if args.input_shape is not None or args.classes is not None:
        raise LayerScopeError("--input-shape and --classes are for a model to import (FILE.py:FACTORY or "
                              "torchvision:NAME); a net file or preset declares its input")
    return resolve_net(args.net, buildable=buildable), None  # LayerScopeError -> exit 2


def cmd_profile(args) -> int:
    """Run the net, printing progress; exit 0 completed, 1 failed or stopped, 130 interrupted."""
    if args.allow_control and not args.serve:
        raise LayerScopeError("--allow-control is for a served run: give --serve HOST:PORT too")
    if args.serve:
        from engine.remote.wire import parse_address

        parse_address(args.serve)  # a malformed address is bad input, before anything is claimed
        if not args.serve_linger >= 0:
            raise LayerScopeError(f"--serve-linger must be 0 or more seconds, not {args.serve_linger}")
    spec, imported = net_from_args(args, buildable=True)
    from engine.net.model import analyze

    analyze(spec)  # every problem of the net, before torch spends time on it
    cfg = config_from_args(args, spec)
    if imported is not None:
        cfg.model = args.net
    if getattr(args, "dry_run", False):  # the memory estimate and the largest batch, then exit
        return _dry_run(cfg)
    problems = cfg.problems()
    if problems:
        raise LayerScopeError(problems)
    _check_dataset(args.dataset)
    if args.download:
        _download(args.dataset, args.data_root)
    dataset = _open_dataset(cfg)  # noqa: F841  (held until the run has opened it too)
    if args.load_checkpoint:
        from engine.net.checkpoint import load_checkpoint

        if not Path(args.load_checkpoint).expanduser().exists():
            raise LayerScopeError(f"--load-checkpoint: no such file or folder: {args.load_checkpoint}")
        try:  # every way a checkpoint can be wrong is bad input (exit 2), found before the run
            if imported is not None:
                load_checkpoint(args.load_checkpoint, model=imported.model)
            else:
                load_checkpoint(args.load_checkpoint, spec)
        except LayerScopeError as e:
            raise LayerScopeError(f"--load-checkpoint: {e}") from None
    if args.save_checkpoint:
        _check_save_checkpoint(args.save_checkpoint)
    from engine.run.devices import resolve_device

    device = resolve_device(args.device)  # a device that does not exist is bad input
    dev = f"cuda:{device.index or 0}" if device.type == "cuda" else device.type
    ranks = _torchrun_world()
    if cfg.nproc > 1 or ranks is not None:
        return _profile_ranks(cfg, args, dev, ranks)
    if args.out:
        from engine.session.lock import claim_session

        out = Path(args.out).expanduser()
        _check_out(out)
        # taken now, held until the run's writer closes: a second writer, a finished session
        # (without --force) or a foreign file is refused here, before the run starts
        claim = claim_session(out, force=args.force)
    else:
        out, claim = _claim_default(_default_out(args.net, dev))
    try:
        return _run(cfg, args, out, claim)
    finally:
        claim.release()  # a no-op once the writer has closed


def _dry_run(cfg) -> int:
    """Print the measured memory estimate and the largest batch that fits; exit 0 when the run
    fits (or free memory is unknown), 2 when it would be refused. Other bad settings: exit 2 first."""
    from engine.run.limits import fit_report

    cfg.out = None
    others = [p for p in cfg.problems() if "needs ≈" not in p]
    if others:
        raise LayerScopeError(others)
    lines, fits = fit_report(cfg)
    print("\n".join(lines))
    return EXIT_BAD_INPUT if fits is False else EXIT_OK


def _run(cfg, args, out: Path, claim) -> int:
    from engine.run.loop import Run

    cfg.out = str(out)
    progress = Progress(quiet=args.quiet)

    server = _start_server(args)
    run = Run(cfg, sinks=[progress] + ([server] if server else []))  # a session that cannot be written fails the run
    if server:
        server.control = run
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
        if server:
            _finish_server(server, args.serve_linger)
    if result.session_path and Path(result.session_path).exists():
        print(f"session: {result.session_path}")
        _print_brief(result.session_path)
        if cfg.layer_energy:
            _print_layer_energy(result.session_path)
    err = claim.error or result.extra.get("session_error")
    if err:  # a run whose record is incomplete has failed, whatever the loop thought
        print(f"run failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    if result.status == "failed":
        print(f"run failed: {result.message}", file=sys.stderr)
        return EXIT_FAILED
    if result.status == "stopped":
        print(f"run stopped after {result.steps} steps", file=sys.stderr)
        return EXIT_INTERRUPTED if interrupted else EXIT_FAILED
    if args.epochs and result.extra.get("test_accuracy") is not None:
        print(f"test_accuracy: {result.extra['test_accuracy']:.4f}")
    return EXIT_OK


def _torchrun_world() -> tuple[int, int] | None:
    """(rank, world size) when started by ``torchrun`` with more than one process, else None."""
    try:
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    except ValueError:
        raise LayerScopeError("WORLD_SIZE and RANK must be whole numbers (as torchrun sets them)") from None
    return (rank, world) if world > 1 else None


def _profile_ranks(cfg, args, dev: str, ranks) -> int:
    """A data-parallel run: N ranks (spawned here, or this process is one rank under torchrun), each
    recording ``DIR/rank<R>.lsession``, and ``DIR/study.json``."""
    from engine.cli import ddp as distributed

    if args.serve:
        raise LayerScopeError("--serve shows one process's run; it cannot be combined with --nproc / torchrun yet")
    if ranks is not None and not args.out:
        raise LayerScopeError("under torchrun give --out DIR, so that every rank writes into the same folder")
    nproc = ranks[1] if ranks is not None else cfg.nproc
    cfg.nproc = nproc
    out = Path(args.out).expanduser() if args.out else \
        runs_dir() / f"{Path(args.net).stem}-{dev}-ddp{nproc}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and not out.is_dir():
        raise LayerScopeError(f"--out {out}: a data-parallel run writes a folder (one session per rank); "
                              "this is a file")
    if out.suffix == ".lsession":
        raise LayerScopeError(f"--out {out}: a data-parallel run writes a folder (one session per rank and "
                              "study.json): give a folder name, not a .lsession file")
    cores = os.cpu_count() or 1
    if ranks is None and nproc > cores:
        print(f"warning: {nproc} ranks on {cores} cores: the ranks share cores (1 thread each), so the "
              "times measure the contention too", file=sys.stderr)
    held = sorted(p.name for p in out.glob("rank*.lsession")) + (["study.json"] if (out / "study.json").exists() else [])
    if held and not args.force and (ranks is None or ranks[0] == 0):
        raise LayerScopeError(f"--out {out} already holds {', '.join(held[:3])}; give --force to replace them")
    if args.force and (ranks is None or ranks[0] == 0):
        for name in held:
            if name.endswith(".lsession"):
                from engine.session.lock import claim_session

                claim_session(out / name, force=True).release()  # only sessions are emptied, never other files
    if ranks is not None:
        res = distributed.run_rank(ranks[0], nproc, None, cfg.to_dict(), str(out), args.quiet, sys.argv)
        return EXIT_OK if res["status"] == "completed" else EXIT_FAILED
    results = distributed.launch(cfg, nproc, out, quiet=args.quiet, command=sys.argv)
    print(f"study: {out / 'study.json'}")
    failed = {r: v for r, v in results.items() if v["status"] != "completed"}
    for r, v in sorted(failed.items()):
        print(f"rank {r} {v['status']}: {v['message']}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _start_server(args):
    """The RecordServer for ``--serve`` (None without it); prints where and the token on stderr."""
    if not args.serve:
        return None
    from engine.remote.server import start_server

    server = start_server(args.serve, allow_control=args.allow_control)  # LayerScopeError -> exit 2
    how = "viewers may pause and stop it" if args.allow_control else "view only"
    local = server.host in ("127.0.0.1", "::1", "localhost")
    if not local:
        print(f"warning: serving on {server.host} exposes the run to every network that reaches this machine, "
              "and the token and records travel unencrypted: prefer 127.0.0.1 and an SSH tunnel "
              "(docs/user-guide.md, Watching a run on another machine)", file=sys.stderr)
    connect = f"127.0.0.1:{server.port}" if server.host in ("0.0.0.0", "::", "") else server.address
    print(f"serving the run on {server.address} ({how}); token {server.token}\n"
          f"  watch it: layerscope watch {connect} --token {server.token}   "
          "(or File > Connect to run... in the app)", file=sys.stderr, flush=True)
    return server


def _finish_server(server, linger: float) -> None:
    """Give connected viewers up to ``linger`` seconds to receive the end of the run, then close."""
    try:
        if not server.wait_viewers(linger):
            print(f"note: a viewer had not received the whole run after {linger:g} s; the session file has it",
                  file=sys.stderr)
    finally:
        server.close()


def _print_brief(path) -> None:
    from engine.analysis.summary import run_summary
    from engine.session import open_session

    try:
        with open_session(path) as r:
            s = run_summary(r)
    except LayerScopeError as e:
        print(f"warning: {e}", file=sys.stderr)
        return
    line = (f"{s['steps']} steps ({s['warmup_steps']} warm-up, {s['profiled_steps']} profiled), "
            f"median step {fmt_num(s['step_ms_median'])} ms, {fmt_num(s['samples_per_s'])} samples/s")
    if s["j_per_sample"] is not None:
        line += f", {fmt_num(s['j_per_sample'])} J/sample ({s['energy_source']})"
    print(line)


def add_setting_flags(parser) -> None:
    """One option per RunConfig setting that declares a ``flag``: its type, bounds, choices, default
    and help come from the declaration; settings of one ``group`` are mutually exclusive."""
    groups: dict[str, object] = {}
    for s in RunConfig.settings():
        if not s.flag:
            continue
        target = parser
        if s.group:
            if s.group not in groups:
                groups[s.group] = parser.add_mutually_exclusive_group()
            target = groups[s.group]
        kw = {"dest": s.name, "default": s.default, "help": s.help}
        if s.metavar:
            kw["metavar"] = s.metavar
        if s.kind == BOOL:
            kw["action"] = "store_true"
        elif s.kind == CHOICE:
            kw["choices"] = s.choices
        elif s.kind == INT:
            kw["type"] = whole_number(int(s.lo)) if s.lo is not None else int
        elif s.kind == FLOAT:
            kw["type"] = float  # bounds are checked by RunConfig.problems(), with the setting's name
        target.add_argument(s.flag, **kw)


def register(sub) -> None:
    """Add profile to the ``layerscope`` parser."""
    s = sub.add_parser("profile", help="run a net with per-layer profiling and record a session file")
    s.add_argument("net", help="preset name (lenet5, alexnet-article, alexnet, vgg11, resnet18), net JSON path, "
                               "or a PyTorch model to import: FILE.py:FACTORY (your own Python file: it is "
                               "EXECUTED, and FACTORY() must return an nn.Module) or torchvision:NAME "
                               "(with the vision extra)")
    s.add_argument("--input-shape", type=input_shape, default=None, metavar="C,H,W",
                   help="per-sample input of a model to import, e.g. 3,32,32")
    s.add_argument("--classes", type=whole_number(1), default=None, metavar="N",
                   help="class scores a model to import outputs (default: what its output says)")
    add_setting_flags(s)
    s.add_argument("--download", action="store_true",
                   help="download mnist / fashion-mnist / cifar10 first if missing (checksums verified)")
    s.add_argument("--out", default=None, help="session file (default: <net>-<device>-<time>.lsession in the runs folder the app "
                        "also lists, e.g. ~/.local/share/layerscope/runs on Linux)")
    s.add_argument("--force", action="store_true", help="replace the session file given as --out if it "
                   "exists (never a file that is not a session, nor one being written)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    s.add_argument("--dry-run", action="store_true", help="print the memory estimate (measured on fake tensors) and the "
                   "largest batch that fits, then exit: 0 fits, 2 would be refused")
    s.add_argument("--serve", metavar="HOST:PORT", default=None,
                   help="stream the run live to viewers (layerscope watch, or File > Connect to run... in the app); "
                        "binds only there (use 127.0.0.1 and an SSH tunnel for a remote server); prints a random "
                        "token viewers must give; port 0 picks a free one")
    s.add_argument("--allow-control", action="store_true",
                   help="with --serve: viewers may pause, resume and stop the run and choose its feature layer")
    s.add_argument("--serve-linger", type=float, default=10.0, metavar="S",
                   help="with --serve: seconds to wait after the run for connected viewers to receive its end (default 10)")
    s.set_defaults(func=cmd_profile)


def _print_layer_energy(path) -> None:
    """The per-layer energy replay's table and coverage (or why none was measured)."""
    from engine.analysis.layer_energy import layer_energy_summary
    from engine.cli.layer_energy import print_layer_energy
    from engine.session import open_session

    try:
        with open_session(path) as r:
            le, names = layer_energy_summary(r), [row.node_id for row in r.layers()]
    except LayerScopeError as e:
        print(f"warning: {e}", file=sys.stderr)
        return
    print_layer_energy(le, names)

