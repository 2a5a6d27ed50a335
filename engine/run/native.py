"""The probe's compiled stamps and backward hooks (``native_stamps.cpp``): built once, loaded after.

On the CPU a profiled step's Python hooks cost a small net several percent of its step (LeNet-5,
batch 64, one thread: ~90 us of a 7.5 ms step for the hooks, measured by
``benchmarks/probe_costs.py``); the compiled stamper does the same work in one C call per layer
and a C++ pre-hook per autograd node (~10 us per step there). The Python hooks stay as the
fallback, with the same figures, wherever it cannot be built or loaded.

Built by ``torch.utils.cpp_extension.load`` (the system C++ compiler and ninja, about 15 s on
two cores) the first time a CPU probe is made for a given torch, Python and source, into
``<cache_dir>/native/<tag>/`` (``$LAYERSCOPE_NATIVE_DIR`` moves it); later processes import the
built library directly (once ``built.ok`` says its build finished and passed the check). One
process builds at a time (an ``flock`` the kernel releases if the builder dies; the others wait,
then load what it built). A failed build writes its one-line reason there (``failed.txt``) and
is not tried again for that torch (delete the folder to retry); an interrupted one (Ctrl-C) is
not recorded and is built again next time. ``$LAYERSCOPE_NATIVE=0`` turns the
compiled stamper off (the Python hooks are used). Linux only: there ``time.perf_counter_ns`` reads
CLOCK_MONOTONIC, the clock the C++ side reads, which is checked on load.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import sys
import threading
import time
from pathlib import Path

SOURCE = Path(__file__).with_name("native_stamps.cpp")
OFF_ENV = "LAYERSCOPE_NATIVE"  # "0": never build or load; the Python hooks
DIR_ENV = "LAYERSCOPE_NATIVE_DIR"  # where builds are kept (default: cache_dir() / "native")

BUILT = "built.ok"  # written into a build folder once its library was built, imported and checked

_lock = threading.Lock()
_loaded: tuple | None = None  # (module or None, status line)


def _build_root() -> Path:
    where = os.environ.get(DIR_ENV)
    if where:
        return Path(where).expanduser()
    from engine.paths import cache_dir

    return cache_dir() / "native"


def _tag() -> tuple[str, str]:
    """(folder name, module name) of the build for this torch, Python and source."""
    import torch

    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    torch_v = "".join(c if c.isalnum() or c in ".-" else "_" for c in torch.__version__)
    py = f"{sys.version_info.major}{sys.version_info.minor}"
    return f"torch{torch_v}-py{py}-{digest}", f"layerscope_stamps_{digest}"


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(module) -> str | None:
    """Why ``module`` must not be used here, or None: its clock must be ``perf_counter_ns``'s,
    and on a two-node graph its hooks fire once each in backward order, gradients untouched."""
    import torch

    for _ in range(5):
        a = time.perf_counter_ns()
        b = module.now()
        c = time.perf_counter_ns()
        if not a <= b <= c:
            return "its clock is not time.perf_counter_ns's"
    s = module.Stamper(2)
    s.reset(False)
    x = torch.ones(2, requires_grad=True)
    with torch.enable_grad():
        s.start()
        a = x * 2.0
        s.stamp(0, "a", a)
        b = a * 3.0
        s.stamp(1, "b", b)
        b.sum().backward()
    fwd, resume, order, bwd, hooked, faults = s.read()
    if order != [1, 0] or hooked != [True, True] or None in bwd or x.grad.tolist() != [6.0, 6.0]:
        return "its hooks did not fire as expected"
    if not fwd[0] <= fwd[1] <= resume[1] <= fwd[2] <= resume[2] <= bwd[1] <= bwd[0]:
        return "its stamps are out of order"
    return None


def _compile(folder: Path, name: str, log) -> object:
    """Build the module into ``folder`` (the caller holds the folder's build lock) and import it."""
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:  # the pip package's binary, when the venv is not activated
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass
    # torch's own lock (FileBaton, a file that only its creator removes): one left by a killed build
    # would make this build wait forever; holding our lock, nobody else is building here
    with contextlib.suppress(OSError):
        (folder / "lock").unlink()
    if log is not None:
        log("info", f"compiling the probe's native stamps once for this torch (about 15 s; {folder})")
    t0 = time.perf_counter()
    module = cpp_extension.load(name, [str(SOURCE)], extra_cflags=["-O2"], build_directory=str(folder),
                                 is_python_module=True, verbose=False)
    if log is not None:
        log("info", f"native stamps compiled in {time.perf_counter() - t0:.0f} s")
    return module


@contextlib.contextmanager
def _build_lock(folder: Path):
    """Held while a process builds into ``folder``: another one waits, then finds the build done.
    An advisory ``flock`` on ``build.lock``, so the kernel releases it when its holder dies (a
    killed build leaves nothing to wait on)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "build.lock", "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _interrupted(e: BaseException) -> bool:
    """Whether a build error was the build being interrupted (Ctrl-C, a signal), not a compiler
    error: nothing to record, the next run builds again."""
    cause = e.__cause__
    code = getattr(cause, "returncode", None)
    return (isinstance(code, int) and (code < 0 or code == 130)) or "interrupted" in str(e)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _checked(built: Path, name: str) -> tuple:
    """(module, None) for the library at ``built`` when it passes ``_check``, else (None, why)."""
    module = _import(built, name)
    why = _check(module)
    return (module, None) if why is None else (None, why)


def _failed_before(failed: Path, folder: Path) -> str:
    return f"its build failed before: {failed.read_text().strip()} (delete {folder} to retry)"


def _built_or_build(folder: Path, name: str, log):
    """(module, None), or (None, why not): the module built in ``folder`` before, or built now,
    and checked (``_check``). ``BUILT`` is written only after a build was imported and checked,
    so a library another process is still linking is never imported."""
    failed, built, marker = folder / "failed.txt", folder / f"{name}.so", folder / BUILT
    if failed.exists():
        return None, _failed_before(failed, folder)
    if marker.exists() and built.exists():
        return _checked(built, name)
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return None, f"no C++ compiler ({cxx} not found)"
    with _build_lock(folder):
        if failed.exists():  # another process's build failed while this one waited
            return None, _failed_before(failed, folder)
        if marker.exists() and built.exists():  # another process built it while this one waited
            return _checked(built, name)
        try:
            module = _compile(folder, name, log)
        except Exception as e:
            if _interrupted(e):
                return None, f"its build was interrupted: {_first_line(e)}"
            reason = _first_line(e)  # a compiler error, a missing header: recorded, not retried
            with contextlib.suppress(OSError):
                failed.write_text(reason + "\n")
            return None, f"its build failed: {reason}"
        why = _check(module)
        if why is not None:
            return None, why
        with contextlib.suppress(OSError):
            marker.write_text(f"{SOURCE.name} built and checked\n")
        return module, None


def _load(log) -> tuple:
    if os.environ.get(OFF_ENV, "").strip() == "0":
        return None, f"off ({OFF_ENV}=0)"
    if not sys.platform.startswith("linux"):
        return None, "Linux only"
    try:
        tag, name = _tag()
        module, why = _built_or_build(_build_root() / tag, name, log)
        return (module, "native") if module is not None else (None, why)
    except Exception as e:
        return None, _first_line(e)


def stamps_module(log=None):
    """The compiled stamps module (built on first use, see the module docstring), or None where
    it is off or cannot be built or loaded (``status()`` says why). ``log(level, message)``: told
    before and after a build, and when it failed. Thread-safe; the answer is kept per process."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load(log)
            if _loaded[0] is None and log is not None and not _loaded[1].startswith("off"):
                log("warning", f"per-layer probe: Python hooks (native stamps unavailable: {_loaded[1]})")
        return _loaded[0]


def status() -> str:
    """"native", or why the probe uses its Python hooks; "not loaded" before ``stamps_module``."""
    return "not loaded" if _loaded is None else _loaded[1]


def _forget() -> None:
    """Tests: load again on the next ``stamps_module`` call (after changing the environment)."""
    global _loaded
    with _lock:
        _loaded = None


__all__ = ["DIR_ENV", "OFF_ENV", "SOURCE", "stamps_module", "status"]
