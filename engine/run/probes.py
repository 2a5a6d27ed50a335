"""Per-layer forward/backward time, memory and feature maps of a LayerNet, at low cost.

How it stays light (forward pre/post hooks plus full backward hooks cost LeNet-5 9-19% of
its step here; torch.profiler 3-10%):

- Forward: ``LayerNet.forward`` walks the model's plan and calls the probe back after each
  layer, which takes one timestamp. The gaps between consecutive timestamps cover
  the whole forward pass, so layer times add up to the forward time (coverage ~1.0) with one
  clock read per layer instead of two hooks. No module hook is ever registered.
- Backward: one hook per layer output, registered on the autograd node that made it right
  after the layer's forward stamp (``layer_hooker``: a one-entry hooks dict on the tensor, as
  ``Tensor.register_hook`` does, without a handle; a second stamp after it, so registering is no
  layer's time). It fires when the gradient reaches that output, i.e. when the layer's backward
  starts. The autograd engine runs the graph one node at a time on a device, so a layer's
  backward lasts until the next such hook fires (or backward returns). Residual adds and
  branches are covered the same way, and nothing wraps the modules, so in-place ops and
  gradients are untouched.
- CPU: ``perf_counter_ns``; the probe's own cost per timestamp and per hook call is
  calibrated once and subtracted. Where it can be built (``engine.run.native``: Linux, a C++
  compiler; once per torch) one C call per layer does the stamp, the hook (a C++ pre-hook on
  the node, no Python object made) and the resume stamp, and the hooks write into a C array:
  ~10 us per LeNet-5 step instead of ~90 us for the Python hooks (``benchmarks/probe_costs.py``).
  The Python hooks stay the fallback, with the same figures (``Probe.hooks`` says which).
- CUDA (and MPS where torch has ``torch.mps.Event``): device events with timing from a
  preallocated pool recorded at the same points, resolved in ``collect()`` after the loop's
  own sync point. No synchronize,
  ``.item()`` or ``.cpu()`` happens in the timed path. Allocator current/peak bytes are read
  host-side after each layer.
- Feature maps: the chosen node's output for one sample, reduced on the device (<= 32
  channels, <= 64x64, uint8) after the forward's last timestamp, copied without blocking into
  pinned memory on CUDA and read after the sync.

Unprofiled steps do not use the probe at all (plain ``model(x)``).
"""
from __future__ import annotations

import functools
import math
import mmap
import time
from typing import NamedTuple

try:  # getrusage(RUSAGE_THREAD) is Linux's; elsewhere no page faults are counted
    import resource as _resource
    _RUSAGE_THREAD = getattr(_resource, "RUSAGE_THREAD", None)
except ImportError:  # Windows has no resource module
    _resource, _RUSAGE_THREAD = None, None

import torch

from engine.records import FeatureMap, LayerTimes
from engine.run.memory import CudaHistory, MemorySampler
from engine.run.native import stamps_module
from engine.run.native import status as native_status

FEATURE_CHANNELS = 32
FEATURE_SIDE = 64


@functools.lru_cache(maxsize=1)
def stamp_cost_ns() -> float:
    """What one forward timestamp (clock read plus bookkeeping) costs here, in ns."""
    perf = time.perf_counter_ns
    n = 200
    stamps = [0] * (n + 1)
    slots = [None] * n
    best_with = best_without = math.inf
    for _ in range(9):
        t0 = perf()
        for k in range(n):
            slots[k] = stamps
        t1 = perf()
        for k in range(n):
            stamps[k + 1] = perf()
            slots[k] = stamps
        t2 = perf()
        best_without = min(best_without, t1 - t0)
        best_with = min(best_with, t2 - t1)
    return max(0.0, (best_with - best_without) / n)


# The key of the probe's hook in the hooks dict it gives a layer's output tensor: torch's own
# RemovableHandle ids count up from 0, so a hook the model registers later on the same tensor
# (``Tensor.register_hook`` adds to this dict) never replaces it
_HOOK_KEY = -1


class _Hooks(dict):
    """A tensor's hooks dict as ``layer_hooker`` makes it: weak-referenceable, as torch's own
    RemovableHandle needs when the model adds a hook to the same tensor."""

    __slots__ = ("__weakref__",)


