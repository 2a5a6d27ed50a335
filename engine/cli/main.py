"""The headless command line: ``layerscope validate|presets|profile|export|summary|compare|devices``.

This module holds the parser, the dispatch and the exit codes; each command group lives in its
own module (``info``: presets, validate, devices; ``profile``; ``sessions``: export, summary,
compare) and everything printed goes through ``engine.cli.output``.

Exit codes: 0 success, 1 a run that failed, 2 bad input (with a one-line reason), 130 interrupted.
"""
from __future__ import annotations

import sys

from engine.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, Parser
from engine.errors import LayerScopeError

def build_parser() -> argparse.ArgumentParser:
    """The ``layerscope`` parser with every sub-command registered."""
    from engine.cli import info, profile, sessions

    p = Parser(prog="layerscope", description="LayerScope: per-layer profiler for convolutional nets. "
                "With no command, opens the desktop app.")
    sub = p.add_subparsers(dest="command", parser_class=Parser)
    info.register(sub)
    profile.register(sub)
    sessions.register(sub)
    info.register_devices(sub)
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
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: not an error of ours; silence the final flush too
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
