"""The per-layer roofline of a run: how close each layer's forward and backward come to the
device's measured ceilings (``engine.run.ceilings``).

Per layer and pass, at the batch the run really used (``stats.batch_used``):

- FLOPs: the layers table's ``flops`` (forward) or ``bwd_flops`` (backward), per sample as
  PyTorch's FlopCounterMode counted them, x batch.
- bytes moved, every tensor at the run's precision (4 bytes fp32, 2 bf16/fp16; W = params,
  X = every input activation, Y = the output activation, per step):
  forward = W + X + Y (read weights and inputs, write the output);
  backward = 2 W + 2 X + Y (read the output gradient dY, the inputs X and the weights W; write
  the input gradient dX and the weight gradient dW); a layer fed by the net input alone
  computes no dX: W + X + Y (read dY and X, write dW). An idealised minimum: caches and fused
  kernels may move less, re-reads more.
- arithmetic intensity = FLOPs / bytes (FLOP/byte); achieved FLOP/s = FLOPs / the median time.
- the roof at that intensity = min(peak FLOP/s, intensity x bandwidth). The peak is the best of
  the run's precision and fp32 (a reduced-precision run still runs in fp32 the layers autocast
  leaves there); the bandwidth is the best copy bandwidth over all buffer sizes (cache
  included: small layers' tensors stay in cache, so DRAM bandwidth is not their ceiling;
  ``dram_bandwidth_bytes_s`` is given for the plot).
- ``pct_of_roof`` = achieved / roof (a fraction); ``bound``: "overhead-bound" when
  ``pct_of_roof`` < ``OVERHEAD_FRACTION`` (10 %: far below both roofs, as tiny layers are when
  dispatch and framework time dominate), else "memory-bound" when intensity x bandwidth < peak
  (left of the ridge), else "compute-bound"; "no compute" for a pass with no FLOPs (flatten,
  ReLU and pooling count none), whose intensity and rate are None.

A layer whose achieved rate is above its roof (the ceiling measured low on a busy machine, a
convolution algorithm that needs fewer FLOPs than counted, e.g. Winograd on a GPU) is reported
as measured, with ``above_roof`` True; the ceilings then did not hold and the output lists it.
"""
from __future__ import annotations

from engine.analysis.stats import batch_used
from engine.analysis.summary import as_source, layer_summary

OVERHEAD_FRACTION = 0.10
BYTES_PER_ELEMENT = {"fp32": 4, "bf16": 2, "fp16": 2}


def session_ceilings(src) -> dict | None:
    """The ceilings a session recorded at run start (meta ``ceilings``, or ``device["ceilings"]``
    as the run stores them); None when it has none (recorded before ceilings were, or a
    measurement that failed: then ``{"unavailable": reason}`` is returned as is)."""
    meta = getattr(src, "meta", None) or {}
    c = meta.get("ceilings") or (src.info.device or {}).get("ceilings")
    return c if isinstance(c, dict) else None


def _ceilings_now(device: str | None, precision: str, threads) -> tuple[dict | None, str]:
    """Ceilings measured now on this machine for the session's device, or (None, why not)."""
    from engine.run.ceilings import measure_ceilings

    try:
        c = measure_ceilings(device or "cpu", precision or "fp32", threads).to_dict()
    except Exception as e:  # the session's device is not on this machine
        return None, f"not available: the session has none and {device} cannot be measured here ({e})"
    how = "this machine's cached measurement" if c["source"] != "measured" else "measured now on this machine"
    return c, f"{how} (the session recorded none)"


def _numel(shape) -> int:
    n = 1
    for d in shape or ():
        n *= int(d)
    return n


def _input_elements(src) -> dict:
    """{node id: (elements per sample of all its inputs, whether its only input is the net
    input)}, from the stored net spec; empty when the session has no readable spec (inputs are
    then left out of the bytes and each layer's ``inputs_known`` says so)."""
    from engine.net.spec import INPUT_ID, from_dict

    net = (src.info.config or {}).get("net")
    if not isinstance(net, dict):
        return {}
    try:
        spec = from_dict(net)
    except Exception:
        return {}
    shapes = {r.node_id: _numel(r.out_shape) for r in src.info.layers}
    i = spec.input
    shapes[INPUT_ID] = int(i.channels) * int(i.height) * int(i.width)
    out = {}
    for k, n in enumerate(spec.nodes):
        ins = spec.inputs_of(k)
        if all(x in shapes for x in ins):
            out[n.id] = (sum(shapes[x] for x in ins), set(ins) == {INPUT_ID})
    return out


def _point(flops, nbytes, ms, peak, bw) -> dict:
    """One pass of one layer on the roofline."""
    if not flops or not nbytes:
        return {"flops": flops or 0, "bytes": nbytes, "intensity": None, "ms": ms, "achieved_flop_s": None,
                "roof_flop_s": None, "pct_of_roof": None, "bound": "no compute", "above_roof": False}
    intensity = flops / nbytes
    achieved = flops / (ms / 1000.0) if ms else None
    roof = min(peak, intensity * bw) if peak and bw else None
    pct = achieved / roof if achieved is not None and roof else None
    if pct is None:
        bound = None
    elif pct < OVERHEAD_FRACTION:
        bound = "overhead-bound"
    elif intensity * bw < peak:
        bound = "memory-bound"
    else:
        bound = "compute-bound"
    return {"flops": flops, "bytes": nbytes, "intensity": intensity, "ms": ms, "achieved_flop_s": achieved,
            "roof_flop_s": roof, "pct_of_roof": pct, "bound": bound, "above_roof": bool(pct is not None and pct > 1)}


