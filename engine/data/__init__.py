"""Datasets: ``get_dataset(name_or_path, input_spec, ...)`` gives train/test splits already
preprocessed to the net's input (channels, height, width) as float tensors in [0, 1]-ish range,
normalised. Built in: ``synthetic`` (random tensors) and ``digits`` (scikit-learn's 1,797 real
8x8 handwritten digit scans, shipped inside the package, no download).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import LayerScopeError


class DatasetError(LayerScopeError):
    """A dataset that cannot be used: missing, malformed, or not matching the net."""


@dataclass
class DatasetInfo:
    """Where the data comes from and what was done to it, for the UI and the session."""

    name: str
    source: str  # one sentence: where the samples come from
    classes: int
    train_size: int
    test_size: int
    preprocessing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        steps = "; ".join(self.preprocessing) or "none"
        return (f"{self.name}: {self.train_size} train / {self.test_size} test samples, "
                f"{self.classes} classes - {self.source}; preprocessing: {steps}")


@dataclass
class DatasetSplits:
    """Train and test splits (torch Datasets yielding (float tensor CxHxW, int label))."""

    train: object
    test: object
    info: DatasetInfo


BUILTIN = ("synthetic", "digits")


def get_dataset(name: str, input_spec, *, seed: int = 0, root=None, synthetic_size: int = 512) -> DatasetSplits:
    """The dataset ``name`` (or a folder/file path) shaped for ``input_spec``; DatasetError if unusable."""
    from . import builtin

    if name == "synthetic":
        return builtin.synthetic(input_spec, seed=seed, size=synthetic_size)
    if name == "digits":
        return builtin.digits(input_spec, seed=seed)
    raise DatasetError(f"unknown dataset '{name}'; built in: {', '.join(BUILTIN)}")
