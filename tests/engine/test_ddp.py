"""Data-parallel profiling on the CPU: 2 ranks (gloo on 127.0.0.1), a few steps of lenet5."""
from __future__ import annotations

import json

import pytest

import engine
from engine.cli.main import main
from engine.run.distributed import overlap


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "study"
    code = main(["profile", "lenet5", "--nproc", "2", "--steps", "4", "--warmup", "1", "--batch-size", "8",
                 "--bucket-cap-mb", "0.05", "--out", str(out), "-q"])
    assert code == 0
    return out


def test_two_ranks_write_a_session_each_and_a_study(study):
    meta = json.loads((study / "study.json").read_text())
    assert meta["kind"] == "ddp" and [c["status"] for c in meta["configs"]] == ["done", "done"]
    for rank in (0, 1):
        with engine.open_session(study / f"rank{rank}.lsession") as s:
            cfg = s.meta["config"]
            assert (cfg["rank"], cfg["nproc"]) == (rank, 2)
            assert s.meta["status"] == "completed"
            steps = [st.step for st in s.steps() if not st.warmup and st.phase == "train"]
            cts = s.comm_times()
            assert [ct.step for ct in cts] == steps  # one all-reduce record per measured step
            lts = s.layer_times()
            assert lts and all(b is not None for lt in lts for b in lt.bwd_ms)  # per-layer backward as usual
            for ct in cts:
                assert len(ct.bucket) >= 2  # 0.05 MiB buckets split lenet5's gradients
                assert all(e > s0 >= 0 for s0, e in zip(ct.start_ms, ct.end_ms))
                total, exposed, share = overlap(ct)
                assert total > 0 and 0.0 <= share <= 1.0 and 0.0 <= exposed <= max(ct.end_ms)
                # every parameterised layer's gradients travel in exactly one bucket
                carried = [n for nodes in ct.nodes for n in nodes]
                assert sorted(carried) == sorted({"conv1", "conv2", "fc1", "fc2", "fc3"})
            # DDP's backward returns after waiting for the last all-reduce: that wait is no layer's
            # backward; the first layer's backward ends when the last bucket was launched
            by_step = {lt.step: lt for lt in lts}
            for ct in cts:
                lt = by_step[ct.step]
                k = lt.node_ids.index("conv1")
                assert lt.bwd_start_ms[k] + lt.bwd_ms[k] == pytest.approx(max(ct.start_ms), abs=0.05)


def test_summary_of_the_study_puts_ranks_side_by_side(study, capsys):
    assert main(["summary", str(study)]) == 0
    out = capsys.readouterr().out
    assert "2 ranks" in out and "all-reduce ms" in out and "overlap" in out
    assert main(["summary", str(study), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in s["ranks"]] == [0, 1]
    assert all(0.0 <= r["overlap"] <= 1.0 and r["allreduce_ms"] > 0 for r in s["ranks"])
    assert sum(s["straggler_steps"].values()) == len(s["steps"]) == 4
    for st in s["steps"]:
        assert st["step_ms"][str(st["slowest_rank"])] == max(st["step_ms"].values())


def test_bad_data_parallel_input_is_one_line_exit_2(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["profile", "lenet5", "--nproc", "2", "--out", str(f)]) == 2
    assert main(["profile", "lenet5", "--nproc", "2", "--mode", "infer", "--out", str(tmp_path / "d")]) == 2
    assert main(["profile", "lenet5", "--nproc", "0"]) == 2
    assert main(["profile", "lenet5", "--nproc", "2", "--out", str(tmp_path / "run.lsession")]) == 2
    assert main(["sweep", "lenet5", "--nproc", "2", "--batch-size", "4,8", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and not any("Traceback" in e for e in err)
    assert not (tmp_path / "run.lsession").exists() and not (tmp_path / "s").exists()
    assert f.read_text() == "x"


def test_the_same_run_under_torchrun(tmp_path):
    """`torchrun --nproc-per-node 2 -m engine.cli profile ...`: each process is one rank."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    runner = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if runner is None:
        pytest.skip("torchrun is not installed next to this Python")
    out = tmp_path / "tr"
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.run([runner, "--standalone", "--nproc-per-node", "2", "-m", "engine.cli", "profile",
                           "lenet5", "--steps", "2", "--warmup", "1", "--batch-size", "4", "--out", str(out), "-q"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "study.json").read_text())
    assert meta["kind"] == "ddp" and [c["status"] for c in meta["configs"]] == ["done", "done"]
    for rank in (0, 1):
        with engine.open_session(out / f"rank{rank}.lsession") as s:
            assert s.meta["config"]["rank"] == rank and len(s.comm_times()) == 2


def test_the_comparison_takes_the_ranks_as_configurations(study):
    """`compare DIR` of a data-parallel study: one configuration per rank, and the exposed
    all-reduce is its own share of "where the time went" (not the optimizer's)."""
    c = engine.compare_runs(engine.read_study(study).sessions())
    assert len(c["runs"]) == 2 and all(r["mode"] == "train" for r in c["runs"])
    for f, rank in zip(c["families"], (0, 1)):
        with engine.open_session(study / f"rank{rank}.lsession") as s:
            batch = s.meta["config"]["batch_size"]
            exposed = sorted(overlap(ct)[1] for ct in s.comm_times())
        mid = exposed[len(exposed) // 2] if len(exposed) % 2 else (exposed[len(exposed) // 2 - 1] + exposed[len(exposed) // 2]) / 2
        assert f["allreduce_ms_per_sample"] == pytest.approx(mid / batch)
