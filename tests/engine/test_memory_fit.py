"""Before a run: the measured estimate (fake tensors, the profiler's saved-tensor accounting)
agrees with a real pass, the dry run prints it with the largest batch that fits, and vgg11 at
batch 4096 is refused on the CPU without allocating (peak RSS of the refusal in a subprocess)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import engine
from engine.run.limits import largest_batch_measured, memory_estimate
from engine.run.memory import SavedAccounting
from tests.engine.test_probes import tiny_resnet

ROOT = Path(__file__).resolve().parents[2]


def _real_saved(spec, batch, precision):
    info = engine.analyze(spec)
    model = engine.build_model(spec, info)
    model.train()
    x = torch.randn(batch, *spec.input.shape)
    acct = SavedAccounting(model, len(model.plan))
    acct.begin(x)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    with amp, acct.hooks():
        model.forward(x, lambda k, nid, out: acct.on_output(k, out))
    return info, sum(acct.saved)


@pytest.mark.parametrize("make", [lambda: engine.resolve_net("lenet5"), tiny_resnet], ids=["lenet5", "resnet"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_fake_pass_measures_what_a_real_pass_saves(make, precision):
    spec = make()
    info, real = _real_saved(spec, 6, precision)
    est = memory_estimate(info, 6, mode="train", precision=precision)
    assert est.measured and real > 0
    if precision == "fp32":
        assert est.activations == real
    else:  # batch norm's meta kernel under bf16 keeps its per-channel statistics in half the bytes
        # the CPU kernel does (fp32): a few bytes per channel, nothing that grows with the batch
        assert abs(est.activations - real) <= 0.01 * real
    # the shape formula (what the estimate was before) is not what autograd keeps
    assert memory_estimate(info, 6, mode="train", precision=precision, measure=False).activations != real
    # linear in the batch: the model's prediction at another batch is the measured figure
    at20 = memory_estimate(info, 20, mode="train", precision=precision)
    predicted = est.intercept + (est.per_sample - info.input_bytes(1, "fp32")) * 20
    assert abs(predicted - (at20.activations + at20.transient)) <= 20


def test_largest_batch_is_checked_by_a_second_pass():
    info = engine.analyze(engine.resolve_net("lenet5"))
    est = memory_estimate(info, 64)
    free = est.fixed + est.intercept + 1000 * est.per_sample
    k = largest_batch_measured(est, info, free)
    assert memory_estimate(info, k).total <= free < memory_estimate(info, k + 1).total
    assert largest_batch_measured(est, info, est.fixed // 2) == 0


def _cli(args, timeout=120):
    code = ("import sys, resource\nfrom engine.cli.main import main\nrc = main(sys.argv[1:])\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
            "print('peak_rss_kb:', hwm[0].split()[1] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "file=sys.stderr)\nsys.exit(rc)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def _peak(err: str) -> int:
    return int([ln for ln in err.splitlines() if ln.startswith("peak_rss_kb:")][0].split()[1]) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS read from /proc")
def test_vgg11_at_batch_4096_is_refused_without_allocating(tmp_path):
    import psutil

    r = _cli(["profile", "vgg11", "--device", "cpu", "--batch-size", "4096", "--mode", "train", "--steps", "1",
              "--telemetry-hz", "0", "-q", "--out", str(tmp_path / "v.lsession")])
    err = [ln for ln in r.stderr.splitlines() if not ln.startswith("peak_rss_kb:") and "Warning" not in ln]
    fits = memory_estimate(engine.analyze(engine.resolve_net("vgg11")), 512).total <= psutil.virtual_memory().available
    if fits:  # pragma: no cover - a machine with over 40 GiB free: nothing to refuse at 512 samples
        pytest.skip("this machine has the memory for the synthetic split's 512 samples")
    assert r.returncode == 2, r.stderr
    assert "needs ≈" in err[-1] and "saved activations (measured)" in err[-1] and "largest batch that fits ≈" in err[-1]
    assert _peak(r.stderr) < 1.5 * 2**30
    assert not (tmp_path / "v.lsession").exists()


def test_dry_run_prints_the_breakdown_and_the_batch_that_fits(capsys):
    from engine.cli.main import main

    assert main(["profile", "lenet5", "--device", "cpu", "--batch-size", "32", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for part in ("weights:", "gradients:", "optimizer state:", "saved activations:", "largest transient:",
                 "input batch:", "total:", "free:", "largest batch that fits:", "measured on fake tensors"):
        assert part in out, out
    assert out.strip().splitlines()[-1] == "fits"
    k = int([ln for ln in out.splitlines() if ln.startswith("largest batch that fits:")][0].split(":")[1])
    assert k > 32
    assert main(["profile", "lenet5", "--device", "cpu", "--batch-size", "50000000", "--mode", "benchmark",
                 "--dry-run"]) == 2
    assert "does not fit: needs ≈" in capsys.readouterr().out
    assert main(["profile", "lenet5", "--device", "cpu", "--lr", "-1", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "lr" in err and "Traceback" not in err
