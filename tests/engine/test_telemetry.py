"""Telemetry sampler: NVML, psutil and RAPL through injected fakes, the real absent path, and
energy per sample from counter deltas."""
import os
import threading
import time

import pytest

from engine.run import telemetry as tm
from engine.records import StepRecord, TelemetryBatch
from engine.analysis.energy import counter_at, energy_per_sample
from engine.run.telemetry import Telemetry, telemetry_status


class FakeNvml:
    """Enough of pynvml for one GPU. ``energy=False`` makes the energy counter unsupported (old
    GPU); ``unsupported`` names further calls that answer NOT_SUPPORTED, ``missing`` calls the
    driver lacks (FUNCTION_NOT_FOUND), ``failing`` calls that fail with another error every time.
    ``counts[call]`` counts every device query made."""

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):
        def __str__(self):
            return "Not Supported"

    class NVMLError_FunctionNotFound(NVMLError):
        def __str__(self):
            return "Function Not Found"

    class NVMLError_LibraryNotFound(NVMLError):
        def __str__(self):
            return "NVML Shared Library Not Found"

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    def __init__(self, energy=True, missing_library=False, unsupported=(), missing=(), failing=()):
        self.energy = energy
        self.missing_library = missing_library
        self.unsupported = set(unsupported) | (set() if energy else {"nvmlDeviceGetTotalEnergyConsumption"})
        self.missing = set(missing)
        self.failing = set(failing)
        self.inits = 0
        self.mj = 5_000_000  # counter since driver load: not zero at start
        self.calls = 0
        self.counts: dict[str, int] = {}

    def _query(self, call):
        self.counts[call] = self.counts.get(call, 0) + 1
        if call in self.unsupported:
            raise self.NVMLError_NotSupported()
        if call in self.missing:
            raise self.NVMLError_FunctionNotFound()
        if call in self.failing:
            raise self.NVMLError("Unknown Error")

    def nvmlInit(self):
        if self.missing_library:
            raise self.NVMLError_LibraryNotFound()
        self.inits += 1

    def nvmlShutdown(self):
        self.inits -= 1

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        if i != 0:
            raise self.NVMLError("Invalid Argument")
        return "h0"

    def nvmlDeviceGetHandleByUUID(self, u):
        return "h0"

    def nvmlDeviceGetName(self, h):
        return b"Fake GPU 9000"

    def nvmlSystemGetDriverVersion(self):
        return "999.1"

    def nvmlDeviceGetPowerUsage(self, h):
        self._query("nvmlDeviceGetPowerUsage")
        return 123_456  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self._query("nvmlDeviceGetTotalEnergyConsumption")
        self.calls += 1
        self.mj += 2_500  # 2.5 J per reading
        return self.mj

    def nvmlDeviceGetMemoryInfo(self, h):
        self._query("nvmlDeviceGetMemoryInfo")
        return type("M", (), {"used": 1 << 30, "total": 8 << 30, "free": 7 << 30})()

    def nvmlDeviceGetUtilizationRates(self, h):
        self._query("nvmlDeviceGetUtilizationRates")
        return type("U", (), {"gpu": 97, "memory": 40})()

    def nvmlDeviceGetTemperature(self, h, kind):
        self._query("nvmlDeviceGetTemperature")
        return 66

    def nvmlDeviceGetClockInfo(self, h, kind):
        self._query("nvmlDeviceGetClockInfo")
        return 1980

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        self._query("nvmlDeviceGetCurrentClocksEventReasons")
        return 0x4 | 0x20


def metrics(batch, source=None):
    return {s.metric: s.value for s in batch.samples if source is None or s.source == source}


def no_rapl(tmp_path):
    return tmp_path / "no-powercap"


def test_nvml_metrics_through_fake(tmp_path):
    nv = FakeNvml()
    t = Telemetry("cuda:0", nvml=nv, powercap_root=no_rapl(tmp_path))
    t._open()
    try:
        first = metrics(t.sample(), "nvml:0")
        second = metrics(t.sample(), "nvml:0")
    finally:
        t._close()
    assert nv.inits == 0  # init and shutdown paired
    assert first["power_w"] == pytest.approx(123.456)
    assert first["energy_j"] == 0.0 and second["energy_j"] == pytest.approx(2.5)  # J since start
    assert first["mem_used_bytes"] == 1 << 30 and first["mem_total_bytes"] == 8 << 30
    assert first["gpu_util_pct"] == 97 and first["mem_util_pct"] == 40
    assert first["temp_c"] == 66 and first["sm_clock_mhz"] == 1980 and first["throttle_reasons"] == 0x24
    st = t.status()["nvml"]
    assert st["available"] is True and st["reason"] == "nvml:0: Fake GPU 9000, driver 999.1"
    assert set(st["metrics"]) == {"power_w", "energy_j", "mem_used_bytes", "mem_total_bytes", "gpu_util_pct",
                                  "mem_util_pct", "temp_c", "sm_clock_mhz", "throttle_reasons"}
    assert all(m["available"] for m in st["metrics"].values())


