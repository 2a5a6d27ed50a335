"""A net as an ONNX file (``to_onnx``), through PyTorch's TorchScript-based ONNX exporter.

The ``onnx`` package is an optional extra (``pip install -e '.[onnx]'``): it checks the written
file with ``onnx.checker.check_model``. Without it ``to_onnx`` raises one line saying so.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from engine.errors import LayerScopeError
from engine.net.spec import NetSpec

__all__ = ["to_onnx", "onnx_available", "ONNX_OPSET"]

ONNX_OPSET = 17  # every op the layer kinds build (Conv, pooling, LRN, BatchNormalization, Gelu as Erf) exists there
NEEDS_ONNX = "ONNX export needs the onnx package: pip install -e '.[onnx]' (or pip install onnx)"


def onnx_available() -> bool:
    """True when the ``onnx`` package can be imported (ONNX export is possible)."""
    import importlib.util

    return importlib.util.find_spec("onnx") is not None


def to_onnx(spec: NetSpec, path, *, weights=None, opset: int = ONNX_OPSET) -> Path:
    """Write ``spec`` as an ONNX model to ``path`` and return the path.

    The graph takes ``input`` (float32, N x C x H x W, N dynamic) and returns ``output`` (N x
    classes), traced from ``engine.build_model(spec)`` in eval mode (dropout off, batch norm on its
    running statistics). ``weights`` is a LayerScope checkpoint (file, or folder = its latest) loaded
    first; without it the weights are the net's random initialisation. The file is written under a
    temporary name, checked with ``onnx.checker.check_model`` and then renamed (an existing file is
    replaced: refusing to overwrite is the caller's choice). Raises ``LayerScopeError`` (one line)
    when onnx is not installed, the net is invalid, the weights do not fit, or the export fails.
    """
    if not onnx_available():
        raise LayerScopeError(NEEDS_ONNX)
    import onnx
    import torch

    from engine.net.checkpoint import load_checkpoint
    from engine.net.model import build_model

    model = build_model(spec)
    if weights is not None:
        load_checkpoint(weights, model=model)
    model.eval()
    path = Path(path).expanduser()
    tmp = path.with_name(f".{path.name}.part")
    x = torch.zeros(1, *spec.input.shape)
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation note is ours to know
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              opset_version=opset, dynamo=False)
        onnx.checker.check_model(onnx.load(str(tmp)))
        os.replace(tmp, path)
    except OSError as e:
        raise LayerScopeError(f"cannot write {path}: {e.strerror or e}") from None
    except Exception as e:  # exporter or checker: say which, in one line
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LayerScopeError(f"ONNX export of {spec.name or 'the net'} failed: {text}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
