"""analyze(partial=True), the per-node measurement cache, the plan walker and failed_node."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import engine
from engine import NetSpec, Node, SpecError, analyze, build_model, load_preset, preset_names
from engine.net import analyze as analyze_mod
from engine.net.registry import REGISTRY


@pytest.fixture
def count_builds(monkeypatch):
    """Every layer kind's builder, wrapped to record (kind, input shapes) of each module it builds."""
    built: list[tuple[str, tuple]] = []
    for name, kind in list(REGISTRY.items()):
        def build(params, in_shapes, _real=kind.build, _name=name):
            built.append((_name, tuple(in_shapes)))
            return _real(params, in_shapes)
        monkeypatch.setitem(REGISTRY, name, dataclasses.replace(kind, build=build))
    analyze_mod.clear_cache()
    yield built
    analyze_mod.clear_cache()


def _broken_lenet() -> NetSpec:
    """LeNet-5 with a shape problem (conv2's kernel), a structural one (an add with one input) on a
    side branch, and an unknown kind feeding nothing."""
    spec = load_preset("lenet5")
    spec.node("conv2").params["kernel"] = 20
    spec.node("conv2").inputs = ["pool1"]
    spec.nodes.insert(3, Node("side", "add", {}, ["pool1"]))
    spec.nodes.insert(4, Node("ghost", "warp", {}, ["side"]))
    return spec


def test_partial_gives_the_valid_part_and_every_problem_in_one_call():
    spec = _broken_lenet()
    info = analyze(spec, partial=True)
    assert not info.ok
    got = {(p.node, p.message.split(" (")[0]) for p in info.problems}
    assert ("side", "add takes 2 to 16 input(s) but has 1") in got
    assert ("ghost", "unknown kind 'warp'") in got
    assert any(n == "conv2" and "kernel 20 is larger" in m for n, m in got)
    # nodes fed by a broken node are skipped, not blamed
    assert {p.node for p in info.problems} == {"side", "ghost", "conv2"}
    shapes = info.shapes
    assert shapes["input"] == (1, 28, 28) and shapes["conv1"] == (6, 28, 28) and shapes["pool1"] == (6, 14, 14)
    assert "conv2" not in shapes and "fc3" not in shapes and "side" not in shapes
    assert info.params == info.layer("conv1").params == 156
    # the strict call reports the very same problems
    with pytest.raises(SpecError) as e:
        analyze(spec)
    assert e.value.problems == info.problems


def test_partial_of_a_valid_net_equals_the_strict_result():
    spec = load_preset("resnet18")
    strict, partial = analyze(spec), analyze(spec, partial=True)
    assert partial.ok and partial.problems == [] and strict.problems == []
    assert partial.layers == strict.layers


def test_partial_never_raises_for_structure_problems():
    spec = NetSpec(nodes=[Node("a", "relu", {}, ["b"]), Node("b", "relu", {}, ["a"]),
                          Node("input", "relu"), Node("x", "relu"), Node("x", "conv2d", {"kernel": "big"}, ["input"])])
    info = analyze(spec, partial=True)
    msgs = [str(p) for p in info.problems]
    assert any("cycle" in m for m in msgs) and any("duplicate id 'x'" in m for m in msgs)
    assert any(m.startswith("input: 'input' is reserved") for m in msgs)
    assert info.layers == []
    assert analyze(NetSpec(), partial=True).problems[0].message == "the net has no layers"


def test_output_check_is_reported_with_other_problems():
    spec = load_preset("lenet5")
    spec.input.classes = 7                        # fc3 gives 10 scores: an output problem
    spec.nodes.append(Node("extra", "add", {}, ["fc3"]))  # and a structural one... on the last node
    info = analyze(spec, partial=True)
    assert [p.node for p in info.problems] == ["extra"]  # the output is the broken node: no shape to judge
    spec.nodes.pop()
    spec.nodes[2].inputs = ["relu1"]
    spec.nodes.insert(2, Node("side", "warp", {}, ["relu1"]))
    info = analyze(spec, partial=True)
    assert [p.node for p in info.problems] == ["side", "fc3"]
    assert "7 class scores are needed" in info.problems[1].message


@pytest.mark.parametrize("node_id", ["plan", "spec", "failed_node", "forward", "_steps"])
def test_ids_clashing_with_the_module_are_reserved(node_id):
    spec = load_preset("lenet5")
    spec.nodes[0].id = node_id
    spec.nodes[1].inputs = [node_id]
    info = analyze(spec, partial=True)
    assert [str(p) for p in info.problems] == [f"{node_id}: '{node_id}' is a reserved name (an attribute of the built model); choose another id"]


def test_reserved_names_cover_every_attribute_of_a_built_model():
    model = build_model(load_preset("lenet5"))
    own = (set(vars(model)) | set(vars(type(model)))) - set(vars(torch.nn.Module())) - set(vars(torch.nn.Module))
    own = {a for a in own if not a.startswith("__")}
    assert own and all(analyze_mod.reserved_id(a) for a in own), own - analyze_mod.LAYERNET_ATTRS


