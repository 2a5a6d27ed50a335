"""Launching a data-parallel run: ``layerscope profile NET --nproc N`` spawns N ranks with
``torch.multiprocessing`` on 127.0.0.1 (or, under ``torchrun``, this process is one rank); each runs
the ordinary ``Run`` into ``DIR/rank<R>.lsession`` and rank 0 writes ``DIR/study.json`` (the
sweep's study format, ``kind: "ddp"``, one configuration per rank). The DDP wrapping and the
all-reduce timing are ``engine.run.distributed``.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from engine.errors import LayerScopeError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_session(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / f"rank{rank}.lsession"


def write_ddp_study(out_dir: Path, cfg_dict: dict, nproc: int, statuses: dict[int, tuple[str, str | None]],
                    command: list[str]) -> Path:
    """``DIR/study.json`` for a data-parallel run (``engine.sweep.study``'s format, ``kind: "ddp"``,
    one configuration per rank: key ``rank<R>``, label ``rank R``, values ``{"rank": R}``)."""
    from engine.sweep.study import STUDY_FILE, Study, StudyConfig, write_study

    net = cfg_dict.get("net") or {}
    configs = [StudyConfig(key=f"rank{r}", label=f"rank {r}", values={"rank": r},
                           session=rank_session(out_dir, r).name, status=statuses.get(r, ("pending", None))[0],
                           reason=statuses.get(r, ("pending", None))[1]) for r in range(nproc)]
    study = Study(path=Path(out_dir) / STUDY_FILE, kind="ddp",
                  net=net.get("name", "") if isinstance(net, dict) else str(net), axes={"rank": list(range(nproc))},
                  fixed={k: v for k, v in cfg_dict.items() if k not in ("net", "out", "rank")}, configs=configs,
                  command=list(command), created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return write_study(study)


def init_rank(rank: int, nproc: int, port: int | None, device_type: str) -> None:
    """Join the process group: gloo on the CPU, NCCL on CUDA; from torchrun's environment when
    ``port`` is None (``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``)."""
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    if port is not None:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group(backend, rank=rank, world_size=nproc)


def rank_device(device: str, rank: int) -> str:
    """Each rank on its own device where there are several: ``cuda`` -> ``cuda:<rank % count>``."""
    if device in ("cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{rank % torch.cuda.device_count()}"
        return "cpu"
    return device


def session_statuses(out_dir: Path, nproc: int) -> dict[int, tuple[str, str | None]]:
    """{rank: ("done" | "failed" | "pending", reason)} from the rank sessions' own status."""
    from engine.session import open_session

    out = {}
    for r in range(nproc):
        p = rank_session(out_dir, r)
        if not p.exists():
            out[r] = ("failed", "no session was written")
            continue
        try:
            with open_session(p) as s:
                status, message = s.meta.get("status"), s.meta.get("message")
        except LayerScopeError as e:
            out[r] = ("failed", str(e))
            continue
        out[r] = ("done", None) if status == "completed" else ("failed", message or status)
    return out


def run_rank(rank: int, nproc: int, port: int | None, cfg_dict: dict, out_dir: str, quiet: bool,
             command: list[str] | None = None) -> dict:
    """One rank: join the group, run the ordinary ``Run`` into ``DIR/rank<R>.lsession``, wait for
    the others, and (rank 0) write ``study.json`` with every rank's status; leave the group.
    Each rank draws its own batches: its data seed is ``seed + rank`` (DDP broadcasts rank 0's
    initial weights, so the weights are the same everywhere)."""
    import torch.distributed as dist

    from engine.cli.output import Progress
    from engine.run.config import RunConfig
    from engine.run.loop import Run

    cfg = RunConfig.from_dict(dict(cfg_dict))
    cfg.device = rank_device(cfg.device, rank)
    cfg.rank = rank
    cfg.seed = cfg.seed + rank
    cfg.out = str(rank_session(Path(out_dir), rank))
    init_rank(rank, nproc, port, "cuda" if cfg.device.startswith("cuda") else "cpu")
    if rank == 0:
        write_ddp_study(Path(out_dir), cfg_dict, nproc, {}, command or sys.argv)
    try:
        sinks = [Progress(quiet=quiet or rank != 0)]
        result = Run(cfg, sinks=sinks).run()
        dist.barrier()  # every rank's session is closed before rank 0 reads their status
        if rank == 0:
            write_ddp_study(Path(out_dir), cfg_dict, nproc, session_statuses(Path(out_dir), nproc), command or sys.argv)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return {"status": result.status, "message": result.message}


def _spawned(rank, nproc, port, cfg_dict, out_dir, quiet, results, command):
    res = run_rank(rank, nproc, port, cfg_dict, out_dir, quiet, command)
    Path(results, f"rank{rank}.json").write_text(json.dumps(res))


def launch(cfg, nproc: int, out_dir: Path, *, quiet: bool = False, command: list[str] | None = None) -> dict[int, dict]:
    """Start ``nproc`` ranks with ``torch.multiprocessing`` (spawn) on 127.0.0.1 and wait for them.

    Returns {rank: {"status", "message"}}; writes ``DIR/study.json`` before (pending) and after.
    Threads: when ``cfg.threads`` is None each rank gets ``max(1, cores // nproc)``.
    """
    import tempfile

    import torch.multiprocessing as mp

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    d = cfg.to_dict()
    if d.get("threads") is None:
        d["threads"] = max(1, (os.cpu_count() or 1) // nproc)
    command = command or sys.argv
    write_ddp_study(out_dir, d, nproc, {}, command)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="layerscope-ddp-") as results:
        try:
            mp.start_processes(_spawned, args=(nproc, port, d, str(out_dir), quiet, results, command), nprocs=nproc,
                               join=True, start_method="spawn")
        except mp.ProcessRaisedException as e:
            raise LayerScopeError(f"a rank failed: {str(e).strip().splitlines()[-1]}") from None
        except mp.ProcessExitedException as e:
            raise LayerScopeError(f"a rank exited: {e}") from None
        out = {}
        for r in range(nproc):
            p = Path(results, f"rank{r}.json")
            out[r] = json.loads(p.read_text()) if p.exists() else {"status": "failed", "message": "no result"}
    write_ddp_study(out_dir, d, nproc, session_statuses(out_dir, nproc), command)
    return out
