"""The run loop: train / infer / benchmark one net on one device, emitting records to sinks.

A ``Run`` is a plain object (no threads of its own besides the telemetry sampler): the
caller's thread runs ``run()``; ``pause()``, ``resume()``, ``stop()`` and
``set_feature_node()`` may be called from any other thread and are honoured between steps.
Whatever happens, ``run()`` returns a ``RunResult`` and the last record is ``RunEnded``:
bad settings, a device that does not exist, a dataset that cannot be read, CUDA running out
of memory or a loss that turns NaN end the run as ``failed`` with a sentence a person can act
on, and GPU memory is released so the next run works.
"""
from __future__ import annotations

import gc
import math
import os
import platform
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from engine.errors import LayerScopeError
from engine.run.records import (EvalRecord, LayerRow, LogRecord, RunEnded, RunInfo, StepRecord, TelemetryBatch,
                      TelemetrySample)

MODES = ("train", "infer", "benchmark")
PRECISIONS = ("fp32", "fp16", "bf16")
OPTIMIZERS = ("sgd", "adam")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class RunConfig:
    """Everything that defines a run; JSON-able through ``to_dict``/``from_dict``.

    ``steps`` counts measured steps; ``warmup`` steps run before them (flagged, excluded from
    statistics). When ``epochs`` is set it wins over ``steps``: each epoch walks the train split
    once and ends with a test-split evaluation, and warm-up steps are the first steps of epoch 1.
    ``profile_every=0`` never profiles per layer. ``threads=None`` leaves one core free.
    """

    net: Any = None  # NetSpec
    mode: str = "train"
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 32
    steps: int | None = 50
    epochs: int | None = None
    warmup: int = 3
    dataset: str = "synthetic"
    data_root: str | None = None
    profile_every: int = 1
    feature_node: str | None = None
    feature_hz: float = 4.0
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    seed: int = 0
    threads: int | None = None
    channels_last: bool = False
    cudnn_benchmark: bool = False
    telemetry_hz: float = 10.0
    out: str | None = None
    save_checkpoint: str | None = None
    checkpoint_every: int | None = None
    load_checkpoint: str | None = None

    def problems(self) -> list[str]:
        """Every setting that cannot work, one sentence each (empty when the config is fine)."""
        from engine.net.spec import NetSpec

        p: list[str] = []

        def whole(name, v, lo, optional=False):
            if v is None and optional:
                return
            if not _is_int(v) or v < lo:
                p.append(f"{name} must be a whole number >= {lo}, not {v!r}")

        def number(name, v, lo, hi=None, lo_open=False):
            if not _is_num(v) or v < lo or (lo_open and v == lo) or (hi is not None and v > hi):
                rng = f"> {lo}" if lo_open else f">= {lo}"
                if hi is not None:
                    rng += f" and <= {hi}"
                p.append(f"{name} must be a number {rng}, not {v!r}")

        def choice(name, v, options):
            if v not in options:
                p.append(f"{name} must be one of {', '.join(options)}, not {v!r}")

        if not isinstance(self.net, NetSpec):
            p.append("net is missing: give a net spec (a preset name or a net file)")
        choice("mode", self.mode, MODES)
        choice("precision", self.precision, PRECISIONS)
        choice("optimizer", self.optimizer, OPTIMIZERS)
        if not isinstance(self.device, str) or not self.device.strip():
            p.append(f"device must be auto, cpu, cuda, cuda:N or mps, not {self.device!r}")
        whole("batch_size", self.batch_size, 1)
        whole("steps", self.steps, 1, optional=True)
        whole("epochs", self.epochs, 1, optional=True)
        if self.steps is None and self.epochs is None:
            p.append("set steps or epochs")
        if self.epochs is not None and self.mode == "benchmark":
            p.append("benchmark mode runs a number of steps on one random batch; it has no epochs")
        whole("warmup", self.warmup, 0)
        whole("profile_every", self.profile_every, 0)
        number("feature_hz", self.feature_hz, 0)
        number("lr", self.lr, 0, lo_open=True)
        number("momentum", self.momentum, 0, 1)
        whole("seed", self.seed, 0)
        whole("threads", self.threads, 1, optional=True)
        number("telemetry_hz", self.telemetry_hz, 0, 1000)
        whole("checkpoint_every", self.checkpoint_every, 1, optional=True)
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            p.append(f"dataset must be a name or a folder path, not {self.dataset!r}")
        for name in ("channels_last", "cudnn_benchmark"):
            if not isinstance(getattr(self, name), bool):
                p.append(f"{name} must be true or false, not {getattr(self, name)!r}")
        for name in ("out", "data_root", "save_checkpoint", "load_checkpoint", "feature_node"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, os.PathLike)):
                p.append(f"{name} must be a path or name, not {v!r}")
        if isinstance(self.net, NetSpec) and isinstance(self.feature_node, str):
            if self.net.node(self.feature_node) is None:
                p.append(f"feature_node '{self.feature_node}' is not a node of {self.net.name or 'the net'}")
        return p

    def validate(self) -> "RunConfig":
        """Raise LayerScopeError listing every bad setting; returns self when fine."""
        p = self.problems()
        if p:
            raise LayerScopeError(p)
        return self

    def to_dict(self) -> dict:
        """JSON-able dict; the net is stored as its spec dict."""
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "net" and v is not None and hasattr(v, "to_dict"):
                v = v.to_dict()
            elif isinstance(v, os.PathLike):
                v = os.fspath(v)
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """A config from ``to_dict`` output (or hand-written JSON); LayerScopeError when bad.

        ``net`` may be a spec dict, a preset name or a net file path.
        """
        from engine.errors import Problem
        from engine.net.spec import NetSpec, from_dict as spec_from_dict
        from engine.net.presets import resolve_net

        if not isinstance(d, dict):
            raise LayerScopeError("a run config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise LayerScopeError([Problem(None, f"unknown setting '{k}'") for k in unknown])
        kw = dict(d)
        net = kw.get("net")
        if isinstance(net, dict):
            kw["net"] = spec_from_dict(net)
        elif isinstance(net, str):
            kw["net"] = resolve_net(net)
        elif net is not None and not isinstance(net, NetSpec):
            raise LayerScopeError(f"net must be a net spec object, a preset name or a path, not {net!r}")
        for name in ("lr", "momentum", "feature_hz", "telemetry_hz"):  # JSON "1" for 1.0 is fine
            if _is_int(kw.get(name)):
                kw[name] = float(kw[name])
        return cls(**kw).validate()


@dataclass
class RunResult:
    """What ``run()`` returns: status "completed" | "stopped" | "failed" and a message."""

    status: str
    message: str = ""
    session_path: str | None = None
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class _Failed(Exception):
    """Ends the run as failed with a message for a person (internal)."""


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0].strip() if lines else type(e).__name__


