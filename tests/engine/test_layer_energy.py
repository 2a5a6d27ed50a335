"""Per-layer energy by replay (engine.run.layer_energy, engine.analysis.layer_energy): a simulated
counter that updates every 100 ms over a known power profile gives figures within their stated
uncertainty of the truth; a window too short for the counter is lengthened (or flagged); no counter
means absent figures with the reason; the figures survive the session round trip."""
import contextlib
import functools

import pytest
import torch

import engine
import engine.run.layer_energy as le
from engine.analysis.layer_energy import layer_energy_figures, layer_energy_summary, layer_energy
from engine.cli.main import main
from engine.records import LayerEnergy
from engine.run.layer_energy import SimulatedCounter, measure_window, open_counter, replay

BATCH = 8
FAST = dict(window_s=0.3, repeats=3, cooldown_s=0.01, min_updates=3, chunk_s=0.01)


@pytest.fixture(autouse=True)
def one_thread():
    """Replays on one thread (as a run with --threads 1): tests share a small machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lenet():
    spec = engine.load_preset("lenet5")
    info = engine.analyze(spec)
    return spec, info, engine.build_model(spec, info)


def _profile(info):
    """A known profile: every layer its own power and repetition time (not a multiple of the
    100 ms update period, so windows fall at varied phases of it)."""
    power, reps = {}, {}
    for i, layer in enumerate(info.layers):
        power[f"{layer.id}/fwd"], reps[f"{layer.id}/fwd"] = 30.0 + 4 * i, 0.011 + 0.0013 * i
        power[f"{layer.id}/fwd+bwd"], reps[f"{layer.id}/fwd+bwd"] = 45.0 + 3 * i, 0.023 + 0.0017 * i
    return SimulatedCounter(idle_w=50.0, power_w=power, rep_s=reps, period_s=0.1)


def _replay(lenet, sim, train=True, **kw):
    spec, info, model = lenet
    params = {**FAST, **kw}
    return replay(model, info, spec, device=torch.device("cpu"), batch=BATCH, precision="fp32",
                  autocast=contextlib.nullcontext, train=train, channels_last=False, counter=sim, clock=sim,
                  **params)


def test_simulated_profile_within_stated_uncertainty(lenet):
    sim = _profile(lenet[1])
    fig = layer_energy_figures(_replay(lenet, sim))
    assert fig["available"] and fig["simulated"]
    assert abs(fig["idle_w"] - 50.0) <= max(fig["idle_w_uncertainty"], 1e-9)
    assert set(fig["layers"]) == {layer.id for layer in lenet[1].layers}
    for node, r in fig["layers"].items():
        fwd = sim.truth(f"{node}/fwd") / BATCH
        total = sim.truth(f"{node}/fwd+bwd") / BATCH
        assert abs(r["fwd_j_per_sample"] - fwd) <= r["fwd_uncertainty"], node
        assert abs(r["j_per_sample"] - total) <= r["j_uncertainty"], node
        assert abs(r["bwd_j_per_sample"] - (total - fwd)) <= r["bwd_uncertainty"], node
        # the interval is informative, not a blanket: well under the figure itself
        assert r["j_uncertainty"] < 0.5 * total, node
        assert not r["short"] and not r["within_noise"]
    # the sum over layers is the sum of the truths (no whole-step figure: coverage absent, not 0)
    assert fig["sum_j_per_sample"] == pytest.approx(sum(r["j_per_sample"] for r in fig["layers"].values()))
    assert fig["coverage"] is None


def test_idle_is_subtracted_and_coverage_uses_the_run_figure(lenet):
    sim = _profile(lenet[1])
    data = _replay(lenet, sim, train=False)
    fig = layer_energy_figures(data, run_j_per_sample=2.0, run_energy={"seconds": 1.0, "samples": 100})
    node = lenet[1].layers[0].id
    # inference: forward only, backward absent (None, not 0)
    assert fig["layers"][node]["bwd_j_per_sample"] is None
    assert fig["layers"][node]["j_per_sample"] == pytest.approx(sim.truth(f"{node}/fwd") / BATCH, rel=0.1)
    assert fig["coverage"] == pytest.approx(fig["sum_j_per_sample"] / 2.0)
    # above idle: 2.0 J/sample minus 50 W x 1 s / 100 samples
    assert fig["coverage_above_idle"] == pytest.approx(fig["sum_j_per_sample"] / 1.5)
    # without the idle subtraction the first layer's figure would be far off the truth
    w = data["layers"][0]["windows"][0]
    assert w["joules"] / w["reps"] / BATCH > 2 * sim.truth(f"{node}/fwd") / BATCH


def test_too_short_window_is_lengthened_to_the_counter_updates():
    sim = SimulatedCounter(idle_w=50.0, default_w=30.0, default_rep_s=0.002, period_s=0.1)

    def work():
        sim.ran("x", 2)
        return 2
    w = measure_window(sim, sim, work, window_s=0.05, min_updates=3)
    assert w["updates"] >= 3 and w["seconds"] >= 0.29  # 0.05 s asked: lengthened to 3 updates of 100 ms
    assert (w["joules"] - 50.0 * w["seconds"]) / w["reps"] == pytest.approx(sim.truth("x"), rel=0.05)
    # capped below the updates asked for: measured, but flagged short
    capped = measure_window(sim, sim, work, window_s=0.05, min_updates=5, max_window_s=0.15)
    assert capped["updates"] < 5
    fig = layer_energy_figures({"counter": "simulated", "batch": 1, "train": False, "min_updates": 5,
                                "idle": [{"seconds": 1.0, "joules": 50.0}] * 3,
                                "layers": [{"node_id": "x", "pass": "fwd", "windows": [capped] * 3}]})
    assert fig["layers"]["x"]["short"]


def test_counter_that_never_updates_gives_no_figures(lenet):
    class Stuck(SimulatedCounter):
        def read(self):
            return 0.0
    sim = Stuck()
    data = _replay(lenet, sim, nodes={"conv1"})
    fig = layer_energy_figures(data)
    assert not fig["available"] and "did not change" in fig["reason"]
    assert fig["layers"] == {} and fig["sum_j_per_sample"] is None


def test_no_counter_is_absent_with_the_reason(tmp_path):
    counter, why = open_counter(torch.device("cpu"), powercap_root=tmp_path / "no-powercap")
    assert counter is None
    assert why.startswith("per-layer energy needs an energy counter: none readable here (NVML absent")
    assert "RAPL not available" in why
    fig = layer_energy_figures(le.absent(why, batch=8, train=True))
    assert fig["requested"] and not fig["available"] and fig["reason"] == why
    assert fig["layers"] == {} and fig["idle_w"] is None and fig["coverage"] is None
    # a run that never asked: nothing requested, nothing measured
    assert not layer_energy_figures(None)["requested"]


def test_cli_layer_energy_without_counter_completes(tmp_path, capsys):
    from engine.run.layer_energy import RaplCounter

    counter, _ = RaplCounter.open()
    if counter is not None:
        counter.close()
        pytest.skip("RAPL is readable here: the replay would measure for real (see benchmarks/gpu_check.py)")
    out = tmp_path / "le.lsession"
    assert main(["profile", "lenet5", "--device", "cpu", "--steps", "2", "--warmup", "0", "--batch-size", "8",
                 "--telemetry-hz", "0", "--layer-energy", "--out", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "layer energy: per-layer energy needs an energy counter: none readable here" in text
    assert main(["summary", str(out)]) == 0
    assert "none readable here" in capsys.readouterr().out
    with engine.open_session(out) as r:
        assert r.status == "completed" and len(r.steps()) == 2
        assert layer_energy(r) == {}
        assert r.layer_energy_data()["reason"].startswith("per-layer energy needs an energy counter")


def test_session_round_trip_and_one_source(tmp_path, monkeypatch):
    sim = SimulatedCounter(idle_w=40.0, default_w=25.0, default_rep_s=0.004, period_s=0.1)
    monkeypatch.setattr(le, "replay_after_run", functools.partial(le.replay_after_run, counter=sim, **FAST))
    out = tmp_path / "sim.lsession"
    records = []
    cfg = engine.RunConfig(net=engine.load_preset("lenet5"), device="cpu", batch_size=BATCH, steps=2, warmup=0,
                           telemetry_hz=0, layer_energy=True, out=str(out))
    assert engine.Run(cfg, sinks=[records.append]).run().status == "completed"
    phases = [r.phase for r in records if isinstance(r, engine.StateChanged)]
    assert "layer energy 1/12" in phases and "layer energy 12/12" in phases
    sent = [r for r in records if isinstance(r, LayerEnergy)]
    assert len(sent) == 1 and isinstance(records[-1], engine.RunEnded)
    with engine.open_session(out) as r:
        stored = r.layer_energy_data()
        from_file = layer_energy_summary(r)
        replayed = list(r.records())
    for key in ("counter", "batch", "train", "simulated", "window_s", "repeats"):
        assert stored[key] == sent[0].data[key]
    assert stored["idle"] == sent[0].data["idle"] and len(stored["idle"]) == 3
    assert stored["layers"] == sent[0].data["layers"]  # every window, exactly as measured
    from_records = layer_energy_summary(records)
    feed = engine.LiveFeed()
    for rec in replayed:
        feed(rec)
    from_snapshot = engine.snapshot_layer_energy(feed.snapshot())
    truth = sim.truth("conv1/fwd+bwd") / BATCH
    for fig in (from_file, from_records, from_snapshot):
        assert fig["simulated"] and fig["available"]
        assert fig["layers"]["conv1"]["j_per_sample"] == pytest.approx(from_file["layers"]["conv1"]["j_per_sample"])
        assert abs(fig["layers"]["conv1"]["j_per_sample"] - truth) <= fig["layers"]["conv1"]["j_uncertainty"]
