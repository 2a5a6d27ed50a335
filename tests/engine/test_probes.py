"""Per-layer probes: every layer kind timed, backward through residual adds and ReLUs leaves
gradients untouched, no hooks left behind, feature maps reduced and rate-limited."""
import numpy as np
import pytest
import torch

import engine
from engine.run.probes import Probe, reduce_feature


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def every_kind_net():
    """A tiny net holding every registered layer kind once (ends in softmax)."""
    return engine.from_dict({
        "format": "layerscope-net", "version": 1, "name": "every-kind",
        "input": {"channels": 3, "height": 12, "width": 12, "classes": 4},
        "nodes": [
            {"id": "c1", "kind": "conv2d", "params": {"out_channels": 4, "kernel": 3, "padding": 1}},
            {"id": "bn", "kind": "batchnorm2d"},
            {"id": "r", "kind": "relu"},
            {"id": "lrn", "kind": "lrn", "params": {"size": 3}},
            {"id": "c2", "kind": "conv2d", "params": {"out_channels": 4, "kernel": 3, "padding": 1}},
            {"id": "add", "kind": "add", "inputs": ["lrn", "c2"]},
            {"id": "lk", "kind": "leaky_relu"},
            {"id": "th", "kind": "tanh"},
            {"id": "ge", "kind": "gelu"},
            {"id": "sg", "kind": "sigmoid"},
            {"id": "cat", "kind": "concat", "inputs": ["sg", "r"]},
            {"id": "mp", "kind": "maxpool2d", "params": {"kernel": 2}},
            {"id": "ap", "kind": "avgpool2d", "params": {"kernel": 2}},
            {"id": "aap", "kind": "adaptive_avgpool2d", "params": {"output_size": 2}},
            {"id": "fl", "kind": "flatten"},
            {"id": "dr", "kind": "dropout", "params": {"p": 0.1}},
            {"id": "fc", "kind": "linear", "params": {"out_features": 4}},
            {"id": "sm", "kind": "softmax"},
        ]})


def tiny_resnet():
    """Two residual blocks (one with a projection) with out-of-place ReLUs after each add."""
    def block(p, c, stride, down):
        nodes = [
            {"id": f"{p}_c1", "kind": "conv2d", "params": {"out_channels": c, "kernel": 3, "stride": stride,
                                                          "padding": 1}},
            {"id": f"{p}_bn1", "kind": "batchnorm2d"},
            {"id": f"{p}_r1", "kind": "relu"},
            {"id": f"{p}_c2", "kind": "conv2d", "params": {"out_channels": c, "kernel": 3, "padding": 1}},
            {"id": f"{p}_bn2", "kind": "batchnorm2d"},
        ]
        skip = down
        if down != "stem_r" or stride != 1:
            nodes += [{"id": f"{p}_dc", "kind": "conv2d", "inputs": [down],
                       "params": {"out_channels": c, "kernel": 1, "stride": stride}},
                      {"id": f"{p}_dbn", "kind": "batchnorm2d"}]
            skip = f"{p}_dbn"
        nodes += [{"id": f"{p}_add", "kind": "add", "inputs": [f"{p}_bn2", skip]},
                  {"id": f"{p}_r2", "kind": "relu"}]
        return nodes
    nodes = [{"id": "stem", "kind": "conv2d", "params": {"out_channels": 4, "kernel": 3, "padding": 1}},
             {"id": "stem_bn", "kind": "batchnorm2d"}, {"id": "stem_r", "kind": "relu"}]
    nodes += block("b1", 4, 1, "stem_r")
    nodes += block("b2", 8, 2, "b1_r2")
    nodes += [{"id": "gap", "kind": "adaptive_avgpool2d"}, {"id": "fl", "kind": "flatten"},
              {"id": "fc", "kind": "linear", "params": {"out_features": 5}}]
    return engine.from_dict({"format": "layerscope-net", "version": 1, "name": "tiny-resnet",
                             "input": {"channels": 3, "height": 8, "width": 8, "classes": 5},
                             "nodes": nodes})


def _no_hooks(model):
    for m in model.modules():
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(m, name), f"{type(m).__name__} keeps {name}"
    assert "forward" not in model.__dict__


def _train_step(model, x, y, probe=None):
    model.zero_grad(set_to_none=True)
    if probe is not None:
        probe.begin_step()
        out = probe.forward(x)
    else:
        out = model(x)
    loss = torch.nn.functional.cross_entropy(out, y)
    loss.backward()
    if probe is not None:
        probe.end_backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _profiled_step(probe, x, step):
    """One probed forward and backward of ``x`` (the loss: the output's sum); its LayerTimes."""
    probe.begin_step()
    out = probe.forward(x)
    out.sum().backward()
    probe.end_backward()
    lt = probe.collect(step, 0.5)
    probe.detach()
    return lt


