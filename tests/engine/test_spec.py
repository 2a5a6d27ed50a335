"""Net spec: round-trip, validation messages for each kind of bad input, presets, shapes."""
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine import SpecError, analyze, build_model, dumps, load_preset, loads, preset_names


def _net(nodes, **inp):
    i = {"channels": 1, "height": 28, "width": 28, "classes": 10}
    i.update(inp)
    return {"format": "layerscope-net", "version": 1, "input": i, "nodes": nodes}


def _problems(data):
    with pytest.raises(SpecError) as exc:
        spec = loads(data if isinstance(data, str) else json.dumps(data))
        analyze(spec)
    return [(p.node, p.message) for p in exc.value.problems]


def _tail(n=10):
    return [{"id": "flat", "kind": "flatten"}, {"id": "fc", "kind": "linear", "params": {"out_features": n}}]


EXPECTED_PARAMS = {"lenet5": 61_706, "alexnet": 61_100_840, "vgg11": 132_863_336, "resnet18": 11_689_512}


@pytest.mark.parametrize("name", preset_names())
def test_presets_round_trip_and_analyze(name):
    spec = load_preset(name)
    text = (engine.net.presets.presets_dir() / f"{name}.json").read_text()
    assert dumps(spec) == text
    assert loads(dumps(spec)).to_dict() == spec.to_dict()
    info = analyze(spec)
    if name in EXPECTED_PARAMS:
        assert info.params == EXPECTED_PARAMS[name]
    assert info.layers[-1].out_shape == (spec.input.classes,)
    assert spec.description


def test_preset_files_match_generator():
    from assets.presets import generate

    for name in generate.PRESETS:
        assert (engine.net.presets.presets_dir() / f"{name}.json").read_text() == generate.render(name)


