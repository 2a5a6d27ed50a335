"""The in-process batch loader (engine.data.loading.BatchLoader): what DataLoader with a batch
sampler gave, without its per-batch machinery."""
from __future__ import annotations

import torch

from engine.data.builtin import SyntheticDataset
from engine.data.loading import BatchLoader, make_loader


def _data(n=10):
    pool = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1)
    return SyntheticDataset(pool, torch.arange(n))


def test_every_epoch_is_a_seeded_permutation_cut_into_batches():
    d = _data(10)
    loader = make_loader(d, 4, shuffle=True, seed=3, drop_last=False)
    assert isinstance(loader, BatchLoader) and len(loader) == 3
    first = [y.tolist() for _, y in loader]
    second = [y.tolist() for _, y in loader]
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(first, [])) == list(range(10)) and sorted(sum(second, [])) == list(range(10))
    assert first != second  # a new order each epoch
    again = [y.tolist() for _, y in make_loader(d, 4, shuffle=True, seed=3, drop_last=False)]
    assert again == first  # the same seed, the same order
    for x, y in make_loader(d, 4, shuffle=True, seed=3):
        assert torch.equal(x.flatten(), y.float())  # images and labels stay paired


def test_drop_last_and_sequential_order():
    d = _data(10)
    loader = make_loader(d, 4, shuffle=False, drop_last=True)
    assert len(loader) == 2 and [y.tolist() for _, y in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_workers_or_pinned_memory_still_get_a_dataloader():
    from torch.utils.data import DataLoader

    assert isinstance(make_loader(_data(), 4, device="cuda"), DataLoader)  # pinned memory for CUDA