def test_every_kind_gets_forward_and_backward_times(probe_hooks):
    spec = every_kind_net()
    info = engine.analyze(spec)
    assert {layer.kind for layer in info.layers} == set(engine.kinds())
    torch.manual_seed(0)
    model = engine.build_model(spec, info)
    probe = Probe(model, torch.device("cpu"), native=probe_hooks,
                  act_bytes_per_sample=[l.activation_bytes(1) for l in info.layers])
    x, y = torch.randn(4, 3, 12, 12), torch.randint(0, 4, (4,))
    try:
        _train_step(model, x, y, probe)
        lt = probe.collect(1, 0.0)
    finally:
        probe.detach()
    assert lt.node_ids == [layer.id for layer in info.layers]
    for nid, f, b, fs, bs, mem in zip(lt.node_ids, lt.fwd_ms, lt.bwd_ms, lt.fwd_start_ms, lt.bwd_start_ms,
                                      lt.mem_bytes):
        assert f is not None and f > 0, nid
        assert b is not None and b > 0, nid
        assert fs >= 0 and bs > fs, nid
        assert mem == info.layer(nid).activation_bytes(4)
    # forward slices follow each other in plan order, backward ones in reverse
    assert lt.fwd_start_ms == sorted(lt.fwd_start_ms)
    assert lt.bwd_start_ms[lt.node_ids.index("fc")] < lt.bwd_start_ms[lt.node_ids.index("c1")]
    _no_hooks(model)


def test_infer_has_forward_times_and_no_backward(probe_hooks):
    spec = engine.load_preset("lenet5")
    model = engine.build_model(spec).eval()
    probe = Probe(model, torch.device("cpu"), native=probe_hooks)
    with torch.inference_mode():
        probe.begin_step()
        out = probe.forward(torch.randn(2, 1, 28, 28))
        lt = probe.collect(1, 0.0)
    probe.detach()
    assert out.shape == (2, 10)
    assert all(f > 0 for f in lt.fwd_ms)
    assert lt.bwd_ms == [None] * len(lt.node_ids)


def test_profiled_forward_equals_plain_forward():
    spec = tiny_resnet()
    torch.manual_seed(1)
    model = engine.build_model(spec).eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        plain = model(x)
        probe = Probe(model, torch.device("cpu"))
        probe.begin_step()
        probed = probe.forward(x)
    probe.detach()
    assert torch.equal(plain, probed)


def test_residual_backward_gradients_unchanged_and_hooks_removed(probe_hooks):
    spec = tiny_resnet()
    torch.manual_seed(2)
    model = engine.build_model(spec)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    # batchnorm running stats move each forward: compare from the same starting state
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out_a, grads_a = _train_step(model, x, y)
    model.load_state_dict(state)
    probe = Probe(model, torch.device("cpu"), native=probe_hooks)
    try:
        out_b, grads_b = _train_step(model, x, y, probe)
        lt = probe.collect(1, 0.0)
    finally:
        probe.detach()
    assert torch.equal(out_a, out_b)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        assert torch.equal(grads_a[k], grads_b[k]), k
    for kind_id in ("b1_add", "b2_add", "b1_r2", "b2_r2", "b2_dc"):
        i = lt.node_ids.index(kind_id)
        assert lt.fwd_ms[i] > 0 and lt.bwd_ms[i] > 0, kind_id
    _no_hooks(model)


def test_resnet18_backward_with_probes_matches_unprofiled(probe_hooks):
    spec = engine.load_preset("resnet18")
    torch.manual_seed(3)
    model = engine.build_model(spec)
    model.eval()  # batch 1: batchnorm must use running stats; backward still runs through every node
    x, y = torch.randn(1, 3, 224, 224), torch.tensor([7])
    _, grads_a = _train_step(model, x, y)
    probe = Probe(model, torch.device("cpu"), native=probe_hooks)
    try:
        _, grads_b = _train_step(model, x, y, probe)
        lt = probe.collect(1, 0.0)
    finally:
        probe.detach()
    for k in grads_a:
        assert torch.equal(grads_a[k], grads_b[k]), k
    assert all(b is not None and b > 0 for b in lt.bwd_ms)
    _no_hooks(model)


def test_hooks_detached_after_a_failed_step(probe_hooks):
    spec = engine.load_preset("lenet5")
    model = engine.build_model(spec)
    probe = Probe(model, torch.device("cpu"), native=probe_hooks)
    probe.begin_step()
    out = probe.forward(torch.randn(2, 1, 28, 28))  # hooks waiting for a backward that never comes
    probe.detach()
    out.sum().backward()  # the failed step's graph, run after all: the probe hears nothing
    assert probe.fired() == []
    del out
    _no_hooks(model)
    lt = _profiled_step(probe, torch.randn(2, 1, 28, 28), 2)  # and the next step is timed whole
    assert sorted(probe.fired()) == list(range(len(lt.node_ids)))  # each layer's backward began once
    assert all(b is not None and b >= 0 for b in lt.bwd_ms)


