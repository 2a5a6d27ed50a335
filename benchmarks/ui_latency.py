"""Responsiveness of the desktop app during a CPU training run.

Opens the main window, starts a training run of LeNet-5 on the CPU (the worker keeps one core
for the UI by default) and, while it runs, a heartbeat QTimer on the GUI thread fires every
10 ms; a stall is how late each beat came. Prints the distribution and

    ui_stall_p99_ms: X      (target <= 50)

Settings and the session file go to a temporary folder. Without a display the offscreen
platform is used.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--preset", default="lenet5")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--interval-ms", type=float, default=10.0)
    args = ap.parse_args(argv)
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = tempfile.TemporaryDirectory()
    os.environ["XDG_CONFIG_HOME"] = tmp.name

    import numpy as np
    from PySide6.QtCore import QCoreApplication, QTimer
    from PySide6.QtWidgets import QApplication

    from app import style
    from app.main_window import MainWindow
    from app.settings import Settings

    app = QApplication.instance() or QApplication(sys.argv[:1])
    QCoreApplication.setOrganizationName("LayerScopeBenchmark")
    QCoreApplication.setApplicationName("ui_latency")
    style.apply(app)
    settings = Settings()
    settings.runs_folder = Path(tmp.name) / "runs"
    w = MainWindow(settings)
    w._ask_save = lambda: "discard"
    w.show()
    while not w.is_ready:
        app.processEvents()
        time.sleep(0.005)
    w.load_preset(args.preset)
    w.run_panel.apply(steps=args.steps, batch_size=args.batch_size, dataset=args.dataset, device="cpu")
    first_conv = next((n.id for n in w.model.spec_view().nodes if n.kind == "conv2d"), "")
    w.run_panel.set_feature_layer(first_conv)

    beats: list[float] = []
    heartbeat = QTimer()
    heartbeat.setInterval(int(args.interval_ms))
    heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
    result = {}

    def finished(status, message):
        result["status"], result["message"] = status, message
        heartbeat.stop()
        app.quit()

    w.run_finished.connect(finished)
    t0 = time.perf_counter()
    if not w.start_run():
        print("the run could not start", file=sys.stderr)
        return 1
    heartbeat.start()
    app.exec()
    wall = time.perf_counter() - t0
    gaps = np.diff(np.asarray(beats)) * 1000.0
    stalls = np.clip(gaps - args.interval_ms, 0.0, None)
    draws = {type(v).__name__: v.draws for v in w.views}
    steps = w.bridge.run.progress[0] if w.bridge.run else 0
    w.shutdown()
    w.close()
    if result.get("status") != "completed":
        print(f"run {result.get('status')}: {result.get('message')}", file=sys.stderr)
        return 1
    print(f"run: {args.preset} train on cpu, batch {args.batch_size}, {steps} steps in {wall:.1f} s "
          f"({steps / wall:.1f} steps/s), cpus: {os.cpu_count()}")
    print(f"heartbeats: {len(beats)} at {args.interval_ms:g} ms; view redraws: {draws}")
    print(f"stall ms: p50 {np.percentile(stalls, 50):.1f}, p95 {np.percentile(stalls, 95):.1f}, "
          f"max {stalls.max():.1f}")
    print(f"ui_stall_p99_ms: {np.percentile(stalls, 99):.1f}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