def test_cache_hits_unchanged_nodes_and_remeasures_only_downstream_of_an_edit(count_builds):
    spec = load_preset("resnet18")
    first = analyze(spec)
    n_cold = len(count_builds)
    assert 0 < n_cold < len(spec.nodes)  # identical blocks share one measurement
    count_builds.clear()
    assert analyze(spec).layers == first.layers
    assert count_builds == []  # nothing changed: nothing built
    spec.node("layer2_1_conv1").params["out_channels"] = 96
    edited = analyze(spec)
    # the edited conv, and what sees its 96 channels: bn1, relu1 and conv2 (whose output is 128 again)
    assert count_builds == [("conv2d", ((128, 28, 28),)), ("batchnorm2d", ((96, 28, 28),)),
                            ("relu", ((96, 28, 28),)), ("conv2d", ((96, 28, 28),))]
    assert edited.layer("layer2_1_conv2").out_shape == (128, 28, 28)
    assert edited.layer("layer2_1_bn1").params == 2 * 96
    stats = analyze_mod.cache_info()
    assert stats.misses == n_cold + 4 and stats.size == n_cold + 4 and stats.hits > 0


def test_cache_key_holds_every_param_with_its_type():
    conv = engine.get_kind("conv2d")
    base = conv.resolved({})
    k = analyze_mod._key(conv, base, [(1, 28, 28)])
    assert k == analyze_mod._key(conv, dict(base), [(1, 28, 28)])
    assert k != analyze_mod._key(conv, base, [(1, 28, 27)])
    assert k != analyze_mod._key(conv, {**base, "bias": False}, [(1, 28, 28)])
    assert k != analyze_mod._key(conv, {**base, "kernel": [3, 3]}, [(1, 28, 28)])  # 3 and [3, 3] differ
    drop = engine.get_kind("dropout")
    assert analyze_mod._key(drop, {"p": 1}, [(4,)]) != analyze_mod._key(drop, {"p": 1.0}, [(4,)])
    assert analyze_mod._key(drop, {"p": 1}, [(4,)]) != analyze_mod._key(drop, {"p": True}, [(4,)])


@pytest.mark.parametrize("name", preset_names())
def test_a_cached_result_equals_an_uncached_one(name, monkeypatch):
    spec = load_preset(name)
    analyze_mod.clear_cache()
    cold = analyze(spec)
    warm = analyze(spec)
    monkeypatch.setattr(analyze_mod, "_key", lambda *a: None)  # nothing cached, everything measured
    assert cold.layers == warm.layers == analyze(spec).layers
    assert analyze_mod.cache_info().hits >= len(spec.nodes)


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(analyze_mod, "CACHE_MAX", 5)
    analyze_mod.clear_cache()
    spec = load_preset("resnet18")
    info = analyze(spec)
    assert analyze_mod.cache_info().size == 5
    assert analyze(spec).layers == info.layers
    analyze_mod.clear_cache()


def test_bytes_per_element_and_input_bytes():
    info = analyze(load_preset("lenet5"))
    assert info.input_bytes(8, "bf16") == 8 * 28 * 28 * 2 and info.input_bytes(8) == 8 * 28 * 28 * 4
    with pytest.raises(ValueError, match="unknown precision 'fp64'"):
        info.layers[0].activation_bytes(1, "fp64")


# ---- the plan walker --------------------------------------------------------------------------

def test_plan_is_topological_and_frees_each_output_after_its_last_use():
    spec = load_preset("resnet18")
    model = build_model(spec)
    plan = model.plan
    order = [s.node_id for s in plan]
    assert sorted(order) == sorted(n.id for n in spec.nodes)
    pos = {nid: k for k, nid in enumerate(order)}
    for k, step in enumerate(plan):
        assert all(r == "input" or pos[r] < k for r in step.inputs)
        for r in step.free_after:  # freed here: nobody later reads it
            assert all(r not in later.inputs for later in plan[k + 1:])
    assert all(isinstance(s, engine.PlanStep) for s in plan)


def test_on_output_sees_every_node_in_plan_order_and_changes_nothing():
    spec = load_preset("resnet18")
    model = build_model(spec).eval()
    x = torch.randn(2, 3, 64, 64)
    seen = []
    with torch.no_grad():
        plain = model(x)
        out = model(x, on_output=lambda k, nid, t: seen.append((k, nid, tuple(t.shape))))
    assert [(k, nid) for k, nid, _ in seen] == [(k, s.node_id) for k, s in enumerate(model.plan)]
    assert seen[0] == (0, "conv1", (2, 64, 32, 32)) and seen[-1][2] == (2, 1000)
    assert torch.equal(out, plain)


def test_failed_node_names_the_layer_that_raised_and_resets():
    model = build_model(load_preset("lenet5"))
    assert model.failed_node is None
    boom = RuntimeError("boom")

    def fail(*xs):
        raise boom

    model.conv2.forward = fail
    with pytest.raises(RuntimeError) as e:
        model(torch.randn(2, 1, 28, 28))
    assert e.value is boom and model.failed_node == "conv2"
    del model.conv2.forward
    model(torch.randn(2, 1, 28, 28))
    assert model.failed_node is None

    def stop(k, nid, out):
        if nid == "pool1":
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        model(torch.randn(1, 1, 28, 28), on_output=stop)
    assert model.failed_node == "pool1"


def test_a_replaced_builder_never_reads_back_the_old_measurement(monkeypatch):
    spec = load_preset("lenet5")
    analyze(spec)  # cached with the real relu
    relu = REGISTRY["relu"]

    def wider(params, in_shapes):
        return torch.nn.Conv2d(in_shapes[0][0], 2 * in_shapes[0][0], 1)

    monkeypatch.setitem(REGISTRY, "relu", dataclasses.replace(relu, build=wider))
    assert analyze(spec, partial=True).shapes["relu1"] == (12, 28, 28)
    monkeypatch.setitem(REGISTRY, "relu", relu)
    assert analyze(spec).shapes["relu1"] == (6, 28, 28)
