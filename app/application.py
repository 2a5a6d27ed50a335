"""Starts the desktop app: ``python main.py [FILE] [--preset NAME] [--device DEV] [--run STEPS]
[--session PATH [--step N]] [--compare A B [...]] [--view NAME] [--size WxH] [--screenshot PATH]``.

Scripted use (docs, smoke checks): with ``--run`` the preset runs for STEPS steps; with
``--session`` a recorded session opens, at ``--step`` (default: its last step); ``--view`` brings
that view's dock to the front; with ``--screenshot`` the whole window is saved to PATH once the
run has finished (or once the window is ready, without ``--run``) and the app exits - 0 when the
run completed (or the session opened), 1 when it did not, 2 for bad input. With ``--compare``
two or more sessions (or one study folder) open in the comparison view, and the screenshot is
taken once the comparison is drawn.

``LAYERSCOPE_STARTUP_PROBE=1`` prints ``shown_at: <epoch>`` when the window first paints and
``ready_at: <epoch>`` when the editor is usable, then exits (``benchmarks/startup.py``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

NO_DISPLAY = "no display: run under a desktop session, Xvfb, or set QT_QPA_PLATFORM=offscreen"


def build_parser() -> argparse.ArgumentParser:
    """The desktop app's own parser (``layerscope [FILE] [options]``); ``layerscope --help`` prints
    its options after the CLI's commands (app/launcher.py)."""
    ap = argparse.ArgumentParser(prog="layerscope", description="LayerScope desktop app "
                                 "(sub-commands such as 'profile' run headless; see 'layerscope --help')")
    ap.add_argument("file", nargs="?", help="a net file (.json) or a session file (.lsession) to open")
    ap.add_argument("--preset", help="open this built-in net (lenet5, alexnet-article, alexnet, vgg11, resnet18)")
    ap.add_argument("--device", help="device for the run: cpu, cuda, cuda:N, mps or auto")
    ap.add_argument("--run", type=int, metavar="STEPS", help="start a run of STEPS steps once the window is ready")
    ap.add_argument("--batch-size", type=int, metavar="B", help="batch size for --run")
    ap.add_argument("--dataset", help="dataset for --run (synthetic, digits, mnist, ... or a folder)")
    ap.add_argument("--raise", dest="raise_docks", metavar="DOCKS", default="",
                    help="comma-separated docks to bring forward before the screenshot "
                         "(time, table, memory, training, power, log, features, run, properties, problems)")
    ap.add_argument("--session", metavar="PATH", help="open this recorded session (.lsession)")
    ap.add_argument("--step", type=int, metavar="N", help="with --session: show the run as it was after step N")
    ap.add_argument("--view", metavar="NAME", help="bring this view to the front (time, table, memory, training, "
                                                   "power, log, features, run, properties, problems, palette)")
    ap.add_argument("--compare", nargs="+", metavar="SESSION",
                    help="compare two or more sessions (.lsession), or one study folder, in the comparison view")
    ap.add_argument("--size", metavar="WxH", help="window size in pixels, e.g. 1280x800")
    ap.add_argument("--screenshot", metavar="PATH", help="save a PNG of the window after the run (or when ready) and exit")
    return ap


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.run is not None and args.run < 1:
        ap.error("--run needs a number of steps >= 1")
    if args.step is not None and not args.session:
        ap.error("--step needs --session")
    if args.session and args.run is not None:
        ap.error("--session shows a recorded run; --run starts a new one: choose one")
    if args.session and args.file:
        ap.error("give the session either as FILE or with --session, not both")
    if args.compare and (args.session or args.run is not None):
        ap.error("--compare shows recorded runs side by side: not with --session or --run")
    args.window_size = None
    if args.size:
        w, _, h = args.size.lower().partition("x")
        if not (w.isdigit() and h.isdigit() and 320 <= int(w) <= 16384 and 240 <= int(h) <= 16384):
            ap.error(f"--size {args.size}: give WIDTHxHEIGHT in pixels, e.g. 1280x800")
        args.window_size = (int(w), int(h))
    return args


