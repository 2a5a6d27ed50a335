"""Comparisons and rooflines in the window: which files make a comparison (two or more sessions,
or a study folder), computing ``engine.compare_runs`` and ``engine.roofline`` off the GUI thread
(``app.bridge.BackgroundCall``), and File ▸ Compare…'s dialogs.

The figures are the engine's: this controller only chooses the sources, runs the call and hands
the dict on (``comparison_ready(dict, net)``, ``roofline_ready(dict, title)``)."""
from __future__ import annotations

import os

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFileDialog, QWidget

import engine
from app.bridge import BackgroundCall
from app.controllers.base import Controller

SESSION_FILTER = "LayerScope sessions (*.lsession);;All files (*)"


def comparable(paths) -> tuple[list[str], str]:
    """The sources among ``paths`` a comparison takes: session files (``.lsession``) and study
    folders (``engine.is_study``), in the order given, and "" - or ([], one line why) when they
    make no comparison (fewer than two sessions and no study)."""
    paths = [os.fspath(p) for p in paths]
    studies = [p for p in paths if os.path.isdir(p) and engine.is_study(p)]
    sessions = [p for p in paths if os.path.isfile(p) and p.endswith(".lsession")]
    if studies and len(studies) + len(sessions) > 1:
        return [], "compare one study folder, or two or more session files"
    if studies:
        return studies, ""
    if len(sessions) >= 2:
        return sessions, ""
    if any(os.path.isdir(p) for p in paths):
        return [], "that folder holds no study (no study.json): give two or more session files or a study folder"
    return [], "a comparison needs two or more session files (.lsession) or a study folder"


def _compare_job(sources: list[str], baseline: str | None) -> dict:
    """Worker thread: the comparison (a study: its finished configurations, labelled as the study
    labels them, ``engine.study_runs``) and the net of its first run (for the canvas)."""
    labels = None
    if len(sources) == 1 and os.path.isdir(sources[0]):
        sources, labels = engine.study_runs(sources[0])
    data = engine.compare_runs(sources, baseline=baseline, labels=labels)
    net = None
    runs = data.get("runs") or []
    if runs and runs[0].get("session"):
        try:
            with engine.open_session(runs[0]["session"]) as reader:
                net = (reader.info.config or {}).get("net")
        except (engine.LayerScopeError, OSError):
            net = None
    return {"comparison": data, "net": net if isinstance(net, dict) else None}


def _session_job(path: str) -> dict:
    """Worker thread: a recorded run's page-fault advice (``engine.run_summary``'s ``fault_share``
    and ``fault_advice``, absent when the summary gives none) and its roofline (``engine.roofline``; a
    reason instead when it cannot be drawn)."""
    out: dict = {"advice": None, "fault_share": None, "roofline": None, "roofline_error": None}
    with engine.open_session(path) as reader:
        summary = engine.run_summary(reader)
    out["advice"], out["fault_share"] = summary.get("fault_advice"), summary.get("fault_share")
    try:
        out["roofline"] = engine.roofline(path)
    except (engine.LayerScopeError, AttributeError) as e:  # AttributeError: an engine without rooflines
        out["roofline_error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    return out


class CompareController(Controller):
    """Opens comparisons and rooflines; one of each computed at a time (a newer request wins)."""

    comparison_ready = Signal(object, object)  # compare_runs dict, net dict of its first run (or None)
    roofline_ready = Signal(object, str)       # roofline dict, title (the session's file name)
    advice_ready = Signal(object, object)      # a run's page-fault advice (str or None), fault share (or None)

    def __init__(self, settings, log_view, parent: QWidget):
        super().__init__(parent)
        self._window = parent
        self.settings = settings
        self.log_view = log_view
        self.sources: list[str] = []
        self.comparison: dict | None = None
        self._call: BackgroundCall | None = None
        self._roof_call: BackgroundCall | None = None

    # -- comparisons -------------------------------------------------------------------------------
    def open(self, paths, baseline: str | None = None) -> bool:
        """Compute the comparison of ``paths`` (see ``comparable``) on a worker; False (and one line
        why) when they make none. ``comparison_ready`` follows."""
        sources, why = comparable(paths)
        if not sources:
            self._problem(f"Cannot compare: {why}.")
            return False
        if self._call is not None:
            self._call.cancel()
        self.sources = sources
        self._status(f"Comparing {len(sources)} run{'s' if len(sources) > 1 else ''}…" if len(sources) > 1
                     else f"Comparing the study {os.path.basename(sources[0].rstrip(os.sep))}…")
        self._call = BackgroundCall(lambda: _compare_job(sources, baseline), name="layerscope-compare", parent=self)
        self._call.finished.connect(self._on_compared)
        self._call.start()
        return True

    def set_baseline(self, label: str) -> bool:
        """Compare the same sources again against the run labelled ``label``."""
        return bool(self.sources) and self.open(self.sources, baseline=label)

    def _on_compared(self, result, error) -> None:
        if error:
            self._problem(f"Comparison failed: {error}")
            return
        self.comparison = result["comparison"]
        self._status(f"Compared {len(self.comparison.get('runs') or [])} runs against "
                     f"{self.comparison.get('baseline')}", 5000)
        self.log_view.append("app", f"compared {len(self.comparison.get('runs') or [])} runs "
                                    f"(baseline {self.comparison.get('baseline')})")
        self.comparison_ready.emit(self.comparison, result["net"])

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the comparison and roofline in progress are computed (tests, scripts);
        their signals still come from the GUI thread's timer."""
        ok = True
        for call in (self._call, self._roof_call):
            if call is not None:
                ok = call.wait(timeout) and ok
        return ok

    def busy(self) -> bool:
        return any(c is not None and not c.done and not c.is_cancelled() for c in (self._call, self._roof_call))

    def open_dialog(self) -> None:
        """File ▸ Compare sessions…: two or more session files."""
        start = self.settings.last_folder or os.fspath(self.settings.runs_folder)
        paths, _ = QFileDialog.getOpenFileNames(self._window, "Compare sessions (choose two or more)", start,
                                                SESSION_FILTER)
        if paths:
            self.open(paths)

    def open_study_dialog(self) -> None:
        """File ▸ Compare a study folder…"""
        start = os.fspath(self.settings.runs_folder)
        folder = QFileDialog.getExistingDirectory(self._window, "Compare a study folder", start)
        if folder:
            self.open([folder])

    # -- rooflines ---------------------------------------------------------------------------------
    def roofline(self, session_path: str | None) -> bool:
        """Compute ``engine.roofline`` of a recorded session (and its page-fault advice) on a
        worker; ``advice_ready`` then ``roofline_ready`` follow."""
        if not session_path or not os.path.isfile(session_path):
            return False
        if self._roof_call is not None:
            self._roof_call.cancel()
        path = os.fspath(session_path)
        self._roof_call = BackgroundCall(lambda: _session_job(path), name="layerscope-roofline", parent=self)
        self._roof_call.finished.connect(lambda result, error: self._on_roofline(path, result, error))
        self._roof_call.start()
        return True

    def _on_roofline(self, path: str, result, error) -> None:
        if error:
            self.log_view.append("warning", f"no roofline for {os.path.basename(path)}: {error}")
            return
        self.advice_ready.emit(result["advice"], result["fault_share"])
        if result["roofline"] is None:
            self.log_view.append("warning", f"no roofline for {os.path.basename(path)}: {result['roofline_error']}")
            return
        self.roofline_ready.emit(result["roofline"], os.path.basename(path))

    def shutdown(self) -> None:
        for call in (self._call, self._roof_call):
            if call is not None:
                call.cancel()
