"""Telemetry: a sampler thread reading NVML (GPU), psutil (CPU, memory) and RAPL (CPU package
and DRAM energy, ``engine.run.rapl``) at a fixed rate and sending ``TelemetryBatch`` records to
a sink.

A source or metric that cannot be read here (no NVIDIA driver, a GPU without the energy counter,
no RAPL, no permission) is absent - never a series of zeros - and ``status()`` /
``telemetry_status()`` say why in one sentence, per NVML metric. Every metric is probed once
when the sampler opens; one found unsupported is not queried again.

Metrics (``TelemetrySample.source`` / ``.metric``):
  nvml:N   power_w, energy_j (since the sampler started, from the GPU's total-energy counter),
           mem_used_bytes, mem_total_bytes, gpu_util_pct, mem_util_pct, temp_c, sm_clock_mhz,
           throttle_reasons (NVML clocks-event bitmask as a number)
  psutil   cpu_pct (all cores), cpu_pct:K (core K, at ``per_core_hz``), process_cpu_pct
           (this process, 100 = one core), rss_bytes, sys_mem_used_bytes
  rapl:*   energy_j (since the sampler started, wrap-corrected), power_w (from the energy delta):
           rapl:packages (every package summed, when there are several), rapl:package-N,
           rapl:dram (DRAM sub-zones summed), rapl:psys (see ``engine.run.rapl.RaplSource``)
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path

from engine.records import TelemetryBatch, TelemetrySample
from engine.run.rapl import RaplAbsent, RaplSource

POWERCAP_ROOT = Path("/sys/class/powercap")


def _unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason}


def _available(reason: str) -> dict:
    return {"available": True, "reason": reason}


def _import_pynvml():
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


# -- NVML -------------------------------------------------------------------------------------

def _nvml_error_text(e: BaseException) -> str:
    return str(e).strip() or type(e).__name__


def _cuda_index(device_id: str) -> int | None:
    m = re.fullmatch(r"cuda(?::(\d+))?", device_id.strip())
    if not m:
        return None
    return int(m.group(1) or 0)


# NVML metrics: (reader key, label in reasons, metrics it yields). One reader may yield several.
_NVML_READERS = (
    ("power_w", "GPU power", ("power_w",)),
    ("energy_j", "GPU energy counter", ("energy_j",)),
    ("mem", "GPU memory", ("mem_used_bytes", "mem_total_bytes")),
    ("util", "GPU utilisation", ("gpu_util_pct", "mem_util_pct")),
    ("temp_c", "GPU temperature", ("temp_c",)),
    ("sm_clock_mhz", "SM clock", ("sm_clock_mhz",)),
    ("throttle_reasons", "clock throttle reasons", ("throttle_reasons",)),
)
# consecutive failures (other than "not supported") after which a reader is given up for the run
NVML_MAX_FAILURES = 10


class _NvmlSource:
    """One GPU through NVML. The handle is found once and every metric probed once at open: a
    metric the GPU or driver does not have (NOT_SUPPORTED, FUNCTION_NOT_FOUND, NO_PERMISSION, or
    a call this pynvml lacks) is absent for the run, with its reason, and never called again.
    Other errors skip a tick; ``NVML_MAX_FAILURES`` in a row drop the metric with that error.

    ``metrics`` maps every metric name to {"available": bool, "reason": str}; it is the live
    dict the sampler's status shows, so it keeps its answer after the source is closed."""

    def __init__(self, nvml, cuda_index: int):
        self.nvml = nvml
        self.source = f"nvml:{cuda_index}"
        self._energy0 = None
        nvml.nvmlInit()
        self._inited = True
        try:
            self.handle = self._handle(cuda_index)
            self.name = self._str(nvml.nvmlDeviceGetName(self.handle))
            try:
                self.driver = self._str(nvml.nvmlSystemGetDriverVersion())
            except nvml.NVMLError:
                self.driver = None
        except BaseException:
            self.close()
            raise
        self._permanent = tuple(c for c in (getattr(nvml, n, None) for n in (
            "NVMLError_NotSupported", "NVMLError_FunctionNotFound", "NVMLError_NoPermission"))
            if isinstance(c, type))
        self.metrics: dict[str, dict] = {}
        self._readers: list = []
        self._failures: dict[str, int] = {}
        self._pending: set[str] = set()  # probed with a transient error, not read yet
        self._labels = {key: (label, names) for key, label, names in _NVML_READERS}
        raw = self._raw_readers()
        for key, label, names in _NVML_READERS:
            fn = raw.get(key)
            if fn is None:
                self._absent(key, f"{label} not available: this pynvml has no call for it")
                continue
            try:
                fn()
            except self._permanent as e:
                self._absent(key, self._unsupported_text(label, e))
                continue
            except nvml.NVMLError as e:  # a transient error at the probe: keep trying, say so until read
                self._set(key, True, f"{label}: NVML {_nvml_error_text(e)} at the first reading")
                self._pending.add(key)
            else:
                self._set(key, True, f"{label}: read through NVML")
            self._readers.append((key, self._energy if key == "energy_j" else fn))

    def _raw_readers(self) -> dict:
        nvml, h = self.nvml, self.handle

        def call(name, *args, scale=None):
            fn = getattr(nvml, name, None)
            if fn is None:
                return None
            if scale is None:
                return lambda: fn(h, *args)
            return lambda: scale(fn(h, *args))

        throttle = ("nvmlDeviceGetCurrentClocksEventReasons" if hasattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons")
                    else "nvmlDeviceGetCurrentClocksThrottleReasons")
        return {
            "power_w": call("nvmlDeviceGetPowerUsage", scale=lambda mw: mw / 1000.0),
            "energy_j": call("nvmlDeviceGetTotalEnergyConsumption"),  # mJ since driver load
            "mem": call("nvmlDeviceGetMemoryInfo"),
            "util": call("nvmlDeviceGetUtilizationRates"),
            "temp_c": call("nvmlDeviceGetTemperature", getattr(nvml, "NVML_TEMPERATURE_GPU", 0), scale=float),
            "sm_clock_mhz": call("nvmlDeviceGetClockInfo", getattr(nvml, "NVML_CLOCK_SM", 1), scale=float),
            "throttle_reasons": call(throttle, scale=float),
        }

    def _unsupported_text(self, label: str, e: BaseException) -> str:
        return f"{label} not supported by {self.name} (NVML: {_nvml_error_text(e)})"

    def _set(self, key: str, available: bool, reason: str) -> None:
        for name in self._labels[key][1]:
            self.metrics[name] = {"available": available, "reason": reason}

    def _absent(self, key: str, reason: str) -> None:
        self._set(key, False, reason)
        self._readers = [r for r in self._readers if r[0] != key]

    @staticmethod
    def _str(v) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    def _handle(self, index: int):
        nvml = self.nvml
        # CUDA numbers GPUs as CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER say; NVML by PCI bus.
        # Match by UUID when torch already knows the device, else through CUDA_VISIBLE_DEVICES.
        torch = sys.modules.get("torch")
        if torch is not None:
            try:
                if torch.cuda.is_initialized():
                    uuid = str(torch.cuda.get_device_properties(index).uuid)
                    return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
            except Exception:  # older torch without .uuid, or NVML disagrees: fall back below
                pass
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if index < len(visible):
            v = visible[index]
            if v.isdigit():
                return nvml.nvmlDeviceGetHandleByIndex(int(v))
            return nvml.nvmlDeviceGetHandleByUUID(v)
        return nvml.nvmlDeviceGetHandleByIndex(index)

    def _energy(self) -> float:
        mj = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)  # mJ since driver load
        if self._energy0 is None:
            self._energy0 = mj
        return (mj - self._energy0) / 1000.0

    def read(self, t: float, out: list) -> None:
        src = self.source
        for key, fn in list(self._readers):
            try:
                v = fn()
            except self._permanent as e:  # supported at the probe, then not (driver change): drop it
                self._absent(key, self._unsupported_text(self._labels[key][0], e))
                continue
            except self.nvml.NVMLError as e:  # e.g. GPU busy/lost for a moment: no reading this tick
                n = self._failures[key] = self._failures.get(key, 0) + 1
                if n >= NVML_MAX_FAILURES:
                    self._absent(key, f"{self._labels[key][0]} not readable on {self.name}: NVML "
                                      f"{_nvml_error_text(e)} {n} times in a row")
                continue
            if self._failures.get(key):
                self._failures[key] = 0
            if key in self._pending:
                self._pending.discard(key)
                self._set(key, True, f"{self._labels[key][0]}: read through NVML")
            if key == "mem":
                out.append(TelemetrySample(t, src, "mem_used_bytes", float(v.used)))
                out.append(TelemetrySample(t, src, "mem_total_bytes", float(v.total)))
            elif key == "util":
                out.append(TelemetrySample(t, src, "gpu_util_pct", float(v.gpu)))
                out.append(TelemetrySample(t, src, "mem_util_pct", float(v.memory)))
            else:
                out.append(TelemetrySample(t, src, key, float(v)))

    def absent_text(self) -> str:
        """The absent metrics' reasons, one per reader, joined with "; " ("" when none)."""
        seen = []
        for st in self.metrics.values():
            if not st["available"] and st["reason"] not in seen:
                seen.append(st["reason"])
        return "; ".join(seen)

    def describe(self) -> str:
        parts = [self.name]
        if self.driver:
            parts.append(f"driver {self.driver}")
        return ", ".join(parts)

    def close(self) -> None:
        if self._inited:
            self._inited = False
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass


