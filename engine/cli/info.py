"""Commands that describe what is there: ``presets``, ``validate`` and ``devices``."""
from __future__ import annotations

import json

from engine.cli.common import EXIT_BAD_INPUT, EXIT_OK, whole_number
from engine.cli.profile import input_shape
from engine.cli.output import fmt_bytes, fmt_flops, fmt_int, print_table
from engine.errors import LayerScopeError


def cmd_presets(args) -> int:
    """The built-in nets with their input shape and one line of description."""
    from engine.net.presets import load_preset, preset_names

    rows = []
    for name in preset_names():
        spec = load_preset(name)
        desc = spec.description.split(". ")[0].rstrip(".")
        rows.append([name, f"{spec.input.channels}x{spec.input.height}x{spec.input.width}", desc])
    print_table(rows, ["preset", "input", "description"])
    return EXIT_OK


def cmd_validate(args) -> int:
    """Every problem of a net (exit 2), or its per-node shapes, parameters and FLOPs."""
    from engine.cli.profile import net_from_args
    from engine.net.model import analyze

    imported = None
    try:
        spec, imported = net_from_args(args)  # a model to import: its file is executed
        info = analyze(spec)
    except LayerScopeError as e:
        if args.json:
            print(json.dumps({"ok": False, "errors": [p.to_json() for p in e.problems], "layers": [],
                              "params": 0, "flops": 0}))
        else:
            for p in e.problems:
                print(str(p))
        return EXIT_BAD_INPUT
    layers = [{"id": li.id, "kind": li.kind, "out_shape": list(li.out_shape), "params": li.params,
               "flops": li.flops} for li in info.layers]
    if imported is not None:
        return _print_imported(args, imported, info, layers)
    if args.json:
        print(json.dumps({"ok": True, "errors": [], "layers": layers, "params": info.params,
                          "flops": info.flops, "warnings": [p.to_json() for p in info.warnings],
                          "unused": [li.id for li in info.unused]}))
        return EXIT_OK
    # the built nodes in run order, then those that do not feed the output, marked (not built or run)
    unused = {li.id for li in info.unused}
    rows = [[li.id + (" (unused)" if li.id in unused else ""), li.kind, "x".join(map(str, li.out_shape)),
             fmt_int(li.params), fmt_flops(li.flops)]
            for li in info.layers + info.unused]
    print_table(rows, ["node", "kind", "output", "params", "FLOPs"], right={3, 4})
    for p in info.warnings:
        print(f"warning: {p}")
    inp = spec.input
    print(f"\n{spec.name or args.net}: input {inp.channels}x{inp.height}x{inp.width}, {inp.classes} classes, "
          f"{len(info.layers)} nodes, {fmt_int(info.params)} parameters, "
          f"{fmt_flops(info.flops)}FLOPs per sample (forward)")
    return EXIT_OK


def _print_imported(args, imported, info, layers) -> int:
    """An imported model's graph: node, its name in the model, kind (an opaque node's op), output,
    parameters, forward and backward FLOPs per sample; then the fallback notice and notes."""
    spec = imported.spec
    if args.json:
        for row, li in zip(layers, info.layers):
            node = spec.node(li.id)
            row.update(name=imported.names.get(li.id, li.id), bwd_flops=li.bwd_flops,
                       op=node.params.get("op") if node.kind == "opaque" else None)
        print(json.dumps({"ok": True, "errors": [], "layers": layers, "params": info.params, "flops": info.flops,
                          "traced": imported.traced, "notice": imported.notice, "notes": imported.notes,
                          "net": spec.to_dict()}))
        return EXIT_OK
    rows = []
    for li in info.layers:
        node = spec.node(li.id)
        kind = f"opaque: {node.params['op']}" if node.kind == "opaque" else li.kind
        rows.append([li.id, imported.names.get(li.id, li.id), kind, "x".join(map(str, li.out_shape)),
                     fmt_int(li.params), fmt_flops(li.flops), fmt_flops(li.bwd_flops)])
    print_table(rows, ["node", "name", "kind", "output", "params", "FLOPs", "bwd FLOPs"], right={4, 5, 6})
    inp = spec.input
    n_opaque = sum(1 for n in spec.nodes if n.kind == "opaque")
    print(f"\n{args.net}: input {inp.channels}x{inp.height}x{inp.width}, {inp.classes} classes, "
          f"{len(info.layers)} nodes ({n_opaque} opaque), {fmt_int(info.params)} parameters, "
          f"{fmt_flops(info.flops)}FLOPs per sample (forward)")
    for line in ([imported.notice] if imported.notice else []) + imported.notes:
        print(f"note: {line}")
    return EXIT_OK


