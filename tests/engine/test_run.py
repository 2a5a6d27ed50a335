"""The run loop: record order, modes, warm-up, profile_every, epochs with evaluation, control from
another thread, and failures (out of memory, NaN loss, bad device/dataset/settings) as results."""
import threading

import pytest
import torch

import engine
from engine import LayerScopeError
from engine.records import (EvalRecord, FeatureMap, LayerTimes, LogRecord, RunEnded, RunInfo, StateChanged,
                                StepRecord)
from engine.run.loop import Run, RunConfig, RunResult


def tiny_digits_net():
    return engine.from_dict({
        "format": "layerscope-net", "version": 1, "name": "tiny-digits",
        "input": {"channels": 1, "height": 8, "width": 8, "classes": 10},
        "nodes": [{"id": "conv", "kind": "conv2d", "params": {"out_channels": 8, "kernel": 3, "padding": 1}},
                  {"id": "relu", "kind": "relu"},
                  {"id": "pool", "kind": "maxpool2d", "params": {"kernel": 2}},
                  {"id": "flat", "kind": "flatten"},
                  {"id": "fc", "kind": "linear", "params": {"out_features": 10}}]})


def cfg(**kw):
    base = dict(net=engine.load_preset("lenet5"), device="cpu", batch_size=8, steps=4, warmup=1, threads=1,
                telemetry_hz=0)
    base.update(kw)
    return RunConfig(**base)


def run(c, extra_sinks=()):
    recs = []
    result = Run(c, [recs.append, *extra_sinks]).run()
    return result, recs


def of(recs, kind):
    return [r for r in recs if isinstance(r, kind)]


def test_train_records_in_order_with_warmup_and_layer_times():
    prev = torch.get_num_threads()
    result, recs = run(cfg(steps=3, warmup=2))
    assert isinstance(result, RunResult) and result.status == "completed", result.message
    assert isinstance(recs[0], RunInfo) and isinstance(recs[-1], RunEnded)
    assert sum(isinstance(r, (RunInfo, RunEnded)) for r in recs) == 2
    info = recs[0]
    assert [row.node_id for row in info.layers] == [n.id for n in info_net().nodes]
    assert info.layers[0].act_bytes == 6 * 28 * 28 * 8 * 4
    assert info.config["batch_size"] == 8 and info.config["net"]["name"] == "lenet5"
    assert info.device["id"] == "cpu" and info.versions["torch"] == torch.__version__
    steps = of(recs, StepRecord)
    assert [s.step for s in steps] == [1, 2, 3, 4, 5]
    assert [s.warmup for s in steps] == [True, True, False, False, False]
    assert all(s.loss is not None and 0 <= s.accuracy <= 1 and s.step_ms > 0 and s.data_ms >= 0
               and s.phase == "train" for s in steps)
    lts = of(recs, LayerTimes)
    assert [lt.step for lt in lts] == [3, 4, 5]  # warm-up steps are not reported per layer
    for lt in lts:
        assert all(f > 0 for f in lt.fwd_ms) and all(b > 0 for b in lt.bwd_ms)
    # a step's LayerTimes follows its StepRecord
    i = recs.index(steps[2])
    assert recs[i + 1] is lts[0]
    assert result.steps == 5 and recs[-1].steps == 5
    assert torch.get_num_threads() == prev


def info_net():
    return engine.load_preset("lenet5")


def test_profile_every_skips_steps():
    result, recs = run(cfg(steps=7, warmup=0, profile_every=3))
    assert result.status == "completed"
    assert [lt.step for lt in of(recs, LayerTimes)] == [1, 4, 7]
    assert [s.profiled for s in of(recs, StepRecord)] == [True, False, False, True, False, False, True]
    _, recs = run(cfg(steps=2, warmup=0, profile_every=0))
    assert not of(recs, LayerTimes)