# -- psutil -----------------------------------------------------------------------------------

# psutil's cpu_percent(interval=None) is the load since its previous call: over less than this
# it is noise (cpu_times tick at 10 ms per core) and right after priming it is exactly 0.0.
# Below the 50 ms period of a 20 Hz sampler, so that timer jitter never skips a tick's reading.
PSUTIL_MIN_INTERVAL_S = 0.04


class _PsutilSource:
    """CPU load and memory; one Process object, non-blocking cpu_percent (deltas since last call).

    psutil keeps cpu_percent's previous reading per thread (psutil >= 6; module-wide before), and
    its first call on a thread answers 0.0. So the load counters are primed by the first
    ``read()`` on the thread that reads (the sampler's), and read only once at least
    ``PSUTIL_MIN_INTERVAL_S`` has passed since their previous call: the sampler's first tick has
    no load reading rather than a made-up 0 %. Memory is read every tick. Opening reads nothing
    (a status probe must not disturb a sampler already running)."""

    def __init__(self, psutil_module, per_core_period: float):
        self.ps = psutil_module
        self.proc = psutil_module.Process()
        self.per_core_period = per_core_period
        self._primed_on: int | None = None  # thread ident whose psutil state is primed
        self._last_load = self._last_cores = self._next_cores = 0.0

    def _prime(self, t: float) -> None:
        ps = self.ps
        ps.cpu_percent(interval=None)
        ps.cpu_percent(interval=None, percpu=True)
        try:
            self.proc.cpu_percent(interval=None)
        except ps.Error:
            pass
        self._primed_on = threading.get_ident()
        self._last_load = self._last_cores = t
        self._next_cores = t + PSUTIL_MIN_INTERVAL_S

    def read(self, t: float, out: list) -> None:
        ps = self.ps
        if self._primed_on != threading.get_ident():
            self._prime(t)
        load = t - self._last_load >= PSUTIL_MIN_INTERVAL_S
        if load:
            self._last_load = t
            out.append(TelemetrySample(t, "psutil", "cpu_pct", float(ps.cpu_percent(interval=None))))
        if t >= self._next_cores and t - self._last_cores >= PSUTIL_MIN_INTERVAL_S:
            self._last_cores = t
            self._next_cores = t + self.per_core_period
            for k, v in enumerate(ps.cpu_percent(interval=None, percpu=True)):
                out.append(TelemetrySample(t, "psutil", f"cpu_pct:{k}", float(v)))
        try:
            if load:
                out.append(TelemetrySample(t, "psutil", "process_cpu_pct", float(self.proc.cpu_percent(interval=None))))
            out.append(TelemetrySample(t, "psutil", "rss_bytes", float(self.proc.memory_info().rss)))
        except ps.Error:
            pass
        out.append(TelemetrySample(t, "psutil", "sys_mem_used_bytes", float(ps.virtual_memory().used)))

    def close(self) -> None:
        pass


