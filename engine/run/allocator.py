"""The CPU memory allocator a run's process uses: the choices, the environment that selects one
and the detection a run records (``RunInfo.config["cpu_allocator"]`` and ``["allocator_env"]``).

The allocator is chosen by the environment the process starts with (glibc reads its ``MALLOC_*``
variables and the dynamic linker reads ``LD_PRELOAD`` before ``main``), so a choice other than
the one a process started with needs a new process: ``engine.sweep`` starts one per configuration.

- ``default``: glibc's own settings (the ``MALLOC_*`` variables below and an allocator preloaded
  by the parent are removed from the child's environment).
- ``tuned``: glibc with ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` raised (see
  ``TUNED_ENV``), so freed activations stay in the heap and are reused by the next step instead
  of being unmapped and faulted in again page by page.
- ``jemalloc`` / ``tcmalloc``: the library preloaded (``LD_PRELOAD``) when it is found on this
  machine (``find_allocator_library``); otherwise the choice is unavailable, with the reason.
"""
from __future__ import annotations

import ctypes.util
import os
import platform
import sys
from pathlib import Path

CPU_ALLOCATORS = ("default", "tuned", "jemalloc", "tcmalloc")

_GIB = 1 << 30
# Why these values: glibc serves a block larger than M_MMAP_THRESHOLD (128 KiB at start, raised
# dynamically to at most 32 MiB) with its own mmap and unmaps it on free, so every large
# activation of every step is faulted in again page by page (resnet18 at batch 16: ~1M minor
# faults in 12 forwards). One activation of a CNN at a desktop batch is tens to hundreds of MiB
# (resnet18's first conv output at batch 16 is 51 MiB; at batch 128, 411 MiB), above any
# threshold glibc chooses itself, so the threshold is set above the largest single tensor we
# expect (4 GiB; glibc 2.36 accepts it, measured: the faults of a 51 MiB tensor loop drop ~10x).
# The trim threshold is raised as far, so the freed top of the heap is kept for the next step
# rather than returned with brk/madvise and faulted in again. The price: the process keeps its
# peak heap until it exits (a profiling run wants exactly that steady state). MALLOC_TOP_PAD_
# was measured too and made no consistent difference, so it is left at glibc's default.
TUNED_ENV = {"MALLOC_MMAP_THRESHOLD_": str(4 * _GIB), "MALLOC_TRIM_THRESHOLD_": str(4 * _GIB)}
# every variable an allocator choice sets or clears
MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX",
               "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")
_LIB_NAMES = {"jemalloc": ("jemalloc",), "tcmalloc": ("tcmalloc", "tcmalloc_minimal")}
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
             "/usr/local/lib", "/opt/homebrew/lib")


def find_allocator_library(name: str) -> str | None:
    """The path of the ``jemalloc`` / ``tcmalloc`` shared library on this machine, or None.

    Looks in the Python environment's own ``lib`` folder (conda ships both), the usual system
    folders (``libNAME.so``, ``.so.2``, ``.so.4``) and ``ctypes.util.find_library``.
    """
    names = _LIB_NAMES.get(name, ())
    dirs = [str(Path(sys.prefix) / "lib"), *_LIB_DIRS]
    for stem in names:
        for d in dirs:
            for suffix in (".so.2", ".so.4", ".so", ".dylib"):
                p = Path(d) / f"lib{stem}{suffix}"
                if p.is_file():
                    return str(p)
    for stem in names:
        found = ctypes.util.find_library(stem)
        if found:
            if os.sep in found:
                return found
            for d in dirs:  # find_library gives the soname; LD_PRELOAD is given a path
                if (Path(d) / found).is_file():
                    return str(Path(d) / found)
            return found
    return None


def allocator_problem(name: str) -> str | None:
    """Why ``name`` cannot be used on this machine (one sentence), or None when it can."""
    if name not in CPU_ALLOCATORS:
        return f"cpu_allocator must be one of {', '.join(CPU_ALLOCATORS)}, not {name!r}"
    if name == "default":
        return None
    if name == "tuned":
        libc = platform.libc_ver()[0]
        if libc != "glibc":
            return f"the tuned allocator sets glibc's malloc; this system's C library is {libc or 'not glibc'}"
        return None
    if sys.platform == "win32":
        return f"{name} is preloaded with LD_PRELOAD, which Windows does not have"
    if find_allocator_library(name) is None:
        pkg = "libjemalloc2" if name == "jemalloc" else "libtcmalloc-minimal4 (gperftools)"
        return f"{name} is not installed here (no lib{name}.so found; e.g. apt install {pkg})"
    return None


def allocator_env(name: str, base: dict | None = None) -> dict[str, str]:
    """The environment for a child process that uses allocator ``name``: ``base`` (default
    ``os.environ``) with every ``MALLOC_VARS`` variable and any preloaded jemalloc/tcmalloc
    removed, then the choice's own settings added. LayerScopeError when ``allocator_problem``."""
    from engine.errors import LayerScopeError

    problem = allocator_problem(name)
    if problem:
        raise LayerScopeError(problem)
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in MALLOC_VARS}
    preload = [p for p in env.pop("LD_PRELOAD", "").split() if not _is_allocator_lib(p)]
    if name == "tuned":
        env.update(TUNED_ENV)
    elif name in ("jemalloc", "tcmalloc"):
        preload.insert(0, find_allocator_library(name))
    if preload:
        env["LD_PRELOAD"] = " ".join(preload)
    return env


def _is_allocator_lib(path: str) -> bool:
    base = os.path.basename(path)
    return "jemalloc" in base or "tcmalloc" in base


def _loaded(stem: str) -> bool | None:
    """Whether a library whose file name contains ``stem`` is mapped in this process (None where
    ``/proc/self/maps`` cannot be read)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            return any(stem in line for line in f)
    except OSError:
        return None


def detect_allocator(environ: dict | None = None) -> tuple[str, dict[str, str]]:
    """The allocator this process runs with and the environment variables that chose it:
    ``("jemalloc"|"tcmalloc"|"tuned"|"custom"|"default", {var: value})``.

    A preloaded library counts only when it is really mapped (``/proc/self/maps``; the dynamic
    linker only warns when a preload fails). ``custom``: ``MALLOC_*`` settings other than
    ``TUNED_ENV``.
    """
    env = os.environ if environ is None else environ
    used = {k: env[k] for k in MALLOC_VARS if k in env}
    preload = env.get("LD_PRELOAD", "")
    for lib in ("jemalloc", "tcmalloc"):
        if lib in preload and _loaded(lib) is not False:
            used["LD_PRELOAD"] = preload
            return lib, used
    if not used:
        return "default", used
    if used == TUNED_ENV:
        return "tuned", used
    return "custom", used
