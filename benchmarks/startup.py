"""Start-up time of the desktop app: from launching the process to the window's first paint.

Launches ``python main.py --preset lenet5`` several times with ``LAYERSCOPE_STARTUP_PROBE=1``
(the app prints ``shown_at`` on its first paint and ``ready_at`` once torch is loaded and the
editor is built, then exits) and prints the medians:

    startup_s: X.XX     process start -> window shown (target <= 1.0 s on 2 cores)
    ready_s: X.XX       process start -> editor usable (torch imported on a background thread)

Settings go to a temporary folder. Without a display the offscreen platform is used.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def launch_once(env: dict, timeout: float) -> tuple[float, float | None]:
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--preset", "lenet5"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    shown = ready = None
    for line in proc.stdout.splitlines():
        if line.startswith("shown_at:"):
            shown = float(line.split()[1])
        elif line.startswith("ready_at:"):
            ready = float(line.split()[1])
    if shown is None:
        raise SystemExit(f"the app did not report its window (exit {proc.returncode}): "
                         f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return shown - t0, (ready - t0) if ready is not None else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LAYERSCOPE_STARTUP_PROBE="1", XDG_CONFIG_HOME=tmp, XDG_DATA_HOME=tmp)
        if sys.platform.startswith("linux") and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
            env.setdefault("QT_QPA_PLATFORM", "offscreen")
        launch_once(env, args.timeout)  # warm the file cache; not counted
        shown, ready = [], []
        for i in range(args.runs):
            s, r = launch_once(env, args.timeout)
            shown.append(s)
            if r is not None:
                ready.append(r)
            print(f"run {i + 1}: shown {s:.2f} s, ready {r:.2f} s" if r is not None else f"run {i + 1}: shown {s:.2f} s")
    print(f"platform: {env.get('QT_QPA_PLATFORM') or 'default'}, cpus: {os.cpu_count()}")
    print(f"startup_s: {statistics.median(shown):.2f}")
    if ready:
        print(f"ready_s: {statistics.median(ready):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
