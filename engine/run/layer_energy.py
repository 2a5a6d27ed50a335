"""Energy per layer, measured honestly: each layer replayed alone over windows a counter can resolve.

Why a replay: the energy counters update every ~1 ms (RAPL) to ~20-100 ms (NVML's total-energy
counter, whose power readings are also averaged), while a layer runs for micro- to milliseconds.
The energy of one layer inside one step cannot be read off such a counter. So after the run each
layer runs ALONE, on random inputs of its recorded shape (``LayerInfo.in_shapes`` at the batch the
run used, the dtype its producer outputs under the run's autocast, channels-last as the run had),
repeated for a window of at least ``window_s`` seconds and at least ``min_updates`` counter updates.

How a window is read (``measure_window``): the work runs in chunks of ~``chunk_s`` seconds (one
sync point per chunk on a GPU); after each chunk the counter is read. The window opens at the first
counter update seen while the work already runs (the device is busy and warm) and closes at the
first update seen once ``window_s`` and ``min_updates`` are both reached, so its energy is the
counter's own difference between two of its updates, with no interpolation. Both ends are seen with
the same lag (at most one chunk), so the lags cancel on average; what remains is jitter, which the
spread over ``repeats`` windows shows. Idle power is measured the same way (the work: sleeping).
A layer's energy per repetition is ``(E - P_idle x T) / reps``; per sample, that over the batch.
Forward is replayed with the forward alone; in train mode forward+backward is replayed too, and the
backward is their difference. The figures (mean, 95 % interval, coverage) are computed in
``engine.analysis.layer_energy`` from the raw windows this module records.

Counters (``EnergyCounter``: ``read()`` -> cumulative joules, update period unknown): NVML's
``nvmlDeviceGetTotalEnergyConsumption`` (mJ) for a CUDA device, RAPL package energy
(``engine.run.rapl``) for the CPU, and ``SimulatedCounter`` (a known power profile, updating every
``period_s``, on a virtual clock) for tests and demonstrations: its figures are never measurements,
and a result it produced says ``"simulated": true``.
"""
from __future__ import annotations

import bisect
import copy
import time
from typing import Any, Callable, Protocol

from engine.records import LayerEnergy

WINDOW_S = 1.0  # shortest window (the issue's >= 1 s)
REPEATS = 3  # windows per layer and pass: the spread gives the uncertainty
COOLDOWN_S = 0.2  # idle time between layers, so one layer's heat and clocks do not run into the next
MIN_UPDATES = 5  # counter updates a window must span (fewer: the window is flagged short)
MAX_WINDOW_S = 10.0  # a window is closed at the next update past this, whatever it spans
CHUNK_S = 0.005  # work between two counter reads (and GPU syncs)
POLL_S = 0.001  # idle polling interval of the counter


class EnergyCounter(Protocol):
    """A cumulative energy counter: ``read()`` is joules since it was opened (monotonic; how often
    it changes is unknown to the caller); ``name`` is its telemetry source ("nvml:0",
    "rapl:package-0", "simulated"); ``simulated`` is True only for ``SimulatedCounter``."""

    name: str
    simulated: bool

    def read(self) -> float: ...

    def close(self) -> None: ...


class Clock:
    """Wall clock of a real replay: ``now()`` (s, perf_counter), ``sleep(s)``, and ``ran(label,
    reps)``, the hook a simulation advances its virtual time with (a no-op here)."""

    def now(self) -> float:
        return time.perf_counter()

    def sleep(self, s: float) -> None:
        time.sleep(s)

    def ran(self, label: str, reps: int) -> None:
        pass


