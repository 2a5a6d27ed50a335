"""``layerscope export-net``: a net as a standalone PyTorch module (.py) or an ONNX file."""
from __future__ import annotations

from engine.cli.common import EXIT_OK
from engine.net.export_code import FORMATS, export_net, format_for


def cmd_export_net(args) -> int:
    from engine.net.presets import resolve_net

    format_for(args.out, args.format)  # a contradicting --out suffix: refused before any work
    spec = resolve_net(args.net, buildable=True)
    path = export_net(spec, args.format, args.out, weights=args.weights, force=args.force)
    print(f"wrote {path}")
    return EXIT_OK


def register(sub) -> None:
    """Add ``export-net`` to the ``layerscope`` parser."""
    s = sub.add_parser("export-net", help="write a net as a standalone PyTorch module (.py) or an ONNX file",
                       description="Write a net (a preset name or a net JSON file) as a standalone PyTorch "
                       "module whose state_dict keys are those of LayerScope checkpoints, or as ONNX "
                       "(needs the onnx extra: pip install -e '.[onnx]').")
    s.add_argument("net", help="a preset name or a net JSON file")
    s.add_argument("--format", choices=FORMATS, default=None,
                   help="pytorch or onnx; default: the one --out's suffix names (.py or .onnx). An --out "
                   "ending in the other format's suffix is refused (exit 2)")
    s.add_argument("--out", required=True, help="the file to write (.py for pytorch, .onnx for onnx)")
    s.add_argument("--weights", default=None, metavar="CHECKPOINT",
                   help="a LayerScope checkpoint (file, or folder = its latest): baked into ONNX; "
                   "checked and named in the PyTorch file's loading lines")
    s.add_argument("--force", action="store_true", help="replace --out if it exists")
    s.set_defaults(func=cmd_export_net)
