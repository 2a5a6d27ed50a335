"""Runs against a baseline, layer by layer: per-sample times, speed-ups, shares, where the time went.

``compare_runs`` aligns N sessions by node id. Every time is **per sample**: a layer's median
per-step time (over the steady profiled steps, ``layer_summary``) divided by the batch the run
really used (``stats.batch_used``), so runs at different batch sizes compare fairly. A speed-up is
baseline ms / run ms (> 1: the run is faster than the baseline).

``compare(a, b)`` is the older two-run form (per step when the batches match, per sample when
they differ), kept for its callers.
"""
from __future__ import annotations

from pathlib import Path

from engine.analysis.stats import batch_used, percentile, steady_steps
from engine.analysis.summary import as_source, layer_summary, run_summary
from engine.errors import LayerScopeError


def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def _per(v, batch):
    return None if v is None or not batch else v / batch


def _energy_note(ra: dict, rb: dict) -> str | None:
    """Why energy per sample cannot be compared, each distinct reason said once."""
    ea, eb = ra["j_per_sample"], rb["j_per_sample"]
    if ea is None or eb is None:
        missing = [(n, r) for n, e, r in (("A", ea, ra), ("B", eb, rb)) if e is None]
        note = f"energy per sample not available for {' and '.join(n for n, _ in missing)}"
        reasons = [r["power_note"] for _, r in missing if r["power_note"]]
        if len(reasons) == 2 and reasons[0] == reasons[1]:
            reasons = reasons[:1]
            return f"{note} ({reasons[0]})"
        if len(reasons) == 2:
            return f"{note} (A: {reasons[0]}; B: {reasons[1]})"
        return note + (f" ({reasons[0]})" if reasons else "")
    if ra["energy_source"].split(":")[0] != rb["energy_source"].split(":")[0]:
        return (f"energy compares different meters: A {ra['energy_source']}, B {rb['energy_source']} "
                "(GPU board energy against CPU package energy)")
    return None


def compare(a, b) -> dict:
    """Session B against session A (the two-run form; ``compare_runs`` is the N-run one).

    Per layer (matched by node id; unmatched ones have None ratios): ``a_ms``/``b_ms`` (median
    forward + backward, ms per step, or per sample when the batches differ), ``speedup`` = A / B
    (> 1 means B is faster), ``fwd_speedup``/``bwd_speedup`` on the same basis, and the raw
    per-step medians ``a_fwd_ms`` ... ``b_bwd_ms``. Run: ``basis`` ("per step" | "per sample"),
    ``step_speedup`` (on that basis), ``throughput_ratio`` (B / A, samples/s),
    ``energy_per_sample_ratio`` (B / A, < 1 means B uses less energy per sample) and
    ``energy_note`` (why energy cannot be compared, once; None when it can).
    """
    sa, sb = as_source(a), as_source(b)
    ra, rb = run_summary(sa), run_summary(sb)
    ba, bb = ra["batch_size"], rb["batch_size"]
    per_sample = ba is not None and bb is not None and ba != bb
    da, db = (ba, bb) if per_sample else (1, 1)
    la = {r["id"]: r for r in layer_summary(sa)}
    lb = {r["id"]: r for r in layer_summary(sb)}
    ids = list(la) + [i for i in lb if i not in la]

    layers = []
    for i in ids:
        x, y = la.get(i, {}), lb.get(i, {})
        a_ms, b_ms = _per(_tot(x), da), _per(_tot(y), db)
        layers.append({"id": i, "kind": x.get("kind") or y.get("kind"),
                       "a_fwd_ms": x.get("fwd_median_ms"), "b_fwd_ms": y.get("fwd_median_ms"),
                       "a_bwd_ms": x.get("bwd_median_ms"), "b_bwd_ms": y.get("bwd_median_ms"),
                       "a_ms": a_ms, "b_ms": b_ms,
                       "fwd_speedup": _ratio(_per(x.get("fwd_median_ms"), da), _per(y.get("fwd_median_ms"), db)),
                       "bwd_speedup": _ratio(_per(x.get("bwd_median_ms"), da), _per(y.get("bwd_median_ms"), db)),
                       "speedup": _ratio(a_ms, b_ms), "in_a": i in la, "in_b": i in lb})

    def ident(r, path):
        return {"path": str(path), "net": r["net"], "device": r["device"], "device_name": r["device_name"],
                "mode": r["mode"], "precision": r["precision"], "batch_size": r["batch_size"], "status": r["status"],
                "step_ms_median": r["step_ms_median"], "samples_per_s": r["samples_per_s"],
                "j_per_sample": r["j_per_sample"], "energy_source": r["energy_source"]}

    return {"a": ident(ra, getattr(a, "path", "")), "b": ident(rb, getattr(b, "path", "")),
            "basis": "per sample" if per_sample else "per step",
            "step_speedup": _ratio(_per(ra["step_ms_median"], da), _per(rb["step_ms_median"], db)),
            "throughput_ratio": _ratio(rb["samples_per_s"], ra["samples_per_s"]),
            "energy_per_sample_ratio": _ratio(rb["j_per_sample"], ra["j_per_sample"]),
            "energy_note": _energy_note(ra, rb), "layers": layers}


