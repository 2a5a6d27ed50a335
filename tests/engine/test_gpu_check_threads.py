"""``benchmarks/gpu_check.py --device cpu`` compares like with like (issue 9, item 28): the
LayerScope run and the torch.profiler run use the same thread count, and the profiler's setting
does not leak into what runs after it."""
import importlib.util
import os
from pathlib import Path

import torch

import engine

ROOT = Path(__file__).resolve().parents[2]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_run_and_the_profiler_use_the_same_threads(monkeypatch):
    gc = _gpu_check()
    seen = {}

    def fake_profiler(spec, device, mode, precision, batch, reps):
        seen["profiler"] = torch.get_num_threads()
        return {}

    class FakeRun:
        def __init__(self, cfg, sinks):
            seen["run"] = cfg.threads

        def run(self):
            return type("R", (), {"status": "failed", "message": "not run"})()

    monkeypatch.setattr(gc, "_profiler_check", fake_profiler)
    monkeypatch.setattr(gc, "Run", FakeRun)
    spec = engine.load_preset("lenet5")
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    gc.profiler_check(spec, "cpu", "infer", "fp32", 2, want)
    gc.loop_check(spec, "cpu", "infer", "fp32", 2, 3, want)
    assert seen == {"profiler": want, "run": want}
    assert torch.get_num_threads() == before  # restored after the profile
    assert gc.default_threads() == max(1, (os.cpu_count() or 1) - 1)