class NvmlCounter:
    """A GPU's total-energy counter through NVML (mJ since the driver loaded, read as J since open).
    ``NvmlCounter.open(index)`` -> (counter, None) or (None, reason)."""

    simulated = False

    def __init__(self, source):
        self._src = source
        self.name = source.source

    @classmethod
    def open(cls, cuda_index: int):
        from engine.run.telemetry import _NvmlSource, _import_pynvml, _nvml_error_text

        nvml = _import_pynvml()
        if nvml is None:
            return None, "NVML absent (nvidia-ml-py is not installed)"
        try:
            src = _NvmlSource(nvml, cuda_index)
        except Exception as e:  # no driver, no such GPU
            return None, f"NVML absent ({_nvml_error_text(e)})"
        status = src.metrics.get("energy_j") or {}
        if not status.get("available"):
            src.close()
            return None, status.get("reason") or "the GPU has no total-energy counter"
        return cls(src), None

    def read(self) -> float:
        return self._src._energy()  # the sampler's own reading: J since the first read

    def close(self) -> None:
        self._src.close()


class RaplCounter:
    """The CPU package energy through RAPL: every package summed (``engine.run.rapl.RaplSource``'s
    first series: ``rapl:packages``, or the one package). ``RaplCounter.open(root)`` -> (counter,
    None) or (None, reason)."""

    simulated = False

    def __init__(self, source):
        self._src = source
        self._series = source.series[0]
        self.name = self._series.source

    @classmethod
    def open(cls, root=None):
        from engine.run.rapl import RaplAbsent, RaplSource
        from engine.run.telemetry import POWERCAP_ROOT

        try:
            src = RaplSource(root or POWERCAP_ROOT)
        except RaplAbsent as e:
            return None, str(e)
        if not src.series or not src.series[0].source.startswith("rapl:package"):
            src.close()
            return None, "RAPL has no package zone here"
        return cls(src), None

    def read(self) -> float:
        return sum(z.read() for z in self._series.zones) / 1e6

    def close(self) -> None:
        self._src.close()


def open_counter(device, powercap_root=None) -> tuple[Any, str | None]:
    """The energy counter of ``device`` (a torch.device): NVML's for CUDA, RAPL's for the CPU.
    (counter, None), or (None, the sentence saying why per-layer energy cannot be measured here)."""
    if device.type == "cuda":
        counter, why = NvmlCounter.open(device.index or 0)
        if counter is None:
            return None, f"per-layer energy needs an energy counter: none readable here ({why})"
        return counter, None
    if device.type == "cpu":
        counter, why = RaplCounter.open(powercap_root)
        if counter is None:
            return None, ("per-layer energy needs an energy counter: none readable here (NVML absent: not a "
                          f"CUDA run; {why})")
        return counter, None
    return None, f"per-layer energy needs an energy counter: none readable here ({device.type} has neither NVML nor RAPL)"


class SimulatedCounter:
    """A simulated machine for tests and demonstrations, NOT a measurement: a virtual clock (``now``,
    ``sleep``, ``ran``) and an energy counter over a known power profile that updates every
    ``period_s`` (the counter returns the energy at the last update instant before now).

    Power is ``idle_w`` plus ``power_w[label]`` while work ``label`` runs ("<node>/fwd" or
    "<node>/fwd+bwd", as the replay reports it through ``ran``); one repetition of ``label`` lasts
    ``rep_s[label]`` (``default_rep_s`` otherwise) of virtual time. So the true energy above idle of
    one repetition is ``power_w[label] * rep_s[label]`` (``truth(label)``), known exactly."""

    simulated = True
    name = "simulated"

    def __init__(self, *, idle_w: float = 50.0, power_w: dict | None = None, rep_s: dict | None = None,
                 default_w: float = 0.0, default_rep_s: float = 0.001, period_s: float = 0.1):
        self.idle_w, self.period_s = float(idle_w), float(period_s)
        self.power_w, self.rep_s = dict(power_w or {}), dict(rep_s or {})
        self.default_w, self.default_rep_s = float(default_w), float(default_rep_s)
        self.t = 0.0
        self._ends = [0.0]  # segment end times and the energy up to each (a step function in time)
        self._energy = [0.0]
        self._powers: list[float] = []

    def truth(self, label: str) -> float:
        """The exact energy above idle of one repetition of ``label`` (J)."""
        return self.power_w.get(label, self.default_w) * self.rep_s.get(label, self.default_rep_s)

    def _advance(self, seconds: float, power: float) -> None:
        self.t += seconds
        self._energy.append(self._energy[-1] + power * seconds)
        self._ends.append(self.t)
        self._powers.append(power)

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self._advance(max(0.0, s), self.idle_w)

    def ran(self, label: str, reps: int) -> None:
        self._advance(reps * self.rep_s.get(label, self.default_rep_s),
                      self.idle_w + self.power_w.get(label, self.default_w))

    def read(self) -> float:
        tick = int(self.t / self.period_s + 1e-9) * self.period_s  # the last update instant
        i = bisect.bisect_right(self._ends, tick) - 1  # the segment holding ``tick`` is i (0-based: i+1)
        e = self._energy[i]
        if i < len(self._powers) and tick > self._ends[i]:
            e += self._powers[i] * (tick - self._ends[i])
        return e

    def close(self) -> None:
        pass


