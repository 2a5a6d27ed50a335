"""Import a PyTorch model (a user's ``FILE.py:FACTORY`` or ``torchvision:NAME``) as a LayerScope net.

The model is captured with ``torch.fx.symbolic_trace``. Every ``call_module`` leaf, every
``call_function`` / ``call_method`` that returns a tensor and every ``get_attr`` tensor becomes a
node (a call whose result is never read stays one when it may act: every module call, every
in-place op such as ``relu_``, ``add_`` or ``inplace=True``; only pure dead code is left out) of a ``NetSpec`` whose id is the fx node name (the qualified module name with ``.`` as
``_``: ``layer1.0.conv1`` -> ``layer1_0_conv1``; ``add_1``, ``cat``). Values that are not tensors
(``x.size(0)``, a tuple an op returns and ``getitem`` picks from) are not nodes: each is computed
inside the node that uses it. A node's kind is a registry kind where one matches exactly (the
module's type is the kind's own and every attribute is one of the kind's params; an ``x + y`` of
equal shapes is ``add``, ``torch.cat(..., 1)`` is ``concat``, ``F.relu`` is ``relu``), else
``opaque``: the op's name plus its figures, measured here.

Figures (per sample): each node runs alone on the meta device at a batch of 2 (halved, as
``engine.net.analyze`` does) under ``FlopCounterMode``: forward FLOPs, then backward FLOPs of
``out.backward()`` with a gradient for the inputs that carry one (the weights' gradients plus
the input's, the same count ``analyze`` makes for a built node). Parameters: those of the node's
module that no earlier node holds (shared weights count once). An op the meta device cannot run
is measured on the CPU on a copy of the model (random input).

The model runs as a ``LayerNet`` (``engine.net.model``) holding the user's own modules (their
weights) by node id, with small modules for the functional ops, so the run, its probe (the one
plan walker), sessions, exports and analysis treat it as any net. A model fx cannot trace
(data-dependent control flow) is timed per leaf module with hooks instead
(``engine.net.imported_hooks``; ``ImportedNet.notice`` says what is coarser).

Trust: ``FILE.py`` is the user's own code and is executed; no other file is imported by
LayerScope (the file's own imports resolve as Python resolves them).
"""
from __future__ import annotations

import importlib.util
import inspect
import re
import sys
import traceback
from pathlib import Path

import torch.fx as fx
import torch.nn as nn

from engine.errors import LayerScopeError
from engine.net.imported_graph import build_traced
from engine.net.imported_hooks import import_hooked
from engine.net.imported_parts import ImportedNet, first_line as _first_line
from engine.net.presets import IMPORT_FILE_RE, IMPORT_TV_RE, is_import_source
from engine.net.spec import INPUT_FIELDS, NetSpec

__all__ = ["ImportedNet", "import_model", "is_import_source", "source_stem", "load_module", "same_graph",
           "VISION_HINT"]

VISION_HINT = "torchvision is not installed: pip install -e '.[vision]'"
_FILE_RE, _TV_RE = IMPORT_FILE_RE, IMPORT_TV_RE


def source_stem(source: str) -> str:
    """A short file-name-safe name for a source: ``resnet50``, ``mymodel-make_net``."""
    m = _TV_RE.match(source)
    if m:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", m["name"]) or "torchvision"
    m = _FILE_RE.match(source)
    if m:
        return f"{Path(m['path']).stem}-{m['name']}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", source)



def _where_in(e: BaseException, path: Path) -> str:
    """', line N' of the deepest frame of ``e``'s traceback inside ``path`` ('' when none)."""
    line = None
    for fs in traceback.extract_tb(e.__traceback__):
        try:
            if Path(fs.filename).resolve() == path:
                line = fs.lineno
        except OSError:
            continue
    return f", line {line}" if line else ""