def _tot(row: dict):
    """Median forward + median backward (ms per step) of a ``layer_summary`` row; None if neither."""
    f, b = row.get("fwd_median_ms"), row.get("bwd_median_ms")
    return None if f is None and b is None else (f or 0.0) + (b or 0.0)


# ---- N runs ---------------------------------------------------------------------------------------

# config values a default label is made of, in this order, when they differ between the runs
_LABEL_KEYS = ("net", "device", "precision", "batch", "mode", "threads", "channels_last", "allocator")


def family_of(kind: str | None) -> str:
    """The layer family of a kind from the registry (``engine.kinds()[kind].family``); "other" for
    a kind the registry does not know (an opaque or newer module)."""
    from engine.net.registry import kinds

    k = kinds().get(kind) if kind else None
    return k.family if k is not None else "other"


def _allocator(cfg: dict, meta: dict):
    for src in (cfg, meta):
        for key in ("allocator", "cpu_allocator"):
            if src.get(key) is not None:
                return src[key]
    return None


def _label_part(key: str, value) -> str:
    if key == "batch":
        return f"b{value}"
    if key == "threads":
        return f"t{value}" if value is not None else "t-auto"
    if key == "channels_last":
        return "channels-last" if value else "nchw"
    if key == "allocator":
        return f"alloc-{value}" if value is not None else "alloc-default"
    return str(value)


def default_labels(runs: list[dict]) -> list[str]:
    """Labels from the config values that differ between the runs (e.g. "cpu bf16 b64"), in the
    order ``net device precision batch mode threads channels_last allocator``; the session file's
    stem when nothing differs; made unique with "#2", "#3"."""
    keys = [k for k in _LABEL_KEYS if len({_label_part(k, r.get(k)) for r in runs}) > 1]
    labels = [" ".join(_label_part(k, r.get(k)) for k in keys) if keys else Path(r["session"]).stem or "run"
              for r in runs]
    return _unique(labels)


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        n = seen.get(lab, 0) + 1
        seen[lab] = n
        out.append(lab if n == 1 else f"{lab} #{n}")
    return out


def _measured_layer_energy(src) -> dict:
    """{node id: measured J per sample (forward + backward)} of a session that holds a per-layer
    energy replay (``engine.analysis.layer_energy.layer_energy``, where this LayerScope has it);
    {} otherwise. Only measurements: the run's energy split by time share is not one."""
    import importlib.util

    if not hasattr(src, "node_order_stats") or importlib.util.find_spec("engine.analysis.layer_energy") is None:
        return {}
    from importlib import import_module

    figures = import_module("engine.analysis.layer_energy").layer_energy(src) or {}
    return {nid: f.get("j_per_sample") for nid, f in figures.items() if isinstance(f, dict)}


def _run_entry(src, path: str) -> tuple[dict, list[dict]]:
    """(the run's totals, its ``layer_summary`` rows) of one session."""
    info = src.info
    cfg = info.config or {}
    meta = getattr(src, "meta", None) or {}
    rs = run_summary(src)
    batch = batch_used(info)
    steady = steady_steps(src.steps())
    data_ms = percentile([s.data_ms for s in steady], 50)
    energy = rs["energy"].get(rs["energy_source"]) if rs["energy_source"] else None
    measured = _measured_layer_energy(src)
    comm = getattr(src, "comm_times", None)
    exposed = None
    if comm is not None:  # a data-parallel rank: the all-reduce the step waited for is no layer's
        from engine.run.distributed import overlap

        exposed = percentile([overlap(ct)[1] for ct in comm()], 50)
    rows = [dict(r, j_per_sample_measured=measured.get(r["id"])) for r in layer_summary(src, energy=energy)]
    run = {"session": path, "label": None, "net": rs["net"], "device": rs["device"],
           "device_name": rs["device_name"], "precision": rs["precision"], "batch": batch,
           "batch_requested": rs.get("batch_requested"), "mode": rs["mode"], "threads": cfg.get("threads"),
           "channels_last": cfg.get("channels_last"), "allocator": _allocator(cfg, meta),
           "step_ms": rs["step_ms_median"], "step_ms_per_sample": _per(rs["step_ms_median"], batch),
           "data_ms_per_sample": _per(data_ms, batch),
           "allreduce_ms_per_sample": _per(exposed, batch),
           "samples_per_s": rs["samples_per_s"], "j_per_sample": rs["j_per_sample"],
           "energy_source": rs["energy_source"], "power_note": rs["power_note"],
           "peak_mem_bytes": rs["peak_mem_bytes"], "gpu_mem_max_bytes": rs["gpu_mem_max_bytes"],
           "rss_max_bytes": rs["rss_max_bytes"],
           "fault_share": rs.get("fault_share"), "advice": rs.get("fault_advice"),
           "status": rs["status"], "steady_steps": rs["steady_steps"], "profiled_steps": rs["profiled_steps"]}
    return run, rows


