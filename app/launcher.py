"""Entry point of the ``layerscope`` command: what is not the desktop app's runs headless.

The app takes one file to open (a net ``.json`` or a ``.lsession``) and its own ``--options``; with
no argument it opens too. Every other first word - a command, or a mistyped one such as
``sumary`` - goes to the CLI, which runs the command or answers "unknown command 'sumary' (did
you mean summary?)" with exit 2, so a typo never opens the window. ``--version`` is the CLI's;
``-h``/``--help`` prints the CLI's help (the commands) followed by the desktop app's own options
(``--preset``, ``--run``, ``--session``, ... from ``app.application.build_parser``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# the CLI's sub-commands (tests/engine/test_cli_run.py checks this against its parser): a file of
# the same name in the current folder does not make ``layerscope summary x`` open the app
HEADLESS = {"presets", "validate", "profile", "export", "summary", "compare", "devices", "sweep", "roofline", "watch", "export-net"}
CLI_OPTIONS = {"-h", "--help", "--version"}
APP_SUFFIXES = {".json", ".lsession"}


def is_headless(argv: list[str]) -> bool:
    """Whether ``argv`` is for the CLI rather than the desktop app."""
    if not argv:
        return False
    first = argv[0]
    if first in HEADLESS or first in CLI_OPTIONS:
        return True
    if first.startswith("-"):
        return False  # the app's own options (its parser reports one it does not know)
    # a file for the app to open: a path, a net or session file name, or anything that exists
    looks_like_file = (os.sep in first or "/" in first or Path(first).suffix.lower() in APP_SUFFIXES
                       or Path(first).exists())
    return not looks_like_file


def app_help() -> str:
    """The desktop app's options, as its own parser words them, under a heading that says how to
    open the app (printed after the CLI's help by ``layerscope --help`` / ``python main.py --help``)."""
    from app.application import build_parser

    return "desktop app (no command; python main.py or layerscope):\n" + build_parser().format_help().rstrip()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if is_headless(argv):
        from engine.cli.main import main as cli_main

        code = cli_main(argv)
        if argv[0] in ("-h", "--help"):
            print()
            print(app_help())
        return code
    from app.application import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
