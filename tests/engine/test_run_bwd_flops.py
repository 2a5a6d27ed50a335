"""A training run records counted backward FLOPs per layer in its session, and the summary's
training GFLOP/s use them (issue 9, item 6; needs the run/session change of i9-net's report)."""
import pytest

import engine
from engine.analysis.layers import summary_layer_rows
from engine.run.loop import Run, RunConfig
from engine.session.reader import open_session


def test_session_keeps_bwd_flops_and_summary_uses_them(tmp_path):
    spec = engine.load_preset("lenet5")
    out = tmp_path / "r.lsession"
    result = Run(RunConfig(net=spec, device="cpu", batch_size=8, steps=3, warmup=1, threads=1, telemetry_hz=0,
                           out=str(out)), []).run()
    assert result.status == "completed", result
    info = engine.analyze(spec)
    with open_session(out) as s:
        run_info, steps, lts = s.info, s.steps(), s.layer_times()
    by_id = {r.node_id: r for r in run_info.layers}
    assert {n: r.bwd_flops for n, r in by_id.items()} == {la.id: la.bwd_flops for la in info.layers}
    rows = {r["id"]: r for r in summary_layer_rows(run_info, steps, lts)}
    conv1 = rows["conv1"]
    # the first layer: forward + backward = 2x its forward FLOPs (no input gradient), not 3x
    assert conv1["total_gflops"] == pytest.approx(
        2 * conv1["flops"] * 8 / ((conv1["fwd_median_ms"] + conv1["bwd_median_ms"]) / 1000) / 1e9)
