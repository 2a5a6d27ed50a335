"""Random and mutated specs and malformed spec objects: only SpecError (the project's own error type) ever comes out, and
analyze(partial=True) never raises and reports exactly the problems the strict call raises."""
import copy
import json
import re

import pytest
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import (INPUT_FIELDS, InputSpec, NetSpec, Node, SpecError, analyze, build_model, dumps, id_problem,
                    kinds, load_preset, loads)
from engine.net.model import LayerNet
from engine.net.spec import check_structure

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


# ---- malformed spec objects (issue 9, item 18) --------------------------------------------------

junk = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=4),
                 st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=2)), max_size=3),
                 st.dictionaries(st.one_of(st.integers(), st.text(max_size=3)), st.integers(), max_size=2),
                 st.tuples(st.text(max_size=2)), st.just(object()), st.just(Node("x", "relu")),
                 st.just(InputSpec()), st.just([Node("a", "relu")]))

NODE_FIELDS = ["id", "kind", "params", "inputs"]
SPEC_FIELDS = ["input", "nodes", "name", "description", "channels", "height", "width", "classes", "node",
               "param"]


@st.composite
def malformed(draw):
    """lenet5 as Python objects with one to three fields replaced by a value of another type."""
    spec = load_preset("lenet5")
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(SPEC_FIELDS + NODE_FIELDS))
        value = draw(junk)
        if what in NODE_FIELDS and isinstance(spec.nodes, list) and spec.nodes:
            n = draw(st.sampled_from(spec.nodes))
            if isinstance(n, Node):
                setattr(n, what, value)
        elif what == "node" and isinstance(spec.nodes, list) and spec.nodes:
            spec.nodes[draw(st.integers(0, len(spec.nodes) - 1))] = value
        elif what == "param" and isinstance(spec.nodes, list) and spec.nodes and isinstance(spec.nodes[0], Node) \
                and isinstance(spec.nodes[0].params, dict):
            spec.nodes[0].params[draw(st.sampled_from(["out_channels", "kernel", "padding", "bias", 3]))] = value
        elif what in ("channels", "height", "width", "classes") and isinstance(spec.input, InputSpec):
            setattr(spec.input, what, value)
        elif what in ("input", "nodes", "name", "description"):
            setattr(spec, what, value)
    return spec


def _only_spec_errors(call):
    try:
        call()
    except SpecError as e:
        assert e.problems and all(isinstance(p.message, str) and p.message for p in e.problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed())
def test_every_entry_point_raises_only_spec_error_for_malformed_objects(spec):
    _only_spec_errors(lambda: analyze(spec))
    _only_spec_errors(lambda: build_model(spec))
    _only_spec_errors(lambda: dumps(spec))
    assert all(isinstance(p.message, str) for p in check_structure(spec))
    info = analyze(spec, partial=True)  # never raises for a net problem
    assert isinstance(info.params, int) and isinstance(info.shapes, dict)


@pytest.mark.parametrize("value", [None, 3, "x", ["a"], object()])
def test_params_that_are_not_an_object_are_a_spec_error(value):
    spec = load_preset("lenet5")
    spec.nodes[0].params = value
    with pytest.raises(SpecError, match="conv1: 'params' must be an object"):
        analyze(spec)
    assert any("'params' must be an object" in p.message for p in analyze(spec, partial=True).problems)


@pytest.mark.parametrize("field,value,message", [
    ("nodes", None, "'nodes' must be a list"), ("nodes", (), "'nodes' must be a list"),
    ("input", None, "'input' must be an InputSpec"), ("name", 3, "'name' must be text")])
def test_malformed_spec_fields_are_spec_errors(field, value, message):
    spec = load_preset("lenet5")
    setattr(spec, field, value)
    with pytest.raises(SpecError, match=message):
        build_model(spec)


def test_inputs_not_a_list_of_ids_is_a_spec_error():
    spec = load_preset("lenet5")
    spec.nodes[1].inputs = "conv1"
    with pytest.raises(SpecError, match="'inputs' must be a list of node ids"):
        analyze(spec)
    spec.nodes[1].inputs = [1]
    with pytest.raises(SpecError, match="'inputs' must be a list of node ids"):
        analyze(spec)
    assert id_problem(None) == "an id must be text, not null"


# ---- ids the built model cannot take (issue 9, item 17) -----------------------------------------

ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _tiny(node_id):
    return NetSpec(InputSpec(1, 4, 4, 3), [Node(node_id, "flatten"), Node("fc", "linear", {"out_features": 3})])


def _model_attribute_names():
    built = LayerNet(load_preset("lenet5"), analyze(load_preset("lenet5")))
    names = set(dir(built)) | set(vars(built)) | set(dir(nn.Module())) | set(vars(nn.Module()))
    names -= set(built._modules)  # lenet5's own layers (conv1, ...) are ids, not attributes
    return sorted(n for n in names if ID.fullmatch(n) and n != "input")


def test_every_attribute_of_the_built_model_is_rejected():
    names = _model_attribute_names()
    assert {"training", "spec", "plan", "_parameters", "forward", "failed_node"} <= set(names)
    for name in names:
        with pytest.raises(SpecError, match=f"'{name}' is a reserved name"):
            analyze(_tiny(name))
        assert not analyze(_tiny(name), partial=True).ok


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.sampled_from(_model_attribute_names()), st.from_regex(ID, fullmatch=True)))
def test_a_valid_spec_always_builds(node_id):
    spec = _tiny(node_id)
    try:
        info = analyze(spec)
    except SpecError:
        return
    model = build_model(spec, info)  # never raises for a spec analyze accepted
    assert dict(model.named_children())[node_id] is not None
