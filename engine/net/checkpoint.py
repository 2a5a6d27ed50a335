"""Checkpoints: a net's weights in safetensors, with the net spec and run position inside the
file's metadata, so a checkpoint says what it belongs to.

File names sort by time (``ckpt-20250102-153045-123456-e0003-s00000450.safetensors``), so a
folder's latest checkpoint is its last name. Loading never runs pickled code: safetensors is
plain data, and a ``torch.save`` state dict is read with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import re
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from engine.errors import LayerScopeError, Problem

FORMAT = "layerscope-checkpoint"
VERSION = 1
SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pt", ".pth")
_NAME_RE = re.compile(r"^ckpt-\d{8}-\d{6}-\d{6}(-e\d+)?(-s\d+)?\.(safetensors|pt)$")


class CheckpointError(LayerScopeError):
    """A checkpoint that cannot be read, or does not fit the net it is loaded into."""


def _shape(shape) -> str:
    return "x".join(str(int(d)) for d in shape) or "scalar"


def _name(step, epoch, suffix: str) -> str:
    now = datetime.now(timezone.utc)
    name = "ckpt-" + now.strftime("%Y%m%d-%H%M%S-%f")
    if epoch is not None:
        name += f"-e{int(epoch):04d}"
    if step is not None:
        name += f"-s{int(step):08d}"
    return name + suffix


def _plain_state(model) -> dict:
    """CPU tensors that safetensors accepts: contiguous, none sharing storage with another."""
    state, seen = {}, set()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()  # tied weights: safetensors refuses shared storage
        seen.add(ptr)
        state[k] = t
    return state


def save_checkpoint(model, spec, folder, *, step: int | None = None, epoch: int | None = None,
                    extra: dict | None = None, format: str = "safetensors") -> Path:
    """Write ``model``'s weights to a new, time-named file in ``folder`` and return its path.

    The net spec, step, epoch and ``extra`` (JSON-able) go into the safetensors metadata (for
    ``format="torch"``, a ``torch.save`` state dict plus a ``.json`` sidecar with the same). The
    file is written under a temporary name and renamed, so a crash never leaves a half file.
    """
    from engine.net import spec as spec_mod

    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create the checkpoint folder {folder}: {e.strerror or e}") from None
    if format not in ("safetensors", "torch"):
        raise CheckpointError(f"unknown checkpoint format '{format}'; use safetensors or torch")
    suffix = SUFFIX if format == "safetensors" else ".pt"
    path = folder / _name(step, epoch, suffix)
    while path.exists():  # two saves within a microsecond
        time.sleep(1e-6)
        path = folder / _name(step, epoch, suffix)
    meta = {"format": FORMAT, "version": str(VERSION), "saved_at": datetime.now(timezone.utc).isoformat(),
            "net": spec_mod.dumps(spec) if spec is not None else "",
            "step": "" if step is None else str(int(step)), "epoch": "" if epoch is None else str(int(epoch)),
            "extra": json.dumps(extra or {}, default=str)}
    state = _plain_state(model)
    tmp = path.with_name("." + path.name + ".tmp")
    try:
        if format == "safetensors":
            from safetensors.torch import save_file
            save_file(state, str(tmp), metadata=meta)
        else:
            import torch
            torch.save(state, tmp)
            side = path.with_suffix(".json")
            side.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, path)
    except OSError as e:
        raise CheckpointError(f"cannot write the checkpoint {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_checkpoint_folder(folder) -> Path:
    """Prove that checkpoints can be saved into ``folder`` before a run spends time; its path.

    CheckpointError (one line) when ``folder`` is an existing file (it names the folder the
    time-named files go into), when a part of the path is a file, or when the folder (or, if it
    does not exist yet, its nearest existing parent) does not take a new file - tried with a
    temporary file, so a read-only mount is found even by root. Creates nothing that stays.
    """
    import tempfile

    p = Path(folder).expanduser()
    if p.exists() and not p.is_dir():
        raise CheckpointError(f"{p} is a file; give a folder for the checkpoints (they are saved "
                              "into it under time-stamped names)")
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise CheckpointError(f"cannot save checkpoints in {p}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise CheckpointError(f"cannot save checkpoints in {p}: {probe} is not writable "
                              f"({e.strerror or e})") from None
    return p


RUN_WEIGHTS_SUFFIX = ".weights"


def run_checkpoint_folder(session_path) -> Path:
    """The folder a run's checkpoints go in: beside its session file, named after it
    (``runs/lenet5-20250102-153045-1.lsession`` -> ``runs/lenet5-20250102-153045-1.weights``).

    Checkpoints belong to a run, not to a net name: two runs of the same (or an unnamed) net never
    share a folder, so "the latest checkpoint" of a run's folder is always that run's own.
    """
    p = Path(session_path).expanduser()
    return p.with_name(p.stem + RUN_WEIGHTS_SUFFIX)


def checkpoint_run(meta: dict) -> str | None:
    """The session file of the run that saved a checkpoint (``load_checkpoint``/``load_model``'s
    ``meta``), from the run config stored in it; None when the checkpoint does not say."""
    cfg = (meta.get("extra") or {}).get("config") or {}
    out = cfg.get("out") if isinstance(cfg, dict) else None
    return str(out) if out else None


def latest_checkpoint(folder) -> Path | None:
    """The newest checkpoint in ``folder``: the last LayerScope-named file, else the most
    recently modified .safetensors/.pt/.pth file; None if there is none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return None
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    ours = sorted(p for p in files if _NAME_RE.match(p.name))
    if ours:
        return ours[-1]
    others = [p for p in files if p.suffix in (SUFFIX, *TORCH_SUFFIXES)]
    return max(others, key=lambda p: (p.stat().st_mtime_ns, p.name)) if others else None


