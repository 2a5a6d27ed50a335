"""Issue 9 item 1: every exported layer slice lies inside its own step slice and inside the run's
span, for every mode and every probe path that can run here (host clock on the CPU; device
events, faked with host clocks, as the CUDA/MPS path uses them)."""
import time

import pytest
import torch

import engine
import engine.run.probes as probes
from engine.export.trace import trace_events
from engine.records import LayerTimes, RunEnded, StepRecord
from engine.run.loop import Run, RunConfig


class FakeEvent:
    """A timing event read from the host clock: what the probe's CUDA path does with device events."""

    def __init__(self, enable_timing=True):
        self.at = None

    def record(self, stream=None):
        self.at = time.perf_counter()

    def elapsed_time(self, end) -> float:
        return (end.at - self.at) * 1000.0


class EventProbe(probes.Probe):
    """The probe on its device-event path (events, no host stamps), on a CPU model."""

    def __init__(self, model, device, **kw):
        super().__init__(model, device, **kw)
        self.events = True
        self._ev_start = FakeEvent()
        self._fev = [FakeEvent() for _ in range(self.n + 1)]
        self._bev = [FakeEvent() for _ in range(self.n)]
        self._bev_end = FakeEvent()
        self.c_stamp = self.c_hook = 0.0
        self._arm_hooks()  # hook functions that record the device events


TOL_US = 1.0  # the trace rounds to 0.001 us; a microsecond of slack only covers that rounding


@pytest.mark.parametrize("path", ["cpu-clock", "device-events", "cuda"])
@pytest.mark.parametrize("mode", ["train", "infer", "benchmark"])
def test_layer_slices_lie_inside_their_step_and_the_run(monkeypatch, mode, path):
    if path == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device here (the device-events case runs the same read-out)")
    if path == "device-events":
        monkeypatch.setattr(probes, "Probe", EventProbe)
    device = "cuda" if path == "cuda" else "cpu"
    cfg = RunConfig(net=engine.load_preset("lenet5"), mode=mode, device=device, batch_size=4, steps=3, warmup=1,
                    threads=1, telemetry_hz=0, dataset="synthetic")
    recs = []
    result = Run(cfg, [recs.append]).run()
    assert result.status == "completed", result.message
    lts = [r for r in recs if isinstance(r, LayerTimes)]
    assert len(lts) == 3
    steps = {s.step: s for s in recs if isinstance(s, StepRecord)}
    end_us = next(r for r in recs if isinstance(r, RunEnded)).t * 1e6
    for lt in lts:  # the stored time itself: seconds since the run's start, within its step
        s = steps[lt.step]
        assert s.t <= lt.t <= s.t + ((s.data_ms or 0) + s.step_ms) / 1000.0

    ev = trace_events(recs)["traceEvents"]
    step_slices = {e["args"]["step"]: e for e in ev if e.get("cat") == "step"}
    layer_slices = [e for e in ev if e.get("cat") in ("forward", "backward")]
    cats = {e["cat"] for e in layer_slices}
    assert cats == ({"forward", "backward"} if mode == "train" else {"forward"})
    assert len(layer_slices) >= 3 * len(lts[0].node_ids)
    for e in layer_slices:
        st = step_slices[e["args"]["step"]]
        lo, hi = e["ts"], e["ts"] + e["dur"]
        assert st["ts"] - TOL_US <= lo and hi <= st["ts"] + st["dur"] + TOL_US, (e, st)
        assert 0 <= lo and hi <= end_us, (e, end_us)
