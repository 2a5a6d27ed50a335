"""engine/ never imports Qt: importing it with PySide6 and pyqtgraph blocked still works."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('PySide6', 'pyqtgraph', 'PyQt5', 'PyQt6', 'shiboken6'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
try:
    import PySide6  # noqa
    print('BLOCK FAILED'); sys.exit(3)
except ImportError:
    pass
import engine, engine.cli, engine.net.model
import pkgutil, importlib
for m in pkgutil.walk_packages(engine.__path__, "engine."):
    if not m.name.endswith('__main__'):
        importlib.import_module(m.name)
spec = engine.load_preset('lenet5')
print(engine.analyze(spec).params)
assert not [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph'))]
"""


def test_engine_imports_with_qt_blocked():
    r = subprocess.run([sys.executable, "-c", BLOCK], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("61706")


def test_plain_import_engine_does_not_load_torch():
    code = "import sys, engine; engine.load_preset('lenet5'); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
