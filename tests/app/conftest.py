"""Qt test fixtures: every test gets its own settings location. The root conftest adds the
temporary user folders and fails a test that leaves a thread running."""
from __future__ import annotations

import uuid

import pytest


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """QSettings under tmp_path with a test-only organisation/app name; nothing reaches the user's config."""
    from PySide6.QtCore import QCoreApplication, QSettings

    folder = tmp_path / "settings"
    folder.mkdir()
    for fmt in (QSettings.IniFormat, QSettings.NativeFormat):
        QSettings.setPath(fmt, QSettings.UserScope, str(folder))
        QSettings.setPath(fmt, QSettings.SystemScope, str(folder / "system"))
    old = QCoreApplication.organizationName(), QCoreApplication.applicationName()
    QCoreApplication.setOrganizationName("LayerScopeTests")
    QCoreApplication.setApplicationName(f"test-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    yield folder
    QCoreApplication.setOrganizationName(old[0])
    QCoreApplication.setApplicationName(old[1])


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    """A ready main window (torch loaded, editor built) writing sessions under tmp_path/runs."""
    from app.main_window import MainWindow
    from app.settings import Settings

    settings = Settings()
    settings.runs_folder = tmp_path / "runs"
    w = MainWindow(settings)
    monkeypatch.setattr(w, "_ask_save", lambda: "discard")
    monkeypatch.setattr(w, "_ask_stop_run", lambda: True)
    monkeypatch.setattr(w, "_inform", lambda title, text: w.log_view.append("app", text))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.is_ready, timeout=120_000)
    yield w
    w.shutdown()
