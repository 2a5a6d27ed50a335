"""The app's default runs folder is the engine's, so the app lists what the CLI wrote."""
import engine
from app.settings import Settings


def test_default_runs_folder_is_the_engines(tmp_path):
    settings = Settings()
    assert settings.runs_folder == engine.runs_dir() == tmp_path / "layerscope-home" / "data" / "runs"
    settings.runs_folder = tmp_path / "mine"
    assert Settings().runs_folder == tmp_path / "mine"