class NoUpdate(Exception):
    """The counter did not change within the time allowed: it cannot measure a window."""


def measure_window(counter, clock, work: Callable[[], int], *, window_s: float = WINDOW_S,
                   min_updates: int = MIN_UPDATES, max_window_s: float = MAX_WINDOW_S,
                   first_update_s: float = 2.0) -> dict:
    """One window of ``work`` (a callable doing one chunk and returning its repetitions; 0 for idle)
    between two counter updates: {"seconds", "joules", "reps", "updates", "edge_s"}.

    An update is seen between two reads (before and after a chunk); its instant is taken as their
    midpoint, so ``edge_s`` (half of each end's read gap, summed) bounds the error of ``seconds``,
    the time from the update that opened the window to the one that closed it. ``joules`` is the
    counter's difference between those two updates; ``reps`` the repetitions done in ``seconds``
    (the chunks' repetition rate x ``seconds``; 0 for idle); ``updates`` the updates it spans.
    Closed at the first update once ``window_s`` and ``min_updates`` are reached, or the first past
    ``max_window_s`` (then ``updates`` < ``min_updates`` says it is short). NoUpdate when the counter
    does not change within ``first_update_s`` (or ``max_window_s`` after the window opened)."""
    start = t_prev = clock.now()
    last = counter.read()
    while True:  # open at an update seen while the work already runs
        work()
        e = counter.read()
        t = clock.now()
        if e != last:
            break
        t_prev = t
        if t - start > first_update_s:
            raise NoUpdate(f"the counter {counter.name} did not change in {first_update_s:g} s")
    t_open, gap_open, t_seen, e0, last = (t_prev + t) / 2, (t - t_prev) / 2, t, e, e
    reps = updates = 0
    close = None
    while True:
        t_prev = t
        reps += work()
        e = counter.read()
        t = clock.now()
        if e != last:
            last = e
            updates += 1
            close = ((t_prev + t) / 2, (t - t_prev) / 2, t, e, reps)
            if (t - t_open >= window_s and updates >= min_updates) or t - t_open >= max_window_s:
                break
        elif t - t_open > max_window_s + first_update_s:
            if close is None:
                raise NoUpdate(f"the counter {counter.name} stopped changing")
            break
    t_close, gap_close, t_last, e1, done = close
    seconds = t_close - t_open
    rate = done / (t_last - t_seen) if t_last > t_seen else 0.0  # repetitions per second while working
    return {"seconds": seconds, "joules": e1 - e0, "reps": rate * seconds, "updates": updates,
            "edge_s": gap_open + gap_close}