def has_display() -> bool:
    """False on Linux without X/Wayland when no Qt platform was chosen (Qt would abort)."""
    if not sys.platform.startswith("linux"):
        return True
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if not has_display():
        print(NO_DISPLAY, file=sys.stderr)
        return 2
    probe = os.environ.get("LAYERSCOPE_STARTUP_PROBE")

    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtWidgets import QApplication

    import engine
    from app import style
    from app.settings import ensure_names

    if args.session and not os.path.isfile(args.session):
        print(f"error: no such session file: {args.session}", file=sys.stderr)
        return 2
    if args.compare:
        from app.controllers.compare_controller import comparable

        missing = [p for p in args.compare if not os.path.exists(p)]
        sources, why = comparable(args.compare)
        if missing or not sources:
            print(f"error: --compare: {f'no such file: {missing[0]}' if missing else why}", file=sys.stderr)
            return 2
    spec = None
    if args.preset:
        try:
            spec = engine.load_preset(args.preset)
        except engine.LayerScopeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    app = QApplication.instance() or QApplication(sys.argv[:1])
    ensure_names()
    style.apply(app)
    from app.main_window import MainWindow

    window = MainWindow()
    if args.view and args.view not in window.docks:
        print(f"error: no view '{args.view}'; views: {', '.join(window.docks)}", file=sys.stderr)
        window.shutdown()
        return 2
    if args.window_size:
        window.resize(*args.window_size)
    if spec is not None:
        window.set_spec(spec)
    exit_code = {"value": 0}

    def finish(code: int) -> None:
        exit_code["value"] = code
        window.shutdown()
        window.close()
        app.exit(code)

    if probe:
        window.first_shown.connect(lambda: print(f"shown_at: {time.time():.4f}", flush=True))

        def on_ready():
            print(f"ready_at: {time.time():.4f}", flush=True)
            QTimer.singleShot(0, lambda: finish(0))

        window.ready.connect(on_ready)

    def raise_view() -> None:
        names = [n.strip() for n in args.raise_docks.split(",")] + [args.view or ""]
        for name in filter(None, names):
            dock = window.docks.get(name)
            if dock is not None:
                dock.show()
                dock.raise_()

    def screenshot() -> bool:
        if not args.screenshot:
            return True
        raise_view()
        app.processEvents()
        if window.canvas is not None:
            window.canvas.fit_view()
        for v in window.views:
            v.refresh()
        app.processEvents()
        ok = window.grab().save(args.screenshot)
        if not ok:
            print(f"error: cannot write the screenshot {args.screenshot}", file=sys.stderr)
        else:
            print(f"screenshot saved to {args.screenshot}")
        return ok

    def on_finished(status: str, message: str) -> None:
        print(f"run {status}" + (f": {message}" if message else ""))
        if args.screenshot:
            # let the final frame and the canvas colours paint before grabbing
            QTimer.singleShot(400, lambda: finish(0 if screenshot() and status == "completed" else 1))

    def on_compared(*_args) -> None:
        raise_view()
        dock = window.docks["compare"]
        dock.show()
        dock.raise_()
        # the comparison gets most of the height; the canvas above shows the speed-up colours
        window.resizeDocks([dock], [int(window.height() * 0.6)], Qt.Vertical)
        runs = window.compare.comparison.get("runs") or []
        print(f"compared {len(runs)} runs, baseline {window.compare.comparison.get('baseline')}", flush=True)
        if args.screenshot:
            # the picture shows the comparison across the bottom row; the docks set aside for it
            # come back before the window closes, so the saved layout is the person's own
            aside = [window.docks[n] for n in ("training", "power", "log", "features") if window.docks[n].isVisible()]
            for d in aside:
                d.hide()

            def shoot() -> None:
                ok = screenshot()
                for d in aside:
                    d.show()
                finish(0 if ok else 1)

            QTimer.singleShot(400, shoot)

    def on_compare_failed(text: str) -> None:
        print(f"error: {text}", file=sys.stderr)
        finish(2)

    def on_ready() -> None:
        if args.compare:
            window.compare.comparison_ready.connect(on_compared)
            window.compare.problem_reported.connect(on_compare_failed)
            window.compare_paths(args.compare)
            return
        if args.session:
            if not window.open_session(args.session):
                print(f"error: cannot open the session {args.session}: {window.log_view.lines[-1][1]}",
                      file=sys.stderr)
                finish(2)
                return
            if args.step is not None:
                window.session_bar.seek(args.step)
            raise_view()
            print(f"session {args.session} at step {window.player.current_step}"
                  + (f", view {args.view}" if args.view else ""), flush=True)
            if args.screenshot and args.view == "roofline":
                # the roofline is computed off the GUI thread (it may measure the ceilings first)
                def roofline_shown(*_a) -> None:
                    raise_view()
                    QTimer.singleShot(300, lambda: finish(0 if screenshot() else 1))

                window.compare.roofline_ready.connect(roofline_shown)
                return
            if args.screenshot:
                QTimer.singleShot(300, lambda: finish(0 if screenshot() else 1))
            return
        if args.view:
            raise_view()
        if args.file:
            if not window.open_path(args.file):
                print(f"error: cannot open {args.file}", file=sys.stderr)
                if args.screenshot:
                    finish(2)
                    return
        if args.run:
            window.run_panel.apply(steps=args.run, device=args.device, batch_size=args.batch_size,
                                   dataset=args.dataset)
            overrides = {}
            if not window.run_panel.feature_layer():
                first_conv = next((n.id for n in window.model.spec_view().nodes if n.kind == "conv2d"), None)
                if first_conv:
                    window.run_panel.set_feature_layer(first_conv)
                    window.feature_view.select_layer(first_conv, emit=False)
                    overrides["feature_node"] = first_conv
            window.run_finished.connect(on_finished)
            if not window.start_run(**overrides):
                print("error: the run could not start (see the log panel)", file=sys.stderr)
                if args.screenshot:
                    QTimer.singleShot(200, lambda: (screenshot(), finish(1)))
            return
        if args.screenshot:
            QTimer.singleShot(300, lambda: finish(0 if screenshot() else 1))

    if not probe:
        window.ready.connect(on_ready)
    window.show()
    code = app.exec()
    return exit_code["value"] if exit_code["value"] else code
