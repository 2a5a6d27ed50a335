"""What every command module shares: exit codes, the one-line-error parser and argument types.

Kept apart from ``engine.cli.main`` (which imports every command module to register it) so the
command modules never import ``main`` back.
"""
from __future__ import annotations

import argparse

from engine.errors import LayerScopeError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message):
        raise LayerScopeError(f"{self.prog}: {message} (see --help)")


def whole_number(lo: int):
    """An argparse ``type`` for whole numbers >= ``lo`` (a one-line complaint otherwise)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {lo}, got {v}")
        return v
    parse.__name__ = "whole number"
    return parse


positive_int = whole_number(1)
nonneg_int = whole_number(0)