def cmd_devices(args) -> int:
    """The devices torch sees, their memory, and which telemetry each has (with reasons when absent)."""
    from engine.run.devices import list_devices, resolve_device
    from engine.run.telemetry import Telemetry, telemetry_status

    machine = telemetry_status()
    devices = list_devices()
    per_device = {}
    for d in devices:
        st = Telemetry(d.id).status()
        if d.kind != "cuda":
            st.pop("nvml", None)  # a CPU or MPS run never reads NVML
        per_device[d.id] = st
    no_cuda = None
    if not any(d.kind == "cuda" for d in devices):
        try:
            resolve_device("cuda")
        except LayerScopeError as e:
            no_cuda = str(e)
    if args.json:
        print(json.dumps({"devices": [dict(d.to_dict(), telemetry=per_device[d.id]) for d in devices],
                          "telemetry": machine, "cuda": no_cuda}, indent=1))
        return EXIT_OK
    rows = []
    for d in devices:
        tel = ", ".join(f"{k.upper() if k != 'psutil' else k}" for k, v in per_device[d.id].items() if v["available"])
        rows.append([d.id, d.name, fmt_bytes(d.memory_total), fmt_bytes(d.memory_free), tel or "none"])
    print_table(rows, ["device", "name", "memory", "free", "telemetry"], right={2, 3})
    if no_cuda:
        print(f"\nno CUDA device: {no_cuda}")
    print("\ntelemetry sources:")
    names = {"nvml": "NVML (GPU power, energy, memory, clocks)", "psutil": "psutil (CPU, memory)",
             "rapl": "RAPL (CPU package energy)"}
    for key in ("nvml", "psutil", "rapl"):
        st = machine.get(key, {})
        mark = "yes" if st.get("available") else "no "
        print(f"  {mark}  {names[key]}: {st.get('reason', '')}")
    for d in devices:
        if d.kind == "cuda":
            st = per_device[d.id].get("nvml", {})
            if st and st.get("reason") and st.get("available"):
                print(f"  {d.id}: {st['reason']}")
    return EXIT_OK


def register(sub) -> None:
    """Add presets / validate to the ``layerscope`` parser."""
    s = sub.add_parser("presets", help="list the built-in nets")
    s.set_defaults(func=cmd_presets)
    s = sub.add_parser("validate", help="check a net file or preset; every problem, exit 2 if any")
    s.add_argument("net", help="preset name, path to a net JSON file, or a model to import: FILE.py:FACTORY "
                               "(your own Python file: it is EXECUTED) or torchvision:NAME; prints its traced graph")
    s.add_argument("--input-shape", type=input_shape, default=None, metavar="C,H,W",
                   help="per-sample input of a model to import, e.g. 3,32,32")
    s.add_argument("--classes", type=whole_number(1), default=None, metavar="N",
                   help="class scores a model to import outputs (default: what its output says)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_validate)


def register_devices(sub) -> None:
    """Add devices to the ``layerscope`` parser (listed last in --help)."""
    s = sub.add_parser("devices", help="devices and which telemetry each has (with reasons when absent)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_devices)
