"""Persistent settings (last device, window layout, recent files, runs folder) through QSettings.

Every read and write goes through ``Settings`` so tests can point the whole app at a temporary
location (``QSettings.setPath`` plus their own organisation/application name) and nothing ever
touches the user's real configuration from a test.
"""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QCoreApplication, QSettings

import engine

ORGANISATION = "LayerScope"
APPLICATION = "LayerScope"
MAX_RECENT = 8


def ensure_names() -> None:
    """Give the application its organisation/app names unless something (a test) already did."""
    # the application name defaults to the script's file name, so only the organisation tells
    # whether someone chose the names already
    if not QCoreApplication.organizationName():
        QCoreApplication.setOrganizationName(ORGANISATION)
        QCoreApplication.setApplicationName(APPLICATION)


class Settings:
    """Typed access to the app's QSettings (INI format, per user)."""

    def __init__(self):
        ensure_names()
        self._q = QSettings(QSettings.IniFormat, QSettings.UserScope, QCoreApplication.organizationName(),
                            QCoreApplication.applicationName())

    @property
    def path(self) -> str:
        return self._q.fileName()

    def sync(self) -> None:
        self._q.sync()

    # -- simple values ---------------------------------------------------------------------------
    def _str(self, key: str, default: str = "") -> str:
        v = self._q.value(key, default)
        return v if isinstance(v, str) else default

    @property
    def last_device(self) -> str:
        return self._str("run/device", "")

    @last_device.setter
    def last_device(self, value: str) -> None:
        self._q.setValue("run/device", value)

    def run_options(self) -> dict:
        """Last run panel choices (mode, precision, batch, ...) as stored; unknown keys ignored by the caller."""
        out = {}
        self._q.beginGroup("run_options")
        try:
            for k in self._q.childKeys():
                out[k] = self._q.value(k)
        finally:
            self._q.endGroup()
        return out

    def set_run_options(self, options: dict) -> None:
        self._q.beginGroup("run_options")
        try:
            for k, v in options.items():
                self._q.setValue(k, v)
        finally:
            self._q.endGroup()

    @property
    def color_by(self) -> str:
        return self._str("view/color_by", "time")

    @color_by.setter
    def color_by(self, value: str) -> None:
        self._q.setValue("view/color_by", value)

    # -- window ------------------------------------------------------------------------------------
    def window_geometry(self) -> QByteArray | None:
        v = self._q.value("window/geometry")
        return v if isinstance(v, QByteArray) and not v.isEmpty() else None

    def window_state(self) -> QByteArray | None:
        v = self._q.value("window/state")
        return v if isinstance(v, QByteArray) and not v.isEmpty() else None

    def save_window(self, geometry: QByteArray, state: QByteArray | None) -> None:
        """Keep the window geometry and dock state; ``state`` None (a layout the window found
        clipped) forgets any saved state, so the next start uses the default docks."""
        self._q.setValue("window/geometry", geometry)
        if state is None:
            self._q.remove("window/state")
        else:
            self._q.setValue("window/state", state)

    # -- recent files ------------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        v = self._q.value("files/recent", [])
        if isinstance(v, str):  # QSettings returns a lone string for a one-item list
            v = [v]
        return [p for p in (v or []) if isinstance(p, str) and p]

    def add_recent_file(self, path: str) -> list[str]:
        path = os.path.abspath(path)
        files = [p for p in self.recent_files() if p != path]
        files.insert(0, path)
        files = files[:MAX_RECENT]
        self._q.setValue("files/recent", files)
        return files

    def remove_recent_file(self, path: str) -> list[str]:
        files = [p for p in self.recent_files() if p != path]
        self._q.setValue("files/recent", files)
        return files

    def clear_recent_files(self) -> None:
        self._q.setValue("files/recent", [])

    # -- folders -----------------------------------------------------------------------------------
    @property
    def runs_folder(self) -> Path:
        """Where the app writes the session file of each run (created on demand): the folder the
        user chose, else ``engine.runs_dir()``, the same default ``layerscope profile`` writes to."""
        v = self._str("files/runs_folder", "")
        if v:
            return Path(v)
        return engine.runs_dir()

    @runs_folder.setter
    def runs_folder(self, value) -> None:
        self._q.setValue("files/runs_folder", os.fspath(value))

    @property
    def last_folder(self) -> str:
        return self._str("files/last_folder", "")

    @last_folder.setter
    def last_folder(self, value: str) -> None:
        self._q.setValue("files/last_folder", value)
