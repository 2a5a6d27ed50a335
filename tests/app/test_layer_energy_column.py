"""The run panel's 'Energy per layer' checkbox reaches RunConfig.layer_energy; the layer table shows
a J/sample column only for a run that measured it (here: a simulated counter, labelled so), and the
reason when none could be measured."""
from __future__ import annotations

import functools

import engine
import engine.run.layer_energy as le
from engine.run.layer_energy import SimulatedCounter


def test_layer_energy_checkbox_follows_the_setting(qtbot):
    from app.run_panel import RunPanel

    panel = RunPanel()
    qtbot.addWidget(panel)
    s = engine.RunConfig.setting("layer_energy")
    assert s.flag == "--layer-energy" and s.kind == "bool"
    assert panel.layer_energy.isChecked() is bool(s.default) is False
    assert panel.layer_energy.toolTip().lower().startswith(s.help[:20].lower())
    panel.layer_energy.setChecked(True)
    cfg = engine.RunConfig(net=engine.load_preset("lenet5"), **dict(panel.config_kwargs(), device="cpu"))
    assert cfg.layer_energy is True and cfg.problems() == []


def _records(monkeypatch, counter):
    if counter is not None:
        monkeypatch.setattr(le, "replay_after_run", functools.partial(
            le.replay_after_run, counter=counter, window_s=0.3, repeats=3, cooldown_s=0.01, min_updates=3,
            chunk_s=0.01, nodes={"conv1", "fc3"}))
    else:
        monkeypatch.setattr(le, "open_counter", lambda device: (None, "per-layer energy needs an energy counter: "
                                                                      "none readable here (test)"))
    feed = engine.LiveFeed()
    cfg = engine.RunConfig(net=engine.load_preset("lenet5"), device="cpu", batch_size=8, steps=2, warmup=0,
                           telemetry_hz=0, threads=1, layer_energy=True)
    assert engine.Run(cfg, sinks=[feed]).run().status == "completed"
    return feed.snapshot()


def test_layer_table_energy_column(qtbot, monkeypatch):
    from app.views.layer_table import COLUMNS, LayerTableView

    col = [k for k, _t, _f in COLUMNS].index("j_sample")
    view = LayerTableView()
    qtbot.addWidget(view)
    view.update_snapshot(_records(monkeypatch, None))
    assert view.table.isColumnHidden(col)  # nothing measured: no column, the reason instead
    assert "none readable here" in view.energy_note.text()

    sim = SimulatedCounter(idle_w=50.0, default_w=30.0, default_rep_s=0.01, period_s=0.1)
    view.update_snapshot(_records(monkeypatch, sim))
    assert not view.table.isColumnHidden(col)
    assert "SIMULATED" in view.energy_note.text()
    cells = {view.model.row(i)["id"]: view.model.data(view.model.index(i, col)) for i in range(view.model.rowCount())}
    assert "±" in cells["conv1"] and cells["relu1"] == "–"  # only the replayed nodes have a figure