def _layer_entry(row: dict | None, base: dict | None, batch: int | None) -> dict:
    """One run's figures for one layer (all None where the run lacks the layer)."""
    if row is None:
        return {k: None for k in ("fwd_ms_per_sample", "bwd_ms_per_sample", "ms_per_sample", "speedup",
                                  "fwd_speedup", "bwd_speedup", "share", "j_per_sample", "mem_bytes",
                                  "fwd_ms", "bwd_ms")}
    f, b = _per(row["fwd_median_ms"], batch), _per(row["bwd_median_ms"], batch)
    ms = _per(_tot(row), batch)
    return {"fwd_ms_per_sample": f, "bwd_ms_per_sample": b, "ms_per_sample": ms,
            "speedup": _ratio(base["ms_per_sample"], ms) if base else None,
            "fwd_speedup": _ratio(base["fwd_ms_per_sample"], f) if base else None,
            "bwd_speedup": _ratio(base["bwd_ms_per_sample"], b) if base else None,
            "share": row["share"],
            # measured per-layer energy only: the time-split estimate is not a measurement
            "j_per_sample": row.get("j_per_sample_measured"),
            "mem_bytes": row["mem_bytes"], "fwd_ms": row["fwd_median_ms"], "bwd_ms": row["bwd_median_ms"]}


def _families(run: dict, rows: list[dict]) -> dict:
    """Where one run's time went, ms per sample: per layer family (the sum of its layers' median
    forward + backward), data loading (median wait for a batch), in a data-parallel rank the
    exposed all-reduce (median per step of the all-reduce time after the backward compute ended,
    ``engine.run.distributed.overlap``) and the rest of the step."""
    batch = run["batch"] or None
    by_family: dict[str, float] = {}
    layer_sum = 0.0
    for r in rows:
        t = _tot(r)
        if t is None or not batch:
            continue
        fam = family_of(r["kind"])
        by_family[fam] = by_family.get(fam, 0.0) + _per(t, batch)
        layer_sum += t
    rest = None
    allreduce = run.get("allreduce_ms_per_sample")
    if run["step_ms"] is not None and rows and batch:
        rest = max(0.0, run["step_ms"] - layer_sum - (allreduce or 0.0) * batch) / batch
    train = run["mode"] == "train"
    return {"label": run["label"], "by_family": by_family, "data_ms_per_sample": run["data_ms_per_sample"],
            "allreduce_ms_per_sample": allreduce,
            "optimizer_ms_per_sample": rest if train else None,
            "other_ms_per_sample": None if train else rest,
            "step_ms_per_sample": run["step_ms_per_sample"]}


def _baseline_index(baseline, runs: list[dict]) -> int:
    if baseline is None:
        return 0
    if isinstance(baseline, int) and not isinstance(baseline, bool):
        if 0 <= baseline < len(runs):
            return baseline
        raise LayerScopeError(f"baseline {baseline} is not a run index (0..{len(runs) - 1})")
    b = str(baseline)
    for key in ("label", "session"):
        for i, r in enumerate(runs):
            if r[key] == b:
                return i
    for i, r in enumerate(runs):  # a path given another way, or a file name
        try:
            if Path(r["session"]).resolve() == Path(b).resolve() or Path(r["session"]).name == b:
                return i
        except OSError:
            pass
    raise LayerScopeError(f"baseline {b!r} is none of the runs (labels: {', '.join(r['label'] for r in runs)})")


