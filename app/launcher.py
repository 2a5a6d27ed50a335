"""Entry point of the ``layerscope`` command: a sub-command runs headless, none opens the app."""
from __future__ import annotations

import sys

HEADLESS = {"presets", "validate", "profile", "export", "summary", "compare", "devices", "-h", "--help"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in HEADLESS:
        from engine.cli.main import main as cli_main

        return cli_main(argv)
    from app.application import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
