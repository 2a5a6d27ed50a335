"""Whether a run can fit before it starts: a memory estimate from the net's analysis, the free
memory of the device, and the largest batch that fits.

The estimate (bytes) is what the run holds at its peak, from ``engine.analyze`` (meta device,
nothing allocated):

- weights: parameters x 4 (fp32; autocast keeps fp32 master weights);
- training only: gradients (parameters x 4) and optimizer state (SGD with momentum: one buffer
  of parameters x 4, none without momentum; Adam: two);
- activations: training keeps every node's output for backward, so the sum of the outputs at
  the run's batch and precision; infer and benchmark free each output after its last consumer
  (``LayerNet.forward``), so the largest set of outputs alive at once;
- the input batch (fp32).

Free memory: ``psutil.virtual_memory().available`` on the CPU, ``torch.cuda.mem_get_info`` on
CUDA; unknown elsewhere (no check). A run whose estimate exceeds the free memory is refused
with the estimate, the free memory and the largest batch that fits (``fit_problem``).
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.fmt import fmt_bytes

FP32 = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs at ``batch``: ``fixed`` (weights, gradients, optimizer state) does not
    grow with the batch; ``per_sample`` (activations and input of one sample) does."""

    batch: int
    mode: str
    weights: int
    grads: int
    optimizer_state: int
    activations: int
    inputs: int
    per_sample: int

    @property
    def fixed(self) -> int:
        return self.weights + self.grads + self.optimizer_state

    @property
    def total(self) -> int:
        return self.fixed + self.activations + self.inputs

    def largest_batch(self, free: int) -> int:
        """The largest batch whose estimate fits ``free`` bytes (0: not even one sample)."""
        if self.per_sample <= 0:
            return self.batch if self.fixed <= free else 0
        return max(0, (free - self.fixed) // self.per_sample)

    def what(self) -> str:
        """What the estimate counts, for the message ("weights, gradients, ... and activations")."""
        if self.mode == "train":
            return "weights, gradients, optimizer state and activations"
        return "weights and activations"


def _activation_bytes(net_info, batch: int, precision: str, mode: str) -> int:
    layers = net_info.layers
    if mode == "train":
        return sum(layer.activation_bytes(batch, precision) for layer in layers)
    spec = net_info.spec
    size = {layer.id: layer.activation_bytes(batch, precision) for layer in layers}
    index = {n.id: i for i, n in enumerate(spec.nodes)}
    last_use: dict[str, int] = {}
    for i in range(len(spec.nodes)):
        for src in spec.inputs_of(i):
            last_use[src] = i
    alive, peak = 0, 0
    out_id = spec.nodes[-1].id if spec.nodes else None
    for i, node in enumerate(spec.nodes):
        alive += size.get(node.id, 0)
        peak = max(peak, alive)
        for src in set(spec.inputs_of(i)):
            if src in size and last_use.get(src) == i and src != out_id and index.get(src, -1) < i:
                alive -= size[src]
    return peak


def memory_estimate(net_info, batch: int, *, mode: str = "train", precision: str = "fp32",
                    optimizer: str = "sgd", momentum: float = 0.9) -> MemoryEstimate:
    """The bytes a run of ``net_info`` (``engine.analyze``'s NetInfo) needs at ``batch`` (see the module)."""
    params = net_info.params
    weights = params * FP32
    grads = opt = 0
    if mode == "train":
        grads = params * FP32
        opt = params * FP32 * (2 if optimizer == "adam" else (1 if momentum else 0))
    act = _activation_bytes(net_info, batch, precision, mode)
    act1 = _activation_bytes(net_info, 1, precision, mode)
    inp = net_info.input_bytes(batch, "fp32")
    return MemoryEstimate(batch, mode, weights, grads, opt, act, inp, act1 + net_info.input_bytes(1, "fp32"))


def free_memory(device) -> tuple[int | None, str]:
    """(free bytes, where) of a torch device: the system's available memory for the CPU, the
    GPU's free memory for CUDA; (None, where) when it cannot be read (no check is made then)."""
    if device.type == "cpu":
        try:
            import psutil

            return int(psutil.virtual_memory().available), "system memory"
        except Exception:
            return None, "system memory"
    if device.type == "cuda":
        try:
            import torch

            free, _total = torch.cuda.mem_get_info(device)
            return int(free), f"{device} memory"
        except Exception:
            return None, f"{device} memory"
    return None, f"{device} memory"


def gib(n: int) -> str:
    """Bytes as GiB with one decimal (two below 1 GiB), the unit of the fit message."""
    g = n / 2**30
    return f"{g:.1f} GiB" if g >= 1 else f"{g:.2f} GiB"


def fit_problem(est: MemoryEstimate, free: int | None, where: str = "memory",
                requested: int | None = None) -> str | None:
    """The one-line refusal when ``est`` does not fit ``free`` bytes; None when it fits or ``free`` is unknown.

    "needs ≈ 38.2 GiB for weights, gradients, optimizer state and activations at batch 4096;
    21.3 GiB free (system memory); largest batch that fits ≈ 2280"
    """
    if free is None or est.total <= free:
        return None
    at = f"batch {est.batch}"
    if requested is not None and requested != est.batch:
        at += f" (of the {requested} asked for; the dataset has only {est.batch} samples)"
    k = est.largest_batch(free)
    if k >= 1:
        advice = f"largest batch that fits ≈ {k}"
    else:
        fixed = "weights, gradients and optimizer state" if est.mode == "train" else "weights"
        advice = (f"it does not fit even at batch 1 (the {fixed} alone need ≈ {gib(est.fixed)}); "
                  "try a smaller net" + (", infer mode" if est.mode == "train" else "") + " or another device")
    return f"needs ≈ {gib(est.total)} for {est.what()} at {at}; {gib(free)} free ({where}); {advice}"


def train_samples(cfg) -> int | None:
    """How many samples the run's train split holds (None: benchmark mode, or it cannot be read
    here - the run itself then reports why)."""
    if cfg.mode == "benchmark":
        return None
    try:
        from engine.data import get_dataset

        return len(get_dataset(cfg.dataset, cfg.net.input, seed=cfg.seed, root=cfg.data_root).train)
    except Exception:
        return None


def resource_problems(cfg, device=None, net_info=None) -> list[str]:
    """The run's memory problem (a list of at most one sentence): the estimate at the batch the
    run will use (capped to a smaller train split) against the device's free memory.

    ``device``: a torch device (resolved from ``cfg.device`` when None; a device that does not
    exist is reported by the run, not here). Nothing is allocated.
    """
    from engine.errors import LayerScopeError

    try:
        if net_info is None:
            from engine.net.model import analyze

            net_info = analyze(cfg.net)
        if device is None:
            from engine.run.devices import resolve_device

            device = resolve_device(cfg.device)
    except LayerScopeError:
        return []  # the net's or the device's own problem is reported where it is found
    free, where = free_memory(device)
    if free is None:
        return []
    kw = dict(mode=cfg.mode, precision=cfg.precision, optimizer=cfg.optimizer, momentum=cfg.momentum)
    est = memory_estimate(net_info, cfg.batch_size, **kw)
    if est.total <= free:
        return []
    n = train_samples(cfg)  # only read when the batch asked for does not fit: a smaller split caps it
    if n is not None and 0 < n < cfg.batch_size:
        est = memory_estimate(net_info, n, **kw)
    problem = fit_problem(est, free, where, requested=cfg.batch_size)
    return [problem] if problem else []
