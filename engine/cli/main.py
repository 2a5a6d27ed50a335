"""The headless command line: ``layerscope validate|presets|profile|export|summary|compare|devices``.

Exit codes: 0 success, 1 a run that failed, 2 bad input (with a one-line reason).
"""
from __future__ import annotations

import argparse
import json
import sys

from engine.errors import LayerScopeError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message):
        raise LayerScopeError(f"{self.prog}: {message} (see --help)")


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_flops(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def print_table(rows: list[list[str]], header: list[str], out=None, right: set[int] | None = None) -> None:
    """A plain aligned text table."""
    out = out or sys.stdout
    right = right or set()
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    def line(r):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    print(line(header), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print(line(r), file=out)


def cmd_presets(args) -> int:
    from engine.net.presets import load_preset, preset_names

    rows = []
    for name in preset_names():
        spec = load_preset(name)
        desc = spec.description.split(". ")[0].rstrip(".")
        rows.append([name, f"{spec.input.channels}x{spec.input.height}x{spec.input.width}", desc])
    print_table(rows, ["preset", "input", "description"])
    return EXIT_OK


def cmd_validate(args) -> int:
    from engine.net.graph import analyze
    from engine.net.presets import resolve_net

    try:
        spec = resolve_net(args.net)
        info = analyze(spec)
    except LayerScopeError as e:
        if args.json:
            print(json.dumps({"ok": False, "errors": [p.to_json() for p in e.problems], "layers": [],
                              "params": 0, "flops": 0}))
        else:
            for p in e.problems:
                print(str(p))
        return EXIT_BAD_INPUT
    layers = [{"id": li.id, "kind": li.kind, "out_shape": list(li.out_shape), "params": li.params,
               "flops": li.flops} for li in info.layers]
    if args.json:
        print(json.dumps({"ok": True, "errors": [], "layers": layers, "params": info.params,
                          "flops": info.flops}))
        return EXIT_OK
    rows = [[li.id, li.kind, "x".join(map(str, li.out_shape)), _fmt_int(li.params), _fmt_flops(li.flops)]
            for li in info.layers]
    print_table(rows, ["node", "kind", "output", "params", "FLOPs"], right={3, 4})
    inp = spec.input
    print(f"\n{spec.name or args.net}: input {inp.channels}x{inp.height}x{inp.width}, {inp.classes} classes, "
          f"{len(info.layers)} nodes, {_fmt_int(info.params)} parameters, "
          f"{_fmt_flops(info.flops)}FLOPs per sample (forward)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="layerscope", description="LayerScope: per-layer profiler for convolutional nets. "
                "With no command, opens the desktop app.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    s = sub.add_parser("presets", help="list the built-in nets")
    s.set_defaults(func=cmd_presets)
    s = sub.add_parser("validate", help="check a net file or preset; every problem, exit 2 if any")
    s.add_argument("net", help="preset name or path to a net JSON file")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_validate)
    from engine.cli import commands

    commands.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one CLI command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
        if not getattr(args, "func", None):
            raise LayerScopeError("layerscope: give a command (see --help)")
        return args.func(args)
    except LayerScopeError as e:
        print(str(e), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: not an error of ours; silence the final flush too
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
