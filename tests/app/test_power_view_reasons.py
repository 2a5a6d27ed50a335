"""The power view quotes the per-metric reason a session's telemetry status gives (a GPU that
answers NOT_SUPPORTED for its energy counter or its clocks), not a generic "not available"."""
from __future__ import annotations

from engine.records import StepRecord, TelemetryBatch, TelemetrySample
from tests.app.test_views import run_info, snapshot

WHY = "GPU energy counter not supported by Fake GPU 9000 (NVML: Not Supported)"


def test_power_view_shows_per_metric_reasons(qtbot):
    from app.views.power_view import PowerView

    v = PowerView()
    qtbot.addWidget(v)
    v.resize(900, 500)
    v.show()
    v.set_telemetry_status({
        "nvml": {"available": True, "reason": f"nvml:0: Fake GPU 9000; {WHY}",
                 "metrics": {"power_w": {"available": True, "reason": "GPU power: read through NVML"},
                             "energy_j": {"available": False, "reason": WHY},
                             "sm_clock_mhz": {"available": False,
                                              "reason": "SM clock not supported by Fake GPU 9000 (NVML: Not Supported)"}}},
        "rapl": {"available": False, "reason": "RAPL not available: no /sys/class/powercap"},
        "psutil": {"available": True, "reason": ""}})
    recs = [run_info(device="cuda:0", batch=10)]
    for k in range(5):
        recs.append(StepRecord(k + 1, k * 0.1, "train", 1.0, 0.5, 100.0, 100.0))
        recs.append(TelemetryBatch([TelemetrySample(k * 0.1, "nvml:0", "power_w", 200.0)]))
    v.push(snapshot(recs), force=True)
    avail = v.available()
    assert avail["power"] and not avail["energy"] and not avail["clock"]
    assert WHY in v.notes["energy"].toPlainText()
    assert "SM clock not supported by Fake GPU 9000" in v.notes["clock"].toPlainText()
    assert WHY in v.notice.text()


def test_a_live_run_shows_its_own_sampler_status(qtbot):
    """During a live run the per-metric reasons come from the run's TelemetryStatus record, not
    from a machine-wide probe taken at start-up."""
    import engine
    from app.views.power_view import PowerView

    feed = engine.LiveFeed(window=10)
    info = engine.RunInfo(config={"device": "cpu", "batch_size": 4}, device={"id": "cpu"}, versions={},
                          host="h", start_time=0.0)
    reason = "telemetry was off for this run (telemetry rate 0 Hz)"
    off = {src: {"available": False, "reason": reason} for src in ("nvml", "psutil", "rapl")}
    for rec in (info, engine.TelemetryStatus(0.0, off)):
        feed(rec)
    view = PowerView()
    qtbot.addWidget(view)
    view.set_telemetry_status({"rapl": {"available": True, "reason": "machine-wide"}})
    snap = feed.snapshot()
    assert snap.telemetry_status == off
    view.update_snapshot(snap)
    assert view._reason("rapl") == reason