def resolve(path_or_dir) -> Path:
    """The checkpoint file a path names (a folder means its latest); CheckpointError if none."""
    p = Path(path_or_dir).expanduser()
    if p.is_dir():
        try:
            found = latest_checkpoint(p)
        except OSError as e:
            raise CheckpointError(f"cannot look for a checkpoint in {p}: {e.strerror or e}") from None
        if found is None:
            raise CheckpointError(f"no checkpoint (.safetensors, .pt, .pth) in {p}")
        return found
    if not p.is_file():
        raise CheckpointError(f"no such checkpoint: {p}")
    return p


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _read(path: Path) -> tuple[dict, dict]:
    """(state dict of CPU tensors, raw string metadata) of one file, never unpickling."""
    import torch

    if path.suffix in TORCH_SUFFIXES:
        try:
            with warnings.catch_warnings():  # a pickle protocol note is no concern of the user's
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses anything but tensors and plain containers
            raise CheckpointError(f"{path.name} is not a plain torch state dict that can be loaded safely "
                                  f"(weights only): {_first_line(e)}") from None
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path.name} does not hold a state dict (names -> tensors)")
        meta = {}
        side = path.with_suffix(".json")
        if side.is_file():
            try:
                meta = {k: str(v) for k, v in json.loads(side.read_text()).items()}
            except (OSError, ValueError):
                meta = {}
        return dict(obj), meta
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path), device="cpu")
    except Exception as e:  # SafetensorError, header JSON errors, short files
        raise CheckpointError(f"{path.name} is not a readable safetensors file: {_first_line(e)}") from None
    return state, meta


def _meta(raw: dict, path: Path) -> dict:
    """Typed metadata: net (NetSpec or None), step, epoch, saved_at, extra, path."""
    from engine.net.spec import loads

    net = None
    if raw.get("net"):
        try:
            net = loads(raw["net"])
        except LayerScopeError:
            net = None
    try:
        extra = json.loads(raw.get("extra") or "{}")
    except ValueError:
        extra = {}
    as_int = lambda s: int(s) if s and str(s).lstrip("-").isdigit() else None  # noqa: E731
    return {"path": str(path), "net": net, "step": as_int(raw.get("step")), "epoch": as_int(raw.get("epoch")),
            "saved_at": raw.get("saved_at"), "extra": extra, "format": raw.get("format")}


def check_state(state: dict, expected: dict) -> list[Problem]:
    """Every difference between a checkpoint's tensors and the net's (name -> shape), per node."""
    per_node: dict[str, list[str]] = {}

    def add(key: str, msg: str) -> None:
        node, _, rest = key.partition(".")
        per_node.setdefault(node, []).append(msg.format(p=rest or key))

    for key, shape in expected.items():
        if key not in state:
            add(key, "{p} is missing from the checkpoint")
        elif tuple(state[key].shape) != tuple(shape):
            add(key, f"{{p}} is {_shape(state[key].shape)} in the checkpoint but {_shape(shape)} in the net")
    nodes = {k.partition(".")[0] for k in expected}
    strangers: dict[str, list[str]] = {}
    for key in state:
        if key not in expected:
            node, _, rest = key.partition(".")
            if node in nodes:
                add(key, "{p} is in the checkpoint but not in the net")
            else:
                strangers.setdefault(node, []).append(rest or key)
    for node, names in strangers.items():
        per_node.setdefault(node, []).append(f"not in the net (the checkpoint has its {', '.join(names)})")
    return [Problem(node, ", ".join(msgs)) for node, msgs in per_node.items()]


def load_checkpoint(path_or_dir, spec=None, model=None) -> tuple[dict, dict]:
    """Read a checkpoint (a folder means its latest) and return ``(state_dict, meta)``.

    With ``model`` (or ``spec``) the weights are checked against that net first: any difference
    raises CheckpointError listing each node whose parameters are missing, unexpected or of
    another shape. With ``model`` the weights are then loaded into it. ``meta`` holds ``net``
    (the stored NetSpec or None), ``step``, ``epoch``, ``saved_at``, ``extra`` and ``path``.
    """
    path = resolve(path_or_dir)
    state, raw = _read(path)
    meta = _meta(raw, path)
    expected = None
    if model is not None:
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    elif spec is not None:
        expected = _shapes_of(spec)
    if expected is not None:
        problems = check_state(state, expected)
        if problems:
            raise CheckpointError([Problem(None, f"{path.name} does not fit the net")] + problems)
    if model is not None:
        model.load_state_dict(state, strict=True)
    return state, meta


def _shapes_of(spec) -> dict:
    """Parameter and buffer shapes of the net ``spec`` builds, without allocating its weights."""
    import torch

    from engine.net.model import build_model

    with torch.device("meta"):
        model = build_model(spec)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_model(path_or_dir, device="cpu"):
    """Rebuild the net stored in a LayerScope checkpoint and load its weights: (model, spec, meta)."""
    from engine.net.model import build_model

    path = resolve(path_or_dir)
    state, raw = _read(path)
    meta = _meta(raw, path)
    if meta["net"] is None:
        raise CheckpointError(f"{path.name} does not say which net it belongs to; load it into a net instead")
    model = build_model(meta["net"])
    problems = check_state(state, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    if problems:
        raise CheckpointError([Problem(None, f"{path.name} does not fit its own stored net")] + problems)
    model.load_state_dict(state, strict=True)
    return model.to(device), meta["net"], meta
