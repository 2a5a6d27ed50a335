"""Issue 9 items 7, 8, 20 and 25: the batch really used, compare across batch sizes, resource
limits before a run, and the command line's mistyped commands, --version and several sessions."""
import json
import os
import time

import pytest

import engine
from engine.analysis.compare import compare
from engine.analysis.summary import layer_summary, run_summary
from engine.cli.main import build_parser, commands, main
from engine.data import get_dataset
from engine.records import LogRecord, RunInfo, StepRecord
from engine.run.config import CORES, SEED_MAX, THREADS_MAX, RunConfig
from engine.run.limits import memory_estimate, resource_problems
from engine.run.loop import Run
from engine.session import open_session

from _datagen import write_image_folder


def small_net():
    return engine.from_dict({
        "format": "layerscope-net", "version": 1, "name": "small",
        "input": {"channels": 3, "height": 16, "width": 16, "classes": 3},
        "nodes": [{"id": "conv", "kind": "conv2d", "params": {"out_channels": 4, "kernel": 3, "padding": 1}},
                  {"id": "relu", "kind": "relu"},
                  {"id": "flat", "kind": "flatten"},
                  {"id": "fc", "kind": "linear", "params": {"out_features": 3}}]})


# ---- item 7: the batch really used ---------------------------------------------------------------

@pytest.mark.parametrize("mode", ["train", "infer"])
def test_a_batch_larger_than_a_tiny_dataset_is_recorded_as_capped_and_used_everywhere(tmp_path, mode):
    folder = write_image_folder(tmp_path / "imgs", per_class=4)
    net = small_net()
    n_train = len(get_dataset(str(folder), net.input).train)
    assert 1 < n_train < 64
    out = tmp_path / "cap.lsession"
    recs = []
    cfg = RunConfig(net=net, mode=mode, device="cpu", batch_size=64, steps=3, warmup=1, threads=1,
                    telemetry_hz=0, dataset=str(folder), out=str(out))
    result = Run(cfg, [recs.append]).run()
    assert result.status == "completed", result.message
    info = recs[0]
    assert isinstance(info, RunInfo) and info.config["batch_size"] == 64 and info.config["batch_used"] == n_train
    again = RunConfig.from_dict(dict(info.config))  # a recorded config still makes a config: the fact is not a setting
    assert again.batch_size == 64 and not hasattr(again, "batch_used")
    warn = [r.message for r in recs if isinstance(r, LogRecord) and r.level == "warning"]
    assert any(f"batch capped at {n_train}" in m and "64" in m for m in warn), warn
    # activations are stored for the batch used
    conv = next(r for r in info.layers if r.node_id == "conv")
    assert conv.act_bytes == 4 * 16 * 16 * 4 * n_train
    steps = [s for s in recs if isinstance(s, StepRecord) and s.phase == mode]
    assert all(round(s.samples_per_s * (s.step_ms + (s.data_ms or 0)) / 1000) == n_train for s in steps)
    with open_session(out) as r:
        run = run_summary(r)
        rows = {x["id"]: x for x in layer_summary(r)}
        assert r.info.config["batch_used"] == n_train
    assert run["batch_size"] == n_train and run["batch_requested"] == 64
    fc = rows["fc"]  # GFLOP/s at the batch used, not the one asked for
    assert fc["fwd_gflops"] == pytest.approx(fc["flops"] * n_train / (fc["fwd_median_ms"] / 1000) / 1e9)
    assert main(["summary", str(out)]) == 0


