"""A net as code: a standalone PyTorch module (``to_pytorch_source``) with no LayerScope import.

The generated class registers one submodule per built node, named by the node id exactly as
``engine.build_model`` names them, so ``state_dict`` keys are those of a LayerScope checkpoint and
trained weights load with ``load_state_dict``. Its ``forward`` runs the nodes in the order of
``LayerNet.plan`` (topological), each computing what the node's registry builder computes: the
three LayerScope helper modules (``FlatLinear``, ``Add``, ``Concat``) are written out as plain
torch (``nn.Linear`` on ``x.flatten(1)``, ``a + b``, ``torch.cat([...], dim=1)``); they hold no
parameters of their own beyond ``nn.Linear``'s, so the keys and the parameter count match.
"""
from __future__ import annotations

import keyword
import re
import textwrap
from datetime import datetime, timezone
from pathlib import Path

from engine.errors import LayerScopeError
from engine.net.spec import INPUT_ID, NetSpec

__all__ = ["to_pytorch_source", "export_net", "format_for", "class_name_for", "CODE_KINDS", "FORMATS"]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _r(v) -> str:
    """A literal as Python writes it (tuples, floats, strings, bools)."""
    return repr(v)


def _conv(p, shape):
    pad = p["padding"] if isinstance(p["padding"], str) else _pair(p["padding"])
    args = [str(shape[0]), str(p["out_channels"]), f"kernel_size={_r(_pair(p['kernel']))}",
            f"stride={_r(_pair(p['stride']))}", f"padding={_r(pad)}"]
    if _pair(p["dilation"]) != (1, 1):
        args.append(f"dilation={_r(_pair(p['dilation']))}")
    if p["groups"] != 1:
        args.append(f"groups={p['groups']}")
    if not p["bias"]:
        args.append("bias=False")
    return f"nn.Conv2d({', '.join(args)})"


def _pool(cls):
    def make(p, shape):
        k = _pair(p["kernel"])
        s = k if p["stride"] == 0 else (p["stride"], p["stride"])
        args = [f"kernel_size={_r(k)}", f"stride={_r(s)}"]
        if p["padding"]:
            args.append(f"padding={p['padding']}")
        if p["ceil_mode"]:
            args.append("ceil_mode=True")
        return f"nn.{cls}({', '.join(args)})"
    return make


def _linear(p, shape):
    n = 1
    for d in shape:
        n *= d
    return f"nn.Linear({n}, {p['out_features']}" + (", bias=False)" if not p["bias"] else ")")


# kind -> (constructor code from (resolved params, first input shape) or None for a parameter-free
# merge done inline, forward expression from (call, input variables, first input shape))
CODE_KINDS = {
    "conv2d": _conv,
    "maxpool2d": _pool("MaxPool2d"),
    "avgpool2d": _pool("AvgPool2d"),
    "adaptive_avgpool2d": lambda p, s: f"nn.AdaptiveAvgPool2d({_r(_pair(p['output_size']))})",
    "lrn": lambda p, s: f"nn.LocalResponseNorm({p['size']}, alpha={_r(float(p['alpha']))}, "
                        f"beta={_r(float(p['beta']))}, k={_r(float(p['k']))})",
    "batchnorm2d": lambda p, s: (f"nn.BatchNorm2d({s[0]}, eps={_r(float(p['eps']))}, "
                                 f"momentum={_r(float(p['momentum']))}"
                                 + (", affine=False)" if not p["affine"] else ")")),
    "relu": lambda p, s: "nn.ReLU()",
    "leaky_relu": lambda p, s: f"nn.LeakyReLU({_r(float(p['negative_slope']))})",
    "sigmoid": lambda p, s: "nn.Sigmoid()",
    "tanh": lambda p, s: "nn.Tanh()",
    "gelu": lambda p, s: f"nn.GELU(approximate={_r(p['approximate'])})",
    "softmax": lambda p, s: "nn.Softmax(dim=1)",
    "linear": _linear,
    "flatten": lambda p, s: "nn.Flatten(1)",
    "dropout": lambda p, s: f"nn.Dropout({_r(float(p['p']))})",
    "add": None,
    "concat": None,
}


def class_name_for(name: str) -> str:
    """A CamelCase Python class name from a net name (``alexnet-article`` -> ``AlexnetArticle``)."""
    parts = [w for w in re.split(r"[^0-9A-Za-z]+", name or "") if w]
    out = "".join(w[:1].upper() + w[1:] for w in parts) or "Net"
    if out[0].isdigit():
        out = "Net" + out
    return out