def layer_hooker(hooks: list, keep, fast: bool, hooked: list, seen: set):
    """``hook_layer(k, out)``: make ``hooks[k](grad)`` run when the gradient reaches ``out``, the
    output layer ``k`` just produced, i.e. when the backward of the autograd node that made it
    starts; ``hooked[k]`` becomes True. A node already in ``seen`` (a layer that hands back the
    tensor of the layer before it: an identity) or none (no grad) is not hooked again.

    The usual way, ``grad_fn.register_prehook``, makes an OrderedDict and a RemovableHandle per
    call (~1.5 us here, ~6 us right after a large layer's forward, when the caches are cold: the
    largest part of a LeNet-5 step's probe cost). This gives the tensor a one-entry hooks dict and
    registers it on the node (``_register_hook_dict``, what ``Tensor.register_hook`` does, without
    the handle): the graph frees it after its backward; to disarm the hooks of a step that failed
    before its backward, make a new hooker with new hook functions (``Probe.detach``). Where the
    tensor already has hooks of its own, or ``fast`` is False (``fast_hooks()``: this torch lacks
    these names), ``register_prehook`` is used and ``keep`` gets its handle.
    """
    mark = seen.add

    def hook_layer(k: int, out) -> None:
        gf = out.grad_fn
        if gf is None or gf in seen:
            return
        mark(gf)
        hooked[k] = True
        if fast and out._backward_hooks is None:
            out._backward_hooks = _Hooks({_HOOK_KEY: hooks[k]})
            gf._register_hook_dict(out)
        else:
            keep(gf.register_prehook(hooks[k]))
    return hook_layer


def unhook(kept: list) -> None:
    """Remove every hook whose handle a ``layer_hooker`` gave to ``keep``."""
    while kept:
        kept.pop().remove()


@functools.lru_cache(maxsize=1)
def fast_hooks() -> bool:
    """Whether ``layer_hooker``'s tensor-dict registration works with this torch (checked once on a
    two-node graph: the hooks fire once each, in backward order, and gradients are untouched)."""
    fired: list[int] = []
    try:
        x = torch.ones(2, requires_grad=True)
        with torch.enable_grad():
            a = x * 2.0
            b = a * 3.0
            for k, t in enumerate((a, b)):
                t._backward_hooks = _Hooks({_HOOK_KEY: lambda g, k=k: fired.append(k)})
                t.grad_fn._register_hook_dict(t)
            b.sum().backward()
        return fired == [1, 0] and x.grad is not None and x.grad.tolist() == [6.0, 6.0]
    except Exception:
        return False