def test_summary_says_the_batch_was_capped(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "imgs", per_class=3)
    out = tmp_path / "cap.lsession"
    net = tmp_path / "small.json"
    engine.save(small_net(), net)
    assert main(["profile", str(net), "--device", "cpu", "--threads", "1", "--batch-size", "100", "--steps", "2",
                 "--warmup", "0", "--telemetry-hz", "0", "--dataset", str(folder), "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["summary", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    n = open_session(out).info.config["batch_used"]
    assert f"batch {n} (capped: 100 asked for" in first


def test_out_of_memory_advice_uses_the_batch_used(tmp_path, monkeypatch):
    folder = write_image_folder(tmp_path / "imgs", per_class=4)
    net = small_net()
    n_train = len(get_dataset(str(folder), net.input).train)
    import engine.run.loop as loop

    real = loop.Run._step

    def oom(self, *a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop.Run, "_step", oom)
    result = Run(RunConfig(net=net, device="cpu", batch_size=500, steps=2, warmup=0, threads=1, telemetry_hz=0,
                           dataset=str(folder))).run()
    assert result.status == "failed"
    assert f"at batch {n_train}" in result.message and "500" not in result.message
    assert real is not None


# ---- item 8: compare across batch sizes ---------------------------------------------------------

@pytest.fixture(scope="module")
def batch_sessions(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    paths = {}
    for b in (4, 16):
        paths[b] = d / f"b{b}.lsession"
        assert main(["profile", "lenet5", "--device", "cpu", "--threads", "1", "--batch-size", str(b), "--steps", "5",
                     "--warmup", "1", "--telemetry-hz", "0", "--out", str(paths[b]), "-q"]) == 0
    return paths


def test_compare_across_batch_sizes_is_per_sample(batch_sessions, capsys):
    a, b = batch_sessions[4], batch_sessions[16]
    with open_session(a) as ra, open_session(b) as rb:
        c = compare(ra, rb)
        la = {x["id"]: x for x in layer_summary(ra)}
        lb = {x["id"]: x for x in layer_summary(rb)}
        sa, sb = run_summary(ra), run_summary(rb)
    assert c["basis"] == "per sample"
    for x in c["layers"]:
        ta = la[x["id"]]["fwd_median_ms"] + (la[x["id"]]["bwd_median_ms"] or 0)
        tb = lb[x["id"]]["fwd_median_ms"] + (lb[x["id"]]["bwd_median_ms"] or 0)
        assert x["a_ms"] == pytest.approx(ta / 4) and x["b_ms"] == pytest.approx(tb / 16)
        assert x["speedup"] == pytest.approx((ta / 4) / (tb / 16))
    assert c["step_speedup"] == pytest.approx((sa["step_ms_median"] / 4) / (sb["step_ms_median"] / 16))
    capsys.readouterr()
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "every time is per sample" in out and "b4 ms/sample" in out and "b16 ms/sample" in out
    # the energy reason is said once
    energy = [ln for ln in out.splitlines() if ln.startswith("energy")]
    assert len(energy) == 1
    reason = sa["power_note"]
    assert reason and out.count(reason) == 1


def test_compare_at_one_batch_size_stays_per_step(batch_sessions):
    with open_session(batch_sessions[4]) as ra, open_session(batch_sessions[4]) as rb:
        c = compare(ra, rb)
    assert c["basis"] == "per step"
    assert all(x["speedup"] == pytest.approx(1.0) for x in c["layers"])


# ---- item 20: resource limits before a run ------------------------------------------------------

def test_vgg11_at_batch_4096_is_refused_at_once_without_allocating(capsys):
    import psutil

    rss0 = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    code = main(["profile", "vgg11", "--device", "cpu", "--batch-size", "4096", "--mode", "benchmark",
                 "--steps", "1", "--telemetry-hz", "0", "-q", "--out", os.devnull + ".lsession"])
    took = time.perf_counter() - t0
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "needs ≈" in err and "at batch 4096" in err and "GiB free" in err and "largest batch that fits ≈" in err
    assert took < 30 and psutil.Process().memory_info().rss - rss0 < 2**30


def test_the_refusal_states_the_estimate_and_the_batch_that_fits():
    net = engine.load_preset("vgg11")
    info = engine.analyze(net)
    est = memory_estimate(info, 4096, mode="train")
    p = info.params
    assert est.fixed == p * 4 * 3  # weights, gradients, SGD momentum
    # measured on fake tensors: the saved activations of the layers, the input batch in fp32
    assert est.measured and est.activations == sum(b for _nid, b in est.layers) > 0
    assert est.inputs == info.input_bytes(4096)
    assert memory_estimate(info, 4096, mode="train", optimizer="adam").fixed == p * 4 * 4
    free = est.fixed + est.intercept + 100 * est.per_sample + 1
    k = est.largest_batch(free)
    assert k == 100 and memory_estimate(info, k).total <= free < memory_estimate(info, k + 1).total


def test_a_net_whose_weights_cannot_fit_is_refused_not_a_traceback(tmp_path, capsys):
    import psutil

    # a linear layer of 3*224*224 x 250000 weights: 150 GB of fp32 (more than any test machine has free)
    huge = engine.from_dict({"format": "layerscope-net", "version": 1, "name": "huge",
                             "input": {"channels": 3, "height": 224, "width": 224, "classes": 10},
                             "nodes": [{"id": "flat", "kind": "flatten"},
                                       {"id": "fc", "kind": "linear", "params": {"out_features": 250000}},
                                       {"id": "out", "kind": "linear", "params": {"out_features": 10}}]})
    assert engine.analyze(huge).params * 4 > psutil.virtual_memory().available
    path = tmp_path / "huge.json"
    engine.save(huge, path)
    for mode in ("train", "infer"):
        code = main(["profile", str(path), "--device", "cpu", "--mode", mode, "--batch-size", "1", "--steps", "1",
                     "--dataset", "synthetic", "--telemetry-hz", "0", "-q", "--out", str(tmp_path / f"{mode}.lsession")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
        assert "does not fit even at batch 1" in err and "weights" in err
    # the Run itself refuses too (the app and library callers), before anything is allocated
    result = Run(RunConfig(net=huge, device="cpu", batch_size=1, steps=1, telemetry_hz=0)).run()
    assert result.status == "failed" and "does not fit even at batch 1" in result.message


def test_threads_and_seed_bounds_are_declared_and_enforced(capsys):
    assert RunConfig.setting("threads").hi == THREADS_MAX == 4 * CORES
    assert RunConfig.setting("seed").hi == SEED_MAX == 2**63 - 1
    base = ["profile", "lenet5", "--device", "cpu", "--steps", "1", "--telemetry-hz", "0", "-q"]
    for flag, value in (("--threads", THREADS_MAX + 1), ("--threads", 100000), ("--seed", 2**63),
                        ("--seed", -1)):
        assert main([*base, flag, str(value)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    cfg = RunConfig(net=engine.load_preset("lenet5"), threads=THREADS_MAX + 1, seed=SEED_MAX)
    assert [p for p in cfg.problems() if "threads" in p]
    assert not [p for p in cfg.problems() if "seed" in p]


def test_a_batch_that_fits_once_capped_to_the_dataset_is_not_refused():
    cfg = RunConfig(net=engine.load_preset("lenet5"), device="cpu", batch_size=10**9, steps=1, telemetry_hz=0)
    assert resource_problems(cfg) == []  # 512 synthetic samples per batch fit
    cfg.mode = "benchmark"  # one random batch of the size asked for: does not fit
    assert resource_problems(cfg)


# ---- item 25: commands --------------------------------------------------------------------------

def test_a_mistyped_command_suggests_the_right_one(capsys):
    from app.launcher import main as launcher_main

    for argv, word, hint in ((["sumary", "x.lsession"], "sumary", "summary"), (["profle", "lenet5"], "profle", "profile"),
                             (["exprt"], "exprt", "export")):
        assert launcher_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"unknown command '{word}' (did you mean {hint}?)"
    assert launcher_main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_the_launcher_sends_only_the_apps_own_arguments_to_the_app(tmp_path):
    from app.launcher import HEADLESS, is_headless

    assert HEADLESS == set(commands(build_parser()))
    assert not is_headless([]) and not is_headless(["net.json"]) and not is_headless(["runs/a.lsession"])
    assert not is_headless(["--preset", "lenet5"]) and not is_headless(["--run", "5"])
    assert is_headless(["sumary"]) and is_headless(["--version"]) and is_headless(["--help"])
    assert all(is_headless([c]) for c in HEADLESS)


def test_version(capsys):
    from app.launcher import main as launcher_main

    assert launcher_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"layerscope {engine.__version__}" == "layerscope 0.1.0"


def test_summary_accepts_several_sessions_in_order(batch_sessions, capsys, tmp_path):
    a, b = str(batch_sessions[4]), str(batch_sessions[16])
    capsys.readouterr()
    assert main(["summary", b, a]) == 0
    out = capsys.readouterr().out
    assert out.index(f"== {b} ==") < out.index(f"== {a} ==")
    assert out.count("status: completed") == 2 and "batch 16" in out and "batch 4" in out
    assert main(["summary", a, b, "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [s["run"]["batch_size"] for s in both] == [4, 16]
    assert main(["summary", a, str(tmp_path / "missing.lsession")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1


def test_fit_sentence_names_every_part_the_total_adds_up():
    from engine.run.limits import MemoryEstimate, fit_problem, gib

    g = 2**30
    est = MemoryEstimate(batch=4096, mode="train", weights=g // 2, grads=g // 2, optimizer_state=g // 2,
                         activations=23 * g, inputs=g // 4, per_sample=9 * 2**20, transient=12 * g, measured=True)
    msg = fit_problem(est, 20 * g, "system memory")
    assert msg.startswith(f"needs ≈ {gib(est.total)} for ")
    for part in ("weights", "gradients", "optimizer state", "saved activations", "largest transient", "input batch"):
        assert part in msg, part
    # every part of the breakdown that holds bytes is named; a part of 0 bytes is not
    named = est.what()
    assert all(name.split()[-1] in named for name, b in est.breakdown() if b and name != "total")
    bare = MemoryEstimate(batch=1, mode="infer", weights=g, grads=0, optimizer_state=0, activations=g, inputs=0,
                          per_sample=g)
    assert bare.what() == "weights and activations"
