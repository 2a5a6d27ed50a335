"""The compute devices this machine offers (CPU, each CUDA GPU, Apple MPS) and turning a
device string the user typed (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) into a
``torch.device`` - with a one-line reason when that device does not exist here."""
from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass

from engine.errors import LayerScopeError


@dataclass
class DeviceInfo:
    """One device a run can use; memory in bytes (None where it cannot be read)."""

    id: str  # "cpu" | "cuda:0" | "mps"
    name: str
    kind: str  # "cpu" | "cuda" | "mps"
    memory_total: int | None = None
    memory_free: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def cpu_info() -> DeviceInfo:
    """The CPU: model name, core count and system memory."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        total, free = int(vm.total), int(vm.available)
        cores = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    except Exception:  # psutil missing or unreadable /proc: memory unknown, not zero
        total = free = None
        cores = os.cpu_count() or 1
    return DeviceInfo("cpu", f"{_cpu_model()} ({cores} cores)", "cpu", total, free)


def _cuda_infos() -> list[DeviceInfo]:
    import torch

    out = []
    if not torch.cuda.is_available():
        return out
    for i in range(torch.cuda.device_count()):
        name = torch.cuda.get_device_name(i)
        total = free = None
        try:
            free, total = (int(v) for v in torch.cuda.mem_get_info(i))
        except Exception:  # a busy or exclusive-mode GPU: memory unknown
            try:
                total = int(torch.cuda.get_device_properties(i).total_memory)
            except Exception:
                pass
        out.append(DeviceInfo(f"cuda:{i}", name, "cuda", total, free))
    return out


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def list_devices() -> list[DeviceInfo]:
    """Every device a run can use here: the CPU first, then each CUDA GPU, then MPS."""
    out = [cpu_info()]
    out.extend(_cuda_infos())
    if _mps_available():
        total = None
        try:
            import torch

            total = int(torch.mps.recommended_max_memory())
        except Exception:
            pass
        out.append(DeviceInfo("mps", "Apple GPU (MPS)", "mps", total, None))
    return out


def _no_cuda_reason() -> str:
    import torch

    if not torch.backends.cuda.is_built() or torch.version.cuda is None:
        return f"CUDA is not available: this PyTorch build ({torch.__version__}) has no CUDA support"
    return "CUDA is not available: no NVIDIA GPU or driver was found"


def resolve_device(spec: str):
    """``torch.device`` for a device string; LayerScopeError with the reason when it does not exist.

    ``auto`` picks the first CUDA GPU, else MPS, else the CPU.
    """
    import torch

    s = (spec or "auto").strip().lower()
    if s == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "mps":
        if not _mps_available():
            mps = getattr(torch.backends, "mps", None)
            if mps is not None and mps.is_built():
                raise LayerScopeError("MPS is not available: this Mac has no usable Metal GPU "
                                      "(macOS 12.3 or newer is needed)")
            raise LayerScopeError("MPS is not available: it exists only on Apple silicon Macs with "
                                  "a PyTorch build that includes it")
        return torch.device("mps")
    m = re.fullmatch(r"cuda(?::(\d+))?", s)
    if m:
        if not torch.cuda.is_available():
            raise LayerScopeError(_no_cuda_reason())
        index = int(m.group(1) or 0)
        count = torch.cuda.device_count()
        if index >= count:
            plural = "device" if count == 1 else "devices"
            raise LayerScopeError(f"cuda:{index} does not exist: this machine has {count} CUDA {plural}"
                                  f" (cuda:0{'' if count == 1 else f' to cuda:{count - 1}'})")
        return torch.device(f"cuda:{index}")
    raise LayerScopeError(f"unknown device '{spec}'; use auto, cpu, cuda, cuda:N or mps")


def device_info(device) -> DeviceInfo:
    """The DeviceInfo of a resolved ``torch.device`` (for RunInfo)."""
    if device.type == "cuda":
        index = device.index or 0
        for d in _cuda_infos():
            if d.id == f"cuda:{index}":
                return d
    if device.type == "mps":
        for d in list_devices():
            if d.kind == "mps":
                return d
    return cpu_info()
