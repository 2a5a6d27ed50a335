"""Commands that compare and bound runs: ``compare`` (N sessions or a study, per sample) and
``roofline`` (per-layer achieved FLOP/s against the measured ceilings)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.cli.common import EXIT_OK
from functools import partial

from engine import fmt
from engine.cli.output import fmt_bytes, fmt_num, print_table
from engine.errors import LayerScopeError

fmt_pct = partial(fmt.fmt_pct, missing="-")  # the terminal's "not measured", as engine.cli.output's


def _speedup(v) -> str:
    return f"{v:.2f}x" if v is not None else "-"


def _sources(args) -> tuple[list, list | None]:
    from engine.analysis.compare import study_runs

    if len(args.sessions) == 1:
        p = Path(args.sessions[0])
        if not p.is_dir():
            raise LayerScopeError("compare needs two or more sessions, or one study folder")
        from engine.sweep.study import read_study

        left = [c for c in read_study(p).configs if c.status != "done"]
        for c in left:  # said once, before the table: the comparison is of the finished ones only
            print(f"note: {c.label} is left out ({c.status}{': ' + c.reason if c.reason else ''})", file=sys.stderr)
        return study_runs(p)
    for s in args.sessions:
        if Path(s).is_dir():
            raise LayerScopeError(f"{s} is a folder: give one study folder alone, or session files")
    return list(args.sessions), None


def _check_out(out: Path, force: bool) -> None:
    from engine.session import has_session_header

    if out.suffix.lower() not in (".html", ".htm", ".csv"):
        raise LayerScopeError(f"--out {out}: give a .html or .csv file")
    if out.is_dir():
        raise LayerScopeError(f"--out {out} is a folder; give a file name")
    if out.exists() and has_session_header(out):
        raise LayerScopeError(f"--out {out} is an SQLite file (a session?); an export never replaces it")
    if out.exists() and not force:
        raise LayerScopeError(f"--out {out} exists; give --force to replace it, or choose another name")


def print_comparison(c: dict) -> None:
    """The comparison as text: the runs and their totals, then per layer id, kind and per run ms
    per sample and speed-up against the baseline, then where the time went."""
    runs = c["runs"]
    print(f"baseline: {c['baseline']}; every time is per sample (median per step / batch used); "
          "speed-up = baseline / run, above 1 means faster than the baseline\n")
    rows = [[r["label"], r["session"], f"{r['device_name'] or r['device']}", r["precision"] or "", str(r["batch"]),
             r["mode"] or "", fmt_num(r["step_ms_per_sample"]), fmt_num(r["samples_per_s"]),
             fmt_num(r["j_per_sample"]), fmt_bytes(r["peak_mem_bytes"]), fmt_bytes(r.get("rss_max_bytes")),
             r["status"]] for r in runs]
    print_table(rows, ["run", "session", "device", "precision", "batch", "mode", "step ms/sample", "samples/s",
                       "J/sample", "device peak", "process RSS", "status"], right={4, 6, 7, 8, 9, 10})
    print()
    header = ["node", "kind"]
    for r in runs:
        header += [f"{r['label']} ms/sample", "speed-up"]
    rows = []
    for lay in c["layers"]:
        row = [lay["id"], lay["kind"] or ""]
        for p in lay["per_run"]:
            row += [fmt_num(p["ms_per_sample"]), _speedup(p["speedup"])]
        rows.append(row)
    steps = ["step", ""]
    base = next(r for r in runs if r["label"] == c["baseline"])
    for r in runs:
        sp = (base["step_ms_per_sample"] / r["step_ms_per_sample"]
              if base["step_ms_per_sample"] and r["step_ms_per_sample"] else None)
        steps += [fmt_num(r["step_ms_per_sample"]), _speedup(sp)]
    rows.append(steps)
    print_table(rows, header, right=set(range(2, len(header))))
    for label, ids in c["only_in"].items():
        print(f"only in {label}: {', '.join(ids)}")
    print("\nwhere the time went (ms per sample):")
    fams = sorted({f for x in c["families"] for f in x["by_family"]})
    rows = [[x["label"], *[fmt_num(x["by_family"].get(f)) for f in fams], fmt_num(x["data_ms_per_sample"]),
             fmt_num(x["optimizer_ms_per_sample"] if x["optimizer_ms_per_sample"] is not None
                     else x["other_ms_per_sample"])] for x in c["families"]]
    print_table(rows, ["run", *fams, "data", "optimizer/other"], right=set(range(1, len(fams) + 3)))
    notes = []
    for r in runs:
        if r["j_per_sample"] is None and r["power_note"] and r["power_note"] not in notes:
            notes.append(r["power_note"])
    if notes:
        print("energy: not measured for " + ", ".join(r["label"] for r in runs if r["j_per_sample"] is None)
              + ". " + " ".join(notes))
    for r in runs:
        if r.get("advice"):
            share = f" ({fmt_pct(r['fault_share'])} of its time in page faults)" if r.get("fault_share") else ""
            print(f"{r['label']}{share}: {r['advice']}")


def cmd_compare(args) -> int:
    """N sessions (or a study's finished configurations) against a baseline, per sample."""
    from engine.analysis.compare import compare_runs
    from engine.export.common import jsonable

    sources, labels = _sources(args)
    out = Path(args.out).expanduser() if args.out else None
    if out is not None:
        _check_out(out, args.force)
    c = compare_runs(sources, baseline=args.baseline, labels=labels)
    if out is not None:
        from engine.export.compare_html import export_comparison

        export_comparison(c, out)
        print(f"wrote {out}")
    if args.json:
        print(json.dumps(jsonable(c), indent=1))
    elif out is None:
        print_comparison(c)
    return EXIT_OK


def _rate(v) -> str:
    return "-" if v is None else f"{fmt_num(v / 1e9)}"


def print_roofline(r: dict) -> None:
    """The roofline as text: the ceilings and their source, then per layer and pass the FLOPs,
    bytes, intensity, achieved and roof GFLOP/s, % of roof and the bound."""
    print(f"{r['session']}: {r['device_name'] or r['device']}, {r['precision']}, batch {r['batch']}, {r['mode']}")
    if r["peak_flop_s"]:
        print(f"ceilings ({r['ceilings_source']}): peak {_rate(r['peak_flop_s'])} GFLOP/s, bandwidth "
              f"{fmt.fmt_bandwidth(r['bandwidth_bytes_s'], '-')} (best copy, cache included; main memory "
              f"{fmt.fmt_bandwidth(r['dram_bandwidth_bytes_s'], '-')}), ridge at {fmt_num(r['ridge_intensity'])} FLOP/byte")
    else:
        print(f"ceilings: {r['ceilings_source']}")
    rows = []
    for lay in r["layers"]:
        for name in ("fwd", "bwd"):
            p = lay[name]
            if p is None:
                continue
            rows.append([lay["id"], lay["kind"] or "", name, fmt_num(p["flops"]), fmt_bytes(p["bytes"]),
                         fmt_num(p["intensity"]), fmt_num(p["ms"]), _rate(p["achieved_flop_s"]),
                         _rate(p["roof_flop_s"]), fmt_pct(p["pct_of_roof"]), p["bound"] or "-"])
    print()
    print_table(rows, ["node", "kind", "pass", "FLOPs", "bytes", "FLOP/byte", "ms", "GFLOP/s", "roof GFLOP/s",
                       "% of roof", "bound"], right={3, 4, 5, 6, 7, 8, 9})
    print(f"\n(per step of batch {r['batch']}, median times; overhead-bound: below "
          f"{fmt_pct(r['overhead_fraction'])} of the roof)")
    if r["above_roof_note"]:
        print(r["above_roof_note"])


def cmd_roofline(args) -> int:
    """Per-layer achieved FLOP/s and arithmetic intensity against the measured ceilings."""
    from engine.analysis.roofline import roofline
    from engine.export.common import jsonable

    r = roofline(args.session)
    if args.json:
        print(json.dumps(jsonable(r), indent=1))
    else:
        print_roofline(r)
    return EXIT_OK


def register(sub) -> None:
    """Add compare and roofline to the ``layerscope`` parser."""
    s = sub.add_parser("compare", help="N sessions or a study, layer by layer, per sample, against a baseline")
    s.add_argument("sessions", nargs="+", metavar="SESSION",
                   help="two or more session files, or one study folder (holding study.json)")
    s.add_argument("--baseline", default=None, help="the run the speed-ups are against: its session path, file "
                   "name or label (default: the first)")
    s.add_argument("--json", action="store_true", help="print the comparison as JSON")
    s.add_argument("--out", default=None, metavar="FILE", help="export the comparison: FILE.html (self-contained, "
                   "charts) or FILE.csv (one row per layer and run)")
    s.add_argument("--force", action="store_true", help="replace --out if it exists")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("roofline", help="per-layer achieved FLOP/s and arithmetic intensity against the "
                       "measured peak FLOP/s and bandwidth")
    s.add_argument("session")
    s.add_argument("--json", action="store_true", help="print the roofline as JSON")
    s.set_defaults(func=cmd_roofline)