@functools.lru_cache(maxsize=1)
def native_stamp_cost_ns() -> float:
    """What the native stamper's call costs a layer's forward time here, in ns: the gap between
    one call's resume stamp and the next call's stamp when nothing runs in between (returning
    to Python, the loop, calling again). 0.0 without the native stamps."""
    module = stamps_module()
    if module is None:
        return 0.0
    n = 200
    s = module.Stamper(n)
    x = torch.zeros(1)  # no grad: nothing is hooked
    best = math.inf
    for _ in range(9):
        s.reset(False)
        s.start()
        stamp = s.stamp
        for k in range(n):
            stamp(k, None, x)
        fwd, resume = s.read()[:2]
        gaps = sorted(b - a for a, b in zip(resume[1:], fwd[2:]))
        best = min(best, gaps[len(gaps) // 2])
    return float(best)


@functools.lru_cache(maxsize=2)
def hook_cost_ns(native: bool = False) -> float:
    """What one backward hook call costs the autograd engine here, in ns (CPU): as
    ``layer_hooker`` registers it, or (``native``) the native stamper's C++ pre-hook."""
    fast = fast_hooks()
    perf = time.perf_counter_ns
    n = 64
    stamps = [0] * n
    order: list[int] = []
    x = torch.zeros(1, requires_grad=True)
    module = stamps_module() if native else None
    if native and module is None:
        return 0.0
    stamper = module.Stamper(n) if module is not None else None

    def make(k):
        def hook(grad):
            stamps[k] = perf()
            order.append(k)
        return hook

    hooks = [make(k) for k in range(n)]

    def graph(hooked):
        y, handles = x, []
        if stamper is not None:
            stamper.reset(False)
            stamp = stamper.stamp
        else:
            python_hook = layer_hooker(hooks, handles.append, fast, [False] * n, set())

            def stamp(k, nid, out):
                python_hook(k, out)
        for k in range(n):
            y = y * 1.0
            if hooked:
                stamp(k, None, y)
        return y.sum(), handles

    best_with = best_without = math.inf
    with torch.enable_grad():
        for _ in range(9):
            loss, _ = graph(False)
            t0 = perf()
            loss.backward()
            best_without = min(best_without, perf() - t0)
            loss, handles = graph(True)
            t0 = perf()
            loss.backward()
            best_with = min(best_with, perf() - t0)
            unhook(handles)
            order.clear()
    return max(0.0, (best_with - best_without) / n)


def thread_faults() -> int | None:
    """Minor page faults this thread has taken so far; None where the OS does not count per thread."""
    if _RUSAGE_THREAD is None:
        return None
    return _resource.getrusage(_RUSAGE_THREAD).ru_minflt


@functools.lru_cache(maxsize=1)
def fault_cost_ns() -> float | None:
    """What one minor page fault costs here (the kernel maps and zeroes a fresh page on first
    touch), in ns: 4 MiB of fresh anonymous memory touched page by page, time over faults taken.
    None where faults are not counted per thread."""
    if _RUSAGE_THREAD is None:
        return None
    size, page = 4 << 20, mmap.PAGESIZE
    best = math.inf
    for _ in range(3):
        m = mmap.mmap(-1, size)
        try:
            f0, t0 = thread_faults(), time.perf_counter_ns()
            for off in range(0, size, page):
                m[off] = 1
            t1, f1 = time.perf_counter_ns(), thread_faults()
            for off in range(0, size, page):  # the same loop on mapped pages: its own cost
                m[off] = 2
            t2 = time.perf_counter_ns()
        finally:
            m.close()
        if f1 > f0:
            best = min(best, max(0.0, (t1 - t0) - (t2 - t1)) / (f1 - f0))
    return None if best == math.inf else best


def reduce_feature(t: torch.Tensor, first_channel: int = 0):
    """One sample's output (C,H,W) or (F,) -> (uint8 stack (c,h,w), tensor [lo, hi]) on its device.

    At most 32 channels, from ``first_channel`` (0-based; clamped so that the last group of the
    layer is taken when it lies past the end; see ``feature_window``), average-pooled to at most 64x64, min-max scaled to 0..255; a flat
    vector is laid out row by row in a square so it can be drawn as an image.
    """
    t = t.detach().float()
    flat = t.dim() == 1
    if t.dim() == 3:
        first = feature_window(int(t.shape[0]), first_channel)
        t = t[first:first + FEATURE_CHANNELS]
        h, w = t.shape[-2:]
        if h > FEATURE_SIDE or w > FEATURE_SIDE:
            t = torch.nn.functional.adaptive_avg_pool2d(
                t.unsqueeze(0), (min(h, FEATURE_SIDE), min(w, FEATURE_SIDE)))[0]
    elif not flat:
        t = t.reshape(-1)
        flat = True
    lo, hi = torch.aminmax(t)
    u8 = ((t - lo) * (255.0 / (hi - lo).clamp_min(1e-12))).round_().clamp_(0, 255).to(torch.uint8)
    if flat:
        n = u8.numel()
        side = max(1, math.ceil(math.sqrt(n)))
        u8 = torch.nn.functional.pad(u8, (0, side * side - n)).view(1, side, side)
        if side > FEATURE_SIDE:
            u8 = torch.nn.functional.adaptive_avg_pool2d(
                u8.float().unsqueeze(0), (FEATURE_SIDE, FEATURE_SIDE))[0].round_().to(torch.uint8)
    return u8.contiguous(), torch.stack([lo, hi])


def feature_window(channels: int, first_channel: int) -> int:
    """The first channel (0-based) actually captured of a ``channels``-channel layer when
    ``first_channel`` is asked: the same, or an earlier one so that the window of at most 32
    channels stays inside the layer (a request made for another layer may lie past its end)."""
    return max(0, min(int(first_channel), channels - FEATURE_CHANNELS if channels > FEATURE_CHANNELS else 0))


class CpuStamps(NamedTuple):
    """One profiled CPU step's raw stamps (``perf_counter_ns``), copied out of the probe."""

    start: int  # the step start
    stamps: list  # [0]: forward start, [k + 1]: layer k's forward end
    begins: list  # [k]: where layer k's forward begins (after the probe's work at the end of k - 1)
    c_stamp: float  # one stamp's own cost, ns (subtracted from each forward slice)
    order: list  # layers whose backward hook fired, in firing order
    bwd: list  # [k]: when layer k's backward began (its hook), or None
    c_hook: float  # one hook call's own cost, ns
    bwd_end: int  # when the backward compute ended
    hooked: list | None  # [k]: layer k's backward was hooked; None when no backward ran
    mem_bytes: list  # per layer, or Nones
    faults: list  # the thread's minor-fault count at each stamp (n + 1), or [] when not counted
    fault_ns: float | None


def cpu_layer_times(raw: CpuStamps) -> dict:
    """The per-node lists of a LayerTimes (``fwd_ms``, ``bwd_ms``, ``fwd_start_ms``,
    ``bwd_start_ms`` in ms from the step start; ``mem_bytes``, ``peak_bytes``, ``minor_faults``,
    ``fault_ns``) from one CPU step's stamps.

    A layer's forward runs from ``begins[k]`` to ``stamps[k + 1]`` less one stamp's cost; its
    backward from its hook to the next hook that fired (less one hook call) or, for the last, to
    the end of the backward compute. A layer whose backward was not hooked (no grad_fn, or the
    node of the layer before it: an identity) gets 0; a hooked one the gradient never reached
    keeps None."""
    n, start, cs = len(raw.bwd), raw.start, raw.c_stamp
    stamps, begins, order = raw.stamps, raw.begins, raw.order
    fwd_start = [(stamp - start) / 1e6 for stamp in begins[:n]]
    fwd_ms = [(b - a - cs) / 1e6 if b - a > cs else 0.0 for a, b in zip(begins, stamps[1:])]
    bwd_ms: list = [None] * n
    bwd_start: list = [None] * n
    if order:
        b, ch = raw.bwd, raw.c_hook
        ts = [b[k] for k in order]
        ends = [stamp - ch for stamp in ts[1:]]  # each gap holds one hook call
        ends.append(raw.bwd_end)  # the last ends when the backward compute does
        for k, stamp, end in zip(order, ts, ends):
            bwd_start[k] = (stamp - start) / 1e6
            bwd_ms[k] = (end - stamp) / 1e6 if end > stamp else 0.0
    if raw.hooked is not None:
        no_own_backward(bwd_ms, raw.hooked)
    faults = [b - a for a, b in zip(raw.faults, raw.faults[1:])]
    return {"fwd_ms": fwd_ms, "bwd_ms": bwd_ms, "fwd_start_ms": fwd_start, "bwd_start_ms": bwd_start,
            "mem_bytes": list(raw.mem_bytes), "peak_bytes": [None] * n, "minor_faults": faults,
            "fault_ns": raw.fault_ns if raw.faults else None}


def no_own_backward(bwd_ms: list, hooked: list) -> None:
    """After a backward: a layer whose backward was not hooked (no grad_fn, or the node of the
    layer before it: an identity) did no backward work of its own, 0 ms, not None."""
    for k, h in enumerate(hooked):
        if not h:
            bwd_ms[k] = 0.0


class DeferredLayerTimes(LayerTimes):
    """A LayerTimes whose per-node lists are worked out from the step's ``CpuStamps`` when a
    consumer first reads one (``cpu_layer_times``): the session writer's thread, the viewer's
    fold of the live feed, the remote server's sender. The run's own thread only copies the
    stamps (a profiled LeNet-5 step's read-out cost ~45 us there right after a batch-64 backward,
    on cold caches). Same fields, same values as ``LayerTimes``; reading from several threads is
    safe (each would compute the same values from the same copied stamps)."""

    def __init__(self, step: int, t: float, node_ids: list, raw: CpuStamps):  # noqa: D107 - no super(): deferred
        self.step, self.t, self.node_ids, self._raw = step, t, node_ids, raw

    def __getattr__(self, name: str):
        # only for the fields not computed yet (found in ``__dict__`` afterwards)
        raw = self.__dict__.get("_raw")
        if raw is None or name.startswith("__"):
            raise AttributeError(name)
        fields = cpu_layer_times(raw)
        fields.update(saved_bytes=[], out_bytes=[], memory_events=[])
        self.__dict__.update(fields)
        try:
            return fields[name]
        except KeyError:
            raise AttributeError(name) from None


class CudaMemory:
    """Host-side reads of the caching allocator (no device sync)."""

    def __init__(self, device):
        self.index = device.index if device.index is not None else torch.cuda.current_device()
        raw = getattr(torch._C, "_cuda_memoryStats", None)
        self._raw = raw
        self._reset = getattr(torch._C, "_cuda_resetPeakMemoryStats", None)

    def read(self) -> tuple[int, int]:
        """(allocated bytes now, peak since the last reset); resets the peak."""
        if self._raw is not None:
            s = self._raw(self.index)["allocated_bytes"]["all"]
            cur, peak = int(s["current"]), int(s["peak"])
        else:  # pragma: no cover - older torch
            cur = torch.cuda.memory_allocated(self.index)
            peak = torch.cuda.max_memory_allocated(self.index)
        if self._reset is not None:
            self._reset(self.index)
        else:  # pragma: no cover
            torch.cuda.reset_peak_memory_stats(self.index)
        return cur, peak

    def current(self) -> tuple[int, int]:
        """(allocated, reserved) bytes now, without touching the peak."""
        if self._raw is not None:
            s = self._raw(self.index)
            return int(s["allocated_bytes"]["all"]["current"]), int(s["reserved_bytes"]["all"]["current"])
        return torch.cuda.memory_allocated(self.index), torch.cuda.memory_reserved(self.index)  # pragma: no cover


class Probe:
    """Times every node of one LayerNet for the steps the run chooses to profile.

    Use per profiled step: ``begin_step()``, ``forward(x)``, (train) backward then
    ``end_backward()``, the loop's own sync, then ``collect()`` and ``take_feature()``.
    ``detach()`` (always, in a ``finally``) removes every hook still registered.
    """

    def __init__(self, model, device, *, act_bytes_per_sample: list[int] | None = None,
                 feature_node: str | None = None, feature_hz: float = 4.0, clock=time.perf_counter,
                 count_faults: bool = True, fault_interval_s: float = 1.0, mem_interval_s: float = 1.0,
                 native: bool | None = None):
        self.model = model
        self.runner = model.forward  # what forward calls with (x, on_output); a DDP wrapper in a data-parallel run
        self.device = device
        self.plan = model.plan  # the steps this probe times, in the order they run
        self.node_ids = [step.node_id for step in self.plan]
        self.n = len(self.node_ids)
        self.act_bytes_per_sample = act_bytes_per_sample
        self.cuda = device.type == "cuda"
        event_cls = None
        if device.type == "cuda":
            event_cls = torch.cuda.Event
        elif device.type == "mps":
            event_cls = getattr(torch.mps, "Event", None)
        # GPU work is asynchronous: only device events can time it (host clocks would time launches)
        self.events = event_cls is not None
        self.clock = clock
        self.feature_hz = feature_hz
        self._feature_k = -1
        self._feature_first = 0
        self._last_feature = -math.inf
        self.set_feature_node(feature_node)
        # what the run loop reports when a step fails inside a layer
        self.current_k: int | None = None
        self.phase = "forward"
        n = self.n
        self._fwd = [0] * (n + 1)
        self._bwd: list[int | None] = [None] * n
        self._order: list[int] = []
        self._seen_gf: set = set()  # autograd nodes hooked during this forward
        self._hooked: list[bool] = [False] * n  # layer k's backward is hooked this step
        self._hook_layer = None  # set below, once the hook functions exist
        self._handles: list = []
        self._bwd_end = 0
        self._start = 0
        self._batch = 0
        self._backward_run = False
        self._feature = None
        self.mem = None
        self._mem_cur = [0] * (n + 1)
        self._mem_peak = [0] * (n + 1)
        if self.cuda:
            self.mem = CudaMemory(device)
        # CUDA: the allocator's allocated/peak bytes around each layer cost a host call of ~21 us
        # (torch._C._cuda_memoryStats; measured on an H200, docs/measurements/), which made a
        # resnet18 step host-bound (1.43x); so they are read per layer on at most one profiled
        # step per ``mem_interval_s`` (the first included), and absent (None) on the others
        self.mem_interval_s = mem_interval_s
        self._last_mem_t = -math.inf
        self._mem_layers = False  # this profiled step reads the allocator per layer
        # CPU: the compiled stamper (engine.run.native) when it is there and ``native`` is not False;
        # True: required (RuntimeError without it)
        self._native = None
        if not self.events and native is not False:
            module = stamps_module()
            if module is not None:
                self._native = module.Stamper(n)
            elif native:
                raise RuntimeError(f"the native stamps are unavailable: {native_status()}")
        self._native_counts = False  # this step's stamper counts page faults (begin_step)
        self.hooks = "device events" if self.events else ("native" if self._native is not None else "python")
        if self.events:
            ev = functools.partial(event_cls, enable_timing=True)
            self._ev_start = ev()
            self._fev = [ev() for _ in range(n + 1)]
            self._bev = [ev() for _ in range(n)]
            self._bev_end = ev()
            self.c_stamp = self.c_hook = 0.0  # device timestamps: host cost is not in them
        elif self._native is not None:
            self.c_stamp = native_stamp_cost_ns()
            self.c_hook = hook_cost_ns(native=True)
        else:
            self.c_stamp = stamp_cost_ns()
            self.c_hook = hook_cost_ns()
        # CPU: minor page faults per layer at the same stamps (first touch of fresh activation
        # memory is paid by whichever layer allocates; this tells the user when a time is mostly that)
        self._faults = [0] * (n + 1) if not self.events and count_faults and _RUSAGE_THREAD is not None else None
        self._resume = [0] * (n + 1)
        self.fault_ns = fault_cost_ns() if self._faults is not None else None
        # a getrusage call costs ~1-15 us here (a system call; more in a sandbox, and right after a
        # large layer, on cold caches): on every step of lenet5 (13 calls per 8 ms step) it measured
        # +2.4%, and once per 0.1 s still ~0.5% (the counted step's figures are also worked out at
        # once), so faults are counted on at most one kept profiled step per ``fault_interval_s``
        # (every step of a net slower than that; the first kept one always)
        self.fault_interval_s = fault_interval_s
        self._last_fault_t = -math.inf
        self._counted = False
        self._armed = False  # this step's backward hooks are registered and have not all run
        self._arm_hooks()
        # saved-for-backward bytes per layer on sampled steps, and one step's CUDA allocator trace
        self.memory = MemorySampler(model, n)
        self.cuda_history = CudaHistory(device) if self.cuda else None
        self._history_on = False  # the allocator history records this step (CUDA, once)
        self._nones, self._falses = [None] * n, [False] * n  # begin_step's resets, one slice copy each
        self._act_bytes: tuple[int, list] | None = None  # (batch, activation bytes per layer at it)

    # ---- feature maps -------------------------------------------------------------------

    def set_feature_node(self, node_id: str | None, first_channel: int = 0) -> None:
        """Sample this node's output from now on (None: no feature maps), at most 32 channels
        from ``first_channel`` (0-based, >= 0). Any thread. ValueError for an unknown node or a
        negative channel."""
        if node_id is None:
            self._feature_k = -1
            return
        if node_id not in self.node_ids:
            raise ValueError(node_id)
        if int(first_channel) < 0:
            raise ValueError(f"first_channel {first_channel} < 0")
        self._feature_first = int(first_channel)
        self._feature_k = self.node_ids.index(node_id)
        self._last_feature = -math.inf  # show the new node at once

    def _fault_due(self) -> bool:
        """Whether this step counts page faults: none was counted on a kept step (``collect``)
        for ``fault_interval_s`` (a warm-up step's count is not kept, so it does not count)."""
        return self.clock() - self._last_fault_t >= self.fault_interval_s

    def feature_due(self) -> bool:
        """Whether this step should capture a feature map (rate-limited to feature_hz)."""
        if self._feature_k < 0 or self.feature_hz <= 0:
            return False
        return self.clock() - self._last_feature >= 1.0 / self.feature_hz

    def _capture(self, out) -> None:
        sample = out[0]
        total = int(sample.shape[0]) if sample.dim() == 3 else None
        first = feature_window(total, self._feature_first) if total is not None else 0
        u8, lohi = reduce_feature(sample, first)
        if self.cuda:
            host = torch.empty(u8.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(u8, non_blocking=True)
            host_lohi = torch.empty(2, dtype=torch.float32, pin_memory=True)
            host_lohi.copy_(lohi, non_blocking=True)
            self._feature = (self.node_ids[self._feature_k], host, host_lohi, first, total)
        elif u8.device.type != "cpu":
            self._feature = (self.node_ids[self._feature_k], u8.to("cpu", non_blocking=True),
                             lohi.to("cpu", non_blocking=True), first, total)
        else:
            self._feature = (self.node_ids[self._feature_k], u8, lohi, first, total)
        self._last_feature = self.clock()

    def take_feature(self, step: int, t: float) -> FeatureMap | None:
        """The feature map captured this step, as a record; call after the step's sync."""
        if self._feature is None:
            return None
        node_id, u8, lohi, first, total = self._feature
        self._feature = None
        lo, hi = (float(v) for v in lohi.tolist())  # already on the host, synced by the loop
        arr = u8.numpy()
        return FeatureMap(step, t, node_id, tuple(int(d) for d in arr.shape), arr.tobytes(), lo, hi,
                          first, total)

    # ---- one step -----------------------------------------------------------------------

    def begin_step(self) -> None:
        """Mark the step start (offsets in LayerTimes are from here)."""
        if self._native is not None:
            self._native_counts = self._faults is not None and self._fault_due()
            self._native.reset(self._native_counts)
        else:
            self._order.clear()
            self._bwd[:] = self._nones
            self._hooked[:] = self._falses
        self._backward_run = False
        if self.mem is not None:
            self._mem_cur[0], _ = self.mem.read()  # also resets the peak: step_peak_bytes is this step's
            now = self.clock()
            self._mem_layers = now - self._last_mem_t >= self.mem_interval_s
            if self._mem_layers:
                self._last_mem_t = now
        if self.events:
            self._ev_start.record()
        self._start = time.perf_counter_ns()

    def forward(self, x, *, timing: bool = True, feature: bool | None = None):
        """Run ``x`` through ``LayerNet.forward`` with a per-layer callback that times each layer.

        With ``timing=False`` it only captures a due feature map (no timestamps, no hooks).
        ``feature``: whether a feature map is due, when the caller has just asked ``feature_due``.
        """
        feat_k = self._feature_k if (self.feature_due() if feature is None else feature) else -1
        feat_out = None
        self._counted = False
        self._batch = int(x.shape[0])
        self.phase = "forward"
        self.current_k = None
        saving = self.memory.start(x) if timing else None  # memory: sampled steps only (else None)
        hook = self._hook_layer
        grad = timing and torch.is_grad_enabled()
        self._armed = grad  # backward hooks get registered from here on
        if not timing:
            def seen(k, nid, out):
                nonlocal feat_out
                if k == feat_k:
                    feat_out = out
        elif self.events:
            fev, cur, peak = self._fev, self._mem_cur, self._mem_peak
            mem = self.mem if self._mem_layers else None

            def seen(k, nid, out):
                nonlocal feat_out
                fev[k + 1].record()
                if mem is not None:
                    cur[k + 1], peak[k + 1] = mem.read()
                hook(k, out)
                if k == feat_k:
                    feat_out = out
        elif self._native is not None:
            # one C call per layer: stamp, hook the node, stamp (and count faults when reset asked)
            self._counted = self._native_counts  # decided when the stamper was reset
            stamp = self._native.stamp
            if feat_k < 0:
                seen = stamp
            else:
                def seen(k, nid, out):
                    nonlocal feat_out
                    stamp(k, nid, out)
                    if k == feat_k:
                        feat_out = out
        elif self._faults is not None and self._fault_due():
            self._counted = True
            perf, stamps, resume, flt = time.perf_counter_ns, self._fwd, self._resume, self._faults
            rusage, who = _resource.getrusage, _RUSAGE_THREAD

            def seen(k, nid, out):
                nonlocal feat_out
                stamps[k + 1] = perf()
                flt[k + 1] = rusage(who).ru_minflt
                hook(k, out)
                if k == feat_k:
                    feat_out = out
                resume[k + 1] = perf()  # the fault count's read-out and the hook are no layer's time
        else:
            perf, stamps, resume = time.perf_counter_ns, self._fwd, self._resume

            def seen(k, nid, out):
                nonlocal feat_out
                stamps[k + 1] = perf()
                hook(k, out)
                if k == feat_k:
                    feat_out = out
                resume[k + 1] = perf()  # registering the backward hook is no layer's time
        if saving is not None:
            seen = self._memory_seen(seen)
        # the first stamp is the last thing before the first layer runs
        if timing:
            if self.events:
                self._fev[0].record()
            elif self._native is not None:
                self._native.start()
            else:
                if self._counted:
                    self._faults[0] = _resource.getrusage(_RUSAGE_THREAD).ru_minflt
                self._resume[0] = self._fwd[0] = time.perf_counter_ns()
        try:
            # forward itself, as the plan walk did before: no module hooks are registered to run
            if saving is None:
                out = self.runner(x, seen if timing or feat_k >= 0 else None)
            else:
                with saving:
                    out = self.runner(x, seen)
        except BaseException:
            failed = self.model.failed_node
            self.current_k = self.node_ids.index(failed) if failed in self.node_ids else None
            raise
        if grad:
            self._attach_backward()
        if feat_out is not None:
            self._capture(feat_out)
        return out

    def _memory_seen(self, seen):
        """``seen`` followed by the saved-tensor accounting's callback (and, on the first counted
        CUDA step, the allocator trace's layer marks)."""
        acct, hist = self.memory.acct, self.cuda_history
        if hist is not None and not hist.done and hist.start():
            self._history_on = True

            def both(k, nid, out):
                seen(k, nid, out)
                hist.mark(k)
                acct.on_output(k, out)
            return both

        def counted(k, nid, out):
            seen(k, nid, out)
            acct.on_output(k, out)
        return counted

    def _arm_hooks(self) -> None:
        """New backward hook functions, writing into new lists: those of a step that failed before
        its backward (its graph may still be run by someone) write where nobody reads."""
        self._order = []
        self._bwd = [None] * self.n
        self._hooks = [self._make_hook(k) for k in range(self.n)]
        self._hook_layer = layer_hooker(self._hooks, self._handles.append, fast_hooks(), self._hooked,
                                        self._seen_gf)

    def _make_hook(self, k: int):
        order = self._order
        # the hook body is all a layer's backward pays: one stamp and one append (the layer
        # running now is ``order[-1]``, see ``current_node``)
        if self.events:
            record, add = self._bev[k].record, order.append

            def hook(grad):
                record()
                add(k)
        else:
            stamps, perf, add = self._bwd, time.perf_counter_ns, order.append

            def hook(grad):
                stamps[k] = perf()
                add(k)
        return hook

    def _attach_backward(self) -> None:
        """After the forward: the nodes are hooked (``_hook_layer``, as each layer ended); forget
        them, so that nothing here keeps the graph alive after its backward."""
        self._seen_gf.clear()
        self._backward_run = True
        self.phase = "backward"
        self.current_k = None

    def end_backward(self, compute_end=None) -> None:
        """Mark the end of backward (call right after ``loss.backward()`` returns).

        ``compute_end``: in a data-parallel run, when the backward compute really ended (the last
        gradient bucket's launch: a ``perf_counter_ns`` stamp on the CPU, a recorded CUDA event),
        because DDP's backward returns only after waiting for the last all-reduce, which is no
        layer's backward time."""
        if self.events:
            if compute_end is not None:
                self._bev_end = compute_end
            else:
                self._bev_end.record()
        else:
            now = time.perf_counter_ns()
            if compute_end is not None:
                bwd = self._native.read()[3] if self._native is not None else self._bwd
                started = [b for b in bwd if b is not None]
                if started and compute_end >= max(started):
                    now = compute_end
            self._bwd_end = now
        self.phase = "optimizer step"
        self.current_k = None
        self._armed = False
        # backward has run and freed its graph nodes, and the hooks with them: removing each
        # one would only cost time, so any handles are just dropped
        self._handles.clear()

    def detach(self) -> None:
        """Remove every hook still registered (a step that failed between forward and backward)."""
        unhook(self._handles)
        self._seen_gf.clear()
        if self._armed:  # failed between forward and backward: its graph keeps hooks of its own
            self._armed = False
            self._arm_hooks()
            if self._native is not None:
                self._native.disarm()
        if self._history_on:  # a warm-up or failed step: its trace is not kept
            self._history_on = False
            self.cuda_history.cancel()
        self._feature = None

    def collect(self, step: int, t: float) -> LayerTimes:
        """This step's per-node times; call after the loop's sync point (CUDA events are done).

        CPU: a ``DeferredLayerTimes`` (the stamps copied; the lists worked out when first read),
        except on a step that counted memory or page faults, whose figures are taken now."""
        n = self.n
        node_ids = self.node_ids
        order = self._order
        if not self.events:
            raw = self._cpu_stamps()
            if not self.memory.active and not self._counted:  # the usual profiled step
                return DeferredLayerTimes(step, t, list(node_ids), raw)
            if self._counted:
                self._last_fault_t = self.clock()
            got = cpu_layer_times(raw)  # a sampled step: its memory and fault figures now
            saved, out_bytes, events, source = self._memory_collect(got["fwd_ms"])
            return LayerTimes(step, t, list(node_ids), saved_bytes=saved, out_bytes=out_bytes,
                              memory_events=events, memory_source=source, **got)
        # device events (CUDA, MPS): the pool is reused next step, so everything is read now
        s, fev, bev = self._ev_start, self._fev, self._bev
        fwd_start = [s.elapsed_time(e) for e in fev[:n]]
        fwd_ms = [a.elapsed_time(b) for a, b in zip(fev, fev[1:])]
        mem_bytes: list[int | None] = self._nones[:]
        peak_bytes: list[int | None] = self._nones[:]
        if self.mem is not None and self._mem_layers:
            cur = self._mem_cur
            mem_bytes = [b - a for a, b in zip(cur, cur[1:])]
            peak_bytes = list(self._mem_peak[1:])
        elif self.mem is None:  # no allocator to read (MPS)
            mem_bytes = list(self._activation_bytes())
        bwd_ms: list[float | None] = self._nones[:]
        bwd_start: list[float | None] = self._nones[:]
        ends = [bev[k] for k in order[1:]] + [self._bev_end]
        for k, end in zip(order, ends):
            bwd_start[k] = s.elapsed_time(bev[k])
            bwd_ms[k] = bev[k].elapsed_time(end)
        if self._backward_run:
            no_own_backward(bwd_ms, self._hooked)
        saved, out_bytes, events, source = self._memory_collect(fwd_ms)
        return LayerTimes(step, t, list(node_ids), fwd_ms, bwd_ms, fwd_start, bwd_start, mem_bytes,
                          peak_bytes, [], None, saved_bytes=saved, out_bytes=out_bytes, memory_events=events,
                          memory_source=source)

    def _cpu_stamps(self) -> CpuStamps:
        """This CPU step's stamps, copied out of the native stamper or the Python hooks' lists."""
        if self._native is not None:
            fwd, resume, order, bwd, hooked, faults = self._native.read()
        else:
            fwd, resume, order, bwd = self._fwd[:], self._resume[:], self._order[:], self._bwd[:]
            hooked, faults = self._hooked[:], (self._faults[:] if self._counted else [])
        return CpuStamps(self._start, fwd, resume, self.c_stamp, order, bwd, self.c_hook, self._bwd_end,
                         hooked if self._backward_run else None, self._activation_bytes(),
                         faults if self._counted else [], self.fault_ns)

    def _activation_bytes(self) -> list:
        """Each layer's activation bytes at this step's batch (from ``act_bytes_per_sample``;
        Nones without it), computed once per batch size; not to be changed by the caller."""
        if self._act_bytes is None or self._act_bytes[0] != self._batch:
            acts = self.act_bytes_per_sample
            self._act_bytes = (self._batch, [a * self._batch for a in acts] if acts is not None else self._nones)
        return self._act_bytes[1]

    def _memory_collect(self, fwd_ms: list) -> tuple:
        """(saved bytes, output bytes, timeline events, their source) of this step; empty lists
        and None when it was not counted. On the CPU the accounting's own time is taken out of
        each layer's forward time."""
        if not self.memory.active and not self._history_on:  # the usual profiled step
            return [], [], [], None
        saved, out_bytes, events = self.memory.take(self.plan, self.node_ids)
        source = "saved-tensor accounting" if events else None
        if saved and not self.events:
            for k, ns in enumerate(self.memory.acct.hook_ns[:self.n]):
                if fwd_ms[k] is not None and ns:
                    fwd_ms[k] = max(0.0, fwd_ms[k] - ns / 1e6)
        if self._history_on:
            self._history_on = False
            events, source = self.cuda_history.stop(self.node_ids), "cuda allocator history"
        return saved, out_bytes, events, source

    def step_peak_bytes(self) -> int | None:
        """Allocator peak over the profiled step (CUDA), from the per-layer reads plus one now."""
        if self.mem is None:
            return None
        _, now_peak = self.mem.read()
        return max([now_peak, *self._mem_peak[1:]]) if self._mem_layers else now_peak

    def hooks_note(self) -> str:
        """How this probe times layers: "device events", "native" (the compiled stamps), or
        "python (why not native)"."""
        if self.hooks == "python":
            why = native_status()
            return f"python ({why})" if why not in ("native", "not loaded") else "python"
        return self.hooks

    def fired(self) -> list[int]:
        """The layers whose backward hook fired this step, in firing order (CPU hooks)."""
        return self._native.read()[2] if self._native is not None else list(self._order)

    def current_node(self) -> str | None:
        """The node being run when a step failed (None when outside any layer)."""
        k = self.current_k
        if k is None and self.phase == "backward":
            if self._native is not None:
                k = self._native.last()
            elif self._order:
                k = self._order[-1]  # the last backward hook that fired
        return self.node_ids[k] if k is not None else None