# -- sampler ----------------------------------------------------------------------------------

class Telemetry:
    """Samples every available source at ``hz`` in its own thread and calls ``sink(TelemetryBatch)``.

    ``device_id`` ("cpu", "cuda:N", "mps") picks the GPU NVML reads; psutil and RAPL are read for
    every device. ``t`` of each sample is seconds since ``t0`` (a ``time.perf_counter()`` value;
    default: when the object was made) so it lines up with the run's own clock. The providers
    (``nvml`` module, ``psutil`` module, ``powercap_root``) can be swapped for tests.
    """

    def __init__(self, device_id="cpu", hz: float = 10.0, sink=None, *, t0: float | None = None,
                 nvml=None, psutil_module=None, powercap_root=None, per_core_hz: float = 1.0,
                 clock=time.perf_counter):
        if not hz or hz <= 0:
            raise ValueError("telemetry rate must be > 0 Hz")
        self.device_id = str(device_id)
        self.hz = float(hz)
        self.sink = sink
        self.clock = clock
        self.t0 = clock() if t0 is None else t0
        self._nvml_module = nvml
        self._psutil_module = psutil_module
        self.powercap_root = Path(powercap_root) if powercap_root is not None else POWERCAP_ROOT
        self.per_core_period = 1.0 / per_core_hz if per_core_hz and per_core_hz > 0 else float("inf")
        self._sources: list = []
        self._status: dict | None = None
        self._nvml_src: _NvmlSource | None = None  # kept after stop(): its per-metric status
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.ticks = 0
        self.cpu_seconds = 0.0  # CPU time the sampler thread itself used (thread_time)
        self.wall_seconds = 0.0
        self.sink_error: str | None = None

    # -- sources ---------------------------------------------------------------------------
    def _open(self) -> None:
        status, sources = {}, []
        self._nvml_src = None
        index = _cuda_index(self.device_id)
        nvml = self._nvml_module if self._nvml_module is not None else _import_pynvml()
        if nvml is None:
            status["nvml"] = _unavailable("NVML not available: nvidia-ml-py (module pynvml) is not installed")
        elif index is None:
            status["nvml"] = _unavailable(f"NVML not used: {self.device_id} is not a CUDA device")
        else:
            try:
                src = _NvmlSource(nvml, index)
                sources.append(src)
                self._nvml_src = src
                status["nvml"] = _available(f"{src.source}: {src.describe()}")
            except nvml.NVMLError as e:
                status["nvml"] = _unavailable(f"NVML not available: {_nvml_error_text(e)}")
        ps = self._psutil_module
        if ps is None:
            try:
                import psutil as ps
            except ImportError:
                ps = None
        if ps is None:
            status["psutil"] = _unavailable("psutil not available: the psutil package is not installed")
        else:
            try:
                sources.append(_PsutilSource(ps, self.per_core_period))
                status["psutil"] = _available("CPU %, per-core CPU %, process RSS, system memory")
            except Exception as e:  # e.g. /proc not mounted in a container
                status["psutil"] = _unavailable(f"psutil not available: {e}")
        try:
            src = RaplSource(self.powercap_root)
            sources.append(src)
            status["rapl"] = dict(_available(src.describe()), domains=src.domains)
        except RaplAbsent as e:
            status["rapl"] = _unavailable(str(e))
        self._sources, self._status = sources, status

    def _close(self) -> None:
        for s in self._sources:
            s.close()
        self._sources = []

    def status(self) -> dict:
        """Which sources and metrics this sampler reads, probed once when it starts (or, before
        ``start()``, by opening and closing the sources now); the same answer after ``stop()``.

        ``{"nvml"|"psutil"|"rapl": {"available": bool, "reason": str, ...}}``. NVML adds
        ``"metrics": {metric: {"available": bool, "reason": str}}`` per metric (power_w,
        energy_j, mem_used_bytes, gpu_util_pct, temp_c, sm_clock_mhz, ...), an absent one with
        why, e.g. "GPU energy counter not supported by <GPU> (NVML: Not Supported)", and the
        source's reason lists the absent ones. RAPL adds ``"domains": {source: [zone, ...]}``:
        which powercap zones each recorded ``rapl:*`` source sums."""
        if self._status is None:
            self._open()
            self._close()
        out = {k: dict(v) for k, v in self._status.items()}
        src = self._nvml_src
        if src is not None:  # the live per-metric answer: a metric may be dropped while sampling
            out["nvml"]["metrics"] = {k: dict(v) for k, v in src.metrics.items()}
            missing = src.absent_text()
            out["nvml"]["reason"] = f"{src.source}: {src.describe()}" + (f"; {missing}" if missing else "")
        if "domains" in out.get("rapl", {}):
            out["rapl"]["domains"] = {k: list(v) for k, v in out["rapl"]["domains"].items()}
        return out

    # -- sampling --------------------------------------------------------------------------
    def sample(self) -> TelemetryBatch | None:
        """Read every open source once (the thread calls this each tick)."""
        t = self.clock() - self.t0
        out: list[TelemetrySample] = []
        for s in self._sources:
            s.read(t, out)
        return TelemetryBatch(out) if out else None

    def start(self) -> "Telemetry":
        """Open the sources and start the sampler thread (a no-op when already running)."""
        if self._thread is not None:
            return self
        self._open()
        self._stop.clear()
        if not self._sources:
            return self
        self._thread = threading.Thread(target=self._loop, name="layerscope-telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling, join the thread and release NVML/RAPL handles."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _loop(self) -> None:
        period = 1.0 / self.hz
        cpu0, wall0 = time.thread_time(), self.clock()
        next_t = self.clock()
        while True:
            self._tick()
            self.cpu_seconds = time.thread_time() - cpu0
            self.wall_seconds = self.clock() - wall0
            next_t += period
            now = self.clock()
            if next_t < now - period:  # fell behind (suspended machine): skip, don't burst
                next_t = now
            if self._stop.wait(max(0.0, next_t - now)):
                # one last reading at the end: a run shorter than a period still gets its CPU load
                # and energy up to its end (the load since the previous tick)
                self._tick()
                return

    def _tick(self) -> None:
        batch = self.sample()
        self.ticks += 1
        if batch is not None and self.sink is not None:
            try:
                self.sink(batch)
            except Exception as e:  # a broken sink must not kill sampling for the others
                self.sink_error = self.sink_error or f"{type(e).__name__}: {e}"

    @property
    def achieved_hz(self) -> float | None:
        return (self.ticks - 1) / self.wall_seconds if self.ticks > 1 and self.wall_seconds > 0 else None

    @property
    def cpu_fraction(self) -> float | None:
        """Share of one core the sampler used so far (target < 0.01 at 10 Hz)."""
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else None


def off_status(reason: str) -> dict:
    """A status in which every source is absent for one reason (telemetry off, failed to start)."""
    return {name: _unavailable(reason) for name in ("nvml", "psutil", "rapl")}


def telemetry_status(device_id: str | None = None, **providers) -> dict:
    """Which telemetry this machine offers, with a reason for each absent source.

    Without ``device_id``: NVML is probed for the machine as a whole (driver present, GPU count)."""
    if device_id is not None:
        return Telemetry(device_id, **providers).status()
    status = Telemetry("cpu", **providers).status()
    nvml = providers.get("nvml") or _import_pynvml()
    if nvml is None:
        status["nvml"] = _unavailable("NVML not available: nvidia-ml-py (module pynvml) is not installed")
        return status
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        status["nvml"] = _unavailable(f"NVML not available: {_nvml_error_text(e)}")
        return status
    try:
        n = nvml.nvmlDeviceGetCount()
        status["nvml"] = _available(f"{n} GPU(s)") if n else _unavailable("NVML not available: no GPU found")
    except nvml.NVMLError as e:
        status["nvml"] = _unavailable(f"NVML not available: {_nvml_error_text(e)}")
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass
    return status

