"""Measured ceilings of a device for the roofline: peak FLOP/s and memory bandwidth.

Measured, not assumed:

- **peak FLOP/s** per precision: square ``torch.matmul`` of growing sizes (2 n^3 FLOPs each), each
  size run a few times, the best rate kept; sizes grow while one product stays well inside the
  time budget (about 0.25 s per precision on a CPU). On CUDA, fp32 is measured with TF32 allowed
  too (cuDNN uses TF32 for fp32 convolutions by default) and the faster kept.
- **bandwidth**: a tensor copy (a clone into a buffer already touched, so no page faults are
  timed) of buffers from 1 MiB to 64 MiB (1 GiB on CUDA): bytes moved = 2 x the buffer (read +
  write) over the best time. ``bandwidth_bytes_s`` is the best over all
  sizes (a small buffer stays in cache, so this is the cache's bandwidth: the true upper bound a
  layer whose tensors fit in cache can reach); ``dram_bandwidth_bytes_s`` the largest buffer's
  (main memory).

Results are cached per machine in ``engine.paths.cache_dir() / "ceilings.json"``, keyed by
(device name, precision, threads, torch version), and in the process; measuring again keeps, per
figure, the best ever measured (a busy machine only ever measures low, and a ceiling must be a true
peak). On a GPU the vendor's
published figures for known models (``VENDOR_PEAKS``) are added for reference only; they are never
used as the roof.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field

CACHE_FILE = "ceilings.json"
TIME_BUDGET_S = 0.25  # per precision, matmul part, on a CPU
_MEMO: dict[str, dict] = {}

# Published dense (no sparsity) peaks, FLOP/s, and memory bandwidth, bytes/s: reference only
VENDOR_PEAKS = {
    "H200": {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12, "bandwidth": 4.8e12},
    "H100 PCIe": {"fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12, "bandwidth": 2.0e12},
    "H100": {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12, "bandwidth": 3.35e12},
    "A100 80GB": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12, "bandwidth": 2.039e12},
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12, "bandwidth": 1.555e12},
}


@dataclass
class Ceilings:
    """A device's measured roofs for one precision and thread count.

    ``peak_flop_s``: best matmul FLOP/s at ``precision``; ``fp32_peak_flop_s``: the same at fp32
    (a reduced-precision run still runs the layers autocast leaves in fp32); ``bandwidth_bytes_s``:
    best copy bandwidth over all sizes (bytes/s, read + write); ``dram_bandwidth_bytes_s``: the
    largest buffer's; ``source``: how they were obtained; ``measured_at``: time.time();
    ``vendor``: the published figures for a known GPU model (reference), else None."""

    device: str
    device_name: str
    precision: str
    threads: int | None
    peak_flop_s: float
    fp32_peak_flop_s: float
    bandwidth_bytes_s: float
    dram_bandwidth_bytes_s: float
    source: str
    measured_at: float
    torch: str = ""
    matmul_sizes: list = field(default_factory=list)
    copy_bytes: list = field(default_factory=list)
    vendor: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Ceilings":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _best_time(fn, device, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(device, precision: str, budget_s: float = TIME_BUDGET_S) -> tuple[float, list]:
    """(best FLOP/s, [(n, FLOP/s)]) of square matmuls at ``precision`` on ``device``: sizes grow
    (256 ... 8192 on CUDA, 128 ... 1024 on a CPU) while one product takes under a tenth of the budget."""
    import torch

    dtype = getattr(torch, _DTYPES[precision])
    cuda = device.type == "cuda"
    sizes = (256, 512, 1024, 2048, 4096, 8192) if cuda else (128, 256, 512, 1024)
    best, seen = 0.0, []
    start = time.perf_counter()
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        torch.matmul(a, b, out=out)  # warm-up: kernels chosen, pages touched
        t = _best_time(lambda: torch.matmul(a, b, out=out), device, 5 if cuda else 3)
        rate = 2.0 * n ** 3 / t
        seen.append((n, rate))
        best = max(best, rate)
        spent = time.perf_counter() - start
        # a busy machine can stall one product: at least three sizes unless far over budget
        if (len(seen) >= 3 and (t > budget_s / 10 or spent > budget_s)) or spent > 4 * budget_s:
            break
    return best, seen


def copy_bandwidth(device) -> tuple[float, float, list]:
    """(best bytes/s over every size, bytes/s of the largest, [(buffer bytes, bytes/s)]) of a
    tensor copy into a buffer already touched (``dst.copy_(src)``, what a clone does without the
    page faults of fresh memory): 2 x the buffer moved (read + write) over the best of a few repeats."""
    import torch

    cuda = device.type == "cuda"
    sizes = [1 << s for s in ((20, 22, 24, 26, 28, 30) if cuda else (20, 22, 24, 26))]
    best, seen = 0.0, []
    for nbytes in sizes:
        x = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        y = torch.zeros_like(x)
        y.copy_(x)
        t = _best_time(lambda: y.copy_(x), device, 5)
        rate = 2.0 * nbytes / t
        seen.append((nbytes, rate))
        best = max(best, rate)
        del x, y
    return best, seen[-1][1], seen


def vendor_peaks(device_name: str | None) -> dict | None:
    """The published figures of a known GPU model whose name ``device_name`` contains (reference)."""
    if not device_name:
        return None
    for model, figures in VENDOR_PEAKS.items():  # the more specific names come first
        if model.lower() in device_name.lower():
            return {"model": model, **figures}
    return None


def _device_name(device) -> str:
    from engine.run.devices import device_info

    try:
        return device_info(device).name or str(device)
    except Exception:
        return str(device)


def _key(name: str, precision: str, threads, torch_version: str) -> str:
    return f"{name}|{precision}|{threads}|{torch_version}"


def _read_cache(path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}


_RATES = ("peak_flop_s", "fp32_peak_flop_s", "bandwidth_bytes_s", "dram_bandwidth_bytes_s")


def _best_of(old, new: dict) -> dict:
    """``new`` with each rate raised to ``old``'s where that was higher: a ceiling is the best this
    machine has shown (a measurement on a busy machine only ever comes out low)."""
    if not isinstance(old, dict):
        return new
    out = dict(new)
    for k in _RATES:
        if isinstance(old.get(k), (int, float)) and old[k] > (out.get(k) or 0):
            out[k] = old[k]
    return out


def _write_cache(path, key: str, value: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        d = _read_cache(path)
        d[key] = value
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(d, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache folder: measured again next time, no harm


def measure_ceilings(device="cpu", precision: str = "fp32", threads: int | None = None, *,
                     use_cache: bool = True) -> Ceilings:
    """The ceilings of ``device`` ("cpu", "cuda:0", or a ``torch.device``) at ``precision``
    ("fp32" | "bf16" | "fp16") with ``threads`` CPU threads (None: the count torch uses now):
    from the cache when this machine measured them already with this torch, else measured now
    (about 0.3-1 s on a CPU) and cached. ``source`` says "cache" or "measured". Raises
    ``ValueError`` for an unknown precision and whatever torch raises for a device that is not here."""
    import torch

    from engine.paths import cache_dir

    if precision not in _DTYPES:
        raise ValueError(f"unknown precision {precision!r} (fp32, bf16, fp16)")
    device = torch.device(device)
    name = _device_name(device)
    prev = torch.get_num_threads()
    use_threads = threads if device.type == "cpu" and threads else None
    key = _key(name, precision, use_threads or prev if device.type == "cpu" else None, torch.__version__)
    cache = cache_dir() / CACHE_FILE
    if use_cache:
        hit = _MEMO.get(key) or _read_cache(cache).get(key)
        if isinstance(hit, dict):
            try:
                c = Ceilings.from_dict(hit)
                c.source = "measured (cached)"
                _MEMO[key] = c.to_dict()
                return c
            except TypeError:
                pass  # an older cache entry: measure again
    if use_threads:
        torch.set_num_threads(use_threads)
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        with torch.no_grad():
            peak, sizes = matmul_peak(device, precision)
            fp32 = peak
            if device.type == "cuda" and precision == "fp32":
                torch.backends.cuda.matmul.allow_tf32 = True
                tf32, more = matmul_peak(device, "fp32")
                peak = fp32 = max(peak, tf32)
                sizes += [("tf32", n, r) for n, r in more]
            elif precision != "fp32":
                fp32, _ = matmul_peak(device, "fp32")
            bw, dram, copies = copy_bandwidth(device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev_tf32
        if use_threads:
            torch.set_num_threads(prev)
    c = Ceilings(device=str(device), device_name=name, precision=precision,
                 threads=(use_threads or prev) if device.type == "cpu" else None,
                 peak_flop_s=peak, fp32_peak_flop_s=fp32, bandwidth_bytes_s=bw, dram_bandwidth_bytes_s=dram,
                 source="measured", measured_at=time.time(), torch=torch.__version__,
                 matmul_sizes=[list(s) for s in sizes], copy_bytes=[list(s) for s in copies],
                 vendor=vendor_peaks(name) if device.type == "cuda" else None)
    best = _best_of(_MEMO.get(key) or _read_cache(cache).get(key), c.to_dict())
    for k in _RATES:
        setattr(c, k, best[k])
    _MEMO[key] = c.to_dict()
    _write_cache(cache, key, c.to_dict())
    return c


def run_ceilings(cfg, device) -> dict:
    """The ceilings a run records (``RunInfo.device["ceilings"]``, so the session's meta
    ``device`` holds them): ``measure_ceilings(...).to_dict()`` for the run's device, precision and
    thread count (the count the run will set: ``cfg.threads`` or all cores but one). Never fails a
    run: a measurement that raises gives ``{"unavailable": reason}``."""
    threads = (cfg.threads or max(1, (os.cpu_count() or 1) - 1)) if device.type == "cpu" else None
    try:
        return measure_ceilings(device, cfg.precision, threads).to_dict()
    except Exception as e:  # e.g. a precision the device lacks: the run reports that itself
        return {"unavailable": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")}
