"""The datasets that need no files: random tensors and scikit-learn's handwritten digits."""
from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from . import DatasetError, DatasetInfo, DatasetSplits


def synthetic(input_spec, *, seed: int = 0, size: int = 512) -> DatasetSplits:
    """Random normal images with random labels: pure profiling, accuracy is chance."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = input_spec.shape
    n_test = max(size // 8, 1)
    x = torch.randn(size + n_test, c, h, w, generator=g)
    y = torch.randint(0, input_spec.classes, (size + n_test,), generator=g)
    info = DatasetInfo("synthetic", "random normal tensors generated on the fly (accuracy is chance)",
                       input_spec.classes, size, n_test, [f"shape {c}x{h}x{w}"])
    return DatasetSplits(TensorDataset(x[:size], y[:size]), TensorDataset(x[size:], y[size:]), info)


def fit_images(x: torch.Tensor, input_spec, notes: list[str]) -> torch.Tensor:
    """Resize (bilinear) and convert channels of an N x C x H x W float batch to the net's input."""
    c, h, w = input_spec.shape
    if tuple(x.shape[2:]) != (h, w):
        notes.append(f"resize {x.shape[2]}x{x.shape[3]} -> {h}x{w} (bilinear)")
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    if x.shape[1] != c:
        if x.shape[1] == 1:
            notes.append(f"grey -> {c} channels (repeated)")
            x = x.repeat(1, c, 1, 1)
        elif c == 1:
            notes.append(f"{x.shape[1]} channels -> grey (mean)")
            x = x.mean(1, keepdim=True)
        else:
            raise DatasetError(f"cannot turn {x.shape[1]}-channel images into the net's {c} channels")
    return x


def normalise(train: torch.Tensor, test: torch.Tensor, notes: list[str]):
    """Per-channel standardisation with the training split's mean and std."""
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    notes.append("normalise with the training split's per-channel mean and std")
    return (train - mean) / std, (test - mean) / std


def digits(input_spec, *, seed: int = 0, test_fraction: float = 0.2) -> DatasetSplits:
    """scikit-learn's 1,797 real 8x8 digit scans (0-16 grey levels), seeded split, fitted to the input."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - a declared dependency
        raise DatasetError("the built-in digits need scikit-learn (pip install scikit-learn)") from None
    if input_spec.classes < 10:
        raise DatasetError(f"digits has 10 classes but the net outputs {input_spec.classes}")
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    notes = ["scale 0..16 -> 0..1"]
    x = fit_images(x, input_spec, notes)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    xtr, xte = normalise(x[tr], x[te], notes)
    info = DatasetInfo("digits", "scikit-learn's load_digits: 1,797 real 8x8 handwritten digit scans "
                       "(UCI optdigits), shipped inside the package", 10, len(tr), n_test,
                       [f"seeded {int((1 - test_fraction) * 100)}/{int(test_fraction * 100)} split (seed {seed})", *notes])
    return DatasetSplits(TensorDataset(xtr, y[tr]), TensorDataset(xte, y[te]), info)
