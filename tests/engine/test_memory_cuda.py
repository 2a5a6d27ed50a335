"""CUDA only: the memory timeline of one step comes from the allocator's own history
(``_record_memory_history`` for that step only), charged to the layers by host time, and the
per-layer saved bytes agree with the graph's own saved tensors on the GPU too."""
import pytest
import torch

import engine
from engine.analysis.memory import memory_timeline

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cuda_timeline_from_the_allocator_history(tmp_path):
    path = tmp_path / "g.lsession"
    cfg = engine.RunConfig(net=engine.resolve_net("lenet5"), device="cuda", batch_size=64, steps=4, warmup=1,
                           telemetry_hz=0, out=str(path))
    assert engine.Run(cfg).run().status == "completed"
    with engine.open_session(path) as r:
        tl = memory_timeline(r)
        lts = r.layer_times()
        counted = [lt for lt in lts if lt.memory_events]
    assert len(counted) == 1  # the history is recorded for one step only
    assert tl["source"] == "cuda allocator history"
    lt = counted[0]
    assert lt.saved_bytes and any(lt.saved_bytes)
    base = tl["baseline"]
    assert base > 0  # weights and optimizer state were allocated before the step
    assert tl["peak"]["bytes"] >= base + sum(lt.saved_bytes)  # everything saved is alive at the end of forward
    owners = {e[1] for e in lt.memory_events if e[1] is not None}
    assert owners and owners <= set(lt.node_ids)
    assert tl["peak"]["alive"]
    # recording is off again: a snapshot taken now has no new trace entries
    n0 = sum(len(t) for t in torch.cuda.memory._snapshot()["device_traces"])
    torch.zeros(1024, device="cuda")
    assert sum(len(t) for t in torch.cuda.memory._snapshot()["device_traces"]) == n0


@needs_cuda
def test_cuda_saved_bytes_match_the_graph():
    from tests.engine.test_memory_saved import _accounted, graph_saved

    spec = engine.resolve_net("lenet5")
    torch.manual_seed(0)
    model = engine.build_model(spec).cuda().train()
    x = torch.randn(4, *spec.input.shape, device="cuda")
    expected, _ = graph_saved(model, x)
    got, _inp, _acct = _accounted(model, x)
    assert got == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="the real allocator is tested above")
def test_allocator_trace_conversion_on_a_recorded_snapshot(monkeypatch):
    """Without a GPU: CudaHistory turns a snapshot's trace entries (the documented
    ``device_traces`` layout) into events owned by the layer the host was in when allocating."""
    import time

    from engine.run import memory as mem

    calls = []
    monkeypatch.setattr(torch.cuda.memory, "_record_memory_history", lambda *a, **k: calls.append(k.get("enabled")))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 5000)
    h = mem.CudaHistory(torch.device("cuda", 0))
    assert h.start() and calls == ["all"]
    t0 = h._t0_us
    h._marks = [(t0 + 100, 0), (t0 + 300, 1)]  # layer a ended at +100 us, b at +300 us
    trace = [{"action": "alloc", "addr": 1, "size": 400, "time_us": t0 + 50},
             {"action": "segment_alloc", "addr": 9, "size": 9999, "time_us": t0 + 60},
             {"action": "alloc", "addr": 2, "size": 200, "time_us": t0 + 200},
             {"action": "free_requested", "addr": 1, "size": 400, "time_us": t0 + 250},
             {"action": "free_completed", "addr": 1, "size": 400, "time_us": t0 + 1000},
             {"action": "alloc", "addr": 3, "size": 8, "time_us": t0 + 2000},
             {"action": "alloc", "addr": 4, "size": 7, "time_us": t0 - 10}]  # before the step
    monkeypatch.setattr(torch.cuda.memory, "_snapshot", lambda device=None: {"device_traces": [trace]})
    ev = h.stop(["a", "b"])
    assert calls == ["all", None] and h.done
    assert ev == [(0.0, None, 5000), (pytest.approx(0.05), "a", 400), (pytest.approx(0.2), "b", 200),
                  (pytest.approx(1.0), "a", -400), (pytest.approx(2.0), None, 8)]
