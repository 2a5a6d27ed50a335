"""Training memory per layer, measured: the tensors each layer saves for backward, counted while
the probe walks the plan, and (CUDA) the allocator's own history for one step.

Saved-tensor accounting (``SavedAccounting``): during a sampled profiled step's forward,
``torch.autograd.graph.saved_tensors_hooks`` sees every tensor autograd keeps for backward. The
plan walker (``LayerNet.forward``) calls the probe back after each layer, so the layer running
when a tensor is packed is the one after the last callback. Each tensor is counted by its
storage (``untyped_storage()``, whole bytes: a saved view keeps its whole storage alive), once
per step even when several layers save it (a ReLU's output saved by the ReLU and by the next
conv), and charged to the layer that CREATED that storage: the layer whose output it is, or the
running layer for a tensor made inside it (autocast's cast copies, a pooling layer's indices).
Storages of parameters and buffers are not activations: they are left out (they are the
weights; ``MemoryEstimate`` counts them). The net input is charged to no layer (``input_saved``).

The pack hook returns a detached alias of the tensor (same storage, no new memory, no reference
from the graph back to its own output), so the graph frees exactly as without the hook. The time
spent in the hooks is measured and taken out of the layer's forward time by the probe (CPU).

Memory timeline model (CPU, ``events``): a layer's new output storage and the storages it
creates and saves are allocated when its forward ends; an output nobody saved is freed when its
last consumer has run (the plan's ``free_after``); a saved storage is freed when the backward of
the FIRST layer (in forward order) that saved it ends, the last of its savers to run backward.
Gradients, the loss and the optimizer's buffers are not in the model. Each event is
``(at_node, phase, owner_node, delta_bytes)``; its time comes from the step's LayerTimes.

CUDA (``CudaHistory``): ``torch.cuda.memory._record_memory_history`` for one step only, at most
``max_entries`` trace entries, no stacks; each alloc/free becomes ``(t_ms, owner_node, delta)``
with ``t_ms`` the host time the allocator served it (ms from the step start) and the owner the
layer whose forward the host was running when the block was allocated (None outside the
forward); the first event ``(0.0, None, allocated bytes at the start)`` is the baseline.
"""
from __future__ import annotations

import math
import time
import weakref

INPUT = -1


def storage_key(t) -> int:
    """The identity of a tensor's storage (its StorageImpl; the same for every view of it, and on
    the meta device, where data pointers are all 0)."""
    return t.untyped_storage()._cdata


def weight_keys(model) -> set[int]:
    """Storage keys of the model's parameters and buffers (never counted as activations)."""
    keys = {storage_key(p) for p in model.parameters()}
    keys |= {storage_key(b) for b in model.buffers()}
    return keys


class SavedAccounting:
    """Per-layer saved-for-backward bytes and output bytes of one forward pass (see the module).

    Use: ``begin(x)``; run the forward inside ``hooks()`` with ``on_output(k, out)`` called after
    plan step ``k``; then ``saved``/``out``/``input_saved``/``events(plan)``/``hook_ns``.
    ``saved[k]``: bytes of the distinct storages layer ``k`` created that autograd saved;
    ``out[k]``: bytes of layer ``k``'s output tensor (elements x element size).
    """

    def __init__(self, model, n: int):
        self.model = model
        self.n = n
        self._weights: set[int] | None = None
        self.begin(None)

    def begin(self, x) -> None:
        import torch  # noqa: F401  (the hooks below need it loaded)

        if self._weights is None:
            self._weights = weight_keys(self.model)
        n = self.n
        self.cur = 0  # the layer now running (plan index); n: after the last one
        self.saved = [0] * n
        self.out = [0] * n
        self.input_saved = 0
        self.hook_ns = [0] * (n + 1)
        # storage key -> (owner, weakref to a tensor on it, serial): a key is reused once its
        # storage is freed, so each storage also gets a serial number unique within the step
        self._live: dict[int, tuple[int, weakref.ref, int]] = {}
        self._serial = 0
        self._stor: dict[int, list] = {}  # serial of a saved storage -> [owner, nbytes, first saver]
        self._out_serial: list[int | None] = [None] * n
        self._new_out = [False] * n
        self.input_bytes = 0
        if x is not None:
            self._entry(storage_key(x), x, INPUT)
            self.input_bytes = x.nelement() * x.element_size()

    def made_output(self, k: int) -> bool:
        """Whether layer ``k``'s output is a new storage (not a view or an in-place result)."""
        return self._new_out[k]

    def _entry(self, key: int, t, owner: int) -> tuple[int, int, bool]:
        """(owner, serial, new) of the storage ``key`` that ``t`` lies on."""
        e = self._live.get(key)
        if e is not None:
            alive = e[1]()
            if alive is not None and storage_key(alive) == key:
                return e[0], e[2], False
        self._serial += 1
        self._live[key] = (owner, weakref.ref(t), self._serial)
        return owner, self._serial, True

    def pack(self, t):
        t0 = time.perf_counter_ns()
        key = storage_key(t)
        alias = t.detach()
        if key not in self._weights:
            owner, serial, _new = self._entry(key, alias, self.cur)
            if serial not in self._stor:
                nbytes = t.untyped_storage().nbytes()
                self._stor[serial] = [owner, nbytes, self.cur]
                if owner == INPUT:
                    self.input_saved += nbytes
                elif owner < self.n:
                    self.saved[owner] += nbytes
        self.hook_ns[self.cur] += time.perf_counter_ns() - t0
        return alias

    @staticmethod
    def unpack(t):
        return t

    def hooks(self):
        """The saved-tensor hooks context to run the forward in."""
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    def on_output(self, k: int, out) -> None:
        """Plan step ``k`` produced ``out`` (the walker's callback)."""
        t0 = time.perf_counter_ns()
        if hasattr(out, "untyped_storage"):
            self.out[k] = out.nelement() * out.element_size()
            owner, self._out_serial[k], _new = self._entry(storage_key(out), out, k)
            self._new_out[k] = owner == k  # made by this layer (not a view or an in-place result)
        self.cur = k + 1
        self.hook_ns[k + 1] += time.perf_counter_ns() - t0

    def events(self, plan, node_ids: list[str]) -> list[tuple]:
        """The timeline model's events ``(at_node, phase, owner_node, delta_bytes)`` in forward
        order then backward order (see the module docstring)."""
        index = {nid: k for k, nid in enumerate(node_ids)}
        by_owner_extra = [0] * self.n  # saved storages a layer made that are not its output
        release: dict[int, list] = {}  # first saver -> [(owner, bytes)]
        saved_keys = set(self._stor)
        for key, (owner, nbytes, saver) in self._stor.items():
            if 0 <= owner < self.n and key != self._out_serial[owner]:
                by_owner_extra[owner] += nbytes
            if owner != INPUT:
                release.setdefault(min(saver, self.n - 1), []).append((owner, nbytes))
        ev = []
        for k, step in enumerate(plan):
            nid = node_ids[k]
            add = (self.out[k] if self._new_out[k] else 0) + by_owner_extra[k]
            if add:
                ev.append((nid, "forward", nid, add))
            for r in step.free_after:
                j = index.get(r)
                if j is None or not self._new_out[j] or self._out_serial[j] in saved_keys:
                    continue
                ev.append((nid, "forward", r, -self.out[j]))
        for k in range(self.n - 1, -1, -1):
            for owner, nbytes in release.get(k, ()):
                if owner < self.n:
                    ev.append((node_ids[k], "backward", node_ids[owner], -nbytes))
        return ev


