"""The probe's compiled stamps (engine.run.native): built and used here, the same figures as the
Python hooks, off on request, and a failed build is said once and not retried."""
import os
import shutil
import stat
import sys

import pytest
import torch

import engine
from engine.run import native
from engine.run.probes import Probe

linux_cxx = pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which(os.environ.get("CXX", "c++"))
                               is None, reason="the native stamps are built on Linux with a C++ compiler")


@pytest.fixture
def fresh_native():
    """Load the native module again in this test (after changing the environment), and again
    after it, so the rest of the suite sees the usual state."""
    native._forget()
    yield
    native._forget()


@linux_cxx
def test_native_stamps_are_built_and_used_here():
    assert native.stamps_module() is not None, native.status()
    assert native.status() == "native"
    model = engine.build_model(engine.load_preset("lenet5"))
    probe = Probe(model, torch.device("cpu"))
    assert probe.hooks == "native" and probe.hooks_note() == "native"
    assert Probe(model, torch.device("cpu"), native=False).hooks == "python"


def _step_order(probe, model, x, y):
    model.zero_grad(set_to_none=True)
    probe.begin_step()
    out = probe.forward(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    probe.end_backward()
    lt = probe.collect(1, 0.0)
    probe.detach()
    return lt, {n: p.grad.clone() for n, p in model.named_parameters()}


@linux_cxx
def test_native_and_python_hooks_hear_the_same_backward():
    """Same nodes hooked, same firing order, same gradients; every layer timed either way (a
    residual net: adds, branches, a projection)."""
    from tests.engine.test_probes import tiny_resnet

    torch.manual_seed(0)
    model = engine.build_model(tiny_resnet()).eval()  # running stats: both steps see the same model
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    got = {}
    for kind in (True, False):
        probe = Probe(model, torch.device("cpu"), native=kind, count_faults=False)
        probe.memory._last = float("inf")  # not a memory-counting step
        got[kind] = _step_order(probe, model, x, y)
    (a, ga), (b, gb) = got[True], got[False]
    assert a._raw.order == b._raw.order and len(a._raw.order) > 0
    assert a._raw.hooked == b._raw.hooked
    assert a.node_ids == b.node_ids
    for f, bw, h in zip(a.fwd_ms, a.bwd_ms, a._raw.hooked):
        assert f is not None and f >= 0 and bw is not None and (bw > 0 or not h)
    for k in ga:
        assert torch.equal(ga[k], gb[k]), k


@linux_cxx
def test_native_pre_hooks_leave_the_models_tensor_hooks_alone():
    module = native.stamps_module()
    s = module.Stamper(2)
    s.reset(False)
    x = torch.ones(3, requires_grad=True)
    with torch.enable_grad():
        s.start()
        a = x * 2.0
        a.register_hook(lambda g: g * 10.0)  # the model's own hook, before the probe's
        s.stamp(0, "a", a)
        b = a * 3.0
        s.stamp(1, "b", b)
        b.register_hook(lambda g: g + 1.0)  # and after it
        s.stamp(1, "b", b)  # the same node again (an identity layer): hooked once
        b.sum().backward()
    fwd, resume, order, bwd, hooked, faults = s.read()
    assert order == [1, 0] and hooked == [True, True] and faults == []
    assert x.grad.tolist() == [(1.0 + 1.0) * 3.0 * 10.0 * 2.0] * 3
    with pytest.raises(IndexError):
        s.stamp(2, "c", b)
    with pytest.raises(TypeError):
        s.stamp(0, "a")


def test_native_off_by_environment(fresh_native, monkeypatch):
    monkeypatch.setenv(native.OFF_ENV, "0")
    assert native.stamps_module() is None
    model = engine.build_model(engine.load_preset("lenet5"))
    probe = Probe(model, torch.device("cpu"))
    assert probe.hooks == "python" and probe.hooks_note() == f"python (off ({native.OFF_ENV}=0))"
    with pytest.raises(RuntimeError, match="native stamps are unavailable"):
        Probe(model, torch.device("cpu"), native=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the native stamps are built on Linux")
def test_a_failed_build_is_said_once_and_not_tried_again(fresh_native, monkeypatch, tmp_path):
    calls = tmp_path / "calls"
    cxx = tmp_path / "broken-c++"
    cxx.write_text(f"#!/bin/sh\necho x >> {calls}\necho 'broken-c++: no such thing' >&2\nexit 1\n")
    cxx.chmod(cxx.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CXX", str(cxx))
    monkeypatch.setenv(native.DIR_ENV, str(tmp_path / "native"))
    said = []
    assert native.stamps_module(lambda level, message: said.append((level, message))) is None
    assert native.status().startswith("its build failed")
    assert said[-1][0] == "warning" and "Python hooks" in said[-1][1]
    tried = calls.read_text().count("x")
    assert tried >= 1
    failed = list((tmp_path / "native").glob("*/failed.txt"))
    assert len(failed) == 1
    native._forget()  # a new process, in effect: the recorded failure is read, nothing is run
    assert native.stamps_module() is None
    assert native.status().startswith("its build failed before") and "to retry" in native.status()
    assert calls.read_text().count("x") == tried
    model = engine.build_model(engine.load_preset("lenet5"))
    assert Probe(model, torch.device("cpu")).hooks_note().startswith("python (its build failed before")


def test_no_compiler_is_said(fresh_native, monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv(native.DIR_ENV, str(tmp_path / "native"))
    assert native.stamps_module() is None
    assert native.status() in (f"no C++ compiler ({tmp_path / 'no-such-compiler'} not found)", "Linux only")


@pytest.fixture
def fake_build(fresh_native, monkeypatch, tmp_path):
    """A build folder under tmp_path whose "compiler" (``cpp_extension.load``) hands back the
    suite's real module, or raises what ``fake_build.error`` holds; ``fake_build.calls`` counts it."""
    from torch.utils import cpp_extension

    real = native.stamps_module()  # the suite's build stands in for the compiler's result
    assert real is not None, native.status()
    native._forget()
    monkeypatch.setenv(native.DIR_ENV, str(tmp_path / "native"))
    tag, name = native._tag()
    state = type("FakeBuild", (), {})()
    state.folder, state.name, state.real, state.calls, state.error = tmp_path / "native" / tag, name, real, [], None

    def load(name, sources, **kw):
        state.calls.append((state.folder / "lock").exists())
        if state.error is not None:
            raise state.error
        return real
    monkeypatch.setattr(cpp_extension, "load", load)
    return state


@linux_cxx
def test_a_killed_build_leaves_nothing_to_wait_on(fake_build):
    """A build killed mid-way leaves torch's lock file (only its creator removes it) and held our
    flock (the kernel releases it with the process): the next run builds at once."""
    import subprocess
    import textwrap

    folder = fake_build.folder
    folder.mkdir(parents=True)
    (folder / "lock").write_text("")  # torch's, left by the killed build
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, sys, time
        f = open({str(folder / "build.lock")!r}, "a+b")
        fcntl.flock(f, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.kill()  # the builder dies holding the lock
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert native.stamps_module() is fake_build.real, native.status()
    assert fake_build.calls == [False]  # torch's stale lock was gone before building
    assert (folder / native.BUILT).exists()


@linux_cxx
def test_a_library_without_its_built_marker_is_not_imported(fake_build):
    """Another process may still be linking the library: without ``built.ok`` it is not imported
    (a half-written file: "file too short"); the build lock is taken and the build finished."""
    folder = fake_build.folder
    folder.mkdir(parents=True)
    (folder / f"{fake_build.name}.so").write_bytes(b"\x7fELF")  # half-linked
    assert native.stamps_module() is fake_build.real, native.status()
    assert len(fake_build.calls) == 1 and (folder / native.BUILT).exists()


@linux_cxx
def test_an_interrupted_build_is_not_recorded_as_failed(fake_build):
    import subprocess

    error = RuntimeError("Error building extension 'x': ninja: build stopped: interrupted by user.")
    error.__cause__ = subprocess.CalledProcessError(130, ["ninja"])
    fake_build.error = error
    assert native.stamps_module() is None
    assert native.status().startswith("its build was interrupted")
    assert not (fake_build.folder / "failed.txt").exists()
    native._forget()
    fake_build.error = None  # the next run builds again
    assert native.stamps_module() is fake_build.real, native.status()
    assert len(fake_build.calls) == 2
