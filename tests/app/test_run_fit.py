"""Issue 9 item 20 in the app: a net and batch that cannot fit are refused at Start with the run
panel's own warning, word for word, before anything runs."""
from __future__ import annotations

import engine


def test_start_refuses_a_batch_that_cannot_fit_with_the_panels_warning(qtbot, window):
    panel = window.run_panel
    panel.apply(steps=1, batch_size=10_000_000, device="cpu")
    panel.mode.setCurrentIndex(panel.mode.findData("benchmark"))  # one random batch of that size: ~380 GiB
    problem = panel.fit_problem()
    assert problem and problem.startswith("needs ≈ ") and "at batch 10000000" in problem
    assert "largest batch that fits ≈ " in problem
    assert panel.fit_warning.isVisibleTo(panel) and panel.fit_warning.text() == f"⚠ {problem}"
    assert not window.start_run()
    assert not window.bridge.is_running()
    errors = [text for level, text in window.log_view.lines if level == "error"]
    assert errors[-1] == f"Cannot start: {problem}"
    # a batch that fits: no warning, and the same panel starts
    panel.apply(batch_size=8)
    assert panel.fit_problem() is None and not panel.fit_warning.isVisibleTo(panel)


def test_threads_and_seed_bounds_reach_the_panel_declaration(qtbot):
    s = engine.RunConfig.setting("seed")
    assert s.hi == 2**63 - 1
    from app.run_panel import setting_spin

    spin = setting_spin("seed")  # a 64-bit bound does not overflow the spin box's C int
    assert spin.maximum() == 2_147_483_647
