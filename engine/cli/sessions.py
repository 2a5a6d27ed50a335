"""Commands that read recorded sessions: ``export`` and ``summary`` (``compare``: ``engine.cli.compare``)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.cli.common import EXIT_OK, nonneg_int
from engine.cli.output import fmt_bytes, fmt_num, fmt_pct, print_table
from engine.errors import LayerScopeError
from engine.export import EXPORTERS


def _open(path):
    from engine.session import open_session

    return open_session(path)  # SessionError (a LayerScopeError) -> one line, exit 2


def _default_export_path(session: Path, fmt: str) -> Path:
    from engine.export import SUFFIXES

    suffix = SUFFIXES[fmt]
    name = session.name[: -len(session.suffix)] if session.suffix else session.name
    return session.with_name(name + suffix)


def _check_export_out(out: Path, session: Path, force: bool) -> None:
    """Refuse an export target that would destroy something: a folder, the session itself or any
    other session/SQLite file (or its -wal/-shm/-journal), even with --force; any other existing
    file without --force."""
    from engine.session import has_session_header

    if out.is_dir():
        raise LayerScopeError(f"--out {out} is a folder; give a file name")
    for side in ("-wal", "-shm", "-journal"):
        if out.name.endswith(side) and has_session_header(out.with_name(out.name[: -len(side)])):
            raise LayerScopeError(f"--out {out} belongs to the session {out.name[: -len(side)]}; an export "
                                  "never replaces a session's files")
    if not out.exists():
        return
    try:
        same = out.samefile(session)
    except OSError:
        same = False
    if same or has_session_header(out):
        what = "the session being exported" if same else "an SQLite file (a session?)"
        raise LayerScopeError(f"--out {out} is {what}; an export never replaces it, even with --force: "
                              "choose another name")
    if not force:
        raise LayerScopeError(f"--out {out} exists; give --force to replace it, or choose another name")


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
    """A session as a Chrome trace, CSV, HTML report or JSON summary."""
    from engine import export
    from engine.export.trace import write_trace

    session = Path(args.session)
    lo, hi = _parse_range(args.steps)
    out = Path(args.out).expanduser() if args.out else _default_export_path(session, args.format)
    with _open(session) as r:
        _check_export_out(out, session, args.force)
        try:
            if args.format == "trace":
                meta = write_trace(r, out, lo, hi, max_steps=args.max_steps or None)  # streamed
                if meta["profiled_steps_in_trace"] < meta["profiled_steps_total"]:
                    print(f"note: the trace holds {meta['profiled_steps_in_trace']} of {meta['profiled_steps_total']} "
                          f"profiled steps (--max-steps 0 for all, --steps FROM:TO to choose)", file=sys.stderr)
            else:
                export.EXPORTERS[args.format](r, out)
        except OSError as e:
            raise LayerScopeError(f"cannot write {out}: {e.strerror or e}") from None
    if r.status == "running":
        print(f"note: {session} has no end record (still running, or its process was killed); "
              "exported what it holds", file=sys.stderr)
    print(f"wrote {out}")
    return EXIT_OK


def cmd_summary(args) -> int:
    """The per-layer table and run totals of each session given, in order (or the same as JSON:
    one object for one session, a list of them for several). Every session is read before
    anything is printed, so one that cannot be read gives its one line and nothing else."""
    from engine.analysis.summary import summary

    if len(args.session) == 1 and Path(args.session[0], "study.json").exists():
        return _print_study(args.session[0], args.json)
    done = []
    for path in args.session:
        with _open(path) as r:
            done.append((path, {**summary(r), "layer_energy": _layer_energy(r)}, r.info))
    if args.json:
        from engine.export.common import jsonable

        out = [s for _, s, _ in done]
        print(json.dumps(jsonable(out[0] if len(out) == 1 else out), indent=1))
        return EXIT_OK
    for i, (path, s, info) in enumerate(done):
        if len(done) > 1:
            print(("\n" if i else "") + f"== {path} ==")
        _print_summary(s, info)
        _print_layer_energy(s["layer_energy"], [x["id"] for x in s["layers"]])
    return EXIT_OK


def _layer_energy(r) -> dict:
    from engine.analysis.layer_energy import layer_energy_summary

    return layer_energy_summary(r)


def _print_layer_energy(le: dict, names: list) -> None:
    from engine.cli.layer_energy import print_layer_energy

    print_layer_energy(le, names)
def _print_study(folder: str, as_json: bool) -> int:
    """``summary DIR`` of a data-parallel study: the ranks side by side, buckets, stragglers."""
    from engine.analysis.distributed import ddp_summary

    s = ddp_summary(folder)  # LayerScopeError (not a ddp study, unreadable) -> one line, exit 2
    if as_json:
        from engine.export.common import jsonable

        print(json.dumps(jsonable(s), indent=1))
        return EXIT_OK
    print(f"data-parallel run, {s['world_size']} ranks: {folder}")
    rows = [[str(r["rank"]), r.get("device") or "", r.get("status") or "", fmt_num(r.get("step_ms")),
             fmt_num(r.get("samples_per_s")), fmt_num(r.get("allreduce_ms")), fmt_num(r.get("exposed_ms")),
             "–" if r.get("overlap") is None else f"{r['overlap']:.0%}",
             fmt_num(r.get("comm_compute_ratio")), str(s["straggler_steps"].get(r["rank"], 0))]
            for r in s["ranks"]]
    print_table(rows, ["rank", "device", "status", "step ms", "samples/s", "all-reduce ms", "exposed ms", "overlap",
                       "comm/compute", "slowest in (steps)"], right={0, 3, 4, 5, 6, 7, 8, 9})
    if s["buckets"]:
        print("\nbuckets (rank 0): " + "; ".join(
            f"#{b['bucket']} {fmt_bytes(b['bytes'])} {fmt_num(b['allreduce_ms'])} ms [{', '.join(b['nodes'])}]"
            for b in s["buckets"]))
    return EXIT_OK


def _capped(run: dict) -> str:
    req = run.get("batch_requested")
    if req is None or run.get("batch_size") in (None, req):
        return ""
    return f" (capped: {req} asked for, the train split holds only {run['batch_size']})"


def _spread(p5, p95) -> str:
    """A layer's spread across steps, "p5-p95" in ms ("-" when not measured)."""
    return "-" if p5 is None and p95 is None else f"{fmt_num(p5)}-{fmt_num(p95)}"


