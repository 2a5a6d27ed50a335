"""The run panel takes its ranges, defaults, choices and tooltips from RunConfig's declared settings."""
from __future__ import annotations

import engine


def test_spin_boxes_and_combos_follow_the_run_config_declaration(qtbot):
    from app.run_panel import SPIN_LIMIT, RunPanel

    panel = RunPanel()
    qtbot.addWidget(panel)
    for spin, name in ((panel.batch, "batch_size"), (panel.length, "steps"), (panel.profile_every, "profile_every")):
        s = engine.RunConfig.setting(name)
        assert spin.minimum() == s.lo
        assert spin.maximum() == (s.hi if s.hi is not None else SPIN_LIMIT)
        assert spin.value() == s.default
        assert spin.toolTip().lower() == s.help.lower()
    for combo, name in ((panel.mode, "mode"), (panel.precision, "precision")):
        s = engine.RunConfig.setting(name)
        assert tuple(combo.itemData(i) for i in range(combo.count())) == s.choices
        assert combo.currentData() == s.default
    # below the declared minimum is not reachable, and what the panel gives is a valid config
    panel.batch.setValue(0)
    assert panel.batch.value() == engine.RunConfig.setting("batch_size").lo
    cfg = engine.RunConfig(net=engine.load_preset("lenet5"), **dict(panel.config_kwargs(), device="cpu"))
    assert cfg.problems() == []


def test_skip_bad_images_checkbox_follows_the_setting(qtbot):
    """The run panel's checkbox has the RunConfig setting's default and help, and reaches the config."""
    from app.run_panel import RunPanel

    panel = RunPanel()
    qtbot.addWidget(panel)
    s = engine.RunConfig.setting("skip_bad_images")
    assert panel.skip_bad_images.isChecked() is bool(s.default)
    assert panel.skip_bad_images.toolTip().lower().startswith(s.help[:20].lower())
    panel.skip_bad_images.setChecked(True)
    assert panel.config_kwargs()["skip_bad_images"] is True