def test_unsupported_energy_counter_is_absent_not_zero(tmp_path):
    nv = FakeNvml(energy=False)
    t = Telemetry("cuda:0", nvml=nv, powercap_root=no_rapl(tmp_path))
    t._open()
    try:
        batches = [t.sample() for _ in range(3)]
        status = t.status()
    finally:
        t._close()
    for b in batches:
        m = metrics(b, "nvml:0")
        assert "energy_j" not in m and m["power_w"] > 0
    why = "GPU energy counter not supported by Fake GPU 9000 (NVML: Not Supported)"
    assert why in status["nvml"]["reason"]
    assert status["nvml"]["metrics"]["energy_j"] == {"available": False, "reason": why}
    assert status["nvml"]["metrics"]["power_w"]["available"] is True


def test_nvml_library_missing_gives_reason(tmp_path):
    nv = FakeNvml(missing_library=True)
    st = telemetry_status(nvml=nv, powercap_root=no_rapl(tmp_path))
    assert st["nvml"] == {"available": False, "reason": "NVML not available: NVML Shared Library Not Found"}
    t = Telemetry("cuda:0", nvml=nv, powercap_root=no_rapl(tmp_path))
    assert t.status()["nvml"]["reason"] == "NVML not available: NVML Shared Library Not Found"
    t._open()
    try:
        assert not [s for s in t.sample().samples if s.source.startswith("nvml")]
    finally:
        t._close()


def test_real_machine_absent_sources_have_reasons():
    st = telemetry_status()
    assert set(st) == {"nvml", "psutil", "rapl"}
    for name, s in st.items():
        assert isinstance(s["available"], bool) and s["reason"], name
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        has_nvml = True
    except Exception:
        has_nvml = False
    if not has_nvml:
        assert st["nvml"]["available"] is False and st["nvml"]["reason"].startswith("NVML not available")
    # CPU runs never read NVML: the reason says so rather than pretending a zero-watt GPU
    cpu = Telemetry("cpu").status()["nvml"]
    assert cpu["available"] is False and "not a CUDA device" in cpu["reason"]


def make_powercap(root, energy=1_000_000, max_range=2_000_000):
    z = root / "intel-rapl:0"
    z.mkdir(parents=True)
    (z / "name").write_text("package-0\n")
    (z / "energy_uj").write_text(f"{energy}\n")
    (z / "max_energy_range_uj").write_text(f"{max_range}\n")
    sub = root / "intel-rapl:0:0"  # a sub-zone (core) is inside the package: not counted twice
    sub.mkdir()
    (sub / "name").write_text("core\n")
    (sub / "energy_uj").write_text("5\n")
    return z


def test_rapl_energy_with_counter_wrap(tmp_path):
    z = make_powercap(tmp_path / "powercap", energy=1_500_000, max_range=1_999_999)
    clock = iter([0.0, 1.0, 2.0, 3.0]).__next__
    t = Telemetry("cpu", powercap_root=tmp_path / "powercap", clock=clock, t0=0.0,
                  psutil_module=None, nvml=FakeNvml(missing_library=True))
    t._open()
    try:
        assert t.status()["rapl"] == {"available": True,
                                      "reason": "CPU package energy: package-0 (intel-rapl:0) as rapl:package-0",
                                      "domains": {"rapl:package-0": ["package-0 (intel-rapl:0)"]}}
        first = metrics(t.sample(), "rapl:package-0")
        (z / "energy_uj").write_text("1900000\n")  # +0.4 J
        second = metrics(t.sample(), "rapl:package-0")
        (z / "energy_uj").write_text("100000\n")  # wrapped: +0.1 J to the top, +0.1 J after
        third = metrics(t.sample(), "rapl:package-0")
    finally:
        t._close()
    assert first == {"energy_j": 0.0}  # no power from a single reading
    assert second["energy_j"] == pytest.approx(0.4) and second["power_w"] == pytest.approx(0.4)
    assert third["energy_j"] == pytest.approx(0.6) and third["power_w"] == pytest.approx(0.2)
    assert not [s for s in TelemetryBatch([]).samples]


