"""Exports of a session: Chrome trace (``trace``), per-layer CSV and JSON summary (``tables``),
a self-contained HTML report (``html``, charts in ``charts``). All work on stopped, failed or
killed runs too; every figure in them comes from ``engine.analysis``.

``EXPORTERS`` maps an export's name to its function ``fn(reader, path) -> Path`` (the app's export
menu and ``layerscope export`` both pick from it); ``SUFFIXES`` gives each one's file suffix.
"""
from __future__ import annotations

from engine.export.html import export_html, html_report
from engine.export.tables import CSV_COLUMNS, export_csv, export_json
from engine.export.trace import DEFAULT_TRACE_STEPS, export_trace, trace_events

EXPORTERS = {"trace": export_trace, "csv": export_csv, "html": export_html, "json": export_json}
SUFFIXES = {"trace": ".trace.json", "csv": ".csv", "html": ".html", "json": ".summary.json"}

__all__ = ["EXPORTERS", "SUFFIXES", "CSV_COLUMNS", "DEFAULT_TRACE_STEPS", "export_csv", "export_html", "export_json",
           "export_trace", "html_report", "trace_events"]
