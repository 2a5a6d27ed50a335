"""The headless command line: ``layerscope validate|presets|profile|export|summary|compare|devices``.

This module holds the parser, the dispatch and the exit codes; each command group lives in its
own module (``info``: presets, validate, devices; ``profile``; ``sessions``: export, summary,
compare) and everything printed goes through ``engine.cli.output``.

Exit codes: 0 success, 1 a run that failed, 2 bad input (with a one-line reason), 130 interrupted.
"""
from __future__ import annotations

import argparse
import difflib
import sys

from engine.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, Parser
from engine.errors import LayerScopeError


def build_parser() -> argparse.ArgumentParser:
    """The ``layerscope`` parser with every sub-command registered (``--version`` included)."""
    from engine import __version__
    from engine.cli import compare, info, profile, sessions

    p = Parser(prog="layerscope", description="LayerScope: per-layer profiler for convolutional nets. "
                "With no command, opens the desktop app.")
    p.add_argument("--version", action="version", version=f"layerscope {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=Parser)
    info.register(sub)
    profile.register(sub)
    sessions.register(sub)
    info.register_devices(sub)
    compare.register(sub)
    from engine.cli import sweep
    sweep.register(sub)
    return p


def commands(parser: argparse.ArgumentParser) -> list[str]:
    """The sub-command names ``parser`` knows, in the order they were registered."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def check_command(argv: list[str], known: list[str]) -> None:
    """LayerScopeError "unknown command 'sumary' (did you mean summary?)" when the first argument
    is a word (not an option) that names no command; the closest command by spelling is offered."""
    if not argv or argv[0].startswith("-") or argv[0] in known:
        return
    word = argv[0]
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    if close:
        raise LayerScopeError(f"unknown command '{word}' (did you mean {close[0]}?)")
    raise LayerScopeError(f"unknown command '{word}'; commands: {', '.join(known)} (see layerscope --help)")


def main(argv: list[str] | None = None) -> int:
    """Run one CLI command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()
        check_command(argv, commands(parser))
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help and --version print and end here: their code, not an exit
            return EXIT_OK if e.code in (None, 0) else EXIT_BAD_INPUT
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
