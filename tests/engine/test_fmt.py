"""engine.fmt: the one formatter module (terminal, HTML report and app views)."""
import math

from engine import fmt


def test_absent_values_are_the_missing_mark_never_nan():
    for f in (fmt.fmt_num, fmt.fmt_bytes, fmt.fmt_count, fmt.fmt_int, fmt.fmt_flops, fmt.fmt_ms, fmt.fmt_pct,
              fmt.fmt_rate):
        assert f(None) == "–" and f(math.nan) == "–" and f(math.inf) == "–"
        assert f(None, missing="-") == "-"
    assert fmt.fmt_duration(None) == "?"


def test_numbers_keep_about_three_significant_digits():
    assert fmt.fmt_num(0.0) == "0" and fmt.fmt_num(0.012345) == "0.0123" and fmt.fmt_num(1.23456) == "1.23"
    assert fmt.fmt_num(12.3456) == "12.3" and fmt.fmt_num(123.456) == "123" and fmt.fmt_num(12345.6) == "12,346"
    assert fmt.fmt_num(1234567) == "1,234,567" and fmt.fmt_num("conv1") == "conv1"
    assert fmt.fmt_rate(1234.4) == "1,234 samples/s" and fmt.fmt_rate(2.5, "GFLOP/s") == "2.50 GFLOP/s"


def test_bytes_counts_flops_times_and_shares():
    assert fmt.fmt_bytes(512) == "512 B" and fmt.fmt_bytes(3 * 2**20) == "3.0 MiB"
    assert fmt.fmt_bytes(1.5 * 2**30) == "1.5 GiB" and fmt.fmt_bytes(2**41) == "2.0 TiB"
    assert fmt.fmt_count(61_706) == "61.7 k" and fmt.fmt_count(4.09e9) == "4.09 G" and fmt.fmt_count(12) == "12"
    assert fmt.fmt_flops(235_200) == "235.20 k" and fmt.fmt_int(1234567.0) == "1,234,567"
    assert [fmt.fmt_ms(v) for v in (123.4, 12.34, 1.234, 0.1234)] == ["123", "12.3", "1.23", "0.123"]
    assert fmt.fmt_duration(59.6) == "1:00" and fmt.fmt_duration(3725) == "1:02:05"
    assert fmt.fmt_pct(0.1234) == "12.3 %" and fmt.fmt_pct(0.1234, sep="") == "12.3%"
