"""Hand-made records for looking at one view alone (``python -m app.views.<name>``).

These numbers are invented (shaped like a LeNet-5 training run) and are used only by the
previews; the app itself draws nothing but what a run or a session file recorded. Every
preview window says "sample data" in its title.
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from engine import (EvalRecord, FeatureMap, LayerRow, LayerTimes, LogRecord, RunEnded, RunInfo,
                            StepRecord, TelemetryBatch, TelemetrySample)

_LAYERS = [  # id, kind, out shape, params, flops per sample, fwd ms, bwd ms
    ("conv1", "conv2d", (6, 28, 28), 156, 235_200, 0.42, 0.71),
    ("tanh1", "tanh", (6, 28, 28), 0, 0, 0.05, 0.06),
    ("pool1", "avgpool2d", (6, 14, 14), 0, 4_704, 0.06, 0.05),
    ("conv2", "conv2d", (16, 10, 10), 2_416, 480_000, 0.55, 0.98),
    ("tanh2", "tanh", (16, 10, 10), 0, 0, 0.03, 0.03),
    ("pool2", "avgpool2d", (16, 5, 5), 0, 1_600, 0.03, 0.03),
    ("flatten", "flatten", (400,), 0, 0, 0.01, 0.01),
    ("fc1", "linear", (120,), 48_120, 96_000, 0.09, 0.17),
    ("tanh3", "tanh", (120,), 0, 0, 0.01, 0.01),
    ("fc2", "linear", (84,), 10_164, 20_160, 0.04, 0.07),
    ("tanh4", "tanh", (84,), 0, 0, 0.01, 0.01),
    ("fc3", "linear", (10,), 850, 1_680, 0.03, 0.05),
]


def sample_records(steps: int = 120, batch: int = 64, gpu: bool = False, feature_node: str = "conv1"):
    """A list of records shaped like a short training run (invented numbers, for previews)."""
    rng = np.random.default_rng(0)
    dev = {"id": "cuda:0", "name": "Sample GPU", "kind": "cuda", "memory_total": 8 << 30} if gpu else \
        {"id": "cpu", "name": "Sample CPU (2 cores)", "kind": "cpu", "memory_total": 8 << 30}
    rows = [LayerRow(i, nid, kind, kind, shape, p, f, int(np.prod(shape)) * batch * 4)
            for i, (nid, kind, shape, p, f, _, _) in enumerate(_LAYERS)]
    cfg = {"net": {"name": "lenet5 (sample)"}, "mode": "train", "device": dev["id"], "precision": "fp32",
           "batch_size": batch, "steps": steps, "warmup": 3, "dataset": "digits"}
    out = [RunInfo(cfg, dev, {"torch": "sample"}, "sample-host", 0.0, rows),
           LogRecord(0.01, "info", "sample data: invented numbers for a preview of this view")]
    t = 0.0
    for step in range(1, steps + 1):
        warm = step <= 3
        fwd = [f * (1 + 0.08 * rng.standard_normal()) * (1.6 if warm else 1.0) for *_, f, _ in _LAYERS]
        bwd = [b * (1 + 0.08 * rng.standard_normal()) * (1.6 if warm else 1.0) for *_, b in _LAYERS]
        step_ms = (sum(fwd) + sum(bwd)) * 1.25
        loss = 2.3 * math.exp(-step / 40) + 0.15 + 0.05 * rng.standard_normal()
        acc = min(1.0, max(0.0, 1 - loss / 2.4 + 0.03 * rng.standard_normal()))
        peak = int((40 + 3 * rng.standard_normal()) * (1 << 20)) if gpu else None
        out.append(StepRecord(step, t, "train", loss, acc, step_ms, batch * 1000 / (step_ms + 0.3), 0.3, None,
                              warm, True, peak))
        if not warm:
            mem = [r.act_bytes for r in rows]
            out.append(LayerTimes(step, t, [r.node_id for r in rows], fwd, bwd, [None] * len(rows),
                                  [None] * len(rows), mem))
        t += (step_ms + 0.3) / 1000.0
        samples = [TelemetrySample(t, "psutil", "cpu_pct", 55 + 10 * rng.standard_normal()),
                   TelemetrySample(t, "psutil", "rss_bytes", float((600 + step * 0.1) * (1 << 20))),
                   TelemetrySample(t, "psutil", "sys_mem_used_bytes", float(3.1 * (1 << 30)))]
        for k in range(2):
            samples.append(TelemetrySample(t, "psutil", f"cpu_pct:{k}", 95 - 60 * k + 4 * rng.standard_normal()))
        if gpu:
            samples += [TelemetrySample(t, "nvml:0", "power_w", 180 + 20 * rng.standard_normal()),
                        TelemetrySample(t, "nvml:0", "energy_j", 180 * t),
                        TelemetrySample(t, "nvml:0", "gpu_util_pct", 85 + 5 * rng.standard_normal()),
                        TelemetrySample(t, "nvml:0", "temp_c", 55 + t),
                        TelemetrySample(t, "nvml:0", "sm_clock_mhz", 1800 + 20 * rng.standard_normal()),
                        TelemetrySample(t, "nvml:0", "mem_used_bytes", float(1.2 * (1 << 30)))]
        out.append(TelemetryBatch(samples))
        if step % 10 == 0 and feature_node:
            c, h, w = 6, 28, 28
            yy, xx = np.mgrid[0:h, 0:w]
            maps = np.stack([np.sin(xx / (2 + k) + step / 9) * np.cos(yy / (3 + k)) for k in range(c)])
            data = ((maps - maps.min()) / (np.ptp(maps) or 1) * 255).astype(np.uint8)
            out.append(FeatureMap(step, t, feature_node, (c, h, w), data.tobytes(), -1.0, 1.0))
        if step % 40 == 0:
            out.append(EvalRecord(step, t, None, "test", loss * 1.1, acc * 0.97, 360))
    out.append(RunEnded(t, "completed", "", steps, {}))
    return out


def sample_snapshot(**kw):
    """A LiveSnapshot of the sample run."""
    from engine import LiveFeed

    feed = LiveFeed(window=50)
    for rec in sample_records(**kw):
        feed(rec)
    return feed.snapshot()


def preview(make, argv=None, size=(900, 560)) -> int:
    """Show one view alone with the sample run (``--gpu``: with GPU series; ``--screenshot PATH``)."""
    from app.views.base import show_or_shoot, standalone_app

    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true", help="include sample GPU series")
    ap.add_argument("--screenshot", help="save a PNG of the view and exit")
    args = ap.parse_args(argv)
    app = standalone_app()
    view = make()
    view.setWindowTitle(f"LayerScope - {view.title} (sample data)")
    view.push(sample_snapshot(gpu=args.gpu), force=True)
    return show_or_shoot(app, view, size, args.screenshot, pumps=1)