def _is_plain_name(s: str) -> bool:
    return s.isidentifier() and not keyword.iskeyword(s) and s.isascii()


def _doc_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', "'''")


def to_pytorch_source(spec: NetSpec, class_name: str | None = None, *, weights_name: str | None = None) -> str:
    """Python source of a standalone module defining ``class <class_name>(nn.Module)`` for ``spec``.

    Submodules are named by node id (``state_dict`` keys equal ``engine.build_model(spec)``'s, so a
    LayerScope checkpoint loads with ``load_state_dict``); ``forward(x)`` takes a float batch
    (N, C, H, W) of the net's input shape and returns the last node's output, running the built nodes
    in ``LayerNet.plan`` order (nodes that do not feed the output are not built, as in LayerNet).
    The source imports only ``torch``. Raises ``SpecError`` for an invalid net and
    ``LayerScopeError`` for a kind that has no code form. ``weights_name`` (a checkpoint file path;
    ``export_net`` passes the absolute path of the resolved checkpoint) is the file the docstring's
    loading lines name, and the docstring says where that path came from.
    """
    from engine.net.analyze import analyze

    info = analyze(spec)  # SpecError for an invalid net, as build_model
    cls = class_name or class_name_for(spec.name)
    if not _is_plain_name(cls):
        raise LayerScopeError(f"'{cls}' is not a Python class name")
    index = {n.id: i for i, n in enumerate(spec.nodes)}
    from engine.net.registry import get_kind

    taken = {"self", "x", "torch", "nn"}
    var = {INPUT_ID: "x"}
    init, body = [], []
    for k, layer in enumerate(info.layers):
        node = spec.nodes[index[layer.id]]
        if layer.kind not in CODE_KINDS:
            raise LayerScopeError(f"node '{layer.id}': kind '{layer.kind}' has no PyTorch code form")
        p = get_kind(layer.kind).resolved(node.params)
        refs = [var[r] for r in spec.inputs_of(index[layer.id])]
        name = layer.id if _is_plain_name(layer.id) and layer.id not in taken else f"v{k}"
        while name in taken:
            name = f"_{name}"
        taken.add(name)
        var[layer.id] = name
        if layer.kind == "add":
            body.append(f"{name} = {' + '.join(refs)}  # {layer.id}: add")
            continue
        if layer.kind == "concat":
            body.append(f"{name} = torch.cat([{', '.join(refs)}], dim=1)  # {layer.id}: concat")
            continue
        ctor = CODE_KINDS[layer.kind](p, tuple(layer.in_shapes[0]))
        arg = refs[0]
        if layer.kind == "linear" and len(layer.in_shapes[0]) > 1:
            arg = f"{arg}.flatten(1)"  # LayerScope's linear flattens a CxHxW input first
        if _is_plain_name(layer.id):
            init.append(f"self.{layer.id} = {ctor}")
            body.append(f"{name} = self.{layer.id}({arg})")
        else:
            init.append(f"self.add_module({layer.id!r}, {ctor})")
            body.append(f"{name} = self._modules[{layer.id!r}]({arg})")
    out_var = var[spec.nodes[-1].id]
    c, h, w = spec.input.shape
    title = spec.name or "net"
    st_name = weights_name if weights_name and weights_name.endswith(".safetensors") else "ckpt-....safetensors"
    pt_name = weights_name if weights_name and not weights_name.endswith(".safetensors") else "ckpt-....pt"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        '"""' + _doc_text(f"{title}: {cls}, written by LayerScope's export-net on {stamp}."),
        "",
        *textwrap.wrap(_doc_text(
            f"Input: a float batch N x {c} x {h} x {w} (channels x height x width); output: N x "
            f"{' x '.join(map(str, info.shapes[spec.nodes[-1].id]))}. {len(info.layers)} layers, "
            f"{info.params:,} parameters."), 96),
        *([*textwrap.wrap(_doc_text(spec.description), 96), ""] if spec.description else [""]),
        "This file needs only PyTorch. Submodules are named by the net's node ids, so the",
        "state_dict keys are those of a LayerScope checkpoint. To load trained weights:",
        *(textwrap.wrap(_doc_text(
            f"(the checkpoint given to export-net --weights, resolved to its file - a folder means its "
            f"latest checkpoint - and written as an absolute path, so the lines below work from any "
            f"folder: {weights_name})"), 96) if weights_name else [
            "(ckpt-....: a checkpoint file of this net; export-net --weights CHECKPOINT writes its path here)"]),
        "",
        "    model = " + cls + "()",
        "    # a LayerScope checkpoint (.safetensors, plain tensors; needs the safetensors package):",
        "    from safetensors.torch import load_file",
        "    model.load_state_dict(load_file(" + _doc_text(repr(st_name)) + "))",
        "    # or a checkpoint saved with format torch (.pt):",
        "    model.load_state_dict(torch.load(" + _doc_text(repr(pt_name)) + ", weights_only=True))",
        "    model.eval()",
        '"""',
        "import torch",
        "import torch.nn as nn",
        "",
        f"INPUT_SHAPE = ({c}, {h}, {w})  # channels, height, width of one sample",
        f"CLASSES = {spec.input.classes}",
        "",
        "",
        f"class {cls}(nn.Module):",
        '    """' + _doc_text(f"{title}, one submodule per node; forward runs them in the net's order.") + '"""',
        "",
        "    def __init__(self):",
        "        super().__init__()",
        *("        " + s for s in init),
        *([] if init else ["        pass"]),
        "",
        "    def forward(self, x):",
        *("        " + s for s in body),
        f"        return {out_var}",
        "",
        "",
        'if __name__ == "__main__":',
        f"    model = {cls}().eval()",
        "    with torch.no_grad():",
        "        y = model(torch.randn(2, *INPUT_SHAPE))",
        '    print(f"{type(model).__name__}: input {tuple(INPUT_SHAPE)} -> output {tuple(y.shape[1:])}, "',
        '          f"{sum(p.numel() for p in model.parameters()):,} parameters")',
        "",
    ]
    return "\n".join(lines)


