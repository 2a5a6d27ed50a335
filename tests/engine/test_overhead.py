"""The loop's own per-step cost (issue 9, item 26): what a LayerScope step adds to the user's own
training loop is kept to what the figures need. Timing belongs in benchmarks/overhead.py; here
the work per step is counted, which a busy machine cannot disturb."""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.run.loop import Run


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_loss_and_accuracy_read_out_costs_few_ops_on_the_cpu():
    out = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], requires_grad=True)
    y = torch.tensor([1, 1, 1])
    loss = torch.nn.functional.cross_entropy(out, y)
    with CountOps() as c:
        loss_v, n_ok = Run._loss_and_correct(loss, out, y, torch.device("cpu"))
    assert loss_v == loss.item() and n_ok == 2.0
    # argmax, eq_, sum and two reads: a hand-written loop's loss.item() plus the accuracy
    assert len(c.ops) <= 6, c.ops


def test_an_idle_command_queue_is_checked_without_raising():
    from engine.run.config import RunConfig

    import queue

    calls = []

    class Spy(queue.SimpleQueue):
        def get_nowait(self):
            calls.append(1)
            return super().get_nowait()

    run = Run(RunConfig())
    run._commands = Spy()
    run._drain()
    assert calls == []  # nothing queued: no get_nowait raising queue.Empty every step
    run.pause()
    run._drain()
    assert calls and run._paused
