"""Session files: one SQLite database per run (``docs/session-format.md``).

``schema`` holds the layout and the checks shared by both sides, ``writer`` the record sink
``SessionWriter``, ``reader`` ``open_session``/``SessionReader``. Importing this package loads only
the standard library and ``engine.records`` (no torch).
"""
from __future__ import annotations

from engine.session.catalog import SessionEntry, list_sessions
from engine.session.reader import SessionReader, open_session
from engine.session.schema import SessionError, has_session_header
from engine.session.writer import SessionWriter

__all__ = ["list_sessions", "SessionEntry", "open_session", "SessionReader", "SessionWriter", "SessionError", "has_session_header"]
