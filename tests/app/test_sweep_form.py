"""The sweep form: the axes it builds, a tiny real sweep (engine.run_sweep, one process per
configuration) stopped, resumed, and opened in the comparison view."""
from __future__ import annotations

import json

import engine


def form(qtbot, tmp_path):
    from app.dialogs.sweep_dialog import SweepDialog

    fixed = {"mode": "train", "device": "cpu", "precision": "fp32", "batch_size": 4, "steps": 50, "epochs": None,
             "dataset": "synthetic", "profile_every": 1, "feature_node": "conv1", "skip_bad_images": False}
    dlg = SweepDialog(engine.load_preset("lenet5"), fixed, tmp_path / "runs", ["cpu"])
    qtbot.addWidget(dlg)
    return dlg


def test_the_form_builds_the_axes_and_fixed_settings(qtbot, tmp_path):
    dlg = form(qtbot, tmp_path)
    # defaults: fp32 and bf16, the run panel's batch and four times it, glibc's allocator
    assert dlg.axes() == {"precision": ["fp32", "bf16"], "batch_size": [4, 16]}
    assert dlg.n_configs() == 4 and dlg.count.text() == "4 configurations"
    dlg.precision_boxes["bf16"].setChecked(False)
    dlg.batches.setText("8, 2 8")
    dlg.cl_boxes["on"].setChecked(True)
    dlg.threads.setText("1")
    # an allocator this machine lacks is shown but cannot be ticked, with the reason
    for name, box in dlg.alloc_boxes.items():
        why = engine.allocator_problem(name)
        assert box.isEnabled() == (why is None) and (why is None or why[1:] in box.toolTip())
    dlg.alloc_boxes["tuned"].setChecked(True)
    assert dlg.axes() == {"batch_size": [8, 2], "channels_last": [False, True], "cpu_allocator": ["default", "tuned"]}
    fixed = dlg.fixed_settings()
    assert fixed["precision"] == "fp32" and fixed["device"] == "cpu" and fixed["threads"] == 1
    assert "feature_node" not in fixed and "epochs" not in fixed and "cpu_allocator" not in fixed
    assert dlg.n_configs() == 8
    # an allocator other than the default alone is still an axis (the engine sets it per process)
    dlg.alloc_boxes["default"].setChecked(False)
    assert dlg.axes()["cpu_allocator"] == ["tuned"]
    dlg.batches.setText("8, x")
    assert "'x' is not a whole number" in dlg.count.text() and not dlg.start_button.isEnabled()
    assert not dlg.start()


def test_a_tiny_sweep_stops_resumes_and_opens_in_the_comparison(qtbot, window, tmp_path):
    window.run_panel.apply(steps=2, batch_size=4, device="cpu")
    dlg = window.open_sweep()
    assert dlg is not None and dlg.isVisible()
    dlg.precision_boxes["bf16"].setChecked(False)
    dlg.batches.setText("4, 8")
    dlg.steps.setValue(2)
    out = tmp_path / "study"
    dlg.out.setText(str(out))
    assert dlg.axes() == {"batch_size": [4, 8]}
    seen = []
    assert dlg.start()
    dlg.call.progress_changed.connect(lambda p: seen.append((p.k, p.n, p.status)))
    # stop as soon as the first configuration runs
    qtbot.waitUntil(lambda: any(s == "running" for _k, _n, s in seen), timeout=120_000)
    assert dlg.status.text().startswith("configuration 1/2")
    dlg.stop_button.click()
    qtbot.waitUntil(lambda: not dlg.running(), timeout=120_000)
    assert dlg.error is None and dlg.status.text().startswith("stopped")
    study = engine.read_study(out)
    assert [c.status for c in study.configs] != ["done", "done"]
    # (the stop may land after the first configuration's two steps ended: that one stays done)
    done_before = {c.label for c in study.configs if c.status == "done"}
    # Start again: the same folder resumes and every configuration completes
    seen.clear()
    window.compare_view.clear()
    assert dlg.start()
    dlg.call.progress_changed.connect(lambda p: seen.append((p.k, p.n, p.status)))
    qtbot.waitUntil(lambda: not dlg.running(), timeout=180_000)
    assert dlg.error is None, dlg.error
    study = engine.read_study(out)
    assert [c.status for c in study.configs] == ["done", "done"]
    assert json.loads((out / "study.json").read_text())["axes"] == {"batch_size": [4, 8]}
    # what ran now is done; what had completed before the stop is skipped, not run again
    assert dlg.statuses == {c.label: "skipped" if c.label in done_before else "done" for c in study.configs}
    # the study opens in the comparison view, labelled as the study labels its configurations
    qtbot.waitUntil(lambda: window.compare_view.data is not None, timeout=60_000)
    assert [r["label"] for r in window.compare_view.data["runs"]] == [c.label for c in study.configs]
    # and the session browser lists it as a study
    window.settings.runs_folder = tmp_path
    window.sessions.browser = None
    browser = window.sessions.browse()
    qtbot.addWidget(browser)
    assert [p for p, _cells in browser.studies] == [out]
    browser.select_paths([out])
    assert browser.compare_button.isEnabled() and browser.selected_studies() == [str(out)]



def test_progress_call_keeps_every_kept_report_in_order_and_collapses_the_rest(qtbot):
    from app.bridge import ProgressCall

    def work(report):
        for k in range(3):
            for step in range(200):
                report((k, "running", step))
            report((k, "done", None), keep=True)
        return "ok"

    call = ProgressCall(work, poll_ms=1)
    got = []
    call.progress_changed.connect(got.append)
    with qtbot.waitSignal(call.finished, timeout=10_000) as blocker:
        call.start()
    assert blocker.args == ["ok", None]
    assert [g for g in got if g[1] == "done"] == [(0, "done", None), (1, "done", None), (2, "done", None)]
    assert got[-1] == (2, "done", None)  # nothing after the last report, nothing out of order
    assert len(got) < 3 * 201  # the running reports collapse between polls
    order = [(k, 1 if s == "done" else 0, step or 0) for k, s, step in got]
    assert order == sorted(order)
