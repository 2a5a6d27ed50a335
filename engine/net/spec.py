"""The net spec: a small JSON graph of layer nodes, loaded, saved and checked without torch.

A chain stays a plain list (a node's ``inputs`` default to the previous node, the first
node's to the net input); ``add`` and ``concat`` nodes merge branches.
"""
from __future__ import annotations

import copy
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

from engine.errors import Problem, SpecError
from engine.net.registry import get_kind, kinds, show_value

FORMAT = "layerscope-net"
VERSION = 1
INPUT_ID = "input"
_ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # fullmatch: "$" would accept a trailing newline
_TOP_KEYS = {"format", "version", "name", "description", "input", "nodes"}
_NODE_KEYS = {"id", "kind", "params", "inputs"}
# the net input's fields and their inclusive bounds (the editor's input form uses them too)
INPUT_FIELDS = {"channels": (1, 4096), "height": (1, 8192), "width": (1, 8192), "classes": (1, 1_000_000)}


@dataclass
class InputSpec:
    """The net input: one sample is channels x height x width, labelled with one of ``classes``."""

    channels: int = 1
    height: int = 28
    width: int = 28
    classes: int = 10

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


@dataclass
class Node:
    """One layer: an id (also its module name), a kind, its params, and optional explicit inputs."""

    id: str
    kind: str
    params: dict = field(default_factory=dict)
    inputs: list[str] | None = None  # None: the previous node (or the net input)


@dataclass
class NetSpec:
    """A whole net: input description plus ordered nodes; the last node is the output."""

    input: InputSpec = field(default_factory=InputSpec)
    nodes: list[Node] = field(default_factory=list)
    name: str = ""
    description: str = ""

    def node(self, node_id: str) -> Node | None:
        for n in self.nodes:
            if n.id == node_id:
                return n
        return None

    def inputs_of(self, index: int) -> list[str]:
        """The ids feeding node ``index`` (``'input'`` is the net input)."""
        n = self.nodes[index]
        if n.inputs is not None:
            return list(n.inputs)
        return [self.nodes[index - 1].id] if index > 0 else [INPUT_ID]

    def copy(self) -> "NetSpec":
        return copy.deepcopy(self)

    def to_dict(self) -> dict:
        nodes = []
        for n in self.nodes:
            d: dict[str, Any] = {"id": n.id, "kind": n.kind}
            if n.params:
                d["params"] = copy.deepcopy(n.params)
            if n.inputs is not None:
                d["inputs"] = list(n.inputs)
            nodes.append(d)
        out: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        if self.name:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        out["input"] = {"channels": self.input.channels, "height": self.input.height,
                        "width": self.input.width, "classes": self.input.classes}
        out["nodes"] = nodes
        return out


def dumps(spec: NetSpec) -> str:
    """The spec as canonical JSON text (what ``save`` writes); SpecError for a malformed spec
    object (``check_objects``) or a parameter value JSON cannot hold."""
    problems = check_objects(spec)
    if problems:
        raise SpecError(problems)
    try:
        return json.dumps(spec.to_dict(), indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError, RecursionError) as e:
        raise SpecError(f"the net cannot be written as JSON: {e}") from None


