"""How long the editor takes to show the consequences of one edit (ResNet-18).

Prints, as ``name: value`` lines (milliseconds, median of --reps):

    analyze_cold_ms: X   engine.analyze(resnet18) with an empty node cache (every node measured)
    analyze_ms: X        the same with a warm cache (the state the editor works in)
    edit_ms: X           EditorModel.set_param on a conv in the middle of the net, until its
                         validation is done (undo entry, layout, one partial analysis); target <= 30
    edit_invalid_ms: X   the same while another node (layer4_1_conv1) has a bad kernel

Each edit sets a value not used before, so the edited conv and the nodes that see its new
channel count (its batch norm, ReLU and the next conv: 4 nodes) are really measured; the
rest comes from the cache. ``remeasured_per_edit`` says how many nodes that was.
Qt runs offscreen; no window is shown.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EDITED = ("layer3_0_conv1", "out_channels")  # 256 channels, mid-net
BROKEN = ("layer4_1_conv1", "kernel", 99)    # larger than its 7x7 input


def _ms(f, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


def _edits(model, reps: int, start: int) -> tuple[float, float]:
    """Median ms of ``reps`` edits with fresh values, and the mean number of nodes measured per edit."""
    from engine.net.analyze import cache_info

    node, name = EDITED
    times = []
    before = cache_info().misses
    for i in range(reps):
        t = time.perf_counter()
        model.set_param(node, name, start + i)
        model.validation()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times), (cache_info().misses - before) / reps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=21, help="repetitions per figure (median)")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtCore import QCoreApplication

    import engine
    from app.editor.model import EditorModel
    from engine.net.analyze import clear_cache

    app = QCoreApplication.instance() or QCoreApplication(sys.argv[:1])  # noqa: F841 (QObjects need it)
    spec = engine.load_preset("resnet18")

    def cold():
        clear_cache()
        engine.analyze(spec)

    analyze_cold = _ms(cold, max(3, args.reps // 4))
    engine.analyze(spec)
    analyze_warm = _ms(lambda: engine.analyze(spec), args.reps)

    model = EditorModel(spec)
    model.validation()
    edit, measured = _edits(model, args.reps, start=100)
    assert model.validation().ok, model.validation().reason

    node, name, value = BROKEN
    model.set_param(node, name, value)
    assert not model.validation().ok
    edit_invalid, measured_invalid = _edits(model, args.reps, start=100 + args.reps)
    assert [p.node for p in model.validation().problems] == [node]

    print(f"net: resnet18 ({len(spec.nodes)} nodes); edit: {EDITED[0]}.{EDITED[1]} to a new value each time; "
          f"cpus: {os.cpu_count()}; reps: {args.reps}")
    print(f"remeasured_per_edit: {measured:.1f} (invalid net: {measured_invalid:.1f})")
    print(f"analyze_cold_ms: {analyze_cold:.1f}")
    print(f"analyze_ms: {analyze_warm:.2f}")
    print(f"edit_ms: {edit:.1f}")
    print(f"edit_invalid_ms: {edit_invalid:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