def above_roof_note(above: list[str], kinds: dict[str, str]) -> str | None:
    """One sentence on the layers whose achieved FLOP/s is over the measured roof (None when
    none is; the first six named, the table has them all): either the ceilings were measured low
    (a busy machine; they are cached per machine, so measure again on an idle one), or - for
    convolutions - the library ran a fast algorithm
    (Winograd, FFT) that does less arithmetic than the direct convolution whose FLOPs are counted
    (measured here on one AVX-512 core: 3x3 convolutions at 110-118 GFLOP/s against a 101 GFLOP/s
    matmul)."""
    if not above:
        return None
    named = ", ".join(above[:6]) + (f" and {len(above) - 6} more" if len(above) > 6 else "")
    text = (f"above the measured roof: {named}. Either the ceilings were measured low (measure again "
            f"on an idle machine: python benchmarks/ceilings.py)")
    if any(kinds.get(i) == "conv2d" for i in above):
        text += (", or the library ran these convolutions with a fast algorithm (e.g. Winograd) that does less "
                 "arithmetic than the direct convolution whose FLOPs are counted")
    return text + "."


def roofline(reader_or_path) -> dict:
    """The roofline of a session (a path or an open ``SessionReader``; see the module docstring).

    Returns ``{"session", "device", "device_name", "precision", "batch", "mode", "ceilings":
    {peak_flop_s, fp32_peak_flop_s, bandwidth_bytes_s, dram_bandwidth_bytes_s, ...} | None,
    "ceilings_source": "recorded in the session" | "measured now on this machine ..." | why not,
    "peak_flop_s", "bandwidth_bytes_s" (the roofs used), "ridge_intensity" (FLOP/byte where the
    roofs meet), "overhead_fraction", "layers": [{"id", "kind", "family", "fwd": point, "bwd":
    point | None (inference)}], "above_roof": [ids], "above_roof_note": str | None}``; a point is
    ``{"flops", "bytes", "intensity", "ms" (median per step), "achieved_flop_s", "roof_flop_s",
    "pct_of_roof", "bound", "above_roof"}``. Raises ``SessionError`` for a path that is not a readable session.
    """
    from pathlib import Path

    if isinstance(reader_or_path, (str, Path)):
        from engine.session import open_session

        with open_session(reader_or_path) as r:
            return _roofline(r, str(reader_or_path))
    return _roofline(as_source(reader_or_path), str(getattr(reader_or_path, "path", "")))


def _roofline(src, path: str) -> dict:
    from engine.analysis.compare import family_of

    info = src.info
    cfg = info.config or {}
    precision = cfg.get("precision") or "fp32"
    device = (info.device or {}).get("id") or cfg.get("device")
    batch = batch_used(info) or 1
    mode = cfg.get("mode")
    ceil = session_ceilings(src)
    if ceil is not None and "peak_flop_s" in ceil:
        source = "recorded in the session"
    else:
        import os

        threads = cfg.get("threads") or max(1, (os.cpu_count() or 1) - 1)
        why = ceil.get("unavailable") if ceil else None
        ceil, source = _ceilings_now(device, precision, threads if str(device).startswith("cpu") else None)
        if why:
            source += f" (the run's own measurement failed: {why})"
    peak = max(ceil.get("peak_flop_s") or 0, ceil.get("fp32_peak_flop_s") or 0) if ceil else None
    bw = ceil.get("bandwidth_bytes_s") if ceil else None
    size = BYTES_PER_ELEMENT.get(precision, 4)
    ins = _input_elements(src)
    rows = layer_summary(src)
    facts = {r.node_id: r for r in info.layers}
    layers = []
    for row in rows:
        fact = facts.get(row["id"])
        if fact is None:
            continue
        w = (fact.params or 0) * size
        n_in, from_input = ins.get(row["id"], (0, False))
        x = n_in * batch * size
        y = _numel(fact.out_shape) * batch * size
        fwd = _point((fact.flops or 0) * batch, w + x + y, row["fwd_median_ms"], peak, bw)
        bwd = None
        if mode == "train" and row["bwd_median_ms"] is not None:
            # fed by the net input only: no input gradient, so no dX written and W not read for it
            moved = (w + x + y) if from_input else (2 * w + 2 * x + y)
            bwd = _point((fact.bwd_flops or 0) * batch, moved, row["bwd_median_ms"], peak, bw)
        layers.append({"id": row["id"], "kind": row["kind"], "family": family_of(row["kind"]),
                       "inputs_known": row["id"] in ins, "fwd": fwd, "bwd": bwd})
    above = [x["id"] for x in layers if x["fwd"]["above_roof"] or (x["bwd"] or {}).get("above_roof")]
    return {"session": path, "device": device, "device_name": (info.device or {}).get("name"),
            "precision": precision, "batch": batch, "mode": mode, "threads": cfg.get("threads"),
            "ceilings": ceil, "ceilings_source": source, "peak_flop_s": peak, "bandwidth_bytes_s": bw,
            "dram_bandwidth_bytes_s": ceil.get("dram_bandwidth_bytes_s") if ceil else None,
            "ridge_intensity": peak / bw if peak and bw else None, "overhead_fraction": OVERHEAD_FRACTION,
            "layers": layers, "above_roof": above,
            "above_roof_note": above_roof_note(above, {x["id"]: x["kind"] for x in layers})}
