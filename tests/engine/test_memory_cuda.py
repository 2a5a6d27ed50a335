"""CUDA only: the memory timeline of one step comes from the allocator's own history
(``_record_memory_history`` for that step only), charged to the layers by host time, and the
per-layer saved bytes agree with the graph's own saved tensors on the GPU too."""
import pytest
import torch

import engine
from engine.analysis.memory import memory_timeline

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


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


def test_cuda_saved_bytes_match_the_graph():
    from tests.engine.test_memory_saved import _accounted, graph_saved

    spec = engine.resolve_net("lenet5")
    torch.manual_seed(0)
    model = engine.build_model(spec).cuda().train()
    x = torch.randn(4, *spec.input.shape, device="cuda")
    expected, _ = graph_saved(model, x)
    got, _inp, _acct = _accounted(model, x)
    assert got == expected
