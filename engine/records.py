"""The records a run produces. Every sink (session writer, live feed, CLI progress) and the
session reader speak these types, so a view can be drawn from a live run or from a file alike.

Times ``t`` are seconds since the run started (``RunInfo.start_time`` is the wall-clock epoch).
``None`` always means "not measured here" - never a stand-in zero.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LayerRow:
    """Static facts about one node, in topological order (the session's ``layers`` table)."""

    idx: int
    node_id: str
    name: str
    kind: str
    out_shape: tuple[int, ...]
    params: int
    flops: int  # forward FLOPs per sample
    act_bytes: int  # output bytes for the run's batch size and precision
    bwd_flops: int | None = None  # backward FLOPs per sample (FlopCounterMode); None: not recorded


@dataclass
class RunInfo:
    """First record of every run: what is run, where, with which versions."""

    config: dict  # RunConfig as JSON-able dict (net spec included under "net")
    device: dict  # {"id": "cuda:0", "name": ..., "memory_total": bytes|None, ...}
    versions: dict  # {"torch": ..., "cuda": ..., "cudnn": ..., "driver": ..., "python": ..., "layerscope": ...}
    host: str
    start_time: float  # time.time() at start
    layers: list[LayerRow] = field(default_factory=list)


@dataclass
class StepRecord:
    """One optimisation/inference step (or one test-evaluation batch when ``phase == "test"``)."""

    step: int
    t: float
    phase: str  # "train" | "infer" | "benchmark" | "test"
    loss: float | None
    accuracy: float | None
    step_ms: float
    samples_per_s: float
    data_ms: float | None = None  # time spent waiting for the batch (not blamed on a layer)
    epoch: int | None = None
    warmup: bool = False
    profiled: bool = False
    peak_mem_bytes: int | None = None  # device allocator peak during the step (CUDA), else None


@dataclass
class LayerTimes:
    """Per-node timings of one profiled step; lists are parallel to ``node_ids``."""

    step: int
    t: float  # start of the step, seconds since run start
    node_ids: list[str]
    fwd_ms: list[float | None]
    bwd_ms: list[float | None]
    fwd_start_ms: list[float | None]  # offset of each forward slice from the step start
    bwd_start_ms: list[float | None]
    mem_bytes: list[int | None]  # allocator growth across the layer's forward (CUDA) else activation bytes
    peak_bytes: list[int | None] = field(default_factory=list)  # allocator peak during the layer (CUDA)
    # CPU: minor page faults the thread took during each layer's forward (getrusage(RUSAGE_THREAD)
    # at the same stamps); empty where not counted
    minor_faults: list[int | None] = field(default_factory=list)
    fault_ns: float | None = None  # what one minor fault (first touch of a fresh page) costs here, ns
    # training memory on the steps the probe counted it (``engine.run.memory``; empty elsewhere):
    # bytes of the distinct storages each layer created that autograd saved for backward
    # (parameters left out), and of each layer's output tensor
    saved_bytes: list[int | None] = field(default_factory=list)
    out_bytes: list[int | None] = field(default_factory=list)
    # the step's memory timeline events: CPU (saved-tensor accounting) ``(at_node, phase, owner,
    # delta_bytes)``, CUDA (allocator history) ``(t_ms, owner, delta_bytes)``; ``memory_source`` says which
    memory_events: list[tuple] = field(default_factory=list)
    memory_source: str | None = None


@dataclass
class TelemetrySample:
    """One reading of one metric, e.g. ("nvml:0", "power_w", 231.5)."""

    t: float
    source: str  # "nvml:N" | "psutil" | "rapl:NAME"
    metric: str
    value: float


@dataclass
class TelemetryBatch:
    """Readings of one sampler tick, sent together."""

    samples: list[TelemetrySample]


@dataclass
class FeatureMap:
    """One sample's output of one node, reduced: uint8 array (channels, h, w) as bytes.

    The maps are channels ``first_channel .. first_channel + shape[0] - 1`` (0-based) of the
    layer's ``channels_total``; the probe captures at most 32 of them per map.
    """

    step: int
    t: float
    node_id: str
    shape: tuple[int, int, int]
    data: bytes  # uint8, row-major, len == prod(shape)
    lo: float = 0.0  # value that maps to 0
    hi: float = 0.0  # value that maps to 255
    first_channel: int = 0  # 0-based channel of the layer that is data's first map
    channels_total: int | None = None  # the layer's own channel count (None: unknown or a vector)

    def array(self):
        import numpy as np

        return np.frombuffer(self.data, dtype=np.uint8).reshape(self.shape)


@dataclass
class EvalRecord:
    """Held-out evaluation (end of an epoch, or end of run)."""

    step: int
    t: float
    epoch: int | None
    split: str  # "test"
    loss: float
    accuracy: float
    samples: int


@dataclass
class LogRecord:
    """A line for the log panel / terminal (warnings, dataset summary, checkpoint saved ...)."""

    t: float
    level: str  # "info" | "warning" | "error"
    message: str


@dataclass
class RunEnded:
    """Last record of every run, whatever happened."""

    t: float
    status: str  # "completed" | "stopped" | "failed"
    message: str = ""
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"test_accuracy": 0.97, "checkpoint": path}


@dataclass
class StateChanged:
    """The run's state as it changes, with its progress: how the worker tells a GUI what it does.

    ``state``: "running" | "paused" | "evaluating" | "saving"; the end states ("completed",
    "stopped", "failed") come as ``RunEnded``. ``done``/``total``: steps finished and planned,
    warm-up included (``total`` is 0 while the run is still setting up). ``phase``: the run's
    mode ("train" | "infer" | "benchmark"), "test" while evaluating, "checkpoint" while saving.
    Step progress between two changes is the ``step`` of each StepRecord.
    """

    t: float
    state: str
    done: int
    total: int
    phase: str = ""


@dataclass
class TelemetryStatus:
    """Which telemetry the run's sampler reads and why the rest is absent, as probed once when it
    started (``Telemetry.status()``: {source: {"available", "reason", "metrics"?, "domains"?}});
    sent again after it stopped when a metric was dropped while sampling. A session stores the
    last one as meta ``telemetry``."""

    t: float
    status: dict


@dataclass
class CommTimes:
    """One step's gradient all-reduce in a data-parallel run, one entry per DDP bucket in launch
    order: ``start_ms``/``end_ms`` from the step's compute start (launch and completion of the
    bucket's all-reduce), ``bytes`` of the bucket, ``nodes`` whose gradients it carries
    (``engine.run.distributed``)."""

    step: int
    t: float
    bucket: list[int]
    start_ms: list[float]
    end_ms: list[float]
    bytes: list[int]
    nodes: list[list[str]]


RUN_STATES = ("idle", "running", "paused", "evaluating", "saving", "completed", "stopped", "failed")

Record = (RunInfo | StepRecord | LayerTimes | TelemetryBatch | FeatureMap | EvalRecord | LogRecord
          | StateChanged | RunEnded | TelemetryStatus | CommTimes)


@dataclass
class LayerEnergy:
    """Per-layer energy replay of a run (opt-in, after its last step; ``engine.run.layer_energy``):
    ``data`` holds the raw counter windows (J, s, repetitions) per layer and pass and of idle, the
    counter used, or ``reason`` why nothing was measured. Figures: ``engine.analysis.layer_energy``."""

    t: float
    data: dict[str, Any] = field(default_factory=dict)


Record = Record | LayerEnergy
