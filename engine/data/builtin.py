"""The datasets that need no download: random tensors and the UCI handwritten digits shipped in assets/."""
from __future__ import annotations

import numbers

import torch
from torch.utils.data import Dataset

from assets import ASSETS_DIR

from engine.data import DatasetError, DatasetInfo, DatasetSplits, check_classes
from engine.data.fitting import Fit, FittedDataset, seeded_split

SYNTHETIC_POOL_BYTES = 64 << 20  # distinct random images kept; larger sets reuse them


class SyntheticDataset(Dataset):
    """Random normal images with random labels; sample i is pool image i mod pool size."""

    def __init__(self, pool: torch.Tensor, labels: torch.Tensor):
        self.pool = pool
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, items) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N x C x H x W float32) and labels for these positions."""
        rows = torch.as_tensor(items, dtype=torch.long)
        if len(self.pool) < len(self.labels):  # images repeat (see ``synthetic``)
            return self.pool[rows % len(self.pool)], self.labels[rows]
        return self.pool[rows], self.labels[rows]

    def __getitem__(self, i):
        if not isinstance(i, numbers.Integral) and not (isinstance(i, torch.Tensor) and i.ndim == 0):
            return self.batch(i)  # a list of positions (make_loader's batch sampler): a whole batch
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        return self.pool[i % len(self.pool)], int(self.labels[i])

    def __getitems__(self, items):
        x, y = self.batch(list(items))
        return list(zip(x.unbind(0), y.tolist()))

    @property
    def targets(self) -> torch.Tensor:
        return self.labels


def synthetic(input_spec, *, seed: int = 0, size: int = 512) -> DatasetSplits:
    """Random normal images with random labels: pure profiling, accuracy is chance.

    At most 64 MB of distinct images are generated; beyond that images repeat (labels do
    not), so a 3x224x224 net does not cost hundreds of megabytes of noise.
    """
    g = torch.Generator().manual_seed(seed)
    c, h, w = input_spec.shape
    n_test = max(size // 8, 1)
    total = size + n_test
    pool_n = max(1, min(total, SYNTHETIC_POOL_BYTES // (4 * c * h * w)))
    pool = torch.randn(pool_n, c, h, w, generator=g)
    y = torch.randint(0, input_spec.classes, (total,), generator=g)
    notes = [f"shape {c}x{h}x{w}"]
    if pool_n < total:
        notes.append(f"{pool_n} distinct random images reused (64 MB cap)")
    info = DatasetInfo("synthetic", "random normal tensors generated on the fly (accuracy is chance)",
                       input_spec.classes, size, n_test, notes, format="synthetic")
    train = SyntheticDataset(pool, y[:size])
    # the test split starts where the train split stopped in the pool
    test_pool = torch.roll(pool, -(size % pool_n), 0) if pool_n < total else pool[size:]
    return DatasetSplits(train, SyntheticDataset(test_pool, y[size:]), info)


# images uint8 1797 x 8 x 8 (0..16), labels uint8 0..9; attribution in assets/DIGITS-LICENSE
DIGITS_PATH = ASSETS_DIR / "digits.npz"


def _digits_arrays():
    """(images uint8 1797 x 8 x 8 with grey levels 0..16, labels uint8 0..9) of the UCI digits.

    Read from ``assets/digits.npz`` (45 kB, numpy only, no pickles): the 1,797 test samples of
    UCI "Optical Recognition of Handwritten Digits" (Alpaydin & Kaynak, CC BY 4.0; see
    ``assets/DIGITS-LICENSE``), the same arrays scikit-learn's ``load_digits`` returns.
    Raises DatasetError if the file is missing or damaged (a broken install).
    """
    import zipfile

    import numpy as np

    path = DIGITS_PATH
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except FileNotFoundError:
        raise DatasetError(f"the built-in digits file is missing ({path}); reinstall LayerScope") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise DatasetError(f"the built-in digits file {path} is damaged ({e}); reinstall LayerScope") from None
    if (images.shape, labels.shape, images.dtype, labels.dtype) != ((1797, 8, 8), (1797,), np.uint8, np.uint8):
        raise DatasetError(f"the built-in digits file {path} holds {images.dtype} {images.shape} images and "
                           f"{labels.dtype} {labels.shape} labels, expected uint8 (1797, 8, 8) and (1797,); "
                           f"reinstall LayerScope")
    return images, labels


def digits(input_spec, *, seed: int = 0, test_fraction: float = 0.2) -> DatasetSplits:
    """The 1,797 real 8x8 UCI digit scans (0-16 grey levels) shipped in assets/, seeded split,
    fitted lazily to the input and normalised with the training split's statistics."""
    check_classes(10, input_spec)
    images, target = _digits_arrays()
    # 0..16 grey levels fit in uint8: the source costs 115 kB whatever the net's input size
    source = torch.from_numpy(images).unsqueeze(1)
    labels = torch.from_numpy(target).long()
    fit = Fit((1, 8, 8), input_spec.shape, scale=16.0)
    tr, te = seeded_split(len(labels), seed, test_fraction)
    train = FittedDataset(source, labels, fit, tr)
    test = FittedDataset(source, labels, fit, te)
    fit.measure(lambda pos: train.raw(pos)[0], len(train), seed)
    pct = int(round(test_fraction * 100))
    info = DatasetInfo("digits", "UCI optdigits (Alpaydin & Kaynak, CC BY 4.0): 1,797 real 8x8 handwritten "
                       "digit scans, shipped with LayerScope", 10, len(tr), len(te),
                       [f"seeded {100 - pct}/{pct} split (seed {seed})", *fit.notes], format="builtin",
                       class_names=[str(i) for i in range(10)], costly=fit.costly)
    return DatasetSplits(train, test, info)
