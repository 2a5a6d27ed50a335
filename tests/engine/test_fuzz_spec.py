"""Random and mutated specs: only SpecError (the project's own error type) ever comes out, and
analyze(partial=True) never raises and reports exactly the problems the strict call raises."""
import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import INPUT_FIELDS, InputSpec, NetSpec, Node, SpecError, analyze, kinds, load_preset, loads

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8)

BASE = load_preset("lenet5").to_dict()
KEYS = ["format", "version", "input", "nodes", "channels", "height", "width", "classes", "id", "kind",
        "params", "inputs", "out_channels", "kernel", "stride", "padding", "out_features", "dilation", "groups"]


def _check(data):
    try:
        analyze(loads(json.dumps(data) if not isinstance(data, str) else data))
    except SpecError as e:
        assert e.problems and all(isinstance(p.message, str) and p.message for p in e.problems)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_json_only_spec_errors(data):
    _check(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=40))
def test_random_text_only_spec_errors(text):
    _check(text)


@st.composite
def mutated(draw):
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        nodes = data.get("nodes") if isinstance(data, dict) else None
        target = data
        if isinstance(nodes, list) and nodes and draw(st.booleans()):
            node = draw(st.sampled_from(nodes))
            target = node
            if isinstance(node, dict) and isinstance(node.get("params"), dict) and draw(st.booleans()):
                target = node["params"]
        if not isinstance(target, dict):
            continue
        action = draw(st.sampled_from(["set", "del", "kind", "inputs", "dup"]))
        key = draw(st.sampled_from(KEYS))
        if action == "set":
            target[key] = draw(json_values)
        elif action == "del":
            target.pop(key, None)
        elif action == "kind" and "kind" in target:
            target["kind"] = draw(st.sampled_from(sorted(kinds())))
        elif action == "inputs" and "id" in target:
            ids = [n.get("id") for n in data["nodes"] if isinstance(n, dict)] + ["input", "ghost"]
            target["inputs"] = draw(st.lists(st.sampled_from(ids), max_size=3))
        elif action == "dup" and isinstance(nodes, list) and nodes:
            nodes.insert(draw(st.integers(0, len(nodes))), copy.deepcopy(draw(st.sampled_from(nodes))))
    return data


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_presets_only_spec_errors(data):
    _check(data)


def _lenient(data) -> NetSpec | None:
    """The mutated net as a NetSpec built without the loader's checks, as the editor may hold one."""
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        return None
    raw_in = data.get("input") if isinstance(data.get("input"), dict) else {}
    inp = InputSpec()
    for k, (lo, hi) in INPUT_FIELDS.items():
        v = raw_in.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi:
            setattr(inp, k, v)
    nodes = []
    for d in data["nodes"]:
        if not isinstance(d, dict) or not isinstance(d.get("id"), str) or not isinstance(d.get("kind"), str):
            continue
        params = d.get("params", {})
        inputs = d.get("inputs")
        if inputs is not None and not (isinstance(inputs, list) and all(isinstance(r, str) for r in inputs)):
            inputs = None
        nodes.append(Node(d["id"], d["kind"], params if isinstance(params, dict) else {}, inputs))
    return NetSpec(inp, nodes)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_partial_analysis_of_mutated_nets_never_raises_and_matches_the_strict_one(data):
    spec = _lenient(data)
    if spec is None:
        return
    info = analyze(spec, partial=True)
    assert all(isinstance(p.message, str) and p.message for p in info.problems)
    # a measured node is blamed only for being an output of the wrong size
    blamed = {layer.id for layer in info.layers} & {p.node for p in info.problems}
    assert blamed <= {spec.nodes[-1].id if spec.nodes else None}
    try:
        strict = analyze(spec)
    except SpecError as e:
        assert e.problems == info.problems
    else:
        assert info.ok and strict.layers == info.layers
