"""What every export shares: writing a text file, making values JSON-safe, the run's title line."""
from __future__ import annotations

import math
from pathlib import Path


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path``, creating its folder; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def jsonable(v):
    """``v`` with every non-finite float (NaN, inf) turned into None, through dicts, lists and tuples."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def title(src) -> str:
    """"net (mode, precision, batch N) on device" of a session source."""
    cfg = src.info.config or {}
    net = (cfg.get("net") or {}).get("name") or "net"
    dev = (src.info.device or {}).get("name") or (src.info.device or {}).get("id") or cfg.get("device") or "?"
    return f"{net} ({cfg.get('mode', '?')}, {cfg.get('precision', '?')}, batch {cfg.get('batch_size', '?')}) on {dev}"
