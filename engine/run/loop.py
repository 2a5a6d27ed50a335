"""The run loop: train / infer / benchmark one net on one device, emitting records to sinks.

A ``Run`` is a plain object (no threads of its own besides the telemetry sampler): the
caller's thread runs ``run()``. Other threads talk to it through ONE command queue:
``pause()``, ``resume()``, ``stop()`` and ``set_feature_node()`` enqueue a command that the
loop drains between steps (a paused run blocks on the queue, so a stop still ends it at once).
The run talks back only through records: ``StateChanged`` when it starts, pauses, evaluates,
saves or resumes, a ``StepRecord`` per step, and ``RunEnded`` last, whatever happens: bad
settings, a device that does not exist, a dataset that cannot be read, CUDA running out of
memory or a loss that turns NaN end the run as ``failed`` with a sentence a person can act
on, and GPU memory is released so the next run works.
"""
from __future__ import annotations

import gc
import os
import queue
import socket
import threading
import time
import traceback
from typing import Callable

from engine.errors import LayerScopeError
from engine.run.config import MODES, OPTIMIZERS, PRECISIONS, RunConfig, RunResult
from engine.records import EvalRecord, LayerRow, LogRecord, RunEnded, RunInfo, StateChanged, TelemetryStatus
from engine.run.setup import (Failed, RunContext, build_context, first_line, layer_name, load_splits, used_batch,
                              versions)
from engine.run.step import StepMixin

__all__ = ["Run", "RunConfig", "RunResult", "MODES", "PRECISIONS", "OPTIMIZERS"]

_PAUSE, _RESUME, _STOP, _FEATURE = "pause", "resume", "stop", "feature"