def test_feature_map_reduced_and_rate_limited():
    # alexnet's first layer alone (64 channels of 55x55), then a small head so the net is valid
    spec = engine.from_dict({"format": "layerscope-net", "version": 1, "name": "conv1-only",
                             "input": {"channels": 3, "height": 224, "width": 224, "classes": 10},
                             "nodes": [{"id": "conv1", "kind": "conv2d",
                                        "params": {"out_channels": 64, "kernel": 11, "stride": 4, "padding": 2}},
                                       {"id": "pool", "kind": "maxpool2d", "params": {"kernel": 5, "stride": 5}},
                                       {"id": "flatten", "kind": "flatten"},
                                       {"id": "fc", "kind": "linear", "params": {"out_features": 10}}]})
    model = engine.build_model(spec).eval()
    now = [100.0]
    probe = Probe(model, torch.device("cpu"), feature_node="conv1", feature_hz=4.0, clock=lambda: now[0])
    with torch.inference_mode():
        x = torch.randn(2, 3, 224, 224)
        assert probe.feature_due()
        probe.forward(x, timing=False)
        fm = probe.take_feature(1, 0.5)
        assert fm is not None and fm.node_id == "conv1"
        assert fm.shape == (32, 55, 55)
        arr = fm.array()
        assert arr.dtype == np.uint8 and arr.min() == 0 and arr.max() == 255
        assert fm.lo < fm.hi
        now[0] += 0.1  # 0.1 s later: at 4 Hz the next map is not due yet
        assert not probe.feature_due()
        probe.forward(x, timing=False)
        assert probe.take_feature(2, 0.6) is None
        now[0] += 0.2
        assert probe.feature_due()


def test_reduce_feature_downsamples_and_lays_out_vectors():
    u8, lohi = reduce_feature(torch.arange(2 * 100 * 80, dtype=torch.float32).reshape(2, 100, 80))
    assert tuple(u8.shape) == (2, 64, 64) and u8.dtype == torch.uint8
    assert lohi.tolist()[0] < lohi.tolist()[1]
    v, _ = reduce_feature(torch.linspace(-1, 1, 10))
    assert tuple(v.shape) == (1, 4, 4)
    assert v.flatten()[:10].tolist()[0] == 0 and v.flatten()[9].item() == 255
    big, _ = reduce_feature(torch.randn(9216))
    assert tuple(big.shape) == (1, 64, 64)