def _load_file(path_text: str, name: str, classes: int | None) -> nn.Module:
    path = Path(path_text).expanduser()
    if not path.exists():
        raise LayerScopeError(f"no such model file: {path}")
    if not path.is_file():
        raise LayerScopeError(f"{path} is not a file")
    path = path.resolve()
    mod_name = f"_layerscope_user_model_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise LayerScopeError(f"cannot load {path} as Python code")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)  # the user's own code, named by the user: executed
    except SyntaxError as e:
        sys.modules.pop(mod_name, None)
        raise LayerScopeError(f"{path}, line {e.lineno}: SyntaxError: {e.msg}") from None
    except (Exception, SystemExit) as e:
        sys.modules.pop(mod_name, None)
        raise LayerScopeError(f"{path}{_where_in(e, path)}: running the file raised "
                              f"{type(e).__name__}: {_first_line(e)}") from None
    factory = getattr(module, name, None)
    if factory is None:
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == mod_name)
        hint = f" (it defines: {', '.join(found[:8])})" if found else ""
        raise LayerScopeError(f"{path} has no '{name}'{hint}")
    if not callable(factory):
        raise LayerScopeError(f"'{name}' in {path} is a {type(factory).__name__}, not a function returning "
                              f"a torch.nn.Module")
    try:
        model = factory()
    except (Exception, SystemExit) as e:
        raise LayerScopeError(f"{name}() in {path}{_where_in(e, path)} raised {type(e).__name__}: "
                              f"{_first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise LayerScopeError(f"{name}() in {path} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_torchvision(name: str, classes: int | None) -> nn.Module:
    try:
        import torchvision
    except ImportError:
        raise LayerScopeError(VISION_HINT) from None
    except Exception as e:  # installed but broken (e.g. a build for another torch)
        raise LayerScopeError(f"torchvision is installed but cannot be imported: {_first_line(e)}") from None
    if not name:
        raise LayerScopeError("give a torchvision model name, e.g. torchvision:resnet18")
    try:
        known = torchvision.models.list_models()
    except Exception:  # pragma: no cover - very old torchvision
        known = []
    if known and name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else f"; see torchvision.models.list_models()"
        raise LayerScopeError(f"unknown torchvision model '{name}'{hint}")
    kw = {"weights": None}
    if classes is not None:
        kw["num_classes"] = classes
    try:
        model = torchvision.models.get_model(name, **kw)
    except Exception as e:
        raise LayerScopeError(f"torchvision:{name} cannot be built: {type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise LayerScopeError(f"torchvision:{name} is a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_module(source: str, classes: int | None = None) -> nn.Module:
    """The ``nn.Module`` a source names: ``FILE.py:FACTORY`` executes FILE.py (the user's own code,
    under a private module name) and calls ``FACTORY()``; ``torchvision:NAME`` builds
    ``torchvision.models.get_model(NAME, weights=None[, num_classes=classes])``. Every failure is
    a one-line LayerScopeError (missing file, no such factory, the file or factory raising, not a
    module, torchvision absent: ``VISION_HINT``)."""
    m = _TV_RE.match(source)
    if m:
        return _load_torchvision(m["name"], classes)
    m = _FILE_RE.match(source)
    if not m:
        raise LayerScopeError(f"'{source}' is not a model source: give FILE.py:FACTORY or torchvision:NAME")
    return _load_file(m["path"], m["name"], classes)


def _check_input(input_shape, classes) -> tuple[tuple[int, int, int], int | None]:
    try:
        c, h, w = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise LayerScopeError(f"the input shape must be three whole numbers C,H,W, not {input_shape!r}") from None
    for name, v in zip(("channels", "height", "width"), (c, h, w)):
        lo, hi = INPUT_FIELDS[name]
        if not lo <= v <= hi:
            raise LayerScopeError(f"input {name} is {v}, outside {lo}..{hi}")
    if classes is not None:
        lo, hi = INPUT_FIELDS["classes"]
        if isinstance(classes, bool) or not isinstance(classes, int) or not lo <= classes <= hi:
            raise LayerScopeError(f"classes must be a whole number in {lo}..{hi}, not {classes!r}")
    return (c, h, w), classes


def _forward_args(module: nn.Module) -> dict:
    """concrete_args for symbolic_trace: every forward parameter after the first takes its default.
    LayerScopeError when forward needs more than the one image batch."""
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return {}
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [p.name for p in params if p.default is p.empty]
    if len(required) != 1 or (params and params[0].default is not params[0].empty):
        raise LayerScopeError(f"{type(module).__name__}.forward takes {len(required)} required inputs "
                              f"({', '.join(required) or 'none'}); LayerScope feeds it one image batch")
    return {p.name: p.default for p in params[1:]}


def same_graph(a: NetSpec, b: NetSpec) -> bool:
    """Whether two imported specs have the same nodes (ids, kinds, ops, inputs) and input; the
    measured figures are not compared."""
    def shape(spec):
        return (spec.input.shape, spec.input.classes,
                [(n.id, n.kind, n.inputs, n.params.get("op") if n.kind == "opaque" else n.params)
                 for n in spec.nodes])
    return shape(a) == shape(b)


# ---- import -----------------------------------------------------------------------------------------

def import_model(source: str, input_shape, classes: int | None = None) -> ImportedNet:
    """Import ``source`` (``FILE.py:FACTORY`` or ``torchvision:NAME``; FILE.py is executed) for
    inputs of per-sample shape ``input_shape`` (C, H, W) and ``classes`` class scores (None: the
    model's output size). Returns an ``ImportedNet`` whose ``spec`` passes ``analyze`` and whose
    ``model`` runs the user's modules; its parameter count is the module's (shared weights once,
    parameters forward never uses left out and named in ``notes``).

    LayerScopeError (one line) for every failure: the source (see ``load_module``), a forward
    that needs more than one input, a model that fails on the input shape, an output that is not
    one vector of class scores per sample, one that is not floating point (``.long()``), or one
    whose size is not ``classes``."""
    shape, classes = _check_input(input_shape, classes)
    module = load_module(source, classes)
    concrete = _forward_args(module)
    try:
        gm = fx.symbolic_trace(module, concrete_args=concrete or None)
    except LayerScopeError:
        raise
    except Exception as e:
        return import_hooked(source, module, shape, classes, _first_line(e))
    return build_traced(source, module, gm, shape, classes)