class _LayerWork:
    """One layer's replay on its recorded input shapes: ``fwd`` or ``fwd+bwd`` chunks."""

    def __init__(self, module, inputs, autocast, device, train: bool, label: str, clock):
        import torch

        self.module, self.inputs, self.autocast = module, inputs, autocast
        self.device, self.train, self.label, self.clock = device, train, label, clock
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.grad_out = None
        self.backward = False
        self.n = 1
        if train:
            with autocast():
                out = module(*inputs)
            if isinstance(out, torch.Tensor) and out.requires_grad:
                self.grad_out = torch.randn_like(out)

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # note: sync point (one per chunk: the counter must see the work)
        elif self.device.type == "mps":
            torch.mps.synchronize()  # note: sync point

    def _once(self) -> None:
        import torch

        if not self.train:
            with torch.inference_mode(), self.autocast():
                self.module(*self.inputs)
            return
        for p in self.params:
            p.grad = None
        for x in self.inputs:
            x.grad = None
        with self.autocast():
            out = self.module(*self.inputs)
        if self.backward:
            out.backward(self.grad_out)

    def chunk(self) -> int:
        for _ in range(self.n):
            self._once()
        self._sync()
        self.clock.ran(self.label, self.n)
        return self.n

    def size(self, chunk_s: float) -> None:
        """Repetitions per chunk so that a chunk lasts about ``chunk_s`` (at least 1)."""
        self.n = 1
        self.chunk()  # warm (allocations, kernels chosen)
        while True:
            t = self.clock.now()
            self.chunk()
            dt = self.clock.now() - t
            if dt >= chunk_s or self.n >= 1 << 20:
                self.n = max(1, int(round(self.n * chunk_s / dt))) if dt > 0 else self.n
                return
            self.n *= 2 if dt < chunk_s / 4 else max(2, int(chunk_s / max(dt, 1e-9)))


def layer_inputs(layer, net_info, batch: int, precision: str, device, channels_last: bool, train: bool, spec):
    """Random inputs of ``layer``'s recorded shapes at ``batch``: the dtype each producer outputs
    under the run's autocast (fp32 for the net input), channels-last 4-D tensors when the run had
    it, and requiring gradients (train) where the run's did: every input but the net input."""
    import torch

    from engine.net.spec import INPUT_ID

    dtypes = net_info.out_dtypes(precision, device.type) if precision != "fp32" else {}
    refs = spec.inputs_of(layer.index)
    xs = []
    for ref, shape in zip(refs, layer.in_shapes):
        x = torch.randn(batch, *shape, dtype=dtypes.get(ref, torch.float32), device=device)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if train and ref != INPUT_ID:
            x.requires_grad_(True)
        xs.append(x)
    return xs


