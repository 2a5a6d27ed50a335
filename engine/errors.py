"""Errors LayerScope raises for bad user input: one type, each problem tied to a node."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a net, a file or a setting; ``node`` is None when it is not a node's."""

    node: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.node}: {self.message}" if self.node else self.message

    def to_json(self) -> dict:
        return {"node": self.node, "message": self.message}


class LayerScopeError(Exception):
    """Bad input a person can fix: carries every problem found, never a traceback for the user."""

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem(None, problems)]
        self.problems: list[Problem] = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class SpecError(LayerScopeError):
    """A net spec that cannot be loaded, validated or built."""
