"""Data files shipped with LayerScope: preset nets, icons, style sheet."""
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
PRESETS_DIR = ASSETS_DIR / "presets"
