"""Everything a run builds before its first step, gathered in one typed ``RunContext``.

``build_context`` turns a valid ``RunConfig`` plus a resolved device into the model, loss,
optimizer, data loaders (through ``engine.data.loading.make_loader``, the one loader builder),
probe and allocator reader the loop needs. Process-wide torch settings it changes (threads,
current CUDA device, cuDNN benchmark) get an undo pushed onto ``restore`` so the run can put
them back whatever happens. Failures a person can act on raise ``Failed`` with one sentence.
"""
from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass
from typing import Any, Callable

from engine.run.config import RunConfig

Log = Callable[[str, str], None]  # log(level, message)


class Failed(Exception):
    """Ends the run as failed with a message for a person."""


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's text (its type name when it has none)."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0].strip() if lines else type(e).__name__


@dataclass
class RunContext:
    """What one run built: device, model, loss, optimizer, data and probes (loop thread only).

    ``loader`` is None in benchmark mode, where ``bench_x`` is the one random batch.
    ``test_loader`` exists in train mode only. ``mem`` reads the CUDA caching allocator (None
    off CUDA).
    """

    device: Any  # torch.device
    net_info: Any  # engine.net.model.NetInfo
    model: Any = None
    autocast: Callable[[], Any] = contextlib.nullcontext
    loss_fn: Callable[..., Any] | None = None
    opt: Any = None
    scaler: Any = None
    loader: Any = None
    test_loader: Any = None
    dataset_name: str | None = None
    batch: int = 0  # samples per step really used (``used_batch``)
    bench_x: Any = None
    probe: Any = None  # engine.run.probes.Probe
    mem: Any = None  # engine.run.probes.CudaMemory
    runner: Any = None  # what a step calls: the model, or its DistributedDataParallel wrapper
    comm: Any = None  # engine.run.distributed.BucketTimer in a data-parallel run


def versions() -> dict:
    """torch, CUDA, cuDNN, driver, Python and LayerScope versions (None where not known)."""
    import torch

    from engine import __version__

    v = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": None,
         "python": platform.python_version(), "layerscope": __version__, "driver": None}
    try:
        if torch.backends.cudnn.is_available():
            v["cudnn"] = torch.backends.cudnn.version()
    except Exception:
        pass
    if torch.cuda.is_available():
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                drv = pynvml.nvmlSystemGetDriverVersion()
                v["driver"] = drv.decode() if isinstance(drv, bytes) else str(drv)
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # no NVML: the driver version is simply unknown
            pass
    return v


def layer_name(node) -> str:
    """A node's display name: its kind and key parameters, e.g. "conv2d out_channels=6, kernel=5"."""
    from engine.net.registry import get_kind

    kind = get_kind(node.kind)
    if node.kind == "opaque" and isinstance(node.params, dict):  # an imported model's op: its own name
        op, module = node.params.get("op", "opaque"), node.params.get("module")
        return f"{module} ({op})" if module else str(op)
    if kind is None or not kind.key_params:
        return node.kind
    p = kind.resolved(node.params)
    return f"{node.kind} " + ", ".join(f"{k}={p[k]}" for k in kind.key_params if k in p)


def is_oom(e: BaseException) -> bool:
    """Whether ``e`` is a device (or host) allocator running out of memory."""
    import torch

    types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                              getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    if isinstance(e, types):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)


def oom_message(device, batch: int, node: str | None, phase: str, *, net_info=None, cfg=None) -> str:
    """The sentence for an out-of-memory failure: where, at which batch, and what to try.

    With the run's ``net_info`` and ``cfg``, it also says which layers held what at the failure
    (the saved-for-backward bytes of the layers that had run, measured on fake tensors at this
    batch and precision by ``engine.run.limits``: every layer when it failed in backward or later)
    and the largest batch that fits the memory the run can use (free now, plus on CUDA what the
    allocator holds, on the CPU the weights, gradients and optimizer state already resident).
    """
    where = {"cuda": "CUDA out of memory", "mps": "MPS out of memory"}.get(device.type, "out of memory")
    at = f" in {node}" if node else ""
    if batch > 1:
        hint = f"try a batch of {batch // 2} or less"
    else:
        hint = "the net does not fit even at batch 1; try bf16, a smaller input or another device"
    head = f"{where} at batch {batch}{at} ({phase})"
    if net_info is None or cfg is None:
        return f"{head}; {hint}"
    try:
        held, fits = _oom_measure(device, batch, node, phase, net_info, cfg)
    except Exception:  # noqa: BLE001 - the advice without the figures is still right
        return f"{head}; {hint}"
    return f"{head}; {held}; {fits or hint}"


