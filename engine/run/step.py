"""One step of a run: forward, backward and optimizer step (or inference), the step's records,
and the out-of-memory advice when it fails.

``StepMixin`` is a mixin of ``engine.run.loop.Run``: it uses the run's ``cfg``, ``_t0``,
``_phase``, ``_emit`` and ``_last_alloc_t``, and is called from the loop thread only.
"""
from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

from engine.records import StepRecord, TelemetryBatch, TelemetrySample
from engine.run.setup import Failed, RunContext, is_oom, oom_message


class StepMixin:
    """``Run``'s per-step work (see the module docstring)."""

    def _guarded_step(self, ctx: RunContext, x, y, step, epoch, t_begin, data_ms) -> None:
        """One step; an out-of-memory error becomes a failure naming the batch and the node.

        The node of a forward failure comes from the probe when it walked the plan, else from
        the model's ``failed_node`` (set by the LayerNet executor); a backward failure is only
        placed when the probe's gradient hooks were on.
        """
        probe = ctx.probe
        cfg = self.cfg
        profiled = cfg.profile_every > 0 and (step - 1) % cfg.profile_every == 0
        feature = probe.feature_due()
        try:
            self._step(ctx, x, y, step, epoch, t_begin, data_ms, profiled, feature)
        except Exception as e:
            if not is_oom(e):
                raise
            phase = self._phase
            node = None
            if phase in ("forward", "backward") and (profiled or feature):
                node = probe.current_node()
            if node is None and phase == "forward":
                node = ctx.model.failed_node
            raise Failed(oom_message(ctx.device, ctx.batch, node, phase, net_info=ctx.net_info, cfg=cfg)) from None
        finally:
            if profiled or feature:
                probe.detach()

    def _step(self, ctx: RunContext, x, y, step, epoch, t_begin, data_ms, profiled, feature) -> None:
        import torch

        cfg = self.cfg
        model, probe, autocast, loss_fn = ctx.model, ctx.probe, ctx.autocast, ctx.loss_fn
        device, mem = ctx.device, ctx.mem
        warm = step <= cfg.warmup
        t_compute = time.perf_counter()
        t_lt = t_compute - self._t0
        # the step's slice is [t_begin, t_end]: the wait before compute counts as the batch wait
        # (data_ms), and a step with no batch to wait for (benchmark) begins at its compute
        if data_ms is None:
            t_begin = t_compute
        else:
            data_ms = (t_compute - t_begin) * 1000.0
        if mem is not None and not profiled:
            mem.read()  # resets the allocator peak for this step (host side)
        if profiled:
            probe.begin_step()
        comm = ctx.comm
        if comm is not None:
            comm.begin_step()
        loss_v = acc = None
        if cfg.mode == "train":
            opt, scaler = ctx.opt, ctx.scaler
            opt.zero_grad(set_to_none=True)
            self._phase = "forward"
            with autocast():
                out = _forward(ctx.runner or model, probe, x, profiled, feature)
                loss = loss_fn(out, y)
            self._phase = "backward"
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                loss.backward()
            if profiled:
                probe.end_backward(comm.compute_end() if comm is not None else None)
            self._phase = "optimizer step"
            if scaler is not None:
                scaler.step(opt)  # note: sync point (the scaler reads its inf check)
                scaler.update()
            else:
                opt.step()
            if device.type == "cpu":  # the accuracy is worked out by the record's first reader
                loss_v, acc = loss.item(), _Later(out.detach(), y)
            else:
                loss_v, n_ok = self._loss_and_correct(loss, out, y, device)  # note: sync point
                acc = n_ok / len(y)
        else:
            self._phase = "forward"
            with torch.inference_mode(), autocast():
                out = _forward(model, probe, x, profiled, feature)
                if y is not None:
                    loss = loss_fn(out, y)
                    loss_v, n_ok = self._loss_and_correct(loss, out, y, device)  # note: sync point
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
            raise Failed(f"the loss became {loss_v} at step {step}; {hint}")
        batch = int(x.shape[0])
        total_ms = step_ms + (data_ms or 0.0)
        record = DeferredStepRecord if type(acc) is _Later else StepRecord
        self._emit(record(step, t_begin - self._t0, cfg.mode, loss_v, acc, step_ms,
                          batch * 1000.0 / total_ms if total_ms > 0 else 0.0, data_ms, epoch, warm,
                          lt is not None, peak))
        if lt is not None:
            self._emit(lt)
        if comm is not None:
            ct = comm.collect(step, t_lt)
            if ct is not None and not warm:
                self._emit(ct)
        if fm is not None:
            self._emit(fm)
        if mem is not None:
            self._allocator_telemetry(mem, device)

    @staticmethod
    def _loss_and_correct(loss, out, y, device) -> tuple[float, float]:
        """(loss, correct predictions) of a step as Python numbers: the step's one sync point.

        On a GPU both come back in one transfer (one sync); on the CPU there is nothing to wait
        for, so the fewest tensor ops win (each op costs microseconds of dispatch a hand-written
        loop does not pay)."""
        import torch

        if device.type == "cpu":  # (argmax has no gradient: no detach needed)
            return loss.item(), float(out.argmax(1).eq_(y).sum().item())
        correct = (out.detach().argmax(1) == y).sum()
        return tuple(torch.stack([loss.detach().float(), correct.float()]).tolist())

    def _allocator_telemetry(self, mem, device) -> None:
        """The caching allocator's allocated/reserved bytes as telemetry, at most 10 times a second."""
        now = time.perf_counter()
        if now - self._last_alloc_t < 0.1:
            return
        self._last_alloc_t = now
        allocated, reserved = mem.current()  # host-side allocator stats, no device sync
        t, src = now - self._t0, f"torch:{device}"
        self._emit(TelemetryBatch([TelemetrySample(t, src, "allocated_bytes", float(allocated)),
                                   TelemetrySample(t, src, "reserved_bytes", float(reserved))]))


