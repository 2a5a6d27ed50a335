"""Built-in nets shipped as JSON in assets/presets."""
from __future__ import annotations

import re
from pathlib import Path

from engine.errors import SpecError
from engine.net.spec import NetSpec, load

ORDER = ("lenet5", "alexnet-article", "alexnet", "vgg11", "resnet18")


# a model to import instead of a net: FILE.py:FACTORY or torchvision:NAME (engine.net.imported)
IMPORT_FILE_RE = re.compile(r"^(?P<path>.+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
IMPORT_TV_RE = re.compile(r"^torchvision:(?P<name>.*)$")


def is_import_source(text) -> bool:
    """Whether ``text`` names a model to import (``FILE.py:FACTORY`` or ``torchvision:NAME``)
    rather than a preset or a net file; torch-free, so the CLI can tell before importing torch."""
    return isinstance(text, str) and bool(IMPORT_FILE_RE.match(text) or IMPORT_TV_RE.match(text))


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


def not_a_net(name_or_path: str) -> str | None:
    """Why ``name_or_path`` is not a net although it looks like a file a user meant as one: a
    ``.py`` file without its factory, a ``.lsession`` session; None otherwise (nothing is read)."""
    suffix = Path(name_or_path).suffix.lower()
    name = Path(name_or_path).name
    if suffix == ".py":
        return (f"{name} is Python: give the factory too, {name_or_path}:FACTORY (a function returning the "
                f"nn.Module)")
    if suffix == ".lsession":
        return (f"{name} is a session, not a net: open it with summary/export, or use its net: the preset, "
                f"net JSON or FILE.py:FACTORY it was profiled with (`layerscope summary {name_or_path}` names it)")
    return None


def imported_source(spec: NetSpec) -> str | None:
    """The source (``FILE.py:FACTORY`` / ``torchvision:NAME``) a spec was imported from, as its
    description records it; None when it does not say."""
    m = re.match(r"imported from (\S+?)[;,]? ", spec.description or "")
    return m[1] if m else None


def check_buildable(spec: NetSpec, name: str) -> None:
    """SpecError (one line) when ``spec`` holds opaque nodes of an imported model: only the model's
    source builds those, so it can be validated and summarised but not profiled or exported."""
    opaque = [n.id for n in spec.nodes if n.kind == "opaque"]
    if not opaque:
        return
    more = f" and {len(opaque) - 1} more" if len(opaque) > 1 else ""
    src = imported_source(spec)
    hint = f"profile it from its source: layerscope profile {src}" if src else \
        "profile it from its source (FILE.py:FACTORY or torchvision:NAME)"
    raise SpecError(f"{name} holds opaque nodes of an imported model ({opaque[0]}{more}), which only the model's "
                    f"own code runs: {hint}")


def resolve_net(name_or_path: str, buildable: bool = False) -> NetSpec:
    """A preset name or a path to a net JSON file, as the CLI's NET argument takes it. SpecError
    (one line) for anything else, with a hint for a ``.py`` without its factory and a session;
    with ``buildable``, also for a net holding an imported model's opaque nodes
    (``check_buildable``: profile, sweep and export-net need to build it)."""
    why = not_a_net(name_or_path)
    if why:
        raise SpecError(why)
    if (presets_dir() / f"{name_or_path}.json").is_file() and not Path(name_or_path).suffix:
        spec = load_preset(name_or_path)
    else:
        p = Path(name_or_path)
        if not (p.exists() or p.suffix):
            raise SpecError(f"'{name_or_path}' is neither a preset ({', '.join(preset_names())}) nor a net file")
        spec = load(p)
    if buildable:
        check_buildable(spec, Path(name_or_path).name)
    return spec
