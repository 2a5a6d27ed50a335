"""Device listing and resolution: the CPU is always there; a device that is not gets a reason."""
import pytest
import torch

from engine import LayerScopeError
from engine.run.devices import DeviceInfo, list_devices, resolve_device


def test_cpu_listed_first_with_name_and_memory():
    devices = list_devices()
    cpu = devices[0]
    assert isinstance(cpu, DeviceInfo)
    assert cpu.id == "cpu" and cpu.kind == "cpu"
    assert "cores" in cpu.name
    assert cpu.memory_total and cpu.memory_total > 0
    assert cpu.memory_free is None or 0 < cpu.memory_free <= cpu.memory_total
    cuda = [d for d in devices if d.kind == "cuda"]
    assert len(cuda) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    for i, d in enumerate(cuda):
        assert d.id == f"cuda:{i}" and d.memory_total > 0


def test_resolve_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    auto = resolve_device("auto")
    if torch.cuda.is_available():
        assert auto == torch.device("cuda:0")
    else:
        assert auto.type in ("cpu", "mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_absent_gives_a_reason():
    with pytest.raises(LayerScopeError) as e:
        resolve_device("cuda")
    assert str(e.value).startswith("CUDA is not available:")
    with pytest.raises(LayerScopeError):
        resolve_device("cuda:1")


def test_cuda_index_past_the_last_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(LayerScopeError) as e:
        resolve_device("cuda:3")
    assert str(e.value).startswith("cuda:3 does not exist: this machine has 1 CUDA device")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu:0", "cuda:-1"])
def test_unknown_device_strings(bad):
    with pytest.raises(LayerScopeError) as e:
        resolve_device(bad)
    assert "\n" not in str(e.value) and bad in str(e.value)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_mps_absent_gives_a_reason():
    with pytest.raises(LayerScopeError) as e:
        resolve_device("mps")
    assert str(e.value).startswith("MPS is not available")
