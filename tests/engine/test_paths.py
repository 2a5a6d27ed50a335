"""engine.paths: one set of user folders for the CLI and the app, movable with $LAYERSCOPE_HOME."""
import sys
from pathlib import Path

import pytest

import engine
from engine.data import data_home
from engine.paths import cache_dir, data_dir, runs_dir


def test_every_test_gets_its_own_home(tmp_path):
    """The root conftest points $LAYERSCOPE_HOME into the test's tmp_path: no test writes to real folders."""
    home = tmp_path / "layerscope-home"
    assert data_dir() == home / "data"
    assert runs_dir() == home / "data" / "runs"
    assert cache_dir() == home / "cache"
    assert data_home() == home / "cache" / "datasets"
    assert not home.exists()  # asking for a folder does not create it


def test_home_override_expands_user(monkeypatch):
    monkeypatch.setenv("LAYERSCOPE_HOME", "~/ls-elsewhere")
    assert runs_dir() == Path.home() / "ls-elsewhere" / "data" / "runs"


@pytest.mark.skipif(sys.platform != "linux", reason="the XDG variables apply on Linux")
def test_platform_defaults_follow_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("LAYERSCOPE_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert runs_dir() == tmp_path / "share" / "layerscope" / "runs"
    # the dataset cache stays where earlier versions downloaded to
    assert data_home() == tmp_path / "cache" / "layerscope" / "datasets"


def test_dataset_variable_and_root_win_over_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSCOPE_DATA", str(tmp_path / "d"))
    assert data_home() == tmp_path / "d"
    assert data_home(tmp_path / "r") == tmp_path / "r"


def test_facade_names():
    assert (engine.runs_dir, engine.cache_dir, engine.data_dir) == (runs_dir, cache_dir, data_dir)