def save(spec: NetSpec, path: str | Path) -> None:
    """Write the spec to ``path`` (via a temporary file, so a failed write loses nothing)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(spec), encoding="utf-8")
    tmp.replace(path)


def _where(pairs: list) -> str:
    # an object hook sees no position, so name the object by what it holds
    for k, v in pairs:
        if k == "id" and isinstance(v, str):
            return f" of node '{v}'"
    keys = {k for k, _ in pairs}
    if "nodes" in keys or "format" in keys:
        return " at the top level"
    if keys & set(INPUT_FIELDS):
        return " of 'input'"
    return ""


def loads(text: str) -> NetSpec:
    """Parse and structurally check JSON text; raises SpecError listing every problem.

    A key given twice in one JSON object is a problem naming the key (plain JSON parsing would
    keep the last value silently, even of a second ``nodes``)."""
    dups: list[Problem] = []

    def pairs_hook(pairs: list) -> dict:
        seen: set = set()
        for k, _ in pairs:
            if k in seen:
                dups.append(Problem(None, f"the key '{k}' appears more than once{_where(pairs)}; "
                                          f"a JSON object names each key once"))
            seen.add(k)
        return dict(pairs)

    try:
        data = json.loads(text, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as e:
        raise SpecError(f"not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except (TypeError, ValueError, RecursionError) as e:
        raise SpecError(f"not valid JSON: {e}") from None
    if dups:
        raise SpecError(list(dict.fromkeys(dups)))
    return from_dict(data)


def load(path: str | Path) -> NetSpec:
    """Read a net file; a missing or unreadable file is a SpecError, not a traceback."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"no net file at {path}") from None
    except IsADirectoryError:
        raise SpecError(f"{path} is a folder, not a net file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read {path}: {e}") from None
    return loads(text)


def from_dict(data: Any) -> NetSpec:
    """Build a NetSpec from parsed JSON, reporting every structural problem at once."""
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise SpecError(f"a net file must hold a JSON object, not {type(data).__name__}")
    fmt = data.get("format")
    if fmt != FORMAT:
        problems.append(Problem(None, f"'format' must be \"{FORMAT}\", not {show_value(fmt)}"))
    ver = data.get("version")
    if ver != VERSION:
        problems.append(Problem(None, f"unknown format version {show_value(ver)}; this LayerScope reads version {VERSION}"))
    for k in sorted(set(data) - _TOP_KEYS, key=str):  # key=str: a dict built in code may mix key types
        problems.append(Problem(None, f"unknown top-level field '{k}'"))
    name = data.get("name", "")
    desc = data.get("description", "")
    if not isinstance(name, str):
        problems.append(Problem(None, "'name' must be text"))
        name = ""
    if not isinstance(desc, str):
        problems.append(Problem(None, "'description' must be text"))
        desc = ""

    inp = InputSpec()
    raw_in = data.get("input")
    if not isinstance(raw_in, dict):
        problems.append(Problem(INPUT_ID, "'input' must be an object with channels, height, width and classes"))
    else:
        for k in sorted(set(raw_in) - set(INPUT_FIELDS), key=str):
            problems.append(Problem(INPUT_ID, f"unknown input field '{k}'"))
        for k, (lo, hi) in INPUT_FIELDS.items():
            v = raw_in.get(k)
            if v is None:
                problems.append(Problem(INPUT_ID, f"missing '{k}'"))
            elif isinstance(v, bool) or not isinstance(v, int):
                problems.append(Problem(INPUT_ID, f"'{k}' must be a whole number, not {show_value(v)}"))
            elif not lo <= v <= hi:
                problems.append(Problem(INPUT_ID, f"'{k}' is {v}, outside {lo}..{hi}"))
            else:
                setattr(inp, k, v)

    nodes: list[Node] = []
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list):
        problems.append(Problem(None, "'nodes' must be a list of layers"))
        raw_nodes = []
    for i, rn in enumerate(raw_nodes):
        where = f"node #{i + 1}"
        if not isinstance(rn, dict):
            problems.append(Problem(None, f"{where} must be an object with id and kind"))
            continue
        nid = rn.get("id")
        if not isinstance(nid, str) or not nid:
            problems.append(Problem(None, f"{where} has no text 'id'"))
            nid = f"#{i + 1}"
        for k in sorted(set(rn) - _NODE_KEYS, key=str):
            problems.append(Problem(nid, f"unknown node field '{k}'"))
        kind = rn.get("kind")
        params = rn.get("params", {})
        if not isinstance(params, dict):
            problems.append(Problem(nid, "'params' must be an object"))
            params = {}
        inputs = rn.get("inputs")
        if inputs is not None and (not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs)):
            problems.append(Problem(nid, "'inputs' must be a list of node ids"))
            inputs = None
        nodes.append(Node(nid, kind if isinstance(kind, str) else show_value(kind), params, inputs))
        if not isinstance(kind, str):
            problems.append(Problem(nid, "missing 'kind'" if kind is None else f"'kind' must be text, not {show_value(kind)}"))
    spec = NetSpec(inp, nodes, name, desc)
    problems += check_structure(spec)
    if problems:
        raise SpecError(problems)
    return spec


