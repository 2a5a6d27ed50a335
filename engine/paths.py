"""Where LayerScope keeps its own files: one answer for the CLI and the app.

The folders follow each platform's convention through ``platformdirs`` (app name
``layerscope``, no author folder):

==========  ===================================  =====================================================
folder      Linux (XDG variables honoured)       macOS / Windows
==========  ===================================  =====================================================
data_dir    ``~/.local/share/layerscope``        ``~/Library/Application Support/layerscope`` /
                                                 ``%LOCALAPPDATA%\\layerscope``
runs_dir    ``<data_dir>/runs``                  the same under data_dir
cache_dir   ``~/.cache/layerscope``              ``~/Library/Caches/layerscope`` /
                                                 ``%LOCALAPPDATA%\\layerscope\\Cache``
==========  ===================================  =====================================================

``$LAYERSCOPE_HOME`` moves all of them under one folder (``<home>/data``, ``<home>/data/runs``,
``<home>/cache``): the test suite points it at a temporary folder so no test writes to a user's
real folders, and a user can keep everything on another disk. Nothing here creates a folder;
whoever writes into one creates it (the session writer does for runs).
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "layerscope"
HOME_ENV = "LAYERSCOPE_HOME"


def _home() -> Path | None:
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() if home else None


def data_dir() -> Path:
    """The per-user folder for files LayerScope keeps (runs): ``<$LAYERSCOPE_HOME>/data`` when
    that variable is set, else the platform's user data folder (see the module docstring)."""
    home = _home()
    if home is not None:
        return home / "data"
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def runs_dir() -> Path:
    """The default folder for session files (``*.lsession``), shared by ``layerscope profile``
    (when ``--out`` is not given) and the app: ``data_dir() / "runs"``."""
    return data_dir() / "runs"


def cache_dir() -> Path:
    """The per-user folder for files that can be fetched again (downloaded datasets live in its
    ``datasets`` sub-folder): ``<$LAYERSCOPE_HOME>/cache`` when that variable is set, else the
    platform's user cache folder (``~/.cache/layerscope`` on Linux, ``$XDG_CACHE_HOME`` honoured)."""
    home = _home()
    if home is not None:
        return home / "cache"
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


__all__ = ["APP_NAME", "HOME_ENV", "cache_dir", "data_dir", "runs_dir"]