def test_rapl_permission_denied_reason(tmp_path, monkeypatch):
    make_powercap(tmp_path / "powercap")
    real_open = os.open

    def deny(path, *a, **k):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **k)

    monkeypatch.setattr(tm.os, "open", deny)
    st = Telemetry("cpu", powercap_root=tmp_path / "powercap").status()["rapl"]
    assert st["available"] is False and "permission denied" in st["reason"]
    assert "intel-rapl:0/energy_uj" in st["reason"]


def test_rapl_missing_folder_reason(tmp_path):
    st = Telemetry("cpu", powercap_root=tmp_path / "nothing").status()["rapl"]
    assert st["available"] is False and "RAPL not available" in st["reason"]


def test_psutil_metrics_real():
    t = Telemetry("cpu", powercap_root="/nonexistent-powercap", nvml=FakeNvml(missing_library=True))
    t._open()
    try:
        t.sample()  # primes the load counters on this thread
        time.sleep(0.1)
        m = metrics(t.sample(), "psutil")
    finally:
        t._close()
    assert m["rss_bytes"] > 1e6 and m["sys_mem_used_bytes"] > 1e6
    assert 0.0 <= m["cpu_pct"] <= 100.0
    assert any(k.startswith("cpu_pct:") for k in m)  # per-core on the first tick that reads load


def test_sampler_thread_rate_and_stop():
    got, lock = [], threading.Lock()

    def sink(b):
        with lock:
            got.append(b)

    t = Telemetry("cpu", hz=50.0, sink=sink, powercap_root="/nonexistent-powercap",
                  nvml=FakeNvml(missing_library=True))
    t.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(got) < 5:
        time.sleep(0.01)
    t.stop()
    n = len(got)
    assert n >= 5 and t._thread is None
    time.sleep(0.1)
    assert len(got) == n  # nothing after stop()
    ts = [b.samples[0].t for b in got]
    assert ts == sorted(ts)
    assert t.cpu_seconds > 0 and t.ticks >= n


def test_sink_error_does_not_kill_sampler():
    calls = []

    def bad(b):
        calls.append(b)
        raise RuntimeError("boom")

    t = Telemetry("cpu", hz=100.0, sink=bad, powercap_root="/nonexistent-powercap",
                  nvml=FakeNvml(missing_library=True)).start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(calls) < 3:
        time.sleep(0.01)
    t.stop()
    assert len(calls) >= 3 and "boom" in t.sink_error


def test_counter_interpolation():
    assert counter_at([0.0, 1.0, 2.0], [0.0, 10.0, 30.0], 1.5) == pytest.approx(20.0)
    assert counter_at([0.0, 1.0], [0.0, 10.0], 1.0) == 10.0
    assert counter_at([0.0, 1.0], [0.0, 10.0], 1.1) is None


def _steps(n, step_ms=10.0, batch=8, t0=0.0, phase="train"):
    out, t = [], t0
    for i in range(n):
        t += step_ms / 1000
        out.append(StepRecord(i, t, phase, 1.0, 0.5, step_ms, batch / (step_ms / 1000)))
    return out


def test_energy_per_sample_from_counter_windows():
    ts = [i * 0.1 for i in range(40)]  # 10 Hz, 3.9 s
    energy = [100.0 * t for t in ts]  # a steady 100 W
    e = energy_per_sample(ts, energy, _steps(300))  # 3 s of 10 ms steps, batch 8
    assert e["windows"] in (2, 3) and e["steps"] == 300 and e["samples"] == 2400
    assert e["j_per_step"] == pytest.approx(1.0)
    assert e["j_per_sample"] == pytest.approx(0.125)
    assert e["avg_power_w"] == pytest.approx(100.0)


def test_energy_needs_a_full_second():
    ts = [i * 0.1 for i in range(40)]
    energy = [100.0 * t for t in ts]
    assert energy_per_sample(ts, energy, _steps(50)) is None  # 0.5 s of steps: too short
    assert energy_per_sample([], [], _steps(300)) is None
    # steps outside the counter's range are not guessed at
    assert energy_per_sample(ts, energy, _steps(300, t0=10.0)) is None