def _oom_measure(device, batch, node, phase, net_info, cfg) -> tuple[str, str | None]:
    from engine.fmt import fmt_bytes
    from engine.run.limits import free_memory, largest_batch_measured, memory_estimate

    kw = dict(optimizer=cfg.optimizer, momentum=cfg.momentum, device_type=device.type)
    mode = cfg.mode if cfg.mode == "train" else "infer"
    est = memory_estimate(net_info, batch, mode=mode, precision=cfg.precision, **kw)
    if not est.measured:
        raise ValueError("not measured")
    ids = [nid for nid, _b in est.layers]
    upto = ids.index(node) + 1 if phase == "forward" and node in ids else len(ids)
    held = [(nid, b) for nid, b in est.layers[:upto] if b]
    total = sum(b for _nid, b in held)
    top = sorted(held, key=lambda x: -x[1])[:3]
    what = "saved for backward" if mode == "train" else "layer outputs"
    text = (f"{fmt_bytes(total)} {what} by then in {len(held)} layers, most in "
            + ", ".join(f"{nid} {fmt_bytes(b)}" for nid, b in top)) if top else f"nothing {what} by then"
    free, _where = free_memory(device)
    if free is None:
        return text, None
    if device.type == "cuda":
        import torch

        free += int(torch.cuda.memory_reserved(device))
    else:
        free += est.fixed
    k = largest_batch_measured(est, net_info, free, **kw)
    if k >= batch:
        return text, (f"the estimate ({fmt_bytes(est.total)}) fits the {fmt_bytes(free)} this run can use now: "
                      "something else took memory; try a smaller batch")
    if k < 1:
        return text, "the net does not fit even at batch 1; try bf16, a smaller input or another device"
    return text, f"largest batch that fits ≈ {k}"


def configure_torch(cfg: RunConfig, device, restore: list[Callable[[], None]]) -> None:
    """Threads, current CUDA device, cuDNN benchmark and seed for this run (undos onto ``restore``)."""
    import torch

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) - 1))
    restore.append(lambda: torch.set_num_threads(prev_threads))
    if device.type == "cuda":
        prev_dev = torch.cuda.current_device()
        torch.cuda.set_device(device)
        restore.append(lambda: torch.cuda.set_device(prev_dev))
        prev_bench = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        restore.append(lambda: setattr(torch.backends.cudnn, "benchmark", prev_bench))
    torch.manual_seed(cfg.seed)


def make_autocast(cfg: RunConfig, device, log: Log) -> Callable[[], Any]:
    """A context factory for the run's precision (a no-op for fp32)."""
    import torch

    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.precision]
    if dtype is None:
        return contextlib.nullcontext
    if cfg.precision == "fp16" and device.type == "cpu":
        log("warning", "fp16 on the CPU runs, but most processors emulate it slowly; "
                       "bf16 is the CPU's fast reduced precision")

    def autocast():
        return torch.autocast(device.type, dtype=dtype)
    return autocast


def make_loss_fn(spec) -> Callable[..., Any]:
    """Cross-entropy ``loss_fn(out, y, reduction="mean")``; NLL of the log when the net ends in softmax."""
    import torch

    if spec.nodes[-1].kind == "softmax":
        # the net already ends in probabilities: cross-entropy is the NLL of their log
        def loss_fn(out, y, reduction="mean"):
            return torch.nn.functional.nll_loss(torch.log(out.float().clamp_min(1e-12)), y, reduction=reduction)
    else:
        def loss_fn(out, y, reduction="mean"):
            return torch.nn.functional.cross_entropy(out.float(), y, reduction=reduction)
    return loss_fn


def load_splits(cfg: RunConfig):
    """The run's dataset splits (``engine.data.DatasetSplits``); None in benchmark mode (one random batch)."""
    if cfg.mode == "benchmark":
        return None
    from engine.data import get_dataset

    return get_dataset(cfg.dataset, cfg.net.input, seed=cfg.seed, root=cfg.data_root,
                       skip_bad_images=cfg.skip_bad_images)


def used_batch(cfg: RunConfig, splits) -> int:
    """The samples per step the run really uses: ``cfg.batch_size``, capped to the train split's
    size when the split is smaller (every batch then holds the whole split)."""
    if splits is None:
        return cfg.batch_size
    n = len(splits.train)
    return min(cfg.batch_size, n) if n > 0 else cfg.batch_size


def run_loader(cfg: RunConfig, dataset, *, shuffle: bool, device, name: str, log: Log, info=None,
               drop_last: bool | None = None):
    """The loader of one split for this run; Failed when the split is empty.

    ``drop_last=None``: drop a short last batch unless the split is smaller than one batch
    (then every batch holds the whole split, and a warning says the batch was capped).
    """
    from engine.data.loading import make_loader

    n = len(dataset)
    if n == 0:
        raise Failed(f"the {name} split of {cfg.dataset} is empty")
    b = cfg.batch_size
    if drop_last is None:
        drop_last = n >= b
        if n < b and name == "train":
            log("warning", f"batch capped at {n}: the train split has only {n} samples, fewer than the batch "
                           f"of {b} asked for; every figure of the run uses {n}")
        elif n < b:
            log("warning", f"the {name} split has only {n} samples, fewer than the batch of {b}; "
                           f"each of its batches holds {n}")
    return make_loader(dataset, b, shuffle=shuffle, seed=cfg.seed, device=device, info=info, drop_last=drop_last)