FORMATS = ("pytorch", "onnx")
EXPORT_FORMATS = FORMATS  # the facade's name
SUFFIX = {"pytorch": ".py", "onnx": ".onnx"}


def format_for(out, fmt: str | None = None) -> str:
    """The export format for the file ``out``: ``fmt`` when given, else the one its suffix names
    (``.py`` -> "pytorch", ``.onnx`` -> "onnx", case-insensitive).

    Raises ``LayerScopeError`` (one line) for an unknown ``fmt``, for a suffix that names the
    other format (``--format onnx --out x.py`` would write ONNX bytes into a .py file), and, with no
    ``fmt``, for a suffix that names none. Another suffix with an explicit ``fmt`` is the user's choice.
    """
    if fmt is not None and fmt not in FORMATS:
        raise LayerScopeError(f"unknown format '{fmt}'; use {' or '.join(FORMATS)}")
    suffix = Path(out).suffix.lower()
    named = next((f for f, suf in SUFFIX.items() if suf == suffix), None)
    if fmt is None:
        if named is None:
            raise LayerScopeError(f"{out}: cannot tell the format from '{suffix or 'no suffix'}'; end the name in "
                                  f"{' or '.join(SUFFIX.values())} or give --format {' or '.join(FORMATS)}")
        return named
    if named is not None and named != fmt:
        raise LayerScopeError(f"{out}: a {suffix} file is {named}, not {fmt}; name it {Path(out).stem}{SUFFIX[fmt]} "
                              f"or use --format {named}")
    return fmt


def export_net(spec, fmt: str | None, out, *, weights=None, force: bool = False) -> Path:
    """Write ``spec`` as ``fmt`` ("pytorch" or "onnx"; None: the one ``out``'s suffix names, see
    ``format_for``) to ``out`` and return the path.

    Never replaces an existing file unless ``force``; ``weights`` (a LayerScope checkpoint, file or
    folder) must fit the net: ONNX bakes them in, the PyTorch file names them in its loading lines by
    the checkpoint file's absolute path. Raises ``LayerScopeError`` with one line for any bad input,
    including an ``out`` whose suffix contradicts ``fmt``.
    """
    fmt = format_for(out, fmt)
    out = Path(out).expanduser()
    if out.is_dir():
        raise LayerScopeError(f"{out} is a folder; give a file name for --out")
    if out.exists() and not force:
        raise LayerScopeError(f"{out} exists; add --force to replace it")
    if not out.parent.is_dir():
        raise LayerScopeError(f"no such folder: {out.parent}")
    if fmt == "onnx":
        from engine.net.export_onnx import to_onnx

        return to_onnx(spec, out, weights=weights)
    name = None
    if weights is not None:
        from engine.net.checkpoint import load_checkpoint, resolve

        load_checkpoint(weights, spec=spec)  # CheckpointError listing each node that does not fit
        name = str(resolve(weights).resolve())  # absolute: the loading line works from any folder
    text = to_pytorch_source(spec, weights_name=name)
    tmp = out.with_name(f".{out.name}.part")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise LayerScopeError(f"cannot write {out}: {e.strerror or e}") from None
    return out