def replay(model, net_info, spec, *, device, batch: int, precision: str, autocast, train: bool,
           channels_last: bool, counter, clock=None, window_s: float = WINDOW_S, repeats: int = REPEATS,
           cooldown_s: float = COOLDOWN_S, min_updates: int = MIN_UPDATES, max_window_s: float = MAX_WINDOW_S,
           chunk_s: float = CHUNK_S, poll_s: float = POLL_S, nodes=None,
           progress: Callable[[int, int, str], None] | None = None,
           stop: Callable[[], bool] | None = None) -> dict:
    """Replay every layer of ``model`` (a LayerNet, weights untouched: each layer is copied) alone
    and measure its energy with ``counter``; the raw windows as a JSON-able dict (the
    ``LayerEnergy`` record's ``data``, read by ``engine.analysis.layer_energy``):

    {"counter", "simulated", "reason": None, "batch", "precision", "device", "train", "window_s",
    "repeats", "cooldown_s", "min_updates", "idle": [window...], "layers": [{"node_id", "pass"
    ("fwd" | "fwd+bwd"), "rep_ms" (one repetition, by the clock), "windows": [window...]}],
    "no_backward": [node ids with nothing to differentiate], "errors": {node_id: reason},
    "stopped": bool, "elapsed_s"}; each window as ``measure_window`` gives it.

    ``progress(k, n, node_id)`` before each layer; ``stop()`` -> True ends the replay early
    (``stopped``). ``nodes``: only these node ids (default: every layer)."""
    import torch

    clock = clock or Clock()
    t_start = clock.now()
    out = {"counter": counter.name, "simulated": bool(getattr(counter, "simulated", False)), "reason": None,
           "batch": int(batch), "precision": precision, "device": str(device), "train": bool(train),
           "window_s": window_s, "repeats": repeats, "cooldown_s": cooldown_s, "min_updates": min_updates,
           "idle": [], "layers": [], "no_backward": [], "errors": {}, "stopped": False}

    def idle() -> int:
        clock.sleep(poll_s)
        return 0

    def window(work):
        return measure_window(counter, clock, work, window_s=window_s, min_updates=min_updates,
                              max_window_s=max_window_s)
    try:
        out["idle"] = [window(idle) for _ in range(repeats)]
    except NoUpdate as e:
        out["reason"] = f"per-layer energy needs an energy counter that updates: {e}"
        out["elapsed_s"] = clock.now() - t_start
        return out
    layers = [l for l in net_info.layers if nodes is None or l.id in nodes]
    for k, layer in enumerate(layers):
        if stop is not None and stop():
            out["stopped"] = True
            break
        if progress is not None:
            progress(k + 1, len(layers), layer.id)
        try:
            module = copy.deepcopy(getattr(model, layer.id))  # a trained layer's state stays as it was
            module.train(train)
            xs = layer_inputs(layer, net_info, batch, precision, device, channels_last, train, spec)
            fwd = _LayerWork(module, xs, autocast, device, train, f"{layer.id}/fwd", clock)
            works = [("fwd", fwd)]
            if train and fwd.grad_out is not None:
                both = _LayerWork(module, xs, autocast, device, True, f"{layer.id}/fwd+bwd", clock)
                both.backward = True
                works.append(("fwd+bwd", both))
            elif train:
                out["no_backward"].append(layer.id)
            for p, work in works:
                work.size(chunk_s)
                t = clock.now()
                work.chunk()
                rep_ms = (clock.now() - t) / work.n * 1000.0
                out["layers"].append({"node_id": layer.id, "pass": p, "rep_ms": rep_ms,
                                      "windows": [window(work.chunk) for _ in range(repeats)]})
            del module, xs, works, fwd
        except NoUpdate as e:
            out["errors"][layer.id] = str(e)
        except Exception as e:  # one layer that cannot be replayed alone does not end the others
            text = str(e).strip().splitlines()
            out["errors"][layer.id] = f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
            if isinstance(e, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
        clock.sleep(cooldown_s)
    out["elapsed_s"] = clock.now() - t_start
    return out


def absent(reason: str, **facts) -> dict:
    """The record data of a replay that measured nothing, and why (figures absent, never zero)."""
    return {"counter": None, "simulated": False, "reason": reason, "idle": [], "layers": [], "no_backward": [],
            "errors": {}, "stopped": False, **facts}


def replay_after_run(run, ctx, *, counter=None, clock=None, **params) -> LayerEnergy:
    """The per-layer energy replay at the end of ``run`` (an ``engine.run.loop.Run`` whose loop has
    finished; ``ctx`` its RunContext): progress as StateChanged records (phase "layer energy k/N"),
    a stop request ends it early. ``counter``: default the device's (``open_counter``); none
    readable -> a record with the reason and no figures. Returns the LayerEnergy record (not sent)."""
    cfg = run.cfg
    facts = {"batch": ctx.batch, "precision": cfg.precision, "device": str(ctx.device),
             "train": cfg.mode == "train"}
    own = counter is None
    if own:
        counter, why = open_counter(ctx.device)
        if counter is None:
            run._log("warning", why)
            return LayerEnergy(run._t(), absent(why, **facts))

    def progress(k, n, node_id):
        run._set_state("running", f"layer energy {k}/{n}")

    def stop():
        run._drain()
        return run._stopping
    if clock is None and getattr(counter, "simulated", False):
        clock = counter  # a simulated machine keeps its own (virtual) time
    try:
        run._set_state("running", "layer energy: idle power")
        data = replay(ctx.model, ctx.net_info, cfg.net, device=ctx.device, batch=ctx.batch, precision=cfg.precision,
                      autocast=ctx.autocast, train=cfg.mode == "train", channels_last=cfg.channels_last,
                      counter=counter, clock=clock, progress=progress, stop=stop, **params)
    finally:
        if own:
            counter.close()
    if data["reason"]:
        run._log("warning", data["reason"])
    else:
        run._log("info", f"layer energy: {len(data['layers'])} passes replayed with {data['counter']} in "
                         f"{data['elapsed_s']:.1f} s" + (" (stopped early)" if data["stopped"] else ""))
    return LayerEnergy(run._t(), data)