def test_feature_map_captures_the_asked_channels_and_says_which(probe_hooks):
    """Issue 10 item 8: a 96-channel layer, channels 33-64 asked: the map holds exactly those
    (first_channel 32, channels_total 96); a window past the end moves back inside the layer."""
    spec = engine.from_dict({"format": "layerscope-net", "version": 1, "name": "wide",
                             "input": {"channels": 3, "height": 8, "width": 8, "classes": 10},
                             "nodes": [{"id": "conv1", "kind": "conv2d",
                                        "params": {"out_channels": 96, "kernel": 1}},
                                       {"id": "flatten", "kind": "flatten"},
                                       {"id": "fc", "kind": "linear", "params": {"out_features": 10}}]})
    model = engine.build_model(spec).eval()
    now = [0.0]
    probe = Probe(model, torch.device("cpu"), native=probe_hooks, feature_node="conv1", feature_hz=1.0,
                  clock=lambda: now[0])
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        probe.forward(x, timing=False)
        fm = probe.take_feature(1, 0.1)
        assert (fm.first_channel, fm.channels_total, fm.shape[0]) == (0, 96, 32)
        probe.set_feature_node("conv1", first_channel=32)
        now[0] += 10.0
        probe.forward(x, timing=False)
        fm = probe.take_feature(2, 0.2)
        assert (fm.first_channel, fm.channels_total, fm.shape) == (32, 96, (32, 8, 8))
        probe.set_feature_node("conv1", first_channel=90)
        now[0] += 10.0
        probe.forward(x, timing=False)
        assert probe.take_feature(3, 0.3).first_channel == 64
        with pytest.raises(ValueError):
            probe.set_feature_node("conv1", first_channel=-1)
    # the maps are those channels: scaled back, channel 33 of the layer is the map's first
    captured, lohi = reduce_feature(torch.arange(96, dtype=torch.float32)[:, None, None].expand(96, 2, 2), 32)
    assert captured.shape == (32, 2, 2) and lohi.tolist() == [32.0, 63.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (the allocator reads are CUDA's)")
def test_cuda_allocator_reads_per_layer_only_on_sampled_steps():
    """The allocator's per-layer reads (~21 us each on an H200) happen on at most one profiled
    step per mem_interval_s; the other steps carry no per-layer bytes (absent, not zero)."""
    from engine.run.probes import Probe

    dev = torch.device("cuda")
    model = engine.build_model(engine.load_preset("lenet5")).to(dev)
    t = [0.0]
    probe = Probe(model, dev, mem_interval_s=1.0, clock=lambda: t[0])
    x = torch.randn(4, 1, 28, 28, device=dev)
    got = []
    for step, now in enumerate((0.0, 0.5, 1.2)):
        t[0] = now
        probe.begin_step()
        out = probe.forward(x)
        out.sum().backward()
        probe.end_backward()
        torch.cuda.synchronize()
        got.append(probe.collect(step, now))
    assert [any(m is not None for m in lt.mem_bytes) for lt in got] == [True, False, True]


def test_backward_hooks_keep_the_models_own_tensor_hooks():
    """The probe hooks a layer's output tensor without a handle (``layer_hooker``); a hook the
    model put on that tensor before, or puts on it after, still runs, still changes the gradient,
    and does not outlive its step."""
    from engine.run.probes import fast_hooks, layer_hooker, unhook

    assert fast_hooks()  # the torch this project pins supports the handle-free registration
    x = torch.ones(3, requires_grad=True)
    fired, kept, hooked = [], [], [False] * 3
    hook_layer = layer_hooker([lambda g: fired.append("a"), lambda g: fired.append("b"),
                               lambda g: fired.append("same")], kept.append, True, hooked, set())
    with torch.enable_grad():
        a = x * 2.0
        a.register_hook(lambda g: g * 10.0)  # the model's own hook, before the probe's
        hook_layer(0, a)
        b = a * 3.0
        hook_layer(1, b)
        b.register_hook(lambda g: g + 1.0)  # and after it, on the same tensor
        hook_layer(2, b)  # a layer that hands back the tensor it got: no backward of its own
        b.sum().backward()
    assert fired == ["b", "a"] and hooked == [True, True, False]
    assert x.grad.tolist() == [(1.0 + 1.0) * 3.0 * 10.0 * 2.0] * 3  # both of the model's hooks applied
    assert len(kept) == 1 and type(kept[0]).__name__ == "RemovableHandle"  # a handle only for the fallback
    unhook(kept)
    assert not kept
    fired.clear()
    with torch.enable_grad():  # a new step: new tensors; nothing of the last one's hooks remains
        c = x * 3.0
        layer_hooker([lambda g: fired.append("c")], kept.append, True, [False], set())(0, c)
        c.sum().backward()
    assert fired == ["c"]


def test_a_profiled_steps_record_is_worked_out_by_its_first_reader(probe_hooks):
    """On the CPU the run's thread only copies the stamps (``DeferredLayerTimes``); the lists are
    computed where the record is first read, once, and are what the stamps say."""
    import dataclasses

    from engine.remote.wire import decode_record, encode_record
    from engine.run.live import LiveFeed
    from engine.run.probes import DeferredLayerTimes, cpu_layer_times

    spec = engine.load_preset("lenet5")
    model = engine.build_model(spec)
    probe = Probe(model, torch.device("cpu"), native=probe_hooks, count_faults=False)
    probe.memory._last = float("inf")  # not a memory-counting step
    lt = _profiled_step(probe, torch.randn(4, 1, 28, 28), 7)
    assert isinstance(lt, engine.LayerTimes) and type(lt) is DeferredLayerTimes
    feed = LiveFeed()
    feed(lt)  # the run thread's sink only queues it
    assert "fwd_ms" not in lt.__dict__
    stamps = lt._raw.stamps
    n = len(lt.node_ids)
    assert lt.fwd_ms[0] == pytest.approx(max(0.0, stamps[1] - lt._raw.begins[0] - lt._raw.c_stamp) / 1e6)
    assert lt.fwd_ms is lt.fwd_ms and lt.__dict__["fwd_ms"] == cpu_layer_times(lt._raw)["fwd_ms"]  # once
    plain = dataclasses.asdict(lt)
    assert all(len(plain[f]) == n for f in ("fwd_ms", "bwd_ms", "fwd_start_ms", "bwd_start_ms", "mem_bytes"))
    assert all(b is not None and b >= 0 for b in lt.bwd_ms) and lt.minor_faults == [] and lt.fault_ns is None
    frame = encode_record(3, lt)
    assert frame["kind"] == "LayerTimes"
    seq, back = decode_record(frame)
    assert seq == 3 and dataclasses.asdict(back) == plain  # what a remote viewer gets
