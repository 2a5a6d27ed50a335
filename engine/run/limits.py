"""Whether a run can fit before it starts: a memory estimate MEASURED on fake tensors, the free
memory of the device, and the largest batch that fits.

The estimate (bytes) is what the run holds at its peak:

- weights: parameters x 4 (fp32; autocast keeps fp32 master weights);
- training only: gradients (parameters x 4) and optimizer state (SGD with momentum: one buffer
  of parameters x 4, none without momentum; Adam: exp_avg and exp_avg_sq, two);
- activations, measured: the net runs once on fake tensors (``FakeTensorMode``: meta storage,
  nothing allocated, the run's device type so autocast casts as in the run) at the run's batch,
  mode and precision, through the same saved-tensor accounting the profiler uses
  (``engine.run.memory``). Training: the bytes autograd saves for backward (each storage once,
  weights left out, autocast's cast copies in); infer and benchmark: the largest set of layer
  outputs alive at once (each freed after its last consumer, as ``LayerNet.forward`` does);
- the largest transient: training, the largest (layer output + its inputs) - during that
  layer's backward the gradients of both are alive; infer, nothing more;
- the input batch (fp32).

Batch scaling: activations are measured at the batch and at batch 1; the difference per sample
gives the linear model ``fixed + intercept + per_sample x batch`` that ``largest_batch`` solves,
and ``largest_batch_measured`` checks the answer with one more fake pass at that batch.
When the fake pass cannot run a net (a layer fake tensors do not support), the figures come from
the net's output shapes (``measured`` False), as before.

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
    grow with the batch; activations, transient and inputs grow by ``per_sample`` a sample above
    ``intercept`` (a batch-independent part of the activations, e.g. autocast's weight copies).
    ``measured``: activations come from a fake-tensor pass (else from output shapes).
    ``layers``: [(node id, saved or output bytes)] of the pass, net order (training: saved for
    backward, charged to the layer that made them)."""

    batch: int
    mode: str
    weights: int
    grads: int
    optimizer_state: int
    activations: int
    inputs: int
    per_sample: int
    transient: int = 0
    intercept: int = 0
    measured: bool = False
    precision: str = "fp32"
    layers: tuple = ()

    @property
    def fixed(self) -> int:
        return self.weights + self.grads + self.optimizer_state

    @property
    def total(self) -> int:
        return self.fixed + self.activations + self.transient + self.inputs

    def largest_batch(self, free: int) -> int:
        """The largest batch whose estimate fits ``free`` bytes by the linear model (0: not even one sample)."""
        if self.per_sample <= 0:
            return self.batch if self.fixed + self.intercept <= free else 0
        return max(0, (free - self.fixed - self.intercept) // self.per_sample)

    def what(self) -> str:
        """Every part ``total`` adds up, for the message ("weights, gradients, optimizer state,
        saved activations (measured), the largest transient and the input batch"); a part of 0
        bytes is left out, so the sentence names exactly what the figure holds."""
        act = "saved activations (measured)" if self.measured and self.mode == "train" else \
            "activations (measured)" if self.measured else "activations"
        parts = ["weights"] + (["gradients", "optimizer state"] if self.mode == "train" else []) + [act]
        if self.transient:
            parts.append("the largest transient")
        if self.inputs:
            parts.append("the input batch")
        return ", ".join(parts[:-1]) + " and " + parts[-1]

    def breakdown(self) -> list[tuple[str, int]]:
        """[(part, bytes)] in the order a person reads them (the dry run's table)."""
        act = "saved activations" if self.mode == "train" else "activations (peak alive)"
        rows = [("weights", self.weights)]
        if self.mode == "train":
            rows += [("gradients", self.grads), ("optimizer state", self.optimizer_state)]
        rows += [(act, self.activations), ("largest transient", self.transient), ("input batch", self.inputs),
                 ("total", self.total)]
        return rows


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


_AUTOCAST = {"fp16": "float16", "bf16": "bfloat16"}
_cache: dict = {}


def measure_activations(net_info, batch: int, *, mode: str = "train", precision: str = "fp32",
                        device_type: str = "cpu") -> tuple[int, int, list[tuple[str, int]]]:
    """(activations, largest transient, per-layer bytes) of one fake-tensor pass of ``net_info``'s
    net at ``batch`` (see the module docstring); nothing is allocated. Any error of the pass
    propagates (the caller falls back to shapes)."""
    key = (id(net_info), batch, mode, precision, device_type)
    hit = _cache.get(key)
    if hit is not None and hit[0] is net_info:
        return hit[1]
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from engine.net.model import LayerNet
    from engine.run.memory import SavedAccounting

    spec = net_info.spec
    train = mode == "train"
    dev = device_type if device_type in ("cpu", "cuda") else "cpu"
    dtype = _AUTOCAST.get(precision)
    with FakeTensorMode(allow_non_fake_inputs=False):
        with torch.device(dev) if dev == "cpu" else _fake_cuda():
            model = LayerNet(spec, net_info)
            model.train(train)
            x = torch.empty(batch, *spec.input.shape)
        acct = SavedAccounting(model, len(model.plan))
        acct.begin(x)
        amp = torch.autocast(dev, dtype=getattr(torch, dtype)) if dtype else torch.autocast(dev, enabled=False)
        grad = torch.enable_grad() if train else torch.no_grad()
        with grad, amp, acct.hooks():
            model.forward(x, lambda k, nid, out: acct.on_output(k, out))
    ids = [s.node_id for s in model.plan]
    index = {nid: k for k, nid in enumerate(ids)}
    if train:
        act = sum(acct.saved)
        per_layer = list(zip(ids, acct.saved))
        transient = max((acct.out[k] + sum(acct.out[index[r]] if r in index else acct.input_bytes
                                           for r in step.inputs)
                         for k, step in enumerate(model.plan)), default=0)
    else:
        alive = peak = 0
        for k, step in enumerate(model.plan):
            alive += acct.out[k] if acct.made_output(k) else 0
            peak = max(peak, alive)
            for r in step.free_after:
                if r in index and acct.made_output(index[r]):
                    alive -= acct.out[index[r]]
        act, transient, per_layer = peak, 0, list(zip(ids, acct.out))
    result = (int(act), int(transient), per_layer)
    if len(_cache) > 64:
        _cache.clear()
    _cache[key] = (net_info, result)
    return result


def _fake_cuda():
    """Fake CUDA tensors need no GPU; only the default device changes."""
    import torch

    return torch.device("cuda")


def memory_estimate(net_info, batch: int, *, mode: str = "train", precision: str = "fp32",
                    optimizer: str = "sgd", momentum: float = 0.9, device_type: str = "cpu",
                    measure: bool = True) -> MemoryEstimate:
    """The bytes a run of ``net_info`` (``engine.analyze``'s NetInfo) needs at ``batch`` on a
    ``device_type`` device (see the module): measured on fake tensors unless ``measure`` is False
    or the pass fails."""
    params = net_info.params
    weights = params * FP32
    grads = opt = 0
    if mode == "train":
        grads = params * FP32
        opt = params * FP32 * (2 if optimizer == "adam" else (1 if momentum else 0))
    inp1 = net_info.input_bytes(1, "fp32")
    inp = net_info.input_bytes(batch, "fp32")
    if measure:
        try:
            act, trans, layers = measure_activations(net_info, batch, mode=mode, precision=precision,
                                                     device_type=device_type)
            act1, trans1, _ = measure_activations(net_info, 1, mode=mode, precision=precision,
                                                  device_type=device_type) if batch != 1 else (act, trans, layers)
            if batch > 1:
                per = -(-((act + trans) - (act1 + trans1)) // (batch - 1))  # ceil: never under-state
                intercept = max(0, act1 + trans1 - per)
            else:
                per, intercept = act1 + trans1, 0
            return MemoryEstimate(batch, mode, weights, grads, opt, act, inp, per + inp1, trans, intercept,
                                  True, precision, tuple(layers))
        except Exception:  # noqa: BLE001 - a net fake tensors cannot run is estimated from shapes
            pass
    act = _activation_bytes(net_info, batch, precision, mode)
    act1 = _activation_bytes(net_info, 1, precision, mode)
    return MemoryEstimate(batch, mode, weights, grads, opt, act, inp, act1 + inp1, precision=precision)


def largest_batch_measured(est: MemoryEstimate, net_info, free: int, *, optimizer: str = "sgd",
                           momentum: float = 0.9, device_type: str = "cpu") -> int:
    """``est.largest_batch(free)`` checked by a fake pass at that batch (lowered until the
    measured total fits, at most 4 passes); 0 when not even one sample fits."""
    k = est.largest_batch(free)
    if not est.measured or k < 1:
        return k
    for _ in range(4):
        at = memory_estimate(net_info, k, mode=est.mode, precision=est.precision, optimizer=optimizer,
                             momentum=momentum, device_type=device_type)
        if at.total <= free or k <= 1:
            return k if at.total <= free else 0
        k = max(1, int(k * free / at.total))
    return k


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
                requested: int | None = None, net_info=None, **measure_kw) -> str | None:
    """The one-line refusal when ``est`` does not fit ``free`` bytes; None when it fits or ``free`` is unknown.
    With ``net_info`` the largest batch is checked by a fake pass (``largest_batch_measured``,
    ``measure_kw``: optimizer, momentum, device_type).

    "needs ≈ 38.2 GiB for weights, gradients, optimizer state, saved activations (measured), the
    largest transient and the input batch at batch 4096; 21.3 GiB free (system memory); largest
    batch that fits ≈ 2280" (``est.what()``: every part of ``est.total``)
    """
    if free is None or est.total <= free:
        return None
    at = f"batch {est.batch}"
    if requested is not None and requested != est.batch:
        at += f" (of the {requested} asked for; the dataset has only {est.batch} samples)"
    k = largest_batch_measured(est, net_info, free, **measure_kw) if net_info is not None else est.largest_batch(free)
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
    kw = dict(mode=cfg.mode, precision=cfg.precision, optimizer=cfg.optimizer, momentum=cfg.momentum,
              device_type=device.type)
    est = memory_estimate(net_info, cfg.batch_size, **kw)
    if est.total <= free:
        return []
    n = train_samples(cfg)  # only read when the batch asked for does not fit: a smaller split caps it
    if n is not None and 0 < n < cfg.batch_size:
        est = memory_estimate(net_info, n, **kw)
    problem = fit_problem(est, free, where, requested=cfg.batch_size, net_info=net_info,
                          optimizer=cfg.optimizer, momentum=cfg.momentum, device_type=device.type)
    return [problem] if problem else []


def fit_report(cfg, device=None, net_info=None) -> tuple[list[str], bool | None]:
    """(lines, fits) of ``layerscope profile --dry-run``: the measured estimate's parts at the batch
    the run will use, the layers holding the most, the free memory and the largest batch that
    fits (checked by a fake pass). ``fits`` is None when the free memory cannot be read.
    Nothing is allocated."""
    from engine.fmt import fmt_pct

    if net_info is None:
        from engine.net.model import analyze

        net_info = analyze(cfg.net)
    if device is None:
        from engine.run.devices import resolve_device

        device = resolve_device(cfg.device)
    batch = cfg.batch_size
    n = train_samples(cfg)
    if n is not None and 0 < n < batch:
        batch = n
    kw = dict(optimizer=cfg.optimizer, momentum=cfg.momentum, device_type=device.type)
    est = memory_estimate(net_info, batch, mode=cfg.mode, precision=cfg.precision, **kw)
    free, where = free_memory(device)
    how = "measured on fake tensors" if est.measured else "from output shapes (the fake pass failed)"
    lines = [f"estimate: {cfg.net.name or 'net'}, {cfg.mode}, batch {batch}, {cfg.precision}, {device} ({how})"]
    width = max(len(name) for name, _ in est.breakdown())
    for name, b in est.breakdown():
        lines.append(f"  {name + ':':<{width + 1}} {fmt_bytes(b):>10}")
    top = sorted((x for x in est.layers if x[1]), key=lambda x: -x[1])[:5]
    if top and est.activations:
        what = "saved for backward" if est.mode == "train" else "output"
        lines.append(f"layers holding the most ({what}): " + ", ".join(
            f"{nid} {fmt_bytes(b)} ({fmt_pct(b / est.activations)})" for nid, b in top))
    if free is None:
        lines.append(f"free: unknown ({where}); no check")
        return lines, None
    fits = est.total <= free
    k = largest_batch_measured(est, net_info, free, **kw)
    lines.append(f"free: {fmt_bytes(free)} ({where})")
    lines.append(f"largest batch that fits: {k}" if k >= 1 else "largest batch that fits: none (not even batch 1)")
    lines.append("fits" if fits else "does not fit: " + (fit_problem(est, free, where, requested=cfg.batch_size)
                                                          or ""))
    return lines, fits
