"""Lazy fitting of small source images to the net's input.

The source stays in memory at its own size (uint8 where the format is uint8: MNIST's 60,000
28x28 images are 47 MB); resizing, channel conversion and normalisation happen per batch when
a sample is asked for. Eagerly upscaling 1,797 digits to 3x224x224 floats would take 1 GB.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from engine.data import DatasetError

# ITU-R 601-2 luma, the weights Pillow's "L" conversion uses
_LUMA = (0.299, 0.587, 0.114)
STATS_LIMIT = 2048  # training images used to measure the normalisation statistics
STATS_PIXELS = 32_000_000  # ... and at most this many fitted pixels per channel
_STATS_CHUNK = 256


class Fit:
    """The preprocessing from a source batch (N x Cs x Hs x Ws, uint8 or float) to the net's input.

    Device-agnostic: a loop may apply it to a small uint8 batch already on the GPU, which moves
    far fewer bytes than a fitted float batch. ``notes`` describes each step for DatasetInfo.
    """

    def __init__(self, source_shape, input_shape, *, scale: float = 255.0, scale_note: str | None = None):
        cs, hs, ws = source_shape
        c, h, w = input_shape
        if cs not in (1, 3, c):
            raise DatasetError(f"cannot turn {cs}-channel images into the net's {c} channels")
        self.source_shape = (cs, hs, ws)
        self.input_shape = (c, h, w)
        self.scale = float(scale)
        self.to_grey = cs == 3 and c == 1
        work = 1 if self.to_grey else cs
        if work != c and work != 1:
            raise DatasetError(f"cannot turn {cs}-channel images into the net's {c} channels")
        self.expand = c if work == 1 and c > 1 else None
        self.resize = (hs, ws) != (h, w)
        # antialias only when shrinking: upscaling 28x28 digits to 227x227 is plain bilinear,
        # as the article's tf.image.resize does
        self.antialias = self.resize and (h < hs or w < ws)
        self.mean = torch.zeros(work)
        self.std = torch.ones(work)
        self.normalised = False
        self.notes: list[str] = []
        if scale_note is None:
            scale_note = f"scale 0..{scale:g} -> 0..1"
        self.notes.append(scale_note)
        if self.to_grey:
            self.notes.append("RGB -> grey (luma 0.299/0.587/0.114)")
        if self.resize:
            kind = "bilinear, antialiased" if self.antialias else "bilinear"
            self.notes.append(f"resize {hs}x{ws} -> {h}x{w} ({kind})")
        if self.expand:
            self.notes.append(f"grey -> {c} channels (repeated)")

    @property
    def costly(self) -> bool:
        """Whether fitting makes big samples out of much smaller ones (loader workers may help)."""
        cs, hs, ws = self.source_shape
        c, h, w = self.input_shape
        return c * h * w >= 128 * 128 and c * h * w > 4 * cs * hs * ws

    def _unnormalised(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32) / self.scale
        if self.to_grey:
            luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x * luma).sum(1, keepdim=True)
        if self.resize:
            x = F.interpolate(x, size=self.input_shape[1:], mode="bilinear", align_corners=False,
                              antialias=self.antialias)
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Fit a source batch (any device) to a float32 batch of the net's input shape."""
        x = self._unnormalised(x)
        if self.normalised:
            mean = self.mean.to(x.device).view(1, -1, 1, 1)
            std = self.std.to(x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        if self.expand:
            x = x.expand(-1, self.expand, -1, -1)
        return x

    def measure(self, take, n: int, seed: int, limit: int = STATS_LIMIT) -> None:
        """Per-channel mean and std of the fitted training images (at most ``limit`` of them,
        seeded choice), measured in chunks so memory stays bounded."""
        if n == 0:
            return
        idx = torch.arange(n)
        # big inputs: enough images for stable statistics, not seconds of upscaling
        limit = max(min(limit, STATS_PIXELS // (self.input_shape[1] * self.input_shape[2])), 64)
        if n > limit:
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        total = torch.zeros(self.mean.numel(), dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        count = 0
        for start in range(0, len(idx), _STATS_CHUNK):
            x = self._unnormalised(take(idx[start:start + _STATS_CHUNK]))
            # per-image sums in float32 are exact enough; the sum over images is in float64
            total += x.sum(dim=(2, 3)).to(torch.float64).sum(0)
            total_sq += x.square().sum(dim=(2, 3)).to(torch.float64).sum(0)
            count += x.shape[0] * x.shape[2] * x.shape[3]
        mean = total / count
        var = (total_sq / count - mean * mean).clamp_min(0)
        self.mean = mean.to(torch.float32)
        self.std = var.sqrt().to(torch.float32).clamp_min(1e-6)
        self.normalised = True
        used = "all" if len(idx) == n else f"{len(idx)} of the"
        values = ", ".join(f"{m:.3f}/{s:.3f}" for m, s in zip(self.mean.tolist(), self.std.tolist()))
        self.notes.append(f"normalise with the training split's per-channel mean/std ({values}; "
                          f"measured on {used} {n} training images)")


class FittedDataset(Dataset):
    """A split over an in-memory source: yields ``(float C x H x W, int label)`` fitted on access.

    ``source`` is an N x Cs x Hs x Ws tensor (or an object with ``take(indices) -> tensor`` and
    ``len()``, such as image files decoded on demand); ``indices`` select this split's rows, so
    train and test can share one source without copies. ``__getitems__`` fits a whole batch at
    once when a DataLoader asks for one.
    """

    def __init__(self, source, labels: torch.Tensor, fit: Fit, indices: torch.Tensor | None = None):
        self.source = source
        self.labels = labels
        self.fit = fit
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.labels)

    def _rows(self, items) -> torch.Tensor:
        rows = torch.as_tensor(items, dtype=torch.long)
        if rows.numel() and (int(rows.min()) < -len(self) or int(rows.max()) >= len(self)):
            raise IndexError(f"index out of range for a split of {len(self)} samples")
        rows = rows % max(len(self), 1)
        return self.indices[rows] if self.indices is not None else rows

    def raw(self, items) -> tuple[torch.Tensor, torch.Tensor]:
        """The unfitted source batch and labels for these split positions (e.g. to fit on a GPU)."""
        rows = self._rows(items)
        return take(self.source, rows), self.labels[rows]

    def batch(self, items) -> tuple[torch.Tensor, torch.Tensor]:
        """Fitted images (N x C x H x W float32) and labels (N, int64) for these split positions."""
        x, y = self.raw(items)
        return self.fit(x).contiguous(), y

    def __getitem__(self, i):
        if not isinstance(i, numbers.Integral) and not (isinstance(i, torch.Tensor) and i.ndim == 0):
            return self.batch(i)  # a list of positions (make_loader's batch sampler): a whole batch
        x, y = self.batch([int(i)])
        return x[0], int(y[0])

    def __getitems__(self, items):
        x, y = self.batch(list(items))
        return list(zip(x.unbind(0), y.tolist()))

    @property
    def targets(self) -> torch.Tensor:
        """The labels of this split, in order."""
        return self.labels[self.indices] if self.indices is not None else self.labels

    def image(self, i) -> torch.Tensor:
        """Sample ``i`` as people see it: uint8, H x W (grey) or C x H x W, before normalisation."""
        x = take(self.source, self._rows([i]))[0]
        if x.dtype != torch.uint8 or self.fit.scale != 255:  # digits are uint8 but 0..16
            x = (x.to(torch.float32) / self.fit.scale * 255).round().clamp(0, 255).to(torch.uint8)
        return x[0] if x.shape[0] == 1 else x


def take(source, rows: torch.Tensor) -> torch.Tensor:
    """Rows of a tensor source, or of an on-demand source with ``take``."""
    if isinstance(source, torch.Tensor):
        return source[rows]
    return source.take(rows)


def seeded_split(n: int, seed: int, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, test indices) of a seeded random split; both non-empty when n >= 2."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(n * test_fraction))
    if n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    return perm[n_test:], perm[:n_test]