def test_infer_and_benchmark_modes():
    result, recs = run(cfg(mode="infer", steps=2, warmup=0))
    assert result.status == "completed", result.message
    assert all(s.phase == "infer" and s.loss is not None for s in of(recs, StepRecord))
    lt = of(recs, LayerTimes)[0]
    assert all(f > 0 for f in lt.fwd_ms) and lt.bwd_ms == [None] * len(lt.node_ids)
    result, recs = run(cfg(mode="benchmark", steps=2, warmup=1, dataset="no-such-dataset"))
    assert result.status == "completed", result.message  # benchmark never loads data
    steps = of(recs, StepRecord)
    assert all(s.phase == "benchmark" and s.loss is None and s.data_ms is None for s in steps)
    assert len(of(recs, LayerTimes)) == 2


def test_bf16_runs_on_cpu():
    result, recs = run(cfg(precision="bf16", steps=1, warmup=0))
    assert result.status == "completed", result.message
    assert of(recs, LayerTimes)


def test_epochs_evaluate_the_test_split_on_digits():
    result, recs = run(cfg(net=tiny_digits_net(), dataset="digits", epochs=2, steps=None, batch_size=64,
                           warmup=0, lr=0.05, profile_every=10))
    assert result.status == "completed", result.message
    evals = of(recs, EvalRecord)
    assert [e.epoch for e in evals] == [1, 2]
    per_epoch = evals[0].step
    assert evals[1].step == 2 * per_epoch == result.steps
    assert all(e.samples == 359 and e.split == "test" for e in evals)
    assert evals[1].accuracy > 0.5  # real digits, learnt: far above the 0.1 of chance
    assert result.extra["test_accuracy"] == evals[1].accuracy == recs[-1].extra["test_accuracy"]
    assert {s.epoch for s in of(recs, StepRecord)} == {1, 2}
    assert any("digits" in log.message for log in of(recs, LogRecord))


def test_feature_maps_and_switching_node():
    holder = {}

    def switch(rec):
        if isinstance(rec, StepRecord) and rec.step == 2:
            holder["run"].set_feature_node("conv2")

    c = cfg(steps=4, warmup=0, feature_node="conv1", feature_hz=1e6, profile_every=2)
    recs = []
    r = Run(c, [recs.append, switch])
    holder["run"] = r
    assert r.run().status == "completed"
    fms = of(recs, FeatureMap)
    assert [f.step for f in fms] == [1, 2, 3, 4]  # unprofiled steps capture maps too
    assert [f.node_id for f in fms] == ["conv1", "conv1", "conv2", "conv2"]
    assert fms[0].shape == (6, 28, 28) and fms[2].shape == (16, 10, 10)
    arr = fms[0].array()
    assert arr.dtype.name == "uint8" and arr.max() == 255 and arr.min() == 0
    with pytest.raises(LayerScopeError):
        r.set_feature_node("nope")


def test_feature_channels_asked_through_the_run():
    """Issue 10 item 8: set_feature_node(node, first_channel) goes through the command queue; the
    records from then on carry that window of the layer's channels and its total."""
    holder = {}

    def switch(rec):
        if isinstance(rec, StepRecord) and rec.step == 2:
            holder["run"].set_feature_node("wide", first_channel=32)
            holder["run"].set_feature_node("conv2", first_channel=8)  # fewer than 32: from 0

    net = engine.from_dict({"format": "layerscope-net", "version": 1, "name": "wide",
                            "input": {"channels": 1, "height": 8, "width": 8, "classes": 10},
                            "nodes": [{"id": "wide", "kind": "conv2d", "params": {"out_channels": 96, "kernel": 1}},
                                      {"id": "conv2", "kind": "conv2d", "params": {"out_channels": 16, "kernel": 1}},
                                      {"id": "flatten", "kind": "flatten"},
                                      {"id": "fc", "kind": "linear", "params": {"out_features": 10}}]})
    c = cfg(net=net, steps=4, warmup=0, feature_node="wide", feature_hz=1e6, profile_every=2)
    recs = []
    r = Run(c, [recs.append, switch])
    holder["run"] = r
    r.set_feature_node("wide", first_channel=64)  # asked before the run starts: kept
    assert r.run().status == "completed"
    fms = of(recs, FeatureMap)
    assert [(f.node_id, f.first_channel, f.channels_total, f.shape[0]) for f in fms] == [
        ("wide", 64, 96, 32), ("wide", 64, 96, 32), ("conv2", 0, 16, 16), ("conv2", 0, 16, 16)]
    for bad in (-1, 1.5, True):
        with pytest.raises(LayerScopeError):
            r.set_feature_node("conv2", first_channel=bad)


