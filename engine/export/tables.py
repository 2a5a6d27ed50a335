"""Table exports: the per-layer CSV and the JSON summary (run totals, per-layer rows, config)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from engine.analysis.summary import as_source, layer_summary, run_summary, summary
from engine.export.common import jsonable as _jsonable, write_text as _write_text

CSV_COLUMNS = ["id", "kind", "out_shape", "params", "flops", "fwd_mean_ms", "fwd_median_ms", "fwd_p95_ms",
               "bwd_mean_ms", "bwd_median_ms", "bwd_p95_ms", "share", "fwd_gflops", "total_gflops",
               "act_bytes", "mem_bytes", "peak_bytes", "energy_est_j_per_sample", "samples", "fwd_p5_ms", "bwd_p5_ms"]


def export_csv(reader, path) -> Path:
    """Per-layer summary, one row per node (columns: ``CSV_COLUMNS``)."""
    rows = layer_summary(reader, energy=_energy_of(reader))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            out = []
            for c in CSV_COLUMNS:
                v = r.get(c)
                if c == "out_shape" and v is not None:
                    v = "x".join(map(str, v))
                elif isinstance(v, float):
                    v = f"{v:.6g}"
                out.append("" if v is None else v)
            w.writerow(out)
    return p


def _energy_of(reader):
    run = run_summary(reader)
    return run["energy"].get(run["energy_source"]) if run["energy_source"] else None


def export_json(reader, path) -> Path:
    """Run totals, per-layer rows, the config and the list of telemetry series, as one JSON object."""
    src = as_source(reader)
    obj = summary(src)
    obj["config"] = {k: v for k, v in (src.info.config or {}).items() if k != "net"}
    obj["net"] = (src.info.config or {}).get("net")
    obj["device"] = src.info.device
    obj["versions"] = src.info.versions
    obj["host"] = src.info.host
    obj["start_time"] = src.info.start_time
    obj["telemetry_series"] = [{"source": s, "metric": m} for s, m in src.telemetry_series()]
    obj["format"] = "layerscope-summary"
    return _write_text(path, json.dumps(_jsonable(obj), indent=1))