def test_built_model_names_submodules_by_node_id_and_matches_shapes():
    import torch

    spec = load_preset("resnet18")
    info = analyze(spec)
    model = build_model(spec, info)
    names = dict(model.named_children())
    assert set(names) == {n.id for n in spec.nodes}
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    small = load_preset("lenet5")
    out = build_model(small)(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_shapes_and_flops_come_from_torch():
    info = analyze(load_preset("lenet5"))
    conv1 = info.layer("conv1")
    assert conv1.out_shape == (6, 28, 28)
    # 6 output maps of 28x28, each output a 5x5x1 dot product: 2 FLOPs per MAC
    assert conv1.flops == 2 * 6 * 28 * 28 * 25
    assert info.layer("relu1").flops == 0
    assert conv1.activation_bytes(64, "fp32") == 6 * 28 * 28 * 64 * 4
    assert conv1.activation_bytes(64, "bf16") == 6 * 28 * 28 * 64 * 2


def test_alexnet_article_follows_the_article():
    spec = load_preset("alexnet-article")
    convs = [(n.params["out_channels"], n.params["kernel"], n.params["padding"])
             for n in spec.nodes if n.kind == "conv2d"]
    assert convs == [(96, 5, "same"), (256, 5, "same"), (384, 3, "same"), (384, 3, "same"), (256, 3, "same")]
    assert [n.kind for n in spec.nodes].count("maxpool2d") == 3
    assert any(n.kind == "lrn" for n in spec.nodes)
    assert "article" in spec.description and "depart" in spec.description.lower()


def test_chain_inputs_default_to_previous_node_and_round_trip_exactly():
    data = _net([{"id": "c", "kind": "conv2d", "params": {"out_channels": 4}}, *_tail()])
    spec = loads(json.dumps(data))
    assert spec.inputs_of(0) == ["input"] and spec.inputs_of(1) == ["c"]
    assert json.loads(dumps(spec)) == data


def test_every_problem_reported_at_once_with_node_ids():
    data = _net([
        {"id": "a", "kind": "conv2d", "params": {"out_channels": 0, "kernal": 3}},
        {"id": "b", "kind": "warp"},
        {"id": "b", "kind": "relu"},
        {"id": "c", "kind": "add", "inputs": ["a", "ghost"]},
        {"id": "d", "kind": "linear", "params": {"out_features": "ten"}},
    ])
    probs = _problems(data)
    msgs = {(n, m) for n, m in probs}
    assert ("a", "'out_channels' is 0, below its minimum 1") in msgs
    assert any(n == "a" and "unknown parameter 'kernal'" in m for n, m in msgs)
    assert ("b", "unknown kind 'warp'") in msgs
    assert ("b", "duplicate id 'b'") in msgs
    assert ("c", "input 'ghost' is not a node of this net") in msgs
    assert any(n == "d" and "'out_features' must be a whole number" in m for n, m in msgs)


def test_malformed_json_gives_line_and_column():
    probs = _problems('{"format": "layerscope-net",\n "version": 1,\n "nodes": [}')
    assert len(probs) == 1
    assert probs[0][0] is None and "line 3, column" in probs[0][1]


def test_unknown_version_and_missing_param():
    data = _net(_tail())
    data["version"] = 7
    assert (None, "unknown format version 7; this LayerScope reads version 1") in _problems(data)
    with pytest.raises(SpecError) as exc:
        engine.net.registry.Param("x", "int").check(1)  # fine
        p = engine.net.registry.Param("needed", "int")
        assert p.required
        raise SpecError([engine.Problem("n", "missing parameter 'needed'")])
    assert "missing parameter" in str(exc.value)


def test_cycle_is_reported():
    data = _net([
        {"id": "a", "kind": "relu", "inputs": ["c"]},
        {"id": "b", "kind": "relu", "inputs": ["a"]},
        {"id": "c", "kind": "relu", "inputs": ["b"]},
        *_tail(),
    ])
    probs = _problems(data)
    assert any("cycle" in m and "a" in m for _, m in probs)


def test_add_of_different_shapes_names_both():
    data = _net([
        {"id": "c1", "kind": "conv2d", "params": {"out_channels": 64, "kernel": 3, "padding": 1}},
        {"id": "c2", "kind": "conv2d", "params": {"out_channels": 128, "kernel": 3, "stride": 2, "padding": 1}},
        {"id": "sum", "kind": "add", "inputs": ["c1", "c2"]},
        *_tail(),
    ])
    assert ("sum", "add needs inputs of the same shape but gets 64x28x28 and 128x14x14") in _problems(data)


def test_kernel_larger_than_input_and_zero_size_map():
    data = _net([
        {"id": "p", "kind": "maxpool2d", "params": {"kernel": 8}},
        {"id": "conv3", "kind": "conv2d", "params": {"kernel": 5}},
        *_tail(),
    ])
    assert ("conv3", "kernel 5 is larger than its 3x3 input") in _problems(data)
    data = _net([{"id": "c", "kind": "conv2d", "params": {"kernel": 3, "stride": 2, "padding": 0}},
                 {"id": "c2", "kind": "conv2d", "params": {"kernel": 3, "dilation": 20}}, *_tail()])
    probs = _problems(data)
    assert any(n == "c2" and "larger than" in m for n, m in probs)


def test_wrong_output_size_and_conv_after_flatten():
    data = _net([{"id": "flat0", "kind": "flatten"}, {"id": "conv", "kind": "conv2d"}, *_tail()])
    probs = _problems(data)
    assert any(n == "conv" and "needs a CxHxW feature map" in m for n, m in probs)
    data = _net(_tail(7))
    probs = _problems(data)
    assert any(n == "fc" and "10 class scores are needed" in m for n, m in probs)


def test_every_layer_kind_builds_and_runs():
    import torch

    nodes = [
        {"id": "conv", "kind": "conv2d", "params": {"out_channels": 8, "padding": "same"}},
        {"id": "bn", "kind": "batchnorm2d"}, {"id": "lrn", "kind": "lrn"},
        {"id": "relu", "kind": "relu"}, {"id": "lrelu", "kind": "leaky_relu"},
        {"id": "gelu", "kind": "gelu"}, {"id": "tanh", "kind": "tanh"}, {"id": "sig", "kind": "sigmoid"},
        {"id": "mp", "kind": "maxpool2d"}, {"id": "ap", "kind": "avgpool2d", "params": {"kernel": 1}},
        {"id": "skip", "kind": "add", "inputs": ["mp", "ap"]},
        {"id": "cat", "kind": "concat", "inputs": ["skip", "mp"]},
        {"id": "aap", "kind": "adaptive_avgpool2d", "params": {"output_size": 2}},
        {"id": "drop", "kind": "dropout", "params": {"p": 0.1}},
        {"id": "flat", "kind": "flatten"},
        {"id": "fc", "kind": "linear", "params": {"out_features": 10}},
        {"id": "soft", "kind": "softmax"},
    ]
    spec = loads(json.dumps(_net(nodes)))
    assert {n.kind for n in spec.nodes} == set(engine.kinds())
    info = analyze(spec)
    assert info.layer("cat").out_shape == (16, 14, 14)
    out = build_model(spec, info)(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    assert torch.allclose(out.sum(1), torch.ones(3))


def test_registry_rejects_duplicate_kind():
    with pytest.raises(ValueError):
        engine.net.registry.register_layer("relu", family="activation", help="x")(lambda p, s: None)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(SpecError, match="no net file"):
        engine.load(tmp_path / "nope.json")
    with pytest.raises(SpecError, match="is a folder"):
        engine.load(tmp_path)


# ---- messages (issue 9, item 19) ----------------------------------------------------------------

@pytest.mark.parametrize("bad_id", ["café", "x\n", "Ω", "a-b", "1a", "a b"])
def test_id_rule_says_ascii(bad_id):
    msg = engine.id_problem(bad_id)
    assert msg and "ASCII letter" in msg


@pytest.mark.parametrize("kind,suggestion", [("Conv2d", "conv2d"), ("CONV2D", "conv2d"), ("conv2", "conv2d"),
                                             ("ReLU", "relu"), ("maxpool", "maxpool2d"), ("linaer", "linear"),
                                             ("BatchNorm2d", "batchnorm2d"), ("softmx", "softmax")])
def test_unknown_kind_suggests_the_right_one(kind, suggestion):
    msgs = _problems(_net([{"id": "a", "kind": kind}]))
    assert ("a", f"unknown kind '{kind}' (did you mean {suggestion}?)") in msgs


def test_unknown_kind_far_from_any_suggests_nothing():
    assert ("a", "unknown kind 'warp'") in _problems(_net([{"id": "a", "kind": "warp"}]))


PY_SPELLING = re.compile(r"\b(True|False|None)\b")
json_leaves = st.one_of(st.none(), st.booleans(), st.lists(st.booleans(), max_size=2),
                        st.dictionaries(st.just("k"), st.none(), max_size=1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["conv2d", "maxpool2d", "linear", "dropout", "lrn", "leaky_relu", "concat", "adaptive_avgpool2d"]),
       st.integers(0, 5), json_leaves, st.sampled_from(["param", "kind", "id", "inputs", "channels", "format",
                                                          "version", "name", "params"]))
def test_messages_spell_values_as_json(kind, which, value, where):
    k = engine.kinds()[kind]
    node = {"id": "a", "kind": kind, "params": {}}
    if where == "param" and k.params:
        node["params"][k.params[which % len(k.params)].name] = value
    elif where in ("kind", "id", "inputs", "params"):
        node[where] = value
    data = _net([node, {"id": "flat", "kind": "flatten"}, {"id": "fc", "kind": "linear",
                                                             "params": {"out_features": 10}}])
    if where == "channels":
        data["input"]["channels"] = value
    elif where in ("format", "version", "name"):
        data[where] = value
    try:
        analyze(loads(json.dumps(data)))
    except SpecError as e:
        for p in e.problems:
            assert not PY_SPELLING.search(p.message), p.message


def test_bool_and_null_in_messages():
    msgs = _problems(_net([{"id": "a", "kind": "conv2d", "params": {"out_channels": True, "kernel": None}}]))
    assert ("a", "'out_channels' must be a whole number, not true") in msgs
    assert ("a", "'kernel' must be a whole number, not null") in msgs
    msgs = _problems(_net([{"id": "a", "kind": "conv2d", "params": {"out_channels": 4, "kernel": 3, "bias": "yes"}}]))
    assert ("a", "'bias' must be true or false, not \"yes\"") in msgs


@pytest.mark.parametrize("text,key,where", [
    ('{"format": "layerscope-net", "version": 1, "input": {"channels": 1, "height": 8, "width": 8, "classes": 3},'
     ' "nodes": [{"id": "fc", "kind": "linear", "params": {"out_features": 3}}], "nodes": []}', "nodes", "top level"),
    ('{"format": "layerscope-net", "version": 1, "input": {"channels": 1, "height": 8, "width": 8, "classes": 3},'
     ' "nodes": [{"id": "fc", "kind": "linear", "kind": "relu"}]}', "kind", "node 'fc'"),
    ('{"format": "layerscope-net", "version": 1, "input": {"channels": 1, "channels": 3, "height": 8, "width": 8,'
     ' "classes": 3}, "nodes": []}', "channels", "'input'"),
    ('{"format": "layerscope-net", "version": 1, "input": {"channels": 1, "height": 8, "width": 8, "classes": 3},'
     ' "nodes": [{"id": "c", "kind": "conv2d", "params": {"out_channels": 4, "kernel": 3, "kernel": 5}}]}',
     "kernel", ""),
])
def test_duplicate_keys_are_an_error_naming_the_key(text, key, where):
    with pytest.raises(SpecError) as e:
        loads(text)
    msg = str(e.value)
    assert f"the key '{key}' appears more than once" in msg and where in msg


def test_duplicate_keys_in_a_net_file(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"format": "layerscope-net", "format": "layerscope-net", "version": 1, "input": {}, "nodes": []}')
    with pytest.raises(SpecError, match="the key 'format' appears more than once at the top level"):
        engine.load(path)