def test_pause_resume_stop_from_another_thread():
    first_step = threading.Event()
    recs = []

    def sink(rec):
        recs.append(rec)
        if isinstance(rec, StepRecord):
            first_step.set()

    r = Run(cfg(steps=100000, warmup=0, profile_every=5), [sink])
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("result", r.run()))
    t.start()
    try:
        assert first_step.wait(60)
        r.pause()
        for _ in range(600):
            if r.state == "paused":
                break
            threading.Event().wait(0.05)
        assert r.state == "paused"
        n = len(of(recs, StepRecord))
        threading.Event().wait(0.3)
        assert len(of(recs, StepRecord)) == n  # nothing runs while paused
        assert r.progress == (n, 100000)
        r.resume()
        for _ in range(600):
            if len(of(recs, StepRecord)) > n:
                break
            threading.Event().wait(0.05)
        assert len(of(recs, StepRecord)) > n
        r.stop()
    finally:
        r.stop()
        t.join(60)
    assert not t.is_alive()
    result = out["result"]
    assert result.status == "stopped" and r.state == "stopped"
    assert "stopped after step" in result.message
    assert isinstance(recs[-1], RunEnded) and recs[-1].status == "stopped"
    assert any(log.message.startswith("paused") for log in of(recs, LogRecord))


def test_stop_while_paused():
    r = Run(cfg(steps=5))
    r.pause()
    r.stop()
    result = r.run()
    assert result.status == "stopped" and result.steps == 0


@pytest.mark.parametrize("profile_every", [1, 0])
def test_out_of_memory_is_a_failed_run_naming_batch_and_node(monkeypatch, profile_every):
    from engine.net.modules import FlatLinear

    real = FlatLinear.forward

    def oom(self, x):
        if x.device.type == "meta":  # shape analysis still works; the real run runs out
            return real(self, x)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(FlatLinear, "forward", oom)
    result, recs = run(cfg(batch_size=8, warmup=0, profile_every=profile_every))
    assert result.status == "failed"
    assert "out of memory at batch 8 in fc1 (forward); try a batch of 4 or less" in result.message
    assert isinstance(recs[-1], RunEnded) and recs[-1].message == result.message
    monkeypatch.undo()
    again, _ = run(cfg(steps=1))  # the next run works
    assert again.status == "completed"


def test_nan_loss_fails_with_advice(monkeypatch):
    real = torch.nn.functional.cross_entropy

    def nan_loss(out, y, reduction="mean"):
        return real(out, y, reduction=reduction) * float("nan")

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", nan_loss)
    result, recs = run(cfg(warmup=0, lr=0.5))
    assert result.status == "failed"
    assert result.message == "the loss became nan at step 1; lower the learning rate (now 0.5)"
    assert not of(recs, StepRecord)


def test_bad_device_dataset_and_settings_fail_with_one_line():
    result, recs = run(cfg(device="cuda:7"))
    assert result.status == "failed" and "\n" not in result.message
    expected = "cuda:7 does not exist" if torch.cuda.is_available() else "CUDA is not available"
    assert result.message.startswith(expected)
    assert isinstance(recs[0], RunInfo) and isinstance(recs[-1], RunEnded) and len(recs) == 2
    result, recs = run(cfg(dataset="no-such-dataset"))
    assert result.status == "failed" and "no-such-dataset" in result.message
    result, recs = run(cfg(batch_size=0, lr=-1))
    assert result.status == "failed"
    assert "batch_size must be a whole number >= 1, not 0" in result.message
    assert "lr must be a number > 0, not -1" in result.message
    assert isinstance(recs[0], RunInfo) and isinstance(recs[-1], RunEnded)