def _node_from_traceback(tb, node_ids) -> str | None:
    """The node whose forward was running when an exception was raised, from the plan walker's frame."""
    found = None
    while tb is not None:
        f = tb.tb_frame
        if f.f_code.co_name == "forward":
            nid = f.f_locals.get("nid")
            if isinstance(nid, str) and nid in node_ids:
                found = nid
        tb = tb.tb_next
    return found


def _versions() -> dict:
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


def _layer_name(node) -> str:
    from engine.net.registry import get_kind

    kind = get_kind(node.kind)
    if kind is None or not kind.key_params:
        return node.kind
    p = kind.resolved(node.params)
    return f"{node.kind} " + ", ".join(f"{k}={p[k]}" for k in kind.key_params if k in p)


def _oom_types():
    import torch

    types = [getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)]
    return tuple(t for t in types if t is not None)


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, _oom_types()):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text.lower()
                                            or "can't allocate memory" in text)


class Run:
    """One run of one net; ``run()`` blocks in the calling thread and returns a RunResult.

    Records go to every sink in order: RunInfo, then StepRecord / LayerTimes / FeatureMap /
    EvalRecord / LogRecord (TelemetryBatch from the sampler thread), and last RunEnded.
    With ``cfg.out`` set, the session file writer is one more sink.
    """

    def __init__(self, cfg: RunConfig, sinks: list[Callable] | tuple = ()):
        self.cfg = cfg
        self._sinks: tuple = tuple(sinks)
        self._state = "idle"
        self._done = 0
        self._total = 0
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._feature_node = cfg.feature_node
        self._probe = None
        self._t0 = time.perf_counter()
        self._phase = "setup"
        self._node_ids: list[str] = []
        self._pending: list[tuple[str, str]] = []  # log lines that must wait for RunInfo
        self.info: RunInfo | None = None
        self.session_path: str | None = None

    # ---- control (any thread) ------------------------------------------------------------

    @property
    def state(self) -> str:
        """"idle", "running", "paused", "completed", "stopped" or "failed"."""
        return self._state

    @property
    def progress(self) -> tuple[int, int]:
        """(steps done, steps in total) - warm-up steps included."""
        return self._done, self._total

    def pause(self) -> None:
        """Hold the run before its next step (no CPU is spent while paused)."""
        self._resume.clear()

    def resume(self) -> None:
        """Continue a paused run."""
        self._resume.set()

    def stop(self) -> None:
        """End the run after the current step (status "stopped"); also wakes a paused run."""
        self._stop.set()
        self._resume.set()

    def set_feature_node(self, node_id: str | None) -> None:
        """Show this node's feature maps from now on (None: none); LayerScopeError for an unknown node."""
        net = self.cfg.net
        if node_id is not None and (net is None or not hasattr(net, "node") or net.node(node_id) is None):
            raise LayerScopeError(f"'{node_id}' is not a node of this net")
        self._feature_node = node_id
        probe = self._probe
        if probe is not None and node_id in (None, *probe.node_ids):
            probe.set_feature_node(node_id)

    # ---- records -------------------------------------------------------------------------

    def _t(self) -> float:
        return time.perf_counter() - self._t0

    def _emit(self, rec) -> None:
        for sink in self._sinks:
            try:
                sink(rec)
            except Exception as e:  # a broken sink must not take the run (or the other sinks) down
                self._sinks = tuple(s for s in self._sinks if s is not sink)
                self._log("error", f"a record sink failed and was removed: {type(e).__name__}: "
                                   f"{_first_line(e)}")

    def _log(self, level: str, message: str) -> None:
        self._emit(LogRecord(self._t(), level, message))

    # ---- the run -------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run to the end, a stop request or a failure; never raises for bad input or a failed run."""
        if self._state != "idle":
            raise RuntimeError("a Run runs once; make a new Run for another run")
        self._state = "running"
        self._t0 = time.perf_counter()
        start_time = time.time()
        cfg = self.cfg
        ctx: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        status, message = "failed", ""
        writer = telemetry = None
        restore: list[Callable[[], None]] = []
        interrupted = False
        info = RunInfo(config=self._config_dict(), device={"id": str(cfg.device), "name": None,
                                                           "memory_total": None},
                       versions={}, host=socket.gethostname(), start_time=start_time)
        try:
            try:
                problems = cfg.problems()
                if problems:
                    raise LayerScopeError(problems)
                writer = self._open_writer()
                import torch  # noqa: F401  (torch loads here, not at import)

                info.versions = _versions()
                ctx["device"] = device = self._resolve_device(info)
                spec_info = self._analyze(info)
                ctx["net_info"] = spec_info
                self.info = info
                self._emit(info)
                telemetry = self._start_telemetry(device)
                status, message = self._main(ctx, extra, restore)
            except _Failed as e:
                message = str(e)
            except LayerScopeError as e:
                message = str(e)
            except Exception as e:  # a bug or an unexpected torch error: still a result, not a crash
                message = f"{type(e).__name__}: {_first_line(e)}"
                ctx["traceback"] = traceback.format_exc()
            except KeyboardInterrupt:
                # the run still ends properly (RunEnded, session closed); the interrupt goes on
                status, message = "stopped", f"interrupted after step {self._done} of {self._total}"
                interrupted = True
        finally:
            if self.info is None:  # failed before RunInfo went out: it still goes first
                self.info = info
                self._emit(info)
            if "traceback" in ctx:
                self._log("error", ctx.pop("traceback").rstrip())
            if self._probe is not None:
                self._probe.detach()
            if telemetry is not None:
                try:
                    telemetry.stop()
                except Exception as e:
                    self._log("warning", f"telemetry did not stop cleanly: {_first_line(e)}")
            self._release(ctx)
            for undo in reversed(restore):
                undo()
            if status == "failed" and not message:
                message = "the run failed"
            self._state = status
            if writer is not None and getattr(writer, "error", None):
                extra["session_error"] = writer.error
            self._emit(RunEnded(self._t(), status, message, self._done, dict(extra)))
            if writer is not None:
                try:
                    writer.close()
                except Exception as e:
                    extra["session_error"] = f"{type(e).__name__}: {_first_line(e)}"
        if interrupted:
            raise KeyboardInterrupt
        return RunResult(status, message, self.session_path, self._done, extra)

    # ---- setup ---------------------------------------------------------------------------

    def _config_dict(self) -> dict:
        try:
            return self.cfg.to_dict()
        except Exception:  # a config too broken to serialise still gets a RunInfo
            return {"net": None}

    def _open_writer(self):
        cfg = self.cfg
        if cfg.out is None:
            return None
        try:
            from engine.session.store import SessionWriter
        except ImportError:
            self._pending.append(("warning", "session files are not available in this build; "
                                             "the run is not recorded to a file"))
            return None
        try:
            writer = SessionWriter(cfg.out)
        except LayerScopeError:
            raise
        except OSError as e:
            raise LayerScopeError(f"cannot write the session file {os.fspath(cfg.out)}: "
                                  f"{e.strerror or _first_line(e)}") from None
        self._sinks = (*self._sinks, writer)
        self.session_path = os.fspath(cfg.out)
        return writer

    def _resolve_device(self, info: RunInfo):
        from engine.run.devices import device_info, resolve_device

        device = resolve_device(self.cfg.device)
        try:
            info.device = device_info(device).to_dict()
        except Exception:
            info.device = {"id": str(device), "name": None, "memory_total": None}
        return device

    def _analyze(self, info: RunInfo):
        from engine.net.graph import analyze

        spec = self.cfg.net
        net_info = analyze(spec)
        b, prec = self.cfg.batch_size, self.cfg.precision
        info.layers = [LayerRow(i, layer.id, _layer_name(spec.node(layer.id)), layer.kind,
                                tuple(layer.out_shape), layer.params, layer.flops,
                                layer.activation_bytes(b, prec))
                       for i, layer in enumerate(net_info.layers)]
        self._node_ids = [layer.id for layer in net_info.layers]
        return net_info

    def _start_telemetry(self, device):
        hz = self.cfg.telemetry_hz
        if not hz:
            return None
        try:
            from engine.run.telemetry import Telemetry
        except ImportError:
            return None
        dev_id = f"cuda:{device.index or 0}" if device.type == "cuda" else device.type
        try:
            try:
                tel = Telemetry(dev_id, hz=hz, sink=self._emit, t0=self._t0)
            except TypeError:
                tel = Telemetry(dev_id, hz, self._emit)
            tel.start()
            return tel
        except Exception as e:  # telemetry is an extra: the run goes on without it
            self._log("warning", f"telemetry is off: {type(e).__name__}: {_first_line(e)}")
            return None

    def _release(self, ctx: dict) -> None:
        """Drop the model, optimizer and batches and hand cached GPU memory back."""
        device = ctx.get("device")
        ctx.clear()
        self._probe = None
        gc.collect()
        if device is not None and device.type == "cuda":
            import torch

            try:
                torch.cuda.empty_cache()
            except Exception:
                pass

    def _main(self, ctx: dict, extra: dict, restore: list) -> tuple[str, str]:
        import torch

        from engine.data import get_dataset
        from engine.net.graph import build_model
        from engine.run.probes import Probe

        cfg = self.cfg
        spec = cfg.net
        device = ctx["device"]
        net_info = ctx["net_info"]
        for level, text in self._pending:
            self._log(level, text)
        self._pending.clear()

        prev_threads = torch.get_num_threads()
        threads = cfg.threads or max(1, (os.cpu_count() or 1) - 1)
        torch.set_num_threads(threads)
        restore.append(lambda: torch.set_num_threads(prev_threads))
        if device.type == "cuda":
            prev_dev = torch.cuda.current_device()
            torch.cuda.set_device(device)
            restore.append(lambda: torch.cuda.set_device(prev_dev))
            prev_bench = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
            restore.append(lambda: setattr(torch.backends.cudnn, "benchmark", prev_bench))
        torch.manual_seed(cfg.seed)

        dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.precision]
        if dtype is not None:
            if cfg.precision == "fp16" and device.type == "cpu":
                self._log("warning", "fp16 on the CPU runs, but most processors emulate it slowly; "
                                     "bf16 is the CPU's fast reduced precision")

            def autocast():
                return torch.autocast(device.type, dtype=dtype)
        else:
            import contextlib

            autocast = contextlib.nullcontext
        ctx["autocast"] = autocast

        model = build_model(spec, net_info).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        ctx["model"] = model
        if cfg.load_checkpoint:
            self._load_checkpoint(model)
        train = cfg.mode == "train"
        model.train(train)
        if spec.nodes[-1].kind == "softmax":
            # the net already ends in probabilities: cross-entropy is the NLL of their log
            def loss_fn(out, y, reduction="mean"):
                return torch.nn.functional.nll_loss(torch.log(out.float().clamp_min(1e-12)), y,
                                                    reduction=reduction)
        else:
            def loss_fn(out, y, reduction="mean"):
                return torch.nn.functional.cross_entropy(out.float(), y, reduction=reduction)
        ctx["loss_fn"] = loss_fn
        if train:
            params = [p for p in model.parameters() if p.requires_grad]
            if not params:
                raise _Failed("the net has no trainable parameters; add a conv2d or linear layer, "
                              "or run it in infer mode")
            if cfg.optimizer == "adam":
                ctx["opt"] = torch.optim.Adam(params, lr=cfg.lr)
            else:
                ctx["opt"] = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
            if cfg.precision == "fp16":
                ctx["scaler"] = torch.amp.GradScaler(device.type)

        loader = None
        if cfg.mode == "benchmark":
            g = torch.Generator(device="cpu").manual_seed(cfg.seed)
            x = torch.randn(cfg.batch_size, *spec.input.shape, generator=g).to(device)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            ctx["bench_x"] = x
        else:
            splits = get_dataset(cfg.dataset, spec.input, seed=cfg.seed, root=cfg.data_root)
            self._log("info", splits.info.summary())
            loader = self._loader(splits.train, shuffle=train, device=device, name="train")
            ctx["loader"] = loader
            if train:
                ctx["test_loader"] = self._loader(splits.test, shuffle=False, device=device, name="test",
                                                  drop_last=False)
            ctx["dataset_name"] = splits.info.name

        act = {layer.id: layer.activation_bytes(1, cfg.precision) for layer in net_info.layers}
        probe = Probe(model, device, act_bytes_per_sample=[act[n] for n, _ in model._plan],
                      feature_hz=cfg.feature_hz)
        self._probe = probe
        if self._feature_node is not None:
            probe.set_feature_node(self._feature_node)
        if device.type == "cuda":
            from engine.run.probes import _CudaMem

            ctx["mem"] = _CudaMem(device)
        return self._loop(ctx, extra)

    def _loader(self, dataset, *, shuffle, device, name, drop_last=None):
        import torch

        n = len(dataset)
        if n == 0:
            raise _Failed(f"the {name} split of {self.cfg.dataset} is empty")
        b = self.cfg.batch_size
        if drop_last is None:
            drop_last = n >= b
            if n < b:
                self._log("warning", f"the {name} split has only {n} samples, fewer than the batch of "
                                     f"{b}; each batch holds {n}")
        g = torch.Generator().manual_seed(self.cfg.seed)
        return torch.utils.data.DataLoader(dataset, batch_size=b, shuffle=shuffle, drop_last=drop_last,
                                           num_workers=0, pin_memory=device.type == "cuda", generator=g)

    def _load_checkpoint(self, model) -> None:
        try:
            from engine.net.checkpoint import load_checkpoint
        except ImportError:
            raise _Failed("loading checkpoints is not available in this build") from None
        state, meta = load_checkpoint(self.cfg.load_checkpoint, self.cfg.net)
        model.load_state_dict(state)
        where = f" (step {meta.get('step')})" if isinstance(meta, dict) and meta.get("step") is not None else ""
        self._log("info", f"loaded checkpoint {os.fspath(self.cfg.load_checkpoint)}{where}")

    def _save_checkpoint(self, ctx: dict, extra: dict, epoch) -> None:
        try:
            from engine.net.checkpoint import save_checkpoint
        except ImportError:
            self._log("warning", "saving checkpoints is not available in this build")
            return
        try:
            path = save_checkpoint(ctx["model"], self.cfg.net, self.cfg.save_checkpoint, step=self._done,
                                   epoch=epoch, extra={"config": self._config_dict()})
        except (LayerScopeError, OSError) as e:
            extra["checkpoint_error"] = _first_line(e)
            self._log("error", f"checkpoint not saved: {_first_line(e)}")
            return
        extra["checkpoint"] = os.fspath(path)
        extra["checkpoint_step"] = self._done
        self._log("info", f"checkpoint saved: {os.fspath(path)}")

    # ---- the loop ------------------------------------------------------------------------

    def _hold(self) -> bool:
        """Wait while paused (blocking, no spinning); False when a stop was requested."""
        if not self._resume.is_set() and not self._stop.is_set():
            self._state = "paused"
            self._log("info", f"paused after step {self._done}")
            self._resume.wait()
            if not self._stop.is_set():
                self._state = "running"
                self._log("info", "resumed")
        return not self._stop.is_set()

    def _loop(self, ctx: dict, extra: dict) -> tuple[str, str]:
        import torch

        cfg = self.cfg
        device = ctx["device"]
        loader = ctx.get("loader")
        if cfg.epochs is not None:
            per_epoch = len(loader)
            self._total = cfg.epochs * per_epoch
            epochs = list(range(1, cfg.epochs + 1))
        else:
            self._total = cfg.warmup + cfg.steps
            epochs = [None]
        non_blocking = device.type == "cuda"
        last_eval = None
        for epoch in epochs:
            it = iter(loader) if loader is not None else None
            epoch_end = self._done + (len(loader) if epoch is not None else self._total)
            while self._done < min(epoch_end, self._total):
                if not self._hold():
                    return "stopped", f"stopped after step {self._done} of {self._total}"
                t_begin = time.perf_counter()
                if it is None:
                    x, y, data_ms = ctx["bench_x"], None, None
                else:
                    self._phase = "data"
                    try:
                        x, y = next(it)
                    except StopIteration:  # steps mode: start another pass over the data
                        it = iter(loader)
                        x, y = next(it)
                    x = x.to(device, non_blocking=non_blocking)
                    y = y.to(device, non_blocking=non_blocking)
                    if cfg.channels_last and x.dim() == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    data_ms = (time.perf_counter() - t_begin) * 1000.0
                step = self._done + 1
                self._guarded_step(ctx, x, y, step, epoch, t_begin, data_ms)
                self._done = step
                if cfg.save_checkpoint and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    self._save_checkpoint(ctx, extra, epoch)
            x = y = None
            if epoch is not None and "test_loader" in ctx:
                last_eval = self._evaluate(ctx, epoch)
                if last_eval is None and self._stop.is_set():
                    return "stopped", f"stopped after step {self._done} of {self._total}"
        if cfg.mode == "train" and "test_loader" in ctx and cfg.epochs is None \
                and ctx.get("dataset_name") != "synthetic":
            last_eval = self._evaluate(ctx, None)  # synthetic labels are random: nothing to test
        if last_eval is not None:
            extra["test_accuracy"] = last_eval.accuracy
            extra["test_loss"] = last_eval.loss
        if cfg.save_checkpoint and extra.get("checkpoint_step") != self._done:
            self._save_checkpoint(ctx, extra, epochs[-1])
        if self._stop.is_set():
            return "stopped", f"stopped after step {self._done} of {self._total}"
        return "completed", ""

    def _guarded_step(self, ctx, x, y, step, epoch, t_begin, data_ms) -> None:
        """One step; an out-of-memory error becomes a failure naming the batch and the node."""
        probe = self._probe
        cfg = self.cfg
        profiled = cfg.profile_every > 0 and (step - 1) % cfg.profile_every == 0
        feature = probe.feature_due()
        try:
            self._step(ctx, x, y, step, epoch, t_begin, data_ms, profiled, feature)
        except Exception as e:
            if not _is_oom(e):
                raise
            phase = self._phase
            node = None
            if phase in ("forward", "backward") and (profiled or feature):
                node = probe.current_node()
            if node is None and phase == "forward":
                node = _node_from_traceback(e.__traceback__, self._node_ids)
            raise _Failed(self._oom_message(ctx["device"], node, phase)) from None
        finally:
            if profiled or feature:
                probe.detach()

    def _oom_message(self, device, node: str | None, phase: str) -> str:
        b = self.cfg.batch_size
        where = {"cuda": "CUDA out of memory", "mps": "MPS out of memory"}.get(device.type,
                                                                               "out of memory")
        at = f" in {node}" if node else ""
        if b > 1:
            hint = f"try a batch of {b // 2} or less"
        else:
            hint = "the net does not fit even at batch 1; try bf16, a smaller input or another device"
        return f"{where} at batch {b}{at} ({phase}); {hint}"

    def _step(self, ctx, x, y, step, epoch, t_begin, data_ms, profiled, feature) -> None:
        import torch

        cfg = self.cfg
        model, probe, autocast, loss_fn = ctx["model"], self._probe, ctx["autocast"], ctx["loss_fn"]
        device = ctx["device"]
        mem = ctx.get("mem")
        warm = step <= cfg.warmup
        t_compute = time.perf_counter()
        t_lt = t_compute - self._t0
        if mem is not None and not profiled:
            mem.read()  # resets the allocator peak for this step (host side)
        if profiled:
            probe.begin_step()
        loss_v = acc = None
        if cfg.mode == "train":
            opt, scaler = ctx["opt"], ctx.get("scaler")
            opt.zero_grad(set_to_none=True)
            self._phase = "forward"
            with autocast():
                if profiled:
                    out = probe.forward(x)
                elif feature:
                    out = probe.forward(x, timing=False)
                else:
                    out = model(x)
                loss = loss_fn(out, y)
            self._phase = "backward"
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                loss.backward()
            if profiled:
                probe.end_backward()
            self._phase = "optimizer step"
            if scaler is not None:
                scaler.step(opt)  # note: sync point (the scaler reads its inf check)
                scaler.update()
            else:
                opt.step()
            correct = (out.detach().argmax(1) == y).sum()
            loss_v, n_ok = torch.stack([loss.detach().float(), correct.float()]).tolist()  # note: sync point
            acc = n_ok / len(y)
        else:
            self._phase = "forward"
            with torch.inference_mode(), autocast():
                if profiled:
                    out = probe.forward(x)
                elif feature:
                    out = probe.forward(x, timing=False)
                else:
                    out = model(x)
                if y is not None:
                    loss = loss_fn(out, y)
                    correct = (out.argmax(1) == y).sum()
                    loss_v, n_ok = torch.stack([loss.float(), correct.float()]).tolist()  # note: sync point
                    acc = n_ok / len(y)
                elif device.type == "cuda":
                    torch.cuda.synchronize(device)  # note: sync point (end of a benchmark step)
                elif device.type == "mps":
                    torch.mps.synchronize()  # note: sync point (end of a benchmark step)
        self._phase = "records"
        lt = probe.collect(step, t_lt) if profiled and not warm else None
        fm = probe.take_feature(step, time.perf_counter() - self._t0) if (profiled or feature) else None
        peak = None
        if mem is not None:
            peak = probe.step_peak_bytes() if profiled else mem.read()[1]
        t_end = time.perf_counter()
        step_ms = (t_end - t_compute) * 1000.0
        if loss_v is not None and not math.isfinite(loss_v):
            hint = f"lower the learning rate (now {cfg.lr:g})"
            if cfg.precision != "fp32":
                hint += " or use fp32"
            raise _Failed(f"the loss became {loss_v} at step {step}; {hint}")
        batch = int(x.shape[0])
        total_ms = step_ms + (data_ms or 0.0)
        phase = {"train": "train", "infer": "infer", "benchmark": "benchmark"}[cfg.mode]
        self._emit(StepRecord(step, t_begin - self._t0, phase, loss_v, acc, step_ms,
                              batch * 1000.0 / total_ms if total_ms > 0 else 0.0, data_ms, epoch, warm,
                              lt is not None, peak))
        if lt is not None:
            self._emit(lt)
        if fm is not None:
            self._emit(fm)
        if mem is not None:
            self._allocator_telemetry(mem, ctx["device"])

    def _allocator_telemetry(self, mem, device) -> None:
        """The caching allocator's allocated/reserved bytes as telemetry, at most 10 times a second."""
        now = time.perf_counter()
        if now - getattr(self, "_last_alloc_t", -1.0) < 0.1:
            return
        self._last_alloc_t = now
        allocated, reserved = mem.current()  # host-side allocator stats, no device sync
        t, src = now - self._t0, f"torch:{device}"
        self._emit(TelemetryBatch([TelemetrySample(t, src, "allocated_bytes", float(allocated)),
                                   TelemetrySample(t, src, "reserved_bytes", float(reserved))]))

    def _evaluate(self, ctx, epoch) -> EvalRecord | None:
        """Loss and accuracy over the whole test split (no probes); None when stopped or empty."""
        import torch

        model, loss_fn, autocast = ctx["model"], ctx["loss_fn"], ctx["autocast"]
        device = ctx["device"]
        nb = device.type == "cuda"
        n = 0
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        self._phase = "evaluation"
        model.eval()
        try:
            with torch.inference_mode(), autocast():
                for x, y in ctx["test_loader"]:
                    if self._stop.is_set():
                        return None
                    x, y = x.to(device, non_blocking=nb), y.to(device, non_blocking=nb)
                    if self.cfg.channels_last and x.dim() == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    out = model(x)
                    loss_sum += loss_fn(out, y, reduction="sum").float()
                    correct += (out.argmax(1) == y).sum()
                    n += len(y)
        finally:
            model.train(self.cfg.mode == "train")
        if n == 0:
            return None
        loss_v, ok = torch.stack([loss_sum, correct.float()]).tolist()  # note: sync point
        rec = EvalRecord(self._done, self._t(), epoch, "test", loss_v / n, ok / n, n)
        self._emit(rec)
        return rec
