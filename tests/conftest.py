"""Fixtures for every test, engine and app alike: LayerScope's user folders point into the test's
temporary folder, and a test that leaves a thread running fails (an unjoined worker outliving its
test would crash or hang the whole run)."""
import os
import sys
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

THREAD_GRACE_S = 5.0  # a stopped worker may need a moment to return from its last step


@pytest.fixture(autouse=True)
def isolated_user_folders(tmp_path, monkeypatch):
    """$LAYERSCOPE_HOME under tmp_path (not created), so runs, caches and downloads of a test never
    reach the user's real folders; $LAYERSCOPE_DATA is cleared so it cannot point there either."""
    home = tmp_path / "layerscope-home"
    monkeypatch.setenv("LAYERSCOPE_HOME", str(home))
    monkeypatch.delenv("LAYERSCOPE_DATA", raising=False)
    return home


def _new_threads(before: set) -> list[threading.Thread]:
    # _DummyThread: a foreign thread that once called into Python (Qt's); we did not start it
    return [t for t in threading.enumerate() if t not in before and t.is_alive()
            and not isinstance(t, threading._DummyThread)]


@pytest.fixture(autouse=True)
def no_thread_left():
    """Fail the test when it leaves a Python thread running after a short grace period.

    Threads alive when the test started (pytest-timeout's, a previous session-wide helper) are
    not the test's; this fixture is set up before and torn down after the test's own fixtures,
    so a fixture that joins its worker on teardown passes.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE_S
    left = _new_threads(before)
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = _new_threads(before)
    assert not left, f"threads left running: {[t.name for t in left]}"


NATIVE_TEST_DIR = ROOT / ".native-build"


@pytest.fixture(scope="session", autouse=True)
def session_wide_home(tmp_path_factory):
    """Module- and session-scoped fixtures are set up before ``isolated_user_folders``: give them
    a temporary $LAYERSCOPE_HOME too (a run caches the measured device ceilings in cache_dir())."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LAYERSCOPE_HOME", str(tmp_path_factory.mktemp("layerscope-session-home")))
    mp.delenv("LAYERSCOPE_DATA", raising=False)
    # the probe's native stamps are built once per torch into the repository's ignored folder (not
    # under the per-test home, which would rebuild them for every test; CLI subprocesses inherit it)
    mp.setenv("LAYERSCOPE_NATIVE_DIR", str(NATIVE_TEST_DIR))
    mp.delenv("LAYERSCOPE_NATIVE", raising=False)
    from engine.run.native import stamps_module

    stamps_module()  # built (once, ~15 s) before any test with a time limit runs a probe
    yield
    mp.undo()


@pytest.fixture(params=["native", "python"])
def probe_hooks(request) -> bool:
    """Run a probe test with the compiled stamps (``Probe(..., native=True)``) and with the Python
    hooks (``native=False``): the same figures either way. Where the compiled stamps cannot be
    built (no compiler, not Linux), the native case skips; ``test_native_stamps`` fails there on
    a Linux machine with a compiler."""
    if request.param == "native":
        from engine.run.native import stamps_module, status

        if stamps_module() is None:
            pytest.skip(f"native stamps unavailable: {status()}")
    return request.param == "native"

