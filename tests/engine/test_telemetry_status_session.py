"""The run's own telemetry status (probed once by its sampler) is what a session stores, and
``layerscope summary`` and the HTML report quote its per-metric reasons."""
import json

import engine
from engine.analysis.summary import run_summary
from engine.cli.main import main
from engine.export.html import html_report
from engine.records import (RunEnded, RunInfo, StepRecord, TelemetryBatch, TelemetrySample, TelemetryStatus)
from engine.run.loop import Run, RunConfig
from engine.run.telemetry import Telemetry
from engine.session import SessionWriter, open_session
from tests.engine.test_session import LAYERS
from tests.engine.test_telemetry import FakeNvml

WHY = "GPU energy counter not supported by Fake GPU 9000 (NVML: Not Supported)"


def gpu_session(path, tmp_path):
    """A CUDA run on a GPU without the energy counter: NVML power is recorded, and RAPL's CPU
    package counter too (which is not the GPU's energy)."""
    status = Telemetry("cuda:0", nvml=FakeNvml(energy=False), powercap_root=tmp_path / "none").status()
    recs = [RunInfo(config={"net": {"format": "layerscope-net", "name": "tiny"}, "mode": "infer", "batch_size": 8,
                            "precision": "fp32", "device": "cuda:0"},
                    device={"id": "cuda:0", "name": "Fake GPU 9000"}, versions={}, host="h", start_time=0.0,
                    layers=list(LAYERS)),
            TelemetryStatus(0.0, status)]
    for i in range(300):
        t = 0.005 + i * 0.01
        recs.append(StepRecord(i, t, "infer", None, None, 9.0, 800.0, data_ms=1.0))
        recs.append(TelemetryBatch([TelemetrySample(t, "nvml:0", "power_w", 120.0),
                                    TelemetrySample(t, "rapl:package-0", "energy_j", 30.0 * t)]))
    recs.append(RunEnded(3.1, "completed", "", 300))
    with SessionWriter(path) as w:
        for r in recs:
            w(r)
    return recs


def test_gpu_without_energy_counter_summary_says_why(tmp_path, capsys):
    path = tmp_path / "gpu.lsession"
    recs = gpu_session(path, tmp_path)
    with open_session(path) as r:
        stored = r.meta["telemetry"]
        run = run_summary(r)
    assert stored["nvml"]["metrics"]["energy_j"] == {"available": False, "reason": WHY}
    # the CPU package's counter is not the GPU run's energy
    assert run["energy_source"] is None and run["j_per_sample"] is None
    assert run["power_note"] == f"GPU energy was not measured: {WHY}; GPU power was recorded (see the power series)."
    assert run_summary(recs)["power_note"] == run["power_note"]  # a live run's records say the same
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"energy: not measured. GPU energy was not measured: {WHY}" in out


def test_html_report_shows_per_metric_availability(tmp_path):
    path = tmp_path / "gpu.lsession"
    gpu_session(path, tmp_path)
    with open_session(path) as r:
        html = html_report(r)
    assert "Telemetry: what was read, and why not" in html
    assert f"<td>nvml</td><td>energy_j</td><td>no</td><td>{WHY}</td>" in html
    assert "<td>nvml</td><td>power_w</td><td>yes</td>" in html
    assert "GPU energy was not measured" in html


def test_a_run_stores_its_own_sampler_status(tmp_path):
    path = tmp_path / "run.lsession"
    recs = []
    cfg = RunConfig(net=engine.load_preset("lenet5"), device="cpu", batch_size=4, steps=3, warmup=0, threads=1,
                    telemetry_hz=20.0, out=str(path))
    result = Run(cfg, [recs.append]).run()
    assert result.status == "completed", result.message
    sent = [r for r in recs if isinstance(r, TelemetryStatus)]
    assert sent and sent[0].t >= 0
    with open_session(path) as r:
        assert r.meta["telemetry"] == sent[-1].status
    assert set(sent[-1].status) == {"nvml", "psutil", "rapl"}
    assert sent[-1].status["nvml"]["reason"] == "NVML not used: cpu is not a CUDA device"
    assert json.dumps(sent[-1].status)  # JSON as stored


def test_telemetry_off_is_said_as_such(tmp_path, capsys):
    path = tmp_path / "off.lsession"
    cfg = RunConfig(net=engine.load_preset("lenet5"), device="cpu", batch_size=4, steps=2, warmup=0, threads=1,
                    telemetry_hz=0, out=str(path))
    assert Run(cfg).run().status == "completed"
    with open_session(path) as r:
        st = r.meta["telemetry"]
        run = run_summary(r)
    assert {k: v["available"] for k, v in st.items()} == {"nvml": False, "psutil": False, "rapl": False}
    assert run["power_note"] == "Power was not recorded: telemetry was off for this run (telemetry rate 0 Hz)."
