"""Telemetry: a sampler thread reading NVML (GPU), psutil (CPU, memory) and Intel RAPL (CPU
package energy) at a fixed rate and sending ``TelemetryBatch`` records to a sink.

A source that cannot be read here (no NVIDIA driver, no RAPL, no permission) is absent - never
a series of zeros - and ``status()`` / ``telemetry_status()`` say why in one sentence.
Also here: energy per step / per sample from energy-counter deltas over windows of >= 1 s.

Metrics (``TelemetrySample.source`` / ``.metric``):
  nvml:N   power_w, energy_j (since the sampler started, from the GPU's total-energy counter),
           mem_used_bytes, mem_total_bytes, gpu_util_pct, mem_util_pct, temp_c, sm_clock_mhz,
           throttle_reasons (NVML clocks-event bitmask as a number)
  psutil   cpu_pct (all cores), cpu_pct:K (core K, at ``per_core_hz``), process_cpu_pct
           (this process, 100 = one core), rss_bytes, sys_mem_used_bytes
  rapl:Z   energy_j (since the sampler started, wrap-corrected), power_w (from the energy delta)
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path

from engine.records import TelemetryBatch, TelemetrySample

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


class _NvmlSource:
    """One GPU through NVML: the handle is found once; a metric the GPU does not support is
    dropped after its first ``NotSupported`` (with the reason kept), other errors skip a tick."""

    def __init__(self, nvml, cuda_index: int):
        self.nvml = nvml
        self.source = f"nvml:{cuda_index}"
        self.unsupported: dict[str, str] = {}
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
        NS = getattr(nvml, "NVMLError_NotSupported", ())
        self._not_supported = NS
        throttle = (getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                    or getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None))
        h = self.handle
        self._readers = [
            ("power_w", lambda: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
            ("energy_j", self._energy),
            ("mem", lambda: nvml.nvmlDeviceGetMemoryInfo(h)),
            ("util", lambda: nvml.nvmlDeviceGetUtilizationRates(h)),
            ("temp_c", lambda: float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))),
            ("sm_clock_mhz", lambda: float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))),
        ]
        if throttle is not None:
            self._readers.append(("throttle_reasons", lambda: float(throttle(h))))

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
        for name, fn in self._readers:
            if name in self.unsupported:
                continue
            try:
                v = fn()
            except self._not_supported as e:
                self.unsupported[name] = _nvml_error_text(e)
                continue
            except self.nvml.NVMLError:  # e.g. GPU busy/lost for a moment: no reading this tick
                continue
            if name == "mem":
                out.append(TelemetrySample(t, src, "mem_used_bytes", float(v.used)))
                out.append(TelemetrySample(t, src, "mem_total_bytes", float(v.total)))
            elif name == "util":
                out.append(TelemetrySample(t, src, "gpu_util_pct", float(v.gpu)))
                out.append(TelemetrySample(t, src, "mem_util_pct", float(v.memory)))
            else:
                out.append(TelemetrySample(t, src, name, float(v)))

    def describe(self) -> str:
        parts = [self.name]
        if self.driver:
            parts.append(f"driver {self.driver}")
        missing = ", ".join(f"{k} ({v})" for k, v in self.unsupported.items())
        text = ", ".join(parts)
        return f"{text}; not supported: {missing}" if missing else text

    def close(self) -> None:
        if self._inited:
            self._inited = False
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass


# -- psutil -----------------------------------------------------------------------------------

class _PsutilSource:
    """CPU load and memory; one Process object, non-blocking cpu_percent (deltas since last call)."""

    def __init__(self, psutil_module, per_core_period: float, prime: bool = True):
        self.ps = psutil_module
        self.proc = psutil_module.Process()
        self.per_core_period = per_core_period
        self._next_cores = 0.0
        if prime:
            # the first real reading covers start -> first tick. (A status probe must not prime:
            # psutil keeps one module-wide "last reading", shared with a sampler already running.)
            psutil_module.cpu_percent(interval=None)
            psutil_module.cpu_percent(interval=None, percpu=True)
            self.proc.cpu_percent(interval=None)

    def read(self, t: float, out: list) -> None:
        ps = self.ps
        out.append(TelemetrySample(t, "psutil", "cpu_pct", float(ps.cpu_percent(interval=None))))
        if t >= self._next_cores:
            self._next_cores = t + self.per_core_period
            for k, v in enumerate(ps.cpu_percent(interval=None, percpu=True)):
                out.append(TelemetrySample(t, "psutil", f"cpu_pct:{k}", float(v)))
        try:
            out.append(TelemetrySample(t, "psutil", "process_cpu_pct", float(self.proc.cpu_percent(interval=None))))
            out.append(TelemetrySample(t, "psutil", "rss_bytes", float(self.proc.memory_info().rss)))
        except ps.Error:
            pass
        out.append(TelemetrySample(t, "psutil", "sys_mem_used_bytes", float(ps.virtual_memory().used)))

    def close(self) -> None:
        pass


# -- RAPL -------------------------------------------------------------------------------------

class _RaplZone:
    def __init__(self, folder: Path):
        self.folder = folder
        self.name = (folder / "name").read_text().strip() if (folder / "name").exists() else folder.name
        self.max_uj = None
        try:
            self.max_uj = int((folder / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            pass
        self.fd = os.open(folder / "energy_uj", os.O_RDONLY)
        self.last = self._raw()
        self.total_uj = 0
        self.last_t = None

    def _raw(self) -> int:
        # pread at offset 0 re-reads the sysfs attribute without reopening it each tick
        return int(os.pread(self.fd, 64, 0).decode().strip())

    def read(self, t: float) -> tuple[float, float | None]:
        raw = self._raw()
        delta = raw - self.last
        if delta < 0:  # the counter wrapped at max_energy_range_uj
            delta += (self.max_uj + 1) if self.max_uj else 0
            if delta < 0:
                delta = 0  # unknown range: lose this interval rather than invent energy
        self.last = raw
        self.total_uj += delta
        power = None
        if self.last_t is not None and t > self.last_t:
            power = delta / 1e6 / (t - self.last_t)
        self.last_t = t
        return self.total_uj / 1e6, power

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class _RaplSource:
    """Package (and psys) energy counters from /sys/class/powercap/intel-rapl:N."""

    def __init__(self, root: Path):
        self.zones: list[_RaplZone] = []
        if not root.is_dir():
            raise _Absent(f"RAPL not available: no {root} on this machine (Linux on Intel/AMD CPUs only)")
        folders = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
        if not folders:
            raise _Absent(f"RAPL not available: no intel-rapl zones in {root}")
        denied = []
        for f in folders:
            try:
                z = _RaplZone(f)
            except PermissionError:
                denied.append(str(f / "energy_uj"))
                continue
            except (OSError, ValueError):
                continue
            z.last_t = None
            self.zones.append(z)
        if not self.zones:
            if denied:
                raise _Absent(f"RAPL not readable: permission denied for {denied[0]} (root only since "
                              "Linux 5.10; run as root or make energy_uj readable)")
            raise _Absent(f"RAPL not available: no readable energy counter in {root}")
        names = [z.name for z in self.zones]
        dup = {n for n in names if names.count(n) > 1}
        for z in self.zones:  # two sockets both named package-N is impossible, but be safe
            z.source = f"rapl:{z.name}" + (f"@{z.folder.name}" if z.name in dup else "")

    def read(self, t: float, out: list) -> None:
        for z in self.zones:
            try:
                energy, power = z.read(t)
            except (OSError, ValueError):
                continue
            out.append(TelemetrySample(t, z.source, "energy_j", energy))
            if power is not None:
                out.append(TelemetrySample(t, z.source, "power_w", power))

    def describe(self) -> str:
        return ", ".join(z.name for z in self.zones)

    def close(self) -> None:
        for z in self.zones:
            z.close()


class _Absent(Exception):
    """A telemetry source that is not there; the message is the reason shown to the user."""


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
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.ticks = 0
        self.cpu_seconds = 0.0  # CPU time the sampler thread itself used (thread_time)
        self.wall_seconds = 0.0
        self.sink_error: str | None = None

    # -- sources ---------------------------------------------------------------------------
    def _open(self, probe: bool = False) -> None:
        status, sources = {}, []
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
                status["nvml"] = _available(f"{src.source}: {src.name}")
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
                sources.append(_PsutilSource(ps, self.per_core_period, prime=not probe))
                status["psutil"] = _available("CPU %, per-core CPU %, process RSS, system memory")
            except Exception as e:  # e.g. /proc not mounted in a container
                status["psutil"] = _unavailable(f"psutil not available: {e}")
        try:
            src = _RaplSource(self.powercap_root)
            sources.append(src)
            status["rapl"] = _available(f"package energy: {src.describe()}")
        except _Absent as e:
            status["rapl"] = _unavailable(str(e))
        self._sources, self._status = sources, status

    def _close(self) -> None:
        for s in self._sources:
            s.close()
        self._sources = []

    def status(self) -> dict:
        """{source: {"available": bool, "reason": str}} for "nvml", "psutil", "rapl"."""
        if self._status is None:
            self._open(probe=True)
            self._close()
        out = {k: dict(v) for k, v in self._status.items()}
        for s in self._sources:  # after start: mention metrics the GPU turned out not to support
            if isinstance(s, _NvmlSource) and s.unsupported:
                out["nvml"]["reason"] = f"{s.source}: {s.describe()}"
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
            batch = self.sample()
            self.ticks += 1
            if batch is not None and self.sink is not None:
                try:
                    self.sink(batch)
                except Exception as e:  # a broken sink must not kill sampling for the others
                    self.sink_error = self.sink_error or f"{type(e).__name__}: {e}"
            self.cpu_seconds = time.thread_time() - cpu0
            self.wall_seconds = self.clock() - wall0
            next_t += period
            now = self.clock()
            if next_t < now - period:  # fell behind (suspended machine): skip, don't burst
                next_t = now
            if self._stop.wait(max(0.0, next_t - now)):
                return

    @property
    def achieved_hz(self) -> float | None:
        return (self.ticks - 1) / self.wall_seconds if self.ticks > 1 and self.wall_seconds > 0 else None

    @property
    def cpu_fraction(self) -> float | None:
        """Share of one core the sampler used so far (target < 0.01 at 10 Hz)."""
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else None


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

