"""Data-parallel runs on ``torch.distributed``: ``DistributedDataParallel`` with a timed gradient
all-reduce per bucket, and the launcher of ``layerscope profile NET --nproc N``.

Each rank is one process running the ordinary ``Run`` (same probes, same session format) on its
own device; ``engine.run.setup`` wraps the model with ``wrap_ddp`` when a process group is
initialised, so the forward goes through DDP (which prepares the reducer) and the probe still
walks ``LayerNet.plan``. Backend: gloo on the CPU, NCCL on CUDA.

All-reduce timing comes from a DDP communication hook (``BucketTimer``) that does what DDP's
default hook does (divide the bucket by the world size, ``all_reduce`` it asynchronously) and
stamps each bucket: on the CPU ``time.perf_counter_ns`` when the bucket is launched and when its
future completes (gloo's thread); on CUDA a ``torch.cuda.Event`` pair on the current stream,
read after the step's own sync. Which layers' gradients a bucket carries comes from
``bucket.parameters()`` matched to the LayerNet's parameters (named by node id).

The launcher (``--nproc``, torchrun, ``study.json``) is ``engine.cli.ddp``.

Overlap: DDP launches a bucket's all-reduce as soon as its last gradient is computed, so the
backward compute is over when the last bucket is launched (``compute_end`` = the latest launch).
``overlap`` = the share of all-reduce time before that moment:
sum_i max(0, min(end_i, compute_end) - start_i) / sum_i (end_i - start_i), in [0, 1]; the rest
is exposed communication the step waits for.
"""
from __future__ import annotations

import threading
import time

from engine.records import CommTimes


def world() -> tuple[int, int]:
    """(rank, world size) of this process: from an initialised process group, else (0, 1)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch built without distributed
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class BucketTimer:
    """A DDP communication hook that times each bucket's all-reduce (see the module docstring).

    ``begin_step()`` before the step's forward; ``collect(step, t, warm)`` after the step's sync
    -> ``CommTimes`` (or None for a step without buckets: infer mode, a warm-up step).
    """

    def __init__(self, model, device, world_size: int):
        import torch

        self.world_size = world_size
        self.cuda = device.type == "cuda"
        self._lock = threading.Lock()
        self._rows: list[list] = []  # [index, start, end, bytes, nodes]
        self._t0 = 0
        self._ev0 = torch.cuda.Event(enable_timing=True) if self.cuda else None
        owner = {}
        for name, p in model.named_parameters():
            owner[id(p)] = name.split(".", 1)[0]  # submodules are named by node id
        self._owner = owner

    def begin_step(self) -> None:
        with self._lock:
            self._rows = []
        if self.cuda:
            self._ev0.record()
        else:
            self._t0 = time.perf_counter_ns()

    def hook(self, state, bucket):
        """The communication hook: what DDP's default all-reduce hook does, with stamps."""
        import torch
        import torch.distributed as dist

        buf = bucket.buffer()
        nodes = []
        for p in bucket.parameters():
            n = self._owner.get(id(p))
            if n is not None and n not in nodes:
                nodes.append(n)
        row = [bucket.index(), None, None, buf.numel() * buf.element_size(), nodes]
        if self.cuda:
            row[1] = torch.cuda.Event(enable_timing=True)
            row[1].record()
        else:
            row[1] = time.perf_counter_ns()
        with self._lock:
            self._rows.append(row)
        fut = dist.all_reduce(buf.div_(self.world_size), async_op=True).get_future()

        def done(f):
            if self.cuda:
                row[2] = torch.cuda.Event(enable_timing=True)
                row[2].record()
            else:
                row[2] = time.perf_counter_ns()
            return f.value()[0]

        return fut.then(done)

    def compute_end(self):
        """When this step's backward compute ended: the last bucket's launch (a ``perf_counter_ns``
        stamp on the CPU, its CUDA event on CUDA); None before any bucket."""
        with self._lock:
            starts = [r[1] for r in self._rows]
        if not starts:
            return None
        return starts[-1] if self.cuda else max(starts)

    def collect(self, step: int, t: float) -> CommTimes | None:
        """The step's buckets, times in ms from ``begin_step``; call after the step's sync."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return None
        out = []
        for index, start, end, nbytes, nodes in rows:
            if end is None:
                continue  # not completed (cannot happen after DDP's backward returned)
            if self.cuda:
                s, e = self._ev0.elapsed_time(start), self._ev0.elapsed_time(end)
            else:
                s, e = (start - self._t0) / 1e6, (end - self._t0) / 1e6
            out.append((index, s, e, nbytes, nodes))
        if not out:
            return None
        out.sort(key=lambda r: r[1])
        return CommTimes(step=step, t=t, bucket=[r[0] for r in out], start_ms=[r[1] for r in out],
                         end_ms=[r[2] for r in out], bytes=[r[3] for r in out], nodes=[r[4] for r in out])


def overlap(ct: CommTimes) -> tuple[float, float, float | None]:
    """(all-reduce ms, exposed ms, overlap share in [0, 1]) of one step (module docstring)."""
    total = sum(max(0.0, e - s) for s, e in zip(ct.start_ms, ct.end_ms))
    if not ct.start_ms:
        return 0.0, 0.0, None
    compute_end = max(ct.start_ms)
    hidden = sum(max(0.0, min(e, compute_end) - s) for s, e in zip(ct.start_ms, ct.end_ms))
    # exposed: the union of all-reduce time after the compute ended
    exposed = max(0.0, max(ct.end_ms) - compute_end)
    return total, exposed, (hidden / total if total > 0 else None)


def wrap_ddp(model, device, bucket_cap_mb: float = 25.0):
    """``(ddp, timer)`` for a model already on ``device`` when a process group is initialised,
    else ``(model, None)``. The timer's hook is registered on the DDP wrapper."""
    rank, size = world()
    if size <= 1:
        return model, None
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    ddp = DDP(model, device_ids=ids, bucket_cap_mb=bucket_cap_mb)
    timer = BucketTimer(model, device, size)
    ddp.register_comm_hook(None, timer.hook)
    return ddp, timer
