"""The root conftest's guards, run on throwaway tests in a separate pytest process."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")

LEAKY = '''
import os, threading, time

def test_leaves_a_thread():
    threading.Thread(target=threading.Event().wait, name="forgotten", daemon=True).start()

def test_thread_ends_within_grace():
    threading.Thread(target=time.sleep, args=(0.3,), name="finishing").start()

def test_home_is_temporary(tmp_path):
    assert os.environ["LAYERSCOPE_HOME"] == str(tmp_path / "layerscope-home")
    assert "LAYERSCOPE_DATA" not in os.environ
'''


def test_a_thread_left_running_fails_its_test(tmp_path):
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    env = {**os.environ, "LAYERSCOPE_DATA": str(tmp_path / "must-be-cleared")}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:qt",
                          "--rootdir", str(tmp_path), str(tmp_path / "test_leaky.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    # the leaky test itself passes; its teardown errors, and the others are not blamed
    assert "3 passed, 1 error" in out.stdout, out.stdout + out.stderr
    assert "ERROR at teardown of test_leaves_a_thread" in out.stdout
    assert "threads left running: ['forgotten']" in out.stdout


QT_WARNINGS = '''
from PySide6.QtCore import qWarning

def test_a_qt_warning_fails(qtbot):
    qWarning("something is wrong")

def test_offscreen_size_hint_noise_is_ignored(qtbot):
    qWarning("This plugin does not support propagateSizeHints()")
'''


def test_a_qt_warning_fails_its_test(tmp_path):
    """pyproject's pytest-qt settings: a Qt warning fails the test; the offscreen platform's one does not."""
    root = CONFTEST.parent.parent
    shutil.copy(root / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "test_qt_warnings.py").write_text(QT_WARNINGS)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), str(tmp_path / "test_qt_warnings.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "1 failed, 1 passed" in out.stdout, out.stdout + out.stderr
    assert "FAILED test_qt_warnings.py::test_a_qt_warning_fails" in out.stdout
    assert "QtWarningMsg: something is wrong" in out.stdout
