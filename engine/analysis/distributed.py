"""Figures of a data-parallel run, from its rank sessions (``engine.run.distributed``).

``ddp_summary(study_dir)`` reads ``DIR/study.json`` (kind "ddp") and each rank's session:

- per rank: median step ms, samples/s (``run_summary``), all-reduce ms per step (sum of the
  step's bucket all-reduce durations), exposed ms per step (all-reduce time after the backward
  compute ended, which the step waits for), overlap (share of all-reduce time hidden behind the
  backward compute; ``engine.run.distributed.overlap``), and comm/compute ratio = median
  all-reduce ms / median (step ms - exposed ms);
- per step (steps every rank measured): the slowest rank (the straggler: largest ``step_ms``)
  and by how much it trailed the fastest; ``straggler_steps`` counts, per rank, the steps it was
  slowest in;
- per bucket (rank 0's view): bytes, the nodes whose gradients it carries, median all-reduce ms.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from engine.errors import LayerScopeError


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def read_ddp_study(path) -> tuple[Path, dict]:
    """(folder, study.json as a dict) of a study (``engine.sweep.study.read_study``, which checks
    the format); LayerScopeError for anything that is not one."""
    from engine.sweep.study import read_study

    study = read_study(path)
    return study.folder, study.to_dict()


def ddp_summary(study_dir) -> dict:
    """The figures above as a dict: ``{"world_size", "ranks": [...], "steps": [...],
    "buckets": [...], "straggler_steps": {rank: n}}``. LayerScopeError for a folder that is not a
    data-parallel study or a rank session that cannot be read."""
    from engine.analysis.summary import run_summary
    from engine.run.distributed import overlap
    from engine.session import open_session

    folder, study = read_ddp_study(study_dir)
    if study.get("kind") != "ddp":
        raise LayerScopeError(f"{folder} is a {study.get('kind')} study, not a data-parallel run")
    ranks, step_ms = [], {}
    buckets = []
    for c in study["configs"]:
        rank = (c.get("values") or {}).get("rank")
        path = folder / str(c.get("session"))
        row = {"rank": rank, "session": str(path), "status": c.get("status"), "reason": c.get("reason")}
        if not path.exists():
            ranks.append(row)
            continue
        with open_session(path) as r:
            s = run_summary(r)
            steps = {st.step: st.step_ms for st in r.steps() if st.phase != "test" and not st.warmup}
            cts = r.comm_times()
        figures = [overlap(ct) for ct in cts]
        comm = _median([f[0] for f in figures])
        exposed = _median([f[1] for f in figures])
        compute = None if s["step_ms_median"] is None else s["step_ms_median"] - (exposed or 0.0)
        row.update(step_ms=s["step_ms_median"], samples_per_s=s["samples_per_s"], batch=s["batch_size"],
                   device=s["device"], allreduce_ms=comm, exposed_ms=exposed,
                   overlap=_median([f[2] for f in figures]),
                   comm_compute_ratio=(comm / compute) if comm is not None and compute else None,
                   buckets_per_step=_median([len(ct.bucket) for ct in cts]))
        ranks.append(row)
        step_ms[rank] = steps
        if rank == 0 and cts:
            by = {}
            for ct in cts:
                for b, s0, e0, n, nodes in zip(ct.bucket, ct.start_ms, ct.end_ms, ct.bytes, ct.nodes):
                    by.setdefault(b, {"bucket": b, "bytes": n, "nodes": nodes, "ms": []})["ms"].append(e0 - s0)
            buckets = [{**v, "allreduce_ms": _median(v.pop("ms"))} for _, v in sorted(by.items())]
    common = set.intersection(*(set(v) for v in step_ms.values())) if step_ms else set()
    per_step, counts = [], {r: 0 for r in step_ms}
    for st in sorted(common):
        times = {r: step_ms[r][st] for r in step_ms}
        slow = max(times, key=times.get)
        counts[slow] += 1
        per_step.append({"step": st, "slowest_rank": slow, "lag_ms": times[slow] - min(times.values()),
                         "step_ms": times})
    return {"world_size": len(study["configs"]), "ranks": ranks, "steps": per_step, "buckets": buckets,
            "straggler_steps": counts}


def rank_timeline(study_dir, step: int | None = None) -> dict:
    """One step of every rank as slices for a timeline: ``{"step", "ranks": [{"rank", "step_ms",
    "slices": [{"kind": "forward" | "backward" | "all-reduce", "label", "start_ms", "end_ms"}]}]}``.

    Times are ms from the step's compute start on each rank (the probe's stamps for forward and
    backward, ``LayerTimes``; the communication hook's for each bucket, ``CommTimes``). ``step``
    defaults to the profiled step every rank recorded whose slowest rank is the median one (a
    typical step, not the first or an outlier). LayerScopeError for a step not every rank has.
    """
    from engine.session import open_session

    folder, study = read_ddp_study(study_dir)
    data = []
    for c in study["configs"]:
        path = folder / str(c.get("session"))
        if not path.exists():
            continue
        with open_session(path) as r:
            lts = {lt.step: lt for lt in r.layer_times()}
            cts = {ct.step: ct for ct in r.comm_times()}
            ms = {st.step: st.step_ms for st in r.steps() if st.phase != "test"}
        data.append(((c.get("values") or {}).get("rank"), lts, cts, ms))
    common = sorted(set.intersection(*(set(lts) & set(cts) for _, lts, cts, _ in data))) if data else []
    if not common:
        raise LayerScopeError(f"{folder}: no profiled step with all-reduce times is common to every rank")
    if step is None:
        slowest = sorted(common, key=lambda s: max(ms.get(s, 0.0) for *_, ms in data))
        step = slowest[len(slowest) // 2]
    elif step not in common:
        raise LayerScopeError(f"step {step} is not a profiled step of every rank (they share {common[0]}..{common[-1]})")
    ranks = []
    for rank, lts, cts, ms in data:
        lt, ct = lts[step], cts[step]
        slices = []
        for nid, f0, f, b0, b in zip(lt.node_ids, lt.fwd_start_ms, lt.fwd_ms, lt.bwd_start_ms, lt.bwd_ms):
            if f0 is not None and f is not None:
                slices.append({"kind": "forward", "label": nid, "start_ms": f0, "end_ms": f0 + f})
            if b0 is not None and b:
                slices.append({"kind": "backward", "label": nid, "start_ms": b0, "end_ms": b0 + b})
        for b, s0, e0, nodes in zip(ct.bucket, ct.start_ms, ct.end_ms, ct.nodes):
            slices.append({"kind": "all-reduce", "label": f"bucket {b}: {', '.join(nodes)}", "start_ms": s0,
                           "end_ms": e0})
        ranks.append({"rank": rank, "step_ms": ms.get(step), "slices": slices})
    return {"step": step, "ranks": ranks}
