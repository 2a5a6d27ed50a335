"""Transitional: the names engine/cli/commands.py and app/main_window.py import from here today.

The exports now live in ``engine.export`` (trace, tables, html, charts) and the comparison in
``engine.analysis.compare``; remove this module once those two files import from there.
"""
from engine.analysis.compare import compare  # noqa: F401
from engine.export import (CSV_COLUMNS, DEFAULT_TRACE_STEPS, EXPORTERS, export_csv, export_html,  # noqa: F401
                           export_json, export_trace, html_report, trace_events)
from engine.export.common import jsonable as _jsonable, write_text as _write_text  # noqa: F401