def id_problem(node_id: str, used: Collection[str] = ()) -> str | None:
    """Why ``node_id`` cannot name a node next to the ids in ``used``, or None when it can.

    Checks the type (text), the pattern (an ASCII letter or _, then ASCII letters, digits and _,
    at most 64), the reserved ``'input'`` and ``used``. Ids that clash with the built module's
    attributes (``forward``, ``training``) are found by ``analyze``, which needs torch.
    """
    if not isinstance(node_id, str):
        return f"an id must be text, not {show_value(node_id)}"
    if node_id == INPUT_ID:
        return "'input' is reserved for the net input; choose another id"
    if not _ID_RE.fullmatch(node_id):
        return ("an id must start with an ASCII letter (a-z, A-Z) or _ and hold only ASCII letters, "
                "digits 0-9 and _ (at most 64)")
    if node_id in used:
        return f"'{node_id}' is already used"
    return None


def did_you_mean(kind: str) -> str:
    """' (did you mean conv2d?)' for a kind that differs from a known one in case or by a typo, else ''."""
    names = list(kinds())
    lower = {n.lower(): n for n in names}
    if kind.lower() in lower:
        return f" (did you mean {lower[kind.lower()]}?)"
    close = difflib.get_close_matches(kind.lower(), list(lower), n=1, cutoff=0.6)
    return f" (did you mean {lower[close[0]]}?)" if close else ""


def check_objects(spec: Any) -> list[Problem]:
    """Problems with the Python objects of a spec built in code rather than loaded (``params``
    None, ``nodes`` not a list, an id that is not text, ...): what ``from_dict`` rules out for a
    file. Empty when every field has its declared type, so the other checks can read them."""
    if not isinstance(spec, NetSpec):
        return [Problem(None, f"a net must be a NetSpec, not {type(spec).__name__}")]
    problems: list[Problem] = []
    for attr in ("name", "description"):
        if not isinstance(getattr(spec, attr), str):
            problems.append(Problem(None, f"'{attr}' must be text, not {show_value(getattr(spec, attr))}"))
    inp = spec.input
    if not isinstance(inp, InputSpec):
        problems.append(Problem(INPUT_ID, f"'input' must be an InputSpec, not {type(inp).__name__}"))
    else:
        for k, (lo, hi) in INPUT_FIELDS.items():
            v = getattr(inp, k)
            if isinstance(v, bool) or not isinstance(v, int):
                problems.append(Problem(INPUT_ID, f"'{k}' must be a whole number, not {show_value(v)}"))
            elif not lo <= v <= hi:
                problems.append(Problem(INPUT_ID, f"'{k}' is {v}, outside {lo}..{hi}"))
    if not isinstance(spec.nodes, list):
        problems.append(Problem(None, f"'nodes' must be a list of layers, not {type(spec.nodes).__name__}"))
        return problems
    for i, n in enumerate(spec.nodes):
        where = f"node #{i + 1}"
        if not isinstance(n, Node):
            problems.append(Problem(None, f"{where} must be a Node, not {type(n).__name__}"))
            continue
        if not isinstance(n.id, str) or not n.id:
            problems.append(Problem(None, f"{where} has no text 'id' ({show_value(n.id)})"))
            continue
        if not isinstance(n.kind, str):
            problems.append(Problem(n.id, f"'kind' must be text, not {show_value(n.kind)}"))
        if not isinstance(n.params, dict):
            problems.append(Problem(n.id, f"'params' must be an object, not {show_value(n.params)}"))
        elif not all(isinstance(k, str) for k in n.params):
            problems.append(Problem(n.id, "'params' must be keyed by parameter names (text)"))
        if n.inputs is not None and (not isinstance(n.inputs, list)
                                     or not all(isinstance(x, str) for x in n.inputs)):
            problems.append(Problem(n.id, f"'inputs' must be a list of node ids, not {show_value(n.inputs)}"))
    return problems