def _print_summary(s: dict, info) -> None:
    run, rows = s["run"], s["layers"]
    train = any(x["bwd_median_ms"] for x in rows)
    faults = any(x.get("fault_share") is not None for x in rows)
    head = ["node", "kind", "output", "params", "MFLOPs", "fwd ms", "fwd p5-p95"]
    if train:
        head += ["bwd ms", "bwd p5-p95"]
    head += ["share", "GFLOP/s", "act"]
    if faults:
        head += ["faults"]
    table = []
    for x in rows:
        r = [x["id"], x["kind"] or "", "x".join(map(str, x["out_shape"] or [])), fmt_num(x["params"]),
             fmt_num(x["flops"] / 1e6 if x["flops"] is not None else None), fmt_num(x["fwd_median_ms"]),
             _spread(x["fwd_p5_ms"], x["fwd_p95_ms"])]
        if train:
            r += [fmt_num(x["bwd_median_ms"]), _spread(x["bwd_p5_ms"], x["bwd_p95_ms"])]
        r += [fmt_pct(x["share"], sep=""), fmt_num(x["total_gflops"]), fmt_bytes(x["act_bytes"])]
        if faults:  # the share of the layer's median forward time its minor page faults cost
            r += [fmt_pct(x.get("fault_share"), sep="") + (" alloc-bound" if x.get("alloc_bound") else "")]
        table.append(r)
    dev = info.device or {}
    print(f"{run['net'] or 'net'}: {run['mode']} on {dev.get('name') or run['device']} ({run['device']}), "
          f"{run['precision']}, batch {run['batch_size']}" + _capped(run))
    status = run["status"]
    if status == "running":
        status += " (no end recorded: the run is still going, or its process was killed)"
    elif run["message"]:
        status += f" ({run['message']})"
    print(f"status: {status}\n")
    print_table(table, head, right=set(range(3, len(head))))
    print()
    timed = f"; per-layer probe: {run['probe_hooks']}" if run.get("probe_hooks") else ""
    print(f"steps: {run['steps']} ({run['warmup_steps']} warm-up, excluded; {run['profiled_steps']} profiled{timed})")
    print(f"step time: median {fmt_num(run['step_ms_median'])} ms, p95 {fmt_num(run['step_ms_p95'])} ms; "
          f"layers: forward {fmt_num(run['layers_fwd_ms_median'])} ms"
          + (f", backward {fmt_num(run['layers_bwd_ms_median'])} ms" if run["layers_bwd_ms_median"] else ""))
    print(f"throughput: {fmt_num(run['samples_per_s'])} samples/s")
    if run.get("fault_ms") is not None:
        print(f"page faults: {fmt_num(run['fault_ms'])} ms per step ({fmt_pct(run['fault_share'], sep='')} of step "
              f"time); fwd p5-p95 is the spread across steps, faults the share of a layer's median forward time"
              + ("; alloc-bound: mostly page faults (allocator cost), not compute" if any(x.get("alloc_bound") for x in rows)
                 else ""))
        if run.get("fault_advice"):
            print(f"advice: {run['fault_advice']}")
    if run["j_per_sample"] is not None:
        e = run["energy"][run["energy_source"]]
        summed = run.get("energy_domains") or []
        domains = f" = {' + '.join(summed)}" if len(summed) > 1 else ""  # e.g. both CPU packages
        print(f"energy: {fmt_num(run['j_per_sample'])} J/sample, {fmt_num(e['j_per_step'])} J/step, "
              f"{fmt_num(e['avg_power_w'])} W average ({run['energy_source']}{domains}, "
              f"{fmt_num(e['seconds'])} s of steady steps)")
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


def register(sub) -> None:
    """Add export / summary to the ``layerscope`` parser."""
    s = sub.add_parser("export", help="export a session: Chrome trace, CSV, HTML report or JSON summary")
    s.add_argument("session")
    s.add_argument("--format", choices=tuple(EXPORTERS), required=True)
    s.add_argument("--out", default=None, help="output file (default: next to the session)")
    s.add_argument("--force", action="store_true", help="replace --out if it exists (never a session file)")
    s.add_argument("--steps", default=None, metavar="FROM:TO", help="trace: profiled steps to include")
    s.add_argument("--max-steps", type=nonneg_int, default=2000, help="trace: at most this many profiled "
                   "steps (0: all; default 2000)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("summary", help="per-layer table and run totals of one or more sessions")
    s.add_argument("session", nargs="+", help="session files, printed in the order given")
    s.add_argument("--json", action="store_true", help="print the summary as JSON (a list for several sessions)")
    s.set_defaults(func=cmd_summary)
