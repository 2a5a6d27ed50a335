"""An out-of-memory failure says which layers held what at the failure (saved-for-backward
bytes of the layers that had run, measured) and the batch that fits."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor

import engine
from engine.run.limits import memory_estimate


def _oom_at(model_node: str, monkeypatch, message="CUDA out of memory. Tried to allocate 2.00 GiB"):
    """Make the layer ``model_node`` raise an allocator error on real tensors (the fake-tensor
    estimate still runs it)."""
    from engine.net import model as model_mod

    real_build = model_mod.LayerNet.__init__

    def build(self, spec, info):
        real_build(self, spec, info)

        def hook(mod, args):
            if not isinstance(args[0], FakeTensor):
                raise torch.OutOfMemoryError(message)
        self._modules[model_node].register_forward_pre_hook(hook)
    monkeypatch.setattr(model_mod.LayerNet, "__init__", build)


@pytest.mark.parametrize("profile_every", [1, 0])
def test_oom_message_names_the_layers_holding_memory_and_the_batch_that_fits(monkeypatch, profile_every):
    _oom_at("fc1", monkeypatch)
    spec = engine.resolve_net("lenet5")
    cfg = engine.RunConfig(net=spec, device="cpu", batch_size=8, steps=2, warmup=0, threads=1, telemetry_hz=0,
                           profile_every=profile_every)
    result = engine.Run(cfg).run()
    assert result.status == "failed"
    msg = result.message
    assert msg.startswith("out of memory at batch 8 in fc1 (forward); ")
    est = memory_estimate(engine.analyze(spec), 8)
    before = dict(est.layers[:[n for n, _ in est.layers].index("fc1") + 1])
    held = {n: b for n, b in before.items() if b}
    assert f"in {len(held)} layers" in msg and engine.fmt.fmt_bytes(sum(held.values())) in msg
    top = max(held, key=held.get)
    assert f"most in {top} {engine.fmt.fmt_bytes(held[top])}" in msg
    assert "relu3" not in msg  # ran after the failure: held nothing yet
    # lenet5 at batch 8 fits this machine: the advice says the memory went elsewhere
    assert "fits the" in msg and "something else took memory" in msg


def test_oom_message_gives_the_largest_batch_when_memory_is_short(monkeypatch):
    from engine.run import limits
    from engine.run.setup import oom_message

    spec = engine.resolve_net("lenet5")
    info = engine.analyze(spec)
    est = memory_estimate(info, 256)
    budget = est.fixed + est.intercept + 100 * est.per_sample
    monkeypatch.setattr(limits, "free_memory", lambda device: (budget - est.fixed, "system memory"))
    cfg = engine.RunConfig(net=spec, device="cpu", batch_size=256)
    msg = oom_message(torch.device("cpu"), 256, None, "backward", net_info=info, cfg=cfg)
    assert msg.startswith("out of memory at batch 256 (backward); ")
    assert msg.endswith("largest batch that fits ≈ 100")
    total = sum(b for _n, b in est.layers)
    assert f"{engine.fmt.fmt_bytes(total)} saved for backward by then" in msg  # backward: every layer