def compare_runs(sources: list, baseline: int | str | None = None, labels: list[str] | None = None) -> dict:
    """N runs aligned by node id, every figure per sample, speed-ups against one baseline run.

    ``sources``: session paths or open ``SessionReader``s (paths are opened and closed here;
    ``SessionError`` for one that cannot be read). ``baseline``: index, label or session path
    (default: the first run); ``labels``: one unique label per run (default ``default_labels``).
    Raises ``LayerScopeError`` for fewer than two runs, a baseline that names none, or labels
    that do not match the runs.

    Returns ``{"baseline": label, "runs": [...], "layers": [...], "only_in": {label: [ids]},
    "families": [...]}``:

    - ``runs[i]``: ``session`` (path), ``label``, ``net``, ``device``, ``device_name``,
      ``precision``, ``batch`` (the batch really used), ``mode``, ``threads``, ``channels_last``,
      ``allocator`` (from the stored config or meta; None when not recorded), ``step_ms`` (median
      per step), ``step_ms_per_sample``, ``data_ms_per_sample`` (median wait for a batch / batch),
      ``samples_per_s``, ``j_per_sample`` and ``energy_source`` (the run's measured energy, None
      with ``power_note`` saying why), ``peak_mem_bytes`` (device allocator peak, CUDA),
      ``gpu_mem_max_bytes``, ``rss_max_bytes``, ``fault_share`` and ``advice`` (the page-fault
      share of the run and what to do, from ``run_summary`` where it gives them), ``status``.
    - ``layers``: the node ids every run has, in the baseline's order: ``id``, ``kind``,
      ``family`` (``family_of``) and ``per_run`` (parallel to ``runs``): ``fwd_ms_per_sample``,
      ``bwd_ms_per_sample`` (None in inference), ``ms_per_sample`` (forward + backward, each the
      median over the steady profiled steps / batch used), ``speedup``/``fwd_speedup``/
      ``bwd_speedup`` (baseline ms / this run's ms; None where a time is missing), ``share``
      (mean forward + backward over the mean step time of that run, as the layer table's),
      ``j_per_sample`` (measured per-layer energy only, from a per-layer energy replay the
      session holds (``engine.analysis.layer_energy``); None otherwise: the run's energy split by
      time share is an estimate and is not reported here), ``mem_bytes``
      (median bytes per step the layer allocated, at the run's batch), ``fwd_ms``/``bwd_ms``
      (per-step medians).
    - ``only_in``: per run label, the ids it has that not every run has (nets that differ).
    - ``families`` (parallel to ``runs``): ``by_family`` {family: ms per sample}, the sum of the
      run's layers' medians per family; ``data_ms_per_sample``; ``optimizer_ms_per_sample`` (train
      runs: median step time minus the sum of the layers' median forward + backward, per sample:
      the optimizer step, loss, zero_grad and framework time between layers - no run records an
      optimizer time of its own; clamped at 0, never negative, since medians of parts need not sum
      to the median of the whole); ``other_ms_per_sample`` (the same remainder for inference
      runs, which have no optimizer); ``step_ms_per_sample``.
    """
    from engine.session import open_session

    sources = list(sources)
    if len(sources) < 2:
        raise LayerScopeError("compare needs at least two sessions")
    if labels is not None and len(labels) != len(sources):
        raise LayerScopeError(f"{len(labels)} labels for {len(sources)} runs")
    if labels is not None and len(set(labels)) != len(labels):
        raise LayerScopeError("run labels must be unique")
    runs, rows_of = [], []
    for s in sources:
        if isinstance(s, (str, Path)):
            with open_session(s) as r:
                run, rows = _run_entry(r, str(s))
        else:
            run, rows = _run_entry(as_source(s), str(getattr(s, "path", "")))
        runs.append(run)
        rows_of.append(rows)
    for run, lab in zip(runs, labels or default_labels(runs)):
        run["label"] = lab
    bi = _baseline_index(baseline, runs)
    by_id = [{r["id"]: r for r in rows} for rows in rows_of]
    common = [i for i in by_id[bi] if all(i in m for m in by_id)]
    layers = []
    for i in common:
        base_row = by_id[bi][i]
        base = _layer_entry(base_row, None, runs[bi]["batch"])
        layers.append({"id": i, "kind": base_row["kind"], "family": family_of(base_row["kind"]),
                       "per_run": [_layer_entry(m.get(i), base, run["batch"])
                                   for m, run in zip(by_id, runs)]})
    common_set = set(common)
    only_in = {run["label"]: [i for i in m if i not in common_set] for run, m in zip(runs, by_id)}
    only_in = {k: v for k, v in only_in.items() if v}
    families = [_families(run, rows) for run, rows in zip(runs, rows_of)]
    return {"baseline": runs[bi]["label"], "runs": runs, "layers": layers, "only_in": only_in,
            "families": families}


def study_runs(folder) -> tuple[list[Path], list[str]]:
    """(session paths, labels) of a study's finished configurations (``engine.sweep.study.read_study``
    of ``folder`` or its study.json): those whose status is "done" and whose session file exists,
    in the study's order, with the study's labels. Raises ``LayerScopeError`` (one line) for a
    folder without a readable study or with fewer than two finished configurations."""
    from engine.sweep.study import read_study

    study = read_study(folder)
    done = [(study.session_path(c), c.label) for c in study.configs if c.status == "done"]
    done = [(p, lab) for p, lab in done if p.is_file()]
    if len(done) < 2:
        raise LayerScopeError(f"{study.path} has {len(done)} finished configuration(s) with a session; "
                              "compare needs two")
    return [p for p, _ in done], _unique([lab for _, lab in done])
