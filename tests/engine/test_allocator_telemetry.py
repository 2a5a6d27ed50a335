"""CUDA runs report the caching allocator's allocated/reserved bytes as telemetry (rate-limited)."""

import engine
from engine.records import TelemetryBatch
from engine.run.loop import Run, RunConfig


class FakeAllocator:
    def __init__(self):
        self.calls = 0

    def current(self):
        self.calls += 1
        return 1000 * self.calls, 4096 * self.calls


def test_allocator_series_emitted_at_most_ten_times_a_second():
    got = []
    run = Run(RunConfig(net=engine.load_preset("lenet5")), [got.append])
    run._t0 = 0.0
    mem = FakeAllocator()
    run._allocator_telemetry(mem, "cuda:0")
    run._allocator_telemetry(mem, "cuda:0")  # within 0.1 s: skipped
    batches = [r for r in got if isinstance(r, TelemetryBatch)]
    assert len(batches) == 1 and mem.calls == 1
    samples = {(s.source, s.metric): s.value for s in batches[0].samples}
    assert samples == {("torch:cuda:0", "allocated_bytes"): 1000.0, ("torch:cuda:0", "reserved_bytes"): 4096.0}


def test_cpu_run_has_no_allocator_series():
    got = []
    cfg = RunConfig(net=engine.load_preset("lenet5"), device="cpu", batch_size=4, steps=2, warmup=0,
                    telemetry_hz=0, threads=1)
    assert Run(cfg, [got.append]).run().status == "completed"
    sources = {s.source for r in got if isinstance(r, TelemetryBatch) for s in r.samples}
    assert not any(src.startswith("torch:") for src in sources)
