"""What a loop needs around a dataset: loader settings per device, and the article's check
("test on N random held-out images") as a reusable helper."""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch


def loader_kwargs(device, info=None) -> dict:
    """DataLoader keyword arguments that help on ``device`` for a dataset described by ``info``.

    CPU and MPS: no workers (they would compete with the compute threads) and no pinning. CUDA:
    pinned memory so host-to-device copies can be ``non_blocking``; worker processes only when
    fitting is expensive (large upscale, image decoding - ``info.costly``), leaving one core free.
    """
    kind = str(device).split(":")[0]
    if kind != "cuda":
        return {"num_workers": 0, "pin_memory": False}
    workers = min(4, max((os.cpu_count() or 1) - 1, 0)) if getattr(info, "costly", False) else 0
    kw = {"num_workers": workers, "pin_memory": True}
    if workers:
        kw.update(persistent_workers=True, prefetch_factor=2)
    return kw


class BatchLoader:
    """The loader of a dataset with a ``batch`` method when no worker process nor pinned memory is
    wanted (the CPU, MPS, CUDA with cheap fitting and no pinning): each epoch a seeded permutation
    (``torch.randperm``) is cut into index tensors and ``dataset.batch(index)`` gives the batch.

    It does what ``DataLoader(batch_size=None, sampler=BatchSampler(...))`` does for these
    datasets without DataLoader's per-batch machinery (its iterator, fetcher, ``record_function``
    and a Python-level sampler yielding one position at a time): measured with cProfile on lenet5
    batch 64, the data path was ~0.2 ms of an 8 ms step, which a hand-written training loop does
    not pay (issue 9, item 26). ``len()`` is the number of batches per epoch.
    """

    def __init__(self, dataset, batch_size: int, *, shuffle: bool, generator: torch.Generator, drop_last: bool):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last

    def __len__(self) -> int:
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        n, b = len(self.dataset), self.batch_size
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        stop = n - n % b if self.drop_last else n
        batch = self.dataset.batch
        for i in range(0, stop, b):
            yield batch(order[i:i + b])


def make_loader(dataset, batch_size: int, *, shuffle: bool = True, seed: int = 0, device="cpu", info=None,
                drop_last: bool = False):
    """A loader yielding ``(x N x C x H x W float32, y N int64)`` batches for ``device``.

    Datasets with a ``batch`` method (all of ours) are fetched a batch at a time: the dataset gets
    an index tensor and the fitted batch is used as is, with no per-sample tensors and no second
    copy in ``collate`` - through ``BatchLoader`` when no worker process or pinned memory is
    wanted (``loader_kwargs``), else through a DataLoader with a batch sampler. ``seed`` makes the
    shuffling order reproducible.
    """
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

    g = torch.Generator().manual_seed(seed)
    kw = loader_kwargs(device, info)
    if hasattr(dataset, "batch") and not kw["num_workers"] and not kw["pin_memory"]:
        return BatchLoader(dataset, batch_size, shuffle=shuffle, generator=g, drop_last=drop_last)
    if hasattr(dataset, "batch"):
        order = RandomSampler(dataset, generator=g) if shuffle else SequentialSampler(dataset)
        sampler = BatchSampler(order, batch_size, drop_last)
        return DataLoader(dataset, batch_size=None, sampler=sampler, **kw)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g, drop_last=drop_last, **kw)


class SamplePrediction(NamedTuple):
    """One held-out image as a person sees it (uint8 H x W or C x H x W), its label and the net's guess."""

    image: np.ndarray
    label: int
    predicted: int


def _as_uint8(x: torch.Tensor) -> torch.Tensor:
    """A fitted (normalised) image stretched to 0..255 for display, when no source image exists."""
    x = x.detach().to(torch.float32)
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo).clamp_min(1e-12) * 255
    x = x.round().to(torch.uint8)
    return x[0] if x.shape[0] == 1 else x


def sample_predictions(model, dataset, n: int = 10, seed: int = 0, device=None, *,
                       batch_size: int = 64) -> list[SamplePrediction]:
    """The article's check: ``n`` random (seeded) images of ``dataset`` (the held-out split) with
    true and predicted labels. The model runs in eval mode on ``device`` (default: where its
    parameters are) and its training flag is restored afterwards."""
    n = max(0, min(int(n), len(dataset)))
    if n == 0:
        return []
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    out: list[SamplePrediction] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                chunk = idx[start:start + batch_size]
                if hasattr(dataset, "batch"):
                    x, y = dataset.batch(chunk)
                else:
                    items = [dataset[i] for i in chunk]
                    x = torch.stack([it[0] for it in items])
                    y = torch.tensor([int(it[1]) for it in items])
                logits = model(x.to(device))
                pred = logits.argmax(1).cpu()  # note: sync point (once per chunk, outside any hook)
                for k, i in enumerate(chunk):
                    img = dataset.image(i) if hasattr(dataset, "image") else _as_uint8(x[k])
                    out.append(SamplePrediction(img.numpy().copy(), int(y[k]), int(pred[k])))
    finally:
        model.train(was_training)
    return out
