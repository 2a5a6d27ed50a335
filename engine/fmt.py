"""Numbers for people: the one place that turns bytes, counts, FLOPs, times and rates into text.

Every function takes ``None`` (and NaN/inf) as "not measured" and returns ``missing`` for it, so
a caller never prints "nan". The terminal tables, the HTML report and the app's views all format
through here, so the same figure reads the same everywhere. Pure Python (no numpy, no Qt): the
app imports it on the way to its first paint (``from engine import fmt``).
"""
from __future__ import annotations

import math

DASH = "–"  # en dash: the HTML report's and the app's mark for "not measured"


def _absent(v) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def fmt_num(v, digits: int = 3, missing: str = DASH) -> str:
    """A number with about ``digits`` significant digits: ints with thousands separators
    ("12,345"), floats >= 1000 rounded to whole numbers ("1,235"), floats in [1, 1000) with
    ``digits`` significant digits in fixed notation ("12.3"), smaller ones in ``g`` notation
    ("0.0123"); 0.0 is "0". Strings pass through unchanged."""
    if _absent(v):
        return missing
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}" if a < 1 else f"{v:.{max(digits - int(math.log10(a)) - 1, 0)}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def fmt_bytes(v, missing: str = DASH) -> str:
    """Bytes in binary units with one decimal ("1.5 MiB", "512 B")."""
    if _absent(v):
        return missing
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(v) >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v:.0f} B"


def fmt_count(n, missing: str = DASH) -> str:
    """A count (parameters, FLOPs per sample) with three significant digits and a decimal
    prefix: "61.7 k", "4.09 G"; below 1000 the plain number."""
    if _absent(n):
        return missing
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f}"


def fmt_int(n, missing: str = DASH) -> str:
    """A whole number with thousands separators ("1,234,567")."""
    if _absent(n):
        return missing
    return f"{int(n):,}"


def fmt_flops(n, missing: str = DASH) -> str:
    """FLOPs with two decimals and a decimal prefix ("235.20 k", "1.15 G"): the terminal's
    net summary, where the columns line up on the decimal point."""
    if _absent(n):
        return missing
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def fmt_ms(v, missing: str = DASH) -> str:
    """Milliseconds, more decimals the shorter they are ("123", "12.3", "1.23", "0.123")."""
    if _absent(v):
        return missing
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_duration(s, missing: str = "?") -> str:
    """Seconds as a clock: "m:ss", or "h:mm:ss" from an hour on."""
    if _absent(s):
        return missing
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_pct(v, missing: str = DASH, sep: str = " ") -> str:
    """A fraction (0.123) as a percentage with one decimal ("12.3 %"; ``sep=""``: "12.3%", the
    spelling of the report's and the terminal's tables)."""
    if _absent(v):
        return missing
    return f"{v * 100:.1f}{sep}%"


def fmt_rate(v, unit: str = "samples/s", missing: str = DASH) -> str:
    """A rate with its unit, digits as ``fmt_num`` ("1,234 samples/s", "12.3 GFLOP/s")."""
    if _absent(v):
        return missing
    return f"{fmt_num(float(v))} {unit}"


def fmt_bandwidth(bytes_per_s, missing: str = DASH) -> str:
    """A memory bandwidth in bytes per second as decimal GB/s (1 GB = 1e9 bytes), digits as
    ``fmt_num`` ("91.8 GB/s"): the one unit of the CLI, the HTML export and the app's roofline."""
    if _absent(bytes_per_s):
        return missing
    return fmt_rate(float(bytes_per_s) / 1e9, "GB/s")