def test_config_round_trip_and_validation():
    c = cfg(precision="bf16", feature_node="conv2")
    d = c.to_dict()
    assert d["net"]["name"] == "lenet5"
    back = RunConfig.from_dict(d)
    assert back.to_dict() == d
    assert RunConfig.from_dict({"net": "lenet5", "steps": 2}).net.name == "lenet5"
    with pytest.raises(LayerScopeError, match="unknown setting 'stepz'"):
        RunConfig.from_dict({"net": "lenet5", "stepz": 2})
    with pytest.raises(LayerScopeError) as e:
        RunConfig.from_dict({"net": "lenet5", "mode": "fly", "precision": "fp8", "threads": 0})
    msg = str(e.value)
    assert "mode must be one of train, infer, benchmark, not 'fly'" in msg and "precision" in msg
    assert "threads" in msg
    with pytest.raises(LayerScopeError, match="feature_node 'nope'"):
        RunConfig.from_dict({"net": "lenet5", "feature_node": "nope"})
    with pytest.raises(LayerScopeError, match="no epochs"):
        RunConfig.from_dict({"net": "lenet5", "mode": "benchmark", "epochs": 1})


def test_no_hooks_left_on_the_model_and_a_broken_sink_is_dropped(monkeypatch):
    built = []
    real = engine.net.model.build_model

    def keep(*a, **k):
        m = real(*a, **k)
        built.append(m)
        return m

    monkeypatch.setattr(engine.net.model, "build_model", keep)

    def broken(rec):
        if isinstance(rec, StepRecord):
            raise RuntimeError("disk full")

    result, recs = run(cfg(steps=2, warmup=0), extra_sinks=[broken])
    assert result.status == "completed"
    assert len(of(recs, StepRecord)) == 2
    assert any("sink failed" in log.message for log in of(recs, LogRecord))
    model = built[0]
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
    assert "forward" not in model.__dict__


def test_session_file_written_by_a_run(tmp_path):
    from engine import session

    path = tmp_path / "run.lsession"
    result, _ = run(cfg(steps=2, warmup=0, out=str(path)))
    assert result.status == "completed" and result.session_path == str(path)
    reader = session.open_session(path)
    assert reader.ended().status == "completed"
    assert len(reader.layer_times()) == 2
    # the run stores its own sampler's status; telemetry is off in cfg(), and the session says so
    assert reader.meta["telemetry"]["rapl"] == {"available": False,
                                                "reason": "telemetry was off for this run (telemetry rate 0 Hz)"}
    reader.close()


def test_telemetry_sampler_runs_inside_the_run_and_is_joined():
    from engine.records import TelemetryBatch

    before = set(threading.enumerate())
    result, recs = run(cfg(steps=6, warmup=0, telemetry_hz=50.0))
    assert result.status == "completed"
    assert set(threading.enumerate()) <= before  # the sampler thread was stopped and joined
    kinds = [type(r) for r in recs]
    assert kinds[0] is RunInfo and kinds[-1] is RunEnded
    for batch in of(recs, TelemetryBatch):
        assert all(s.t >= 0 for s in batch.samples)


def test_checkpoints_saved_and_loaded_through_a_run(tmp_path):
    result, recs = run(cfg(steps=2, warmup=0, save_checkpoint=str(tmp_path), checkpoint_every=1))
    assert result.status == "completed", result.message
    saved = [log.message for log in of(recs, LogRecord) if log.message.startswith("checkpoint saved")]
    assert len(saved) == 2  # after steps 1 and 2; the end adds none, step 2 is the end
    path = result.extra["checkpoint"]
    assert path.startswith(str(tmp_path))
    result, recs = run(cfg(steps=1, warmup=0, load_checkpoint=path))
    assert result.status == "completed", result.message
    assert any(log.message.startswith("loaded checkpoint") for log in of(recs, LogRecord))
    other = engine.load_preset("alexnet-article")
    result, _ = run(cfg(net=other, steps=1, warmup=0, load_checkpoint=path))
    assert result.status == "failed" and "\n" not in result.message