def load_weights(cfg: RunConfig, model, log: Log) -> None:
    """Load ``cfg.load_checkpoint`` into ``model`` (LayerScopeError when it does not fit the net;
    an imported model is checked against its own modules' weights)."""
    from engine.net.checkpoint import load_checkpoint

    if cfg.model:
        state, meta = load_checkpoint(cfg.load_checkpoint, model=model)
    else:
        state, meta = load_checkpoint(cfg.load_checkpoint, cfg.net)
    model.load_state_dict(state)
    where = f" (step {meta.get('step')})" if isinstance(meta, dict) and meta.get("step") is not None else ""
    log("info", f"loaded checkpoint {os.fspath(cfg.load_checkpoint)}{where}")


def import_for_run(cfg: RunConfig, log: Log):
    """The LayerNet of the imported model ``cfg.model`` (its file executed again, its weights seeded
    by the run's seed); Failed when it no longer gives the graph ``cfg.net`` holds. The fallback's
    notice is logged as a warning, other notes as info."""
    from engine.net.imported import import_model, same_graph

    imported = import_model(cfg.model, cfg.net.input.shape, cfg.net.input.classes)
    if not same_graph(imported.spec, cfg.net):
        raise Failed(f"{cfg.model} no longer gives the graph this run was set up with (its code changed since "
                     f"it was imported); import it again")
    if imported.notice:
        log("warning", imported.notice)
    for note in imported.notes:
        log("info", note)
    return imported.model


def build_context(cfg: RunConfig, device, net_info, log: Log, restore: list[Callable[[], None]],
                  feature_node: str | None, splits=None) -> RunContext:
    """Model, loss, optimizer, data, probe and allocator reader for one run on ``device``.

    ``splits``: the dataset already loaded by ``load_splits`` (loaded here when None).
    """
    import torch

    from engine.net.model import build_model
    from engine.run.native import stamps_module
    from engine.run.probes import CudaMemory, Probe

    spec = cfg.net
    configure_torch(cfg, device, restore)
    if splits is None:
        splits = load_splits(cfg)
    ctx = RunContext(device=device, net_info=net_info, autocast=make_autocast(cfg, device, log),
                     batch=used_batch(cfg, splits))
    model = (import_for_run(cfg, log) if cfg.model else build_model(spec, net_info)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ctx.model = model
    if cfg.load_checkpoint:
        load_weights(cfg, model, log)
    from engine.run.distributed import wrap_ddp

    ctx.runner, ctx.comm = wrap_ddp(model, device, cfg.bucket_cap_mb) if cfg.mode == "train" else (model, None)
    train = cfg.mode == "train"
    model.train(train)
    ctx.loss_fn = make_loss_fn(spec)
    if train:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise Failed("the net has no trainable parameters; add a conv2d or linear layer, "
                         "or run it in infer mode")
        if cfg.optimizer == "adam":
            ctx.opt = torch.optim.Adam(params, lr=cfg.lr)
        else:
            ctx.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
        if cfg.precision == "fp16":
            ctx.scaler = torch.amp.GradScaler(device.type)

    if cfg.mode == "benchmark":
        g = torch.Generator(device="cpu").manual_seed(cfg.seed)
        x = torch.randn(cfg.batch_size, *spec.input.shape, generator=g).to(device)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx.bench_x = x
    else:
        log("info", splits.info.summary())
        ctx.loader = run_loader(cfg, splits.train, shuffle=train, device=device, name="train", log=log,
                                info=splits.info)
        if train:
            ctx.test_loader = run_loader(cfg, splits.test, shuffle=False, device=device, name="test", log=log,
                                         info=splits.info, drop_last=False)
        ctx.dataset_name = splits.info.name

    if device.type == "cpu":
        stamps_module(log)  # the probe's compiled stamps: built here once per torch (~15 s), then loaded
    probe = Probe(model, device, feature_hz=cfg.feature_hz)
    if ctx.runner is not model:
        probe.runner = ctx.runner  # the forward goes through DDP (its reducer), the walk is the model's
    act = {layer.id: layer.activation_bytes(1, cfg.precision, device.type) for layer in net_info.layers}
    probe.act_bytes_per_sample = [act[n] for n in probe.node_ids]
    if feature_node is not None:
        probe.set_feature_node(feature_node)
    ctx.probe = probe
    if device.type == "cuda":
        ctx.mem = CudaMemory(device)
    return ctx