class Run(StepMixin):
    """One run of one net; ``run()`` blocks in the calling thread and returns a RunResult.

    Records go to every sink in order: RunInfo, then StateChanged / StepRecord / LayerTimes /
    FeatureMap / EvalRecord / LogRecord (TelemetryBatch from the sampler thread, serialised
    with the loop's own records by a lock), and last RunEnded. With ``cfg.out`` set, the
    session file writer is one more sink. The sinks are fixed for the run; one that raises is
    reported once in a LogRecord and skipped from then on. The per-step work (``_step``) is
    ``engine.run.step.StepMixin``.
    """

    def __init__(self, cfg: RunConfig, sinks: list[Callable] | tuple = ()):
        self.cfg = cfg
        self._sinks: tuple = tuple(sinks)
        self._dead: list[bool] = [False] * len(self._sinks)
        self._emit_lock = threading.RLock()  # the sampler thread emits too; a failing sink logs re-entrantly
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._state = "idle"
        self._done = 0
        self._total = 0
        self._paused = False
        self._stopping = False
        self._feature_node = cfg.feature_node
        self._feature_first = 0  # first channel of the feature maps asked by set_feature_node
        self._ctx: RunContext | None = None
        self._t0 = time.perf_counter()
        self._phase = "setup"
        self._writer = None  # the session writer, once open (its ``error`` fails the run)
        self._last_alloc_t = -1.0
        self._telemetry_status: dict | None = None  # last one sent as a TelemetryStatus record
        self.info: RunInfo | None = None
        self.session_path: str | None = None

    # ---- control (any thread): commands into the queue ------------------------------------

    @property
    def state(self) -> str:
        """"idle", "running", "paused", "evaluating", "saving", "completed", "stopped" or "failed".

        Written by the loop thread only; a GUI follows ``StateChanged`` records instead.
        """
        return self._state

    @property
    def progress(self) -> tuple[int, int]:
        """(steps done, steps in total), warm-up included; written by the loop thread only."""
        return self._done, self._total

    def pause(self) -> None:
        """Hold the run before its next step (no CPU is spent while paused)."""
        self._commands.put((_PAUSE, None))

    def resume(self) -> None:
        """Continue a paused run."""
        self._commands.put((_RESUME, None))

    def stop(self) -> None:
        """End the run after the current step (status "stopped"); also ends a paused run at once.

        Safe from a signal handler (``SimpleQueue.put`` is re-entrant).
        """
        self._commands.put((_STOP, None))

    def set_feature_node(self, node_id: str | None, first_channel: int = 0) -> None:
        """Show this node's feature maps from the next step on (None: none): at most 32 channels
        from ``first_channel`` (0-based; a window past the layer's end is moved back inside it,
        and the FeatureMap records say which channels they hold).

        LayerScopeError (in the caller's thread) for a node the net does not have, or a
        ``first_channel`` that is not an integer >= 0.
        """
        net = self.cfg.net
        if node_id is not None and (net is None or not hasattr(net, "node") or net.node(node_id) is None):
            raise LayerScopeError(f"'{node_id}' is not a node of this net")
        if isinstance(first_channel, bool) or not isinstance(first_channel, int) or first_channel < 0:
            raise LayerScopeError(f"first channel must be a whole number >= 0, not {first_channel!r}")
        self._commands.put((_FEATURE, (node_id, first_channel)))

    # ---- commands (loop thread) ----------------------------------------------------------

    def _apply(self, command: str, arg) -> None:
        if command == _PAUSE:
            self._paused = True
        elif command == _RESUME:
            self._paused = False
        elif command == _STOP:
            self._stopping = True
        elif command == _FEATURE:
            node_id, first_channel = arg
            self._feature_node = node_id
            self._feature_first = first_channel
            probe = self._ctx.probe if self._ctx is not None else None
            if probe is not None and node_id in (None, *probe.node_ids):
                probe.set_feature_node(node_id, first_channel)

    def _drain(self) -> None:
        """Apply every command waiting in the queue, without blocking."""
        if self._commands.empty():  # the usual case, every step: no exception raised and caught
            return
        while True:
            try:
                command, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            self._apply(command, arg)

    def _hold(self) -> bool:
        """Apply pending commands and wait while paused (blocked on the queue); False on a stop."""
        self._drain()
        if self._paused and not self._stopping:
            self._set_state("paused")
            self._log("info", f"paused after step {self._done}")
            while self._paused and not self._stopping:
                self._apply(*self._commands.get())
            if not self._stopping:
                self._set_state("running")
                self._log("info", "resumed")
        return not self._stopping

    # ---- records -------------------------------------------------------------------------

    def _t(self) -> float:
        return time.perf_counter() - self._t0

    def _emit(self, rec) -> None:
        with self._emit_lock:
            for i, sink in enumerate(self._sinks):
                if self._dead[i]:
                    continue
                try:
                    sink(rec)
                except Exception as e:  # a broken sink must not take the run (or the other sinks) down
                    self._dead[i] = True
                    self._log("error", f"a record sink failed and was removed: {type(e).__name__}: "
                                       f"{first_line(e)}")

    def _log(self, level: str, message: str) -> None:
        self._emit(LogRecord(self._t(), level, message))

    def _set_state(self, state: str, phase: str | None = None) -> None:
        self._state = state
        self._emit(StateChanged(self._t(), state, self._done, self._total, phase or self.cfg.mode))

    # ---- the run -------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run to the end, a stop request or a failure; never raises for bad input or a failed run."""
        if self._state != "idle":
            raise RuntimeError("a Run runs once; make a new Run for another run")
        self._state = "running"
        self._t0 = time.perf_counter()
        start_time = time.time()
        cfg = self.cfg
        extra: dict = {}
        status, message = "failed", ""
        writer = telemetry = None
        device = None
        bug: str | None = None
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

                info.versions = versions()
                device = self._resolve_device(info)
                splits = load_splits(cfg)
                # every figure (activations, GFLOP/s, OOM advice, summaries) uses the batch really used
                info.config["batch_used"] = batch = used_batch(cfg, splits)
                net_info = self._analyze(info, batch, device)
                from engine.run.ceilings import run_ceilings  # the roofline's roofs, recorded with the run
                info.device["ceilings"] = run_ceilings(cfg, device)
                self.info = info
                self._emit(info)
                telemetry = self._start_telemetry(device)
                self._ctx = build_context(cfg, device, net_info, self._log, restore, self._feature_node,
                                          splits=splits)
                extra["probe_hooks"] = self._ctx.probe.hooks_note()  # how layers were timed (recorded)
                if self._feature_node is not None and self._feature_first:  # asked before the probe existed
                    self._ctx.probe.set_feature_node(self._feature_node, self._feature_first)
                status, message = self._loop(self._ctx, extra)
                if status == "completed" and cfg.layer_energy:  # opt-in replay, after the last step
                    from engine.run.layer_energy import replay_after_run

                    self._emit(replay_after_run(self, self._ctx))
            except Failed as e:
                message = str(e)
            except LayerScopeError as e:
                message = str(e)
            except Exception as e:  # a bug or an unexpected torch error: still a result, not a crash
                message = f"{type(e).__name__}: {first_line(e)}"
                bug = traceback.format_exc()
            except KeyboardInterrupt:
                # the run still ends properly (RunEnded, session closed); the interrupt goes on
                status, message = "stopped", f"interrupted after step {self._done} of {self._total}"
                interrupted = True
        finally:
            if self.info is None:  # failed before RunInfo went out: it still goes first
                self.info = info
                self._emit(info)
            if bug is not None:
                self._log("error", bug.rstrip())
            if self._ctx is not None and self._ctx.probe is not None:
                self._ctx.probe.detach()
            if telemetry is not None:
                try:
                    telemetry.stop()
                    self._emit_telemetry_status(telemetry.status())  # a metric dropped while sampling
                except Exception as e:
                    self._log("warning", f"telemetry did not stop cleanly: {first_line(e)}")
            self._release(device)
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
                    extra["session_error"] = f"{type(e).__name__}: {first_line(e)}"
        if interrupted:
            raise KeyboardInterrupt
        return RunResult(status, message, self.session_path, self._done, extra)

    # ---- setup ---------------------------------------------------------------------------

    def _config_dict(self) -> dict:
        try:
            d = self.cfg.to_dict()
        except Exception:  # a config too broken to serialise still gets a RunInfo
            return {"net": None}
        from engine.run.allocator import detect_allocator

        # facts of this process, not settings: the CPU allocator it started with (engine.sweep)
        d["cpu_allocator"], d["allocator_env"] = detect_allocator()
        return d

    def _open_writer(self):
        """The session writer for ``cfg.out``, joined to the sinks before the first record."""
        from engine.session import SessionWriter

        cfg = self.cfg
        if cfg.out is None:
            return None
        try:
            writer = SessionWriter(cfg.out)  # the telemetry status comes as a TelemetryStatus record
        except LayerScopeError:
            raise
        except OSError as e:
            raise LayerScopeError(f"cannot write the session file {os.fspath(cfg.out)}: "
                                  f"{e.strerror or first_line(e)}") from None
        with self._emit_lock:  # nothing is emitted yet; the sinks are fixed from here on
            self._sinks = (*self._sinks, writer)
            self._dead.append(False)
        self.session_path = os.fspath(cfg.out)
        self._writer = writer
        return writer

    def _resolve_device(self, info: RunInfo):
        from engine.run.devices import device_info, resolve_device

        device = resolve_device(self.cfg.device)
        try:
            info.device = device_info(device).to_dict()
        except Exception:
            info.device = {"id": str(device), "name": None, "memory_total": None}
        return device

    def _analyze(self, info: RunInfo, batch: int, device):
        from engine.net.analyze import analyze, batch_problem

        spec = self.cfg.net
        net_info = analyze(spec)
        bad = batch_problem(net_info, batch, self.cfg.mode)  # e.g. batch norm on 1x1 maps at batch 1
        if bad:
            raise LayerScopeError(bad)
        b, prec = batch, self.cfg.precision
        info.layers = [LayerRow(i, layer.id, layer_name(spec.node(layer.id)), layer.kind,
                                tuple(layer.out_shape), layer.params, layer.flops,
                                layer.activation_bytes(b, prec, device.type), layer.bwd_flops)
                       for i, layer in enumerate(net_info.layers)]
        return net_info

    def _start_telemetry(self, device):
        """The run's sampler, started, and its status (probed once) sent as a TelemetryStatus."""
        from engine.run.telemetry import Telemetry, off_status

        hz = self.cfg.telemetry_hz
        if not hz:
            self._emit_telemetry_status(off_status("telemetry was off for this run (telemetry rate 0 Hz)"))
            return None
        dev_id = f"cuda:{device.index or 0}" if device.type == "cuda" else device.type
        try:
            telemetry = Telemetry(dev_id, hz=hz, sink=self._emit, t0=self._t0).start()
        except Exception as e:  # telemetry is an extra: the run goes on without it
            self._log("warning", f"telemetry is off: {type(e).__name__}: {first_line(e)}")
            self._emit_telemetry_status(off_status(f"telemetry failed to start: {type(e).__name__}: {first_line(e)}"))
            return None
        self._emit_telemetry_status(telemetry.status())
        return telemetry

    def _emit_telemetry_status(self, status: dict) -> None:
        if status != self._telemetry_status:
            self._telemetry_status = status
            self._emit(TelemetryStatus(self._t(), status))

    def _release(self, device) -> None:
        """Drop the model, optimizer and batches and hand cached GPU memory back."""
        self._ctx = None
        gc.collect()
        if device is not None and device.type == "cuda":
            import torch

            try:
                torch.cuda.empty_cache()
            except Exception:
                pass

    def _save_checkpoint(self, ctx: RunContext, extra: dict, epoch) -> None:
        from engine.net.checkpoint import save_checkpoint

        self._set_state("saving", "checkpoint")
        try:
            path = save_checkpoint(ctx.model, self.cfg.net, self.cfg.save_checkpoint, step=self._done,
                                   epoch=epoch, extra={"config": self._config_dict()})
        except (LayerScopeError, OSError) as e:
            extra["checkpoint_error"] = first_line(e)
            self._log("error", f"checkpoint not saved: {first_line(e)}")
            return
        extra["checkpoint"] = os.fspath(path)
        extra["checkpoint_step"] = self._done
        self._log("info", f"checkpoint saved: {os.fspath(path)}")

    # ---- the loop ------------------------------------------------------------------------

    def _stopped(self, ctx: RunContext, extra: dict, epoch) -> tuple[str, str]:
        """End a stopped run; a training run that saves weights saves the ones it stopped with
        (unless it just saved them), so its checkpoint is its own, not an earlier run's."""
        cfg = self.cfg
        if (cfg.save_checkpoint and cfg.mode == "train" and self._done > 0
                and extra.get("checkpoint_step") != self._done):
            self._save_checkpoint(ctx, extra, epoch)
        return "stopped", f"stopped after step {self._done} of {self._total}"

    def _loop(self, ctx: RunContext, extra: dict) -> tuple[str, str]:
        import torch

        cfg = self.cfg
        device = ctx.device
        loader = ctx.loader
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
            self._set_state("running")
            it = iter(loader) if loader is not None else None
            epoch_end = self._done + (len(loader) if epoch is not None else self._total)
            while self._done < min(epoch_end, self._total):
                if not self._hold():
                    return self._stopped(ctx, extra, epoch)
                t_begin = time.perf_counter()
                if it is None:
                    x, y, data_ms = ctx.bench_x, None, None
                else:
                    self._phase = "data"
                    try:
                        x, y = next(it)
                    except StopIteration:  # steps mode: start another pass over the data
                        it = iter(loader)
                        x, y = next(it)
                    if x.device != device:  # (a call each on every step otherwise)
                        x = x.to(device, non_blocking=non_blocking)
                        y = y.to(device, non_blocking=non_blocking)
                    if cfg.channels_last and x.dim() == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    data_ms = (time.perf_counter() - t_begin) * 1000.0
                step = self._done + 1
                self._guarded_step(ctx, x, y, step, epoch, t_begin, data_ms)
                self._done = step
                if self._writer is not None and self._writer.error:  # disk full: the record is broken
                    raise Failed(self._writer.error)
                if cfg.save_checkpoint and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    self._save_checkpoint(ctx, extra, epoch)
                    self._set_state("running")
            x = y = None
            if epoch is not None and ctx.test_loader is not None:
                last_eval = self._evaluate(ctx, epoch)
                if last_eval is None and self._stopping:
                    return self._stopped(ctx, extra, epoch)
        if cfg.mode == "train" and ctx.test_loader is not None and cfg.epochs is None \
                and ctx.dataset_name != "synthetic":
            last_eval = self._evaluate(ctx, None)  # synthetic labels are random: nothing to test
        if last_eval is not None:
            extra["test_accuracy"] = last_eval.accuracy
            extra["test_loss"] = last_eval.loss
        if cfg.save_checkpoint and extra.get("checkpoint_step") != self._done:
            self._save_checkpoint(ctx, extra, epochs[-1])
        self._drain()
        if self._stopping:
            return self._stopped(ctx, extra, epochs[-1])
        return "completed", ""

    def _evaluate(self, ctx: RunContext, epoch) -> EvalRecord | None:
        """Loss and accuracy over the whole test split (no probes); None when stopped or empty."""
        import torch

        model, loss_fn, autocast, device = ctx.model, ctx.loss_fn, ctx.autocast, ctx.device
        nb = device.type == "cuda"
        n = 0
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        self._phase = "evaluation"
        self._set_state("evaluating", "test")
        model.eval()
        try:
            with torch.inference_mode(), autocast():
                for x, y in ctx.test_loader:
                    self._drain()  # a stop ends the evaluation too; a pause waits for the next step
                    if self._stopping:
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