class _Later(NamedTuple):
    """A CPU training step's logits (detached) and labels, for ``DeferredStepRecord``."""

    logits: Any
    labels: Any


def correct_fraction(logits, labels) -> float:
    """Top-1 accuracy of one batch: the fraction of rows of ``logits`` (N x classes) whose
    largest entry (the first, on ties) is at the label's index (``labels``: N integers)."""
    import numpy as np
    import torch

    if logits.dtype in (torch.float32, torch.float64) and logits.layout == torch.strided:
        # numpy: no torch dispatch (each op costs a small net's step microseconds)
        return float(np.count_nonzero(logits.numpy().argmax(1) == labels.numpy())) / len(labels)
    return float(logits.argmax(1).eq(labels).sum().item()) / len(labels)


class DeferredStepRecord(StepRecord):
    """A CPU training step's StepRecord whose ``accuracy`` is worked out when a consumer first
    reads it (``correct_fraction`` of the step's detached logits and labels): the session
    writer's thread, the viewer's fold of the live feed. The run's thread only keeps the two
    tensors (the three ops and the read-back of an accuracy cost LeNet-5 at batch 64 ~1 % of its
    step there). Same fields, same values as a StepRecord; the tensors are dropped once read."""

    def __init__(self, *args, **kwargs):  # noqa: D107 - StepRecord's fields; accuracy is a _Later
        super().__init__(*args, **kwargs)
        later = self.__dict__.pop("accuracy")
        self.__dict__["_later"] = later

    def __getattr__(self, name: str):
        if name != "accuracy":
            raise AttributeError(name)
        later = self.__dict__.get("_later")
        if later is not None:
            value = correct_fraction(later.logits, later.labels)
            self.__dict__["accuracy"] = value
            self.__dict__.pop("_later", None)
            return value
        return self.__dict__["accuracy"]  # another thread worked it out meanwhile


def _forward(model, probe, x, profiled: bool, feature: bool):
    """One forward pass: timed per layer by the probe, or through it only to capture a feature
    map, or the plain model call (no probe code at all on an unprofiled step)."""
    if profiled:
        return probe.forward(x, feature=feature)
    if feature:
        return probe.forward(x, timing=False, feature=True)
    return model(x)
