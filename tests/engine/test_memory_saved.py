"""Saved-for-backward bytes per layer (engine.run.memory) against an independent count: the
autograd graph's own ``grad_fn._saved_*`` tensors after a plain forward, each storage once,
charged to the layer whose output it is (or whose graph node saved it), and the known saved
tensors of lenet5's layers from their shapes."""
import pytest
import torch

import engine
from engine.run.memory import SavedAccounting
from engine.run.probes import Probe
from tests.engine.test_probes import tiny_resnet


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _model(spec):
    torch.manual_seed(0)
    m = engine.build_model(spec, engine.analyze(spec))
    m.train()
    return m


def graph_saved(model, x) -> tuple[dict, int]:
    """({node_id: saved bytes}, input bytes) from the graph of a plain forward: every tensor a
    grad_fn keeps in a ``_saved_*`` attribute, by storage, parameters and buffers left out; a
    storage that is a layer's output (or the input) is that layer's, any other the layer whose
    output's grad_fn saved it."""
    outs, node_of_fn = {}, {}
    keep = []

    def seen(k, nid, out):
        keep.append(out)  # alive to the end: no storage address is reused
        outs.setdefault(out.untyped_storage().data_ptr(), nid)
        if out.grad_fn is not None:
            node_of_fn.setdefault(out.grad_fn, nid)

    out = model.forward(x, seen)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weights |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    inp = x.untyped_storage().data_ptr()
    per, counted, input_bytes = {}, set(), 0
    stack, visited = [out.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in visited:
            continue
        visited.add(fn)
        for name in dir(fn):
            if not name.startswith("_saved_"):
                continue
            try:
                v = getattr(fn, name)
            except Exception:
                continue
            for t in (v if isinstance(v, (tuple, list)) else (v,)):
                if not isinstance(t, torch.Tensor):
                    continue
                ptr = t.untyped_storage().data_ptr()
                if ptr in weights or ptr in counted or t.untyped_storage().nbytes() == 0:
                    continue
                counted.add(ptr)
                if ptr == inp:
                    input_bytes += t.untyped_storage().nbytes()
                    continue
                owner = outs.get(ptr) or node_of_fn[fn]
                per[owner] = per.get(owner, 0) + t.untyped_storage().nbytes()
        stack.extend(f for f, _ in fn.next_functions)
    keep.clear()
    return per, input_bytes


def _accounted(model, x):
    acct = SavedAccounting(model, len(model.plan))
    acct.begin(x)
    with acct.hooks():
        out = model.forward(x, lambda k, nid, o: acct.on_output(k, o))
    out.float().sum().backward()
    ids = [s.node_id for s in model.plan]
    return {nid: b for nid, b in zip(ids, acct.saved) if b}, acct.input_saved, acct


@pytest.mark.parametrize("make", [lambda: engine.resolve_net("lenet5"), tiny_resnet], ids=["lenet5", "resnet"])
def test_saved_bytes_equal_the_graphs_own_saved_tensors(make):
    spec = make()
    model = _model(spec)
    x = torch.randn(3, *spec.input.shape)
    expected, exp_input = graph_saved(model, x)
    got, got_input, _ = _accounted(model, x)
    assert got == expected
    assert got_input == exp_input
    assert sum(got.values()) > 0


def test_lenet5_saved_bytes_from_shapes():
    """conv: input (and weight, a parameter); relu: output; maxpool: input and int64 indices;
    linear: input. Charged to the creator: conv2 saves pool1's output, so it is pool1's."""
    spec = engine.resolve_net("lenet5")
    model = _model(spec)
    info = engine.analyze(spec)
    n = 4
    x = torch.randn(n, *spec.input.shape)
    got, got_input, acct = _accounted(model, x)
    shape = {layer.id: layer.out_shape for layer in info.layers}

    def numel(nid):
        s = 1
        for d in shape[nid]:
            s *= d
        return s * n

    kinds = {layer.id: layer.kind for layer in info.layers}
    want = {}
    ids = [s.node_id for s in model.plan]
    for k, nid in enumerate(ids):
        if kinds[nid] == "relu":
            want[nid] = want.get(nid, 0) + numel(nid) * 4
        if kinds[nid] == "maxpool2d":
            want[nid] = want.get(nid, 0) + numel(nid) * 8  # the indices it made
    for k, nid in enumerate(ids):  # what consumers save of their input, charged to its maker
        if kinds[nid] in ("conv2d", "linear", "maxpool2d") and k > 0:
            prev = ids[k - 1]
            maker = ids[k - 2] if kinds[prev] == "flatten" else prev
            if kinds[maker] != "relu":  # a relu's output is already counted once
                want[maker] = want.get(maker, 0) + numel(prev) * 4
    assert got == want
    assert got_input == x.numel() * 4
    assert acct.out == [numel(nid) * 4 for nid in ids]


def test_probe_counts_memory_on_a_sampled_step_only_and_gradients_unchanged():
    spec = tiny_resnet()
    model = _model(spec)
    x = torch.randn(2, *spec.input.shape)
    ref = _model(spec)
    ref(x).sum().backward()
    probe = Probe(model, torch.device("cpu"))
    got = []
    for step in range(3):
        model.zero_grad(set_to_none=True)
        probe.begin_step()
        out = probe.forward(x)
        out.sum().backward()
        probe.end_backward()
        got.append(probe.collect(step, 0.0))
        probe.detach()
    expected, _ = graph_saved(_model(spec), x)
    first = got[0]
    assert {nid: b for nid, b in zip(first.node_ids, first.saved_bytes) if b} == expected
    assert first.memory_source == "saved-tensor accounting" and first.memory_events
    assert got[1].saved_bytes == [] and got[2].memory_events == []  # within the sampling interval
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    # the events balance: what the forward allocated and the backward released nets to the
    # outputs still alive (the net output) and nothing else
    assert sum(e[3] for e in first.memory_events) == first.out_bytes[-1]