def test_stop_while_paused_mid_run_ends_quickly_without_another_step():
    import time

    paused = threading.Event()
    recs = []

    def sink(rec):
        recs.append(rec)
        if isinstance(rec, StepRecord) and rec.step == 2:
            r.pause()  # from inside the loop: applied before step 3
        if isinstance(rec, StateChanged) and rec.state == "paused":
            paused.set()

    r = Run(cfg(steps=100000, warmup=0, profile_every=0), [sink])
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("result", r.run()))
    t.start()
    try:
        assert paused.wait(60)
        t0 = time.monotonic()
        r.stop()
        t.join(10)
        assert not t.is_alive() and time.monotonic() - t0 < 2.0  # a paused run wakes on the stop at once
    finally:
        r.stop()
        t.join(60)
    assert out["result"].status == "stopped" and out["result"].steps == 2
    assert [s.step for s in of(recs, StepRecord)] == [1, 2]
    changes = of(recs, StateChanged)
    assert [(c.state, c.done, c.total) for c in changes] == [("running", 0, 100000), ("paused", 2, 100000)]
    assert isinstance(recs[-1], RunEnded) and recs[-1].status == "stopped"


def test_commands_apply_in_order_between_steps():
    recs = []
    r = Run(cfg(steps=3, warmup=0, feature_hz=1e6, profile_every=0), [recs.append])
    # queued before the run: applied in order before step 1, so the last word wins
    r.set_feature_node("conv1")
    r.set_feature_node("conv2")
    r.pause()
    r.resume()
    assert r.run().status == "completed"
    assert [f.node_id for f in of(recs, FeatureMap)] == ["conv2", "conv2", "conv2"]
    assert not any(c.state == "paused" for c in of(recs, StateChanged))  # resumed before it could hold


def test_run_context_is_typed_and_dropped_after_the_run(monkeypatch):
    from engine.run import setup
    from engine.run.setup import RunContext

    seen = []
    real = setup.build_context

    def keep(*a, **k):
        ctx = real(*a, **k)
        seen.append(ctx)
        return ctx

    monkeypatch.setattr("engine.run.loop.build_context", keep)
    r = Run(cfg(steps=1, warmup=0))
    assert r.run().status == "completed"
    ctx = seen[0]
    assert isinstance(ctx, RunContext) and ctx.device.type == "cpu"
    assert ctx.opt is not None and ctx.loader is not None and ctx.test_loader is not None and ctx.bench_x is None
    assert r._ctx is None  # model, optimizer and data are released when the run ends


def test_data_comes_through_the_one_loader_builder(monkeypatch):
    import engine.data.loading as loading

    calls = []
    real = loading.make_loader

    def spy(dataset, batch_size, **kw):
        calls.append((len(dataset), batch_size, kw["shuffle"], kw["drop_last"]))
        return real(dataset, batch_size, **kw)

    monkeypatch.setattr(loading, "make_loader", spy)
    result, _ = run(cfg(net=tiny_digits_net(), dataset="digits", steps=2, warmup=0, batch_size=16))
    assert result.status == "completed", result.message
    assert calls == [(1438, 16, True, True), (359, 16, False, False)]  # train (shuffled), then test


def test_a_stopped_training_run_saves_the_weights_it_stopped_with(tmp_path):
    """Stopping a training run that saves weights leaves its own checkpoint (at the step it stopped),
    so nothing later mistakes an earlier run's file for this run's."""
    from engine.records import StepRecord as Step

    r = None

    def stop_at_3(rec):
        if isinstance(rec, Step) and rec.step == 3:
            r.stop()

    r = Run(cfg(steps=50, warmup=0, save_checkpoint=str(tmp_path)), sinks=[stop_at_3])
    result = r.run()
    assert result.status == "stopped"
    saved = result.extra["checkpoint"]
    assert saved.startswith(str(tmp_path)) and result.extra["checkpoint_step"] == result.steps >= 3
    from engine.net.checkpoint import load_checkpoint

    _, meta = load_checkpoint(saved, engine.load_preset("lenet5"))
    assert meta["step"] == result.steps