class MemorySampler:
    """Which profiled steps count saved tensors: the first one kept, then at most one per
    ``interval_s`` (each pack hook is a Python call, so every step would add a per-tensor cost)."""

    def __init__(self, model, n: int, interval_s: float = 1.0, clock=time.perf_counter):
        self.acct = SavedAccounting(model, n)
        self.interval_s = interval_s
        self.clock = clock
        self._last = -math.inf
        self.active = False

    def due(self) -> bool:
        """Whether the next forward is counted: none has been taken for ``interval_s`` (a counted
        step whose records were not kept, a warm-up step, does not count)."""
        return self.clock() - self._last >= self.interval_s

    def start(self, x):
        """Begin counting for this forward when due (and autograd records); returns the hooks
        context, or None when this forward is not counted (the usual profiled step)."""
        import torch

        self.active = self.clock() - self._last >= self.interval_s and torch.is_grad_enabled()
        if not self.active:
            return None
        self.acct.begin(x)
        return self.acct.hooks()

    def take(self, plan, node_ids) -> tuple[list, list, list]:
        """(saved bytes, output bytes, events) of the last counted forward; ([], [], []) when
        this step was not counted. Resets ``active``."""
        if not self.active:
            return [], [], []
        self.active = False
        self._last = self.clock()
        a = self.acct
        return list(a.saved), list(a.out), a.events(plan, node_ids)


class CudaHistory:
    """The CUDA caching allocator's alloc/free trace over one step (``_record_memory_history``,
    bounded to ``max_entries`` entries, no stack traces), turned into ``(t_ms, owner, delta)``."""

    def __init__(self, device, max_entries: int = 50_000):
        self.device = device
        self.max_entries = max_entries
        self.done = False
        self._t0_us = 0.0
        self._marks: list[tuple[float, int]] = []

    def start(self) -> bool:
        import torch

        try:
            torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python",
                                                     max_entries=self.max_entries, device=self.device)
        except Exception:
            self.done = True
            return False
        self._t0_us = time.time() * 1e6
        self._marks = []
        self._base = int(torch.cuda.memory_allocated(self.device))  # what the step starts with
        return True

    def mark(self, k: int) -> None:
        """Plan step ``k`` ended on the host now."""
        self._marks.append((time.time() * 1e6, k))

    def cancel(self) -> None:
        """Stop recording without keeping anything (a step whose records are not kept, or that
        failed): the next counted step records again."""
        import torch

        torch.cuda.memory._record_memory_history(enabled=None, device=self.device)

    def stop(self, node_ids: list[str]) -> list[tuple]:
        """Stop recording; the step's events ``(t_ms, owner_node|None, delta_bytes)``."""
        import bisect

        import torch

        self.done = True
        try:
            snap = torch.cuda.memory._snapshot(self.device)
        finally:
            torch.cuda.memory._record_memory_history(enabled=None, device=self.device)
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        traces = snap.get("device_traces") or []
        entries = traces[index] if index < len(traces) else []
        ends = [t for t, _k in self._marks]
        out = [(0.0, None, self._base)]
        owner_of: dict[int, str | None] = {}  # block address -> the layer that allocated it
        for e in entries:
            act = e.get("action")
            if act not in ("alloc", "free_completed"):
                continue
            t_us = float(e.get("time_us") or 0.0)
            if t_us < self._t0_us:
                continue
            size = int(e.get("size") or 0)
            addr = int(e.get("addr") or 0)
            if act == "alloc":
                j = bisect.bisect_left(ends, t_us)
                owner = node_ids[self._marks[j][1]] if j < len(self._marks) else None
                owner_of[addr] = owner
            else:
                owner = owner_of.pop(addr, None)
            out.append(((t_us - self._t0_us) / 1000.0, owner, size if act == "alloc" else -size))
        return out
