"""Built-in nets shipped as JSON in assets/presets."""
from __future__ import annotations

from pathlib import Path

from engine.errors import SpecError
from engine.net.spec import NetSpec, load

ORDER = ("lenet5", "alexnet-article", "alexnet", "vgg11", "resnet18")


def presets_dir() -> Path:
    from assets import PRESETS_DIR

    return PRESETS_DIR


def preset_names() -> list[str]:
    """Names of the built-in nets, smallest first."""
    found = {p.stem for p in presets_dir().glob("*.json")}
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def load_preset(name: str) -> NetSpec:
    """The built-in net called ``name``."""
    path = presets_dir() / f"{name}.json"
    if not path.is_file():
        raise SpecError(f"no preset called '{name}'; presets: {', '.join(preset_names())}")
    return load(path)


def resolve_net(name_or_path: str) -> NetSpec:
    """A preset name or a path to a net JSON file, as the CLI's NET argument takes it."""
    if (presets_dir() / f"{name_or_path}.json").is_file() and not Path(name_or_path).suffix:
        return load_preset(name_or_path)
    p = Path(name_or_path)
    if p.exists() or p.suffix:
        return load(p)
    raise SpecError(f"'{name_or_path}' is neither a preset ({', '.join(preset_names())}) nor a net file")