def check_structure(spec: NetSpec) -> list[Problem]:
    """Every problem visible without running torch: the objects' types (``check_objects``),
    ids, kinds, params, references, cycles."""
    problems = check_objects(spec)
    if problems:  # the checks below read the fields as their declared types
        return problems
    if not spec.nodes:
        problems.append(Problem(None, "the net has no layers"))
        return problems
    seen: set[str] = set()
    for n in spec.nodes:
        if n.id.startswith("#"):
            continue
        bad = id_problem(n.id)
        if bad:
            problems.append(Problem(n.id, bad))
        if n.id in seen:
            problems.append(Problem(n.id, f"duplicate id '{n.id}'"))
        seen.add(n.id)
    for i, n in enumerate(spec.nodes):
        k = get_kind(n.kind)
        if k is None:
            problems.append(Problem(n.id, f"unknown kind '{n.kind}'{did_you_mean(n.kind)}"))
        else:
            for pname in sorted(n.params):
                if k.param(pname) is None:
                    known = ", ".join(p.name for p in k.params) or "none"
                    problems.append(Problem(n.id, f"unknown parameter '{pname}' for {n.kind} (known: {known})"))
            for p in k.params:
                if p.name in n.params:
                    bad = p.check(n.params[p.name])
                    if bad:
                        problems.append(Problem(n.id, bad))
                elif p.required:
                    problems.append(Problem(n.id, f"missing parameter '{p.name}'"))
        ins = spec.inputs_of(i)
        if k is not None and not k.min_inputs <= len(ins) <= k.max_inputs:
            want = (str(k.min_inputs) if k.min_inputs == k.max_inputs
                    else f"{k.min_inputs} to {k.max_inputs}")
            problems.append(Problem(n.id, f"{n.kind} takes {want} input(s) but has {len(ins)}"))
        for ref in ins:
            if ref != INPUT_ID and ref not in seen:
                problems.append(Problem(n.id, f"input '{ref}' is not a node of this net"))
            elif ref == n.id:
                problems.append(Problem(n.id, "a node cannot feed itself"))
    if not any(p.message.startswith(("input '", "a node cannot")) for p in problems):
        cyc = find_cycle(spec)
        if cyc:
            problems.append(Problem(cyc[0], "cycle: " + " -> ".join(cyc + [cyc[0]])))
    return problems


def find_cycle(spec: NetSpec) -> list[str] | None:
    """A list of node ids forming a cycle, or None."""
    deps = {n.id: [r for r in spec.inputs_of(i) if r != INPUT_ID] for i, n in enumerate(spec.nodes)}
    state: dict[str, int] = {}
    for start in deps:
        if state.get(start):
            continue
        stack = [(start, iter(deps.get(start, ())))]
        path = [start]
        state[start] = 1
        while stack:
            nid, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[nid] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):]
            elif not state.get(nxt) and nxt in deps:
                state[nxt] = 1
                stack.append((nxt, iter(deps[nxt])))
                path.append(nxt)
    return None


def topo_order(spec: NetSpec) -> list[int]:
    """Node indices so that every node comes after its inputs (spec order where possible)."""
    index = {n.id: i for i, n in enumerate(spec.nodes)}
    done: set[int] = set()
    order: list[int] = []

    for i in range(len(spec.nodes)):
        stack = [(i, False)]
        while stack:
            j, expanded = stack.pop()
            if expanded:
                order.append(j)
                continue
            if j in done:
                continue
            done.add(j)
            stack.append((j, True))
            for ref in reversed(spec.inputs_of(j)):
                if ref in index and index[ref] not in done:
                    stack.append((index[ref], False))
    return order
