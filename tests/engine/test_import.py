"""Profile your own model: a user's FILE.py:FACTORY (or torchvision:NAME) imported with torch.fx,
run through the same LayerNet walker, probe and session as a built net."""
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

from engine.cli.main import main
from engine.errors import LayerScopeError, SpecError
from engine.net.analyze import analyze
from engine.net.imported import VISION_HINT, import_model, is_import_source, load_module, source_stem
from engine.net.imported_parts import map_module
from engine.net.model import build_model
from engine.session import open_session

QUICK = ["--device", "cpu", "--batch-size", "4", "--threads", "1", "--warmup", "1", "--telemetry-hz", "0", "-q"]

RESIDUAL = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.conv2(y) + x)            # x + y: a residual add


class Residual(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.layer1 = nn.Sequential(Block(8), Block(8))
        self.side = nn.Conv2d(1, 4, 1)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.Hardswish()                   # no registry kind: opaque
        self.fc = nn.Linear(12 * 6 * 6, classes)
        self.scale = nn.Parameter(torch.ones(1))    # used functionally: a get_attr node

    def forward(self, x):
        y = self.layer1(F.relu(self.stem(x)))
        z = self.side(x)
        y = torch.cat([y, z], dim=1)                # torch.cat
        y = self.act(self.pool(y)) * self.scale
        y = y.view(y.size(0), -1)                   # a size() inlined into the view node
        return self.fc(y)


def make():
    return Residual()


def not_a_module():
    return 42


def broken():
    raise RuntimeError("no weights here")


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = F.relu(self.a(x))
        if x.sum() > 0:                             # data-dependent: fx cannot trace it
            x = self.b(x) + x
        return self.fc(x.mean((2, 3)))


def branchy():
    return Branchy()


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(3, 5)

    def forward(self, x):
        x = self.relu(self.conv(self.relu(self.conv(x))))   # the same weights (and relu) twice
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def shared():
    return Shared()


class Effects(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3)
        self.r = nn.ReLU(inplace=True)
        self.q = nn.ReLU()
        self.f = nn.Linear(4 * 10 * 10, 10)

    def forward(self, x):
        y = self.c(x)
        self.r(y)                  # in place, result unused: y is now relu(c(x))
        self.q(y)                  # no effect on the values, but it is called (hooks, timing)
        y.sub_(0.5)
        return self.f(y.flatten(1))


def effects():
    return Effects()


class Either(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 2, 3, padding=1)
        self.b = nn.Conv2d(4, 2, 3, padding=1)
        self.p = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(2 * 4 * 4, 10)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        x = F.relu(self.c(x))
        limit = 1e30 if self.calls <= 2 else -1e30  # fx's try and the import's run take a, later steps b
        y = self.b(x) if x.sum() > limit else self.a(x)  # data-dependent: fx cannot trace it
        return self.fc(torch.flatten(self.p(y), 1))


def either():
    return Either()


def integer():
    return nn.Sequential(nn.Flatten(), nn.Linear(144, 10), Long())


class Long(nn.Module):
    def forward(self, x):
        return x.argmax(1, keepdim=True).expand(-1, 10)


class BranchyLong(Branchy):
    def forward(self, x):
        return super().forward(x).long()


def integer_branchy():
    return BranchyLong()
'''


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "mymodel.py"
    path.write_text(RESIDUAL)
    return path


@pytest.fixture(scope="module")
def residual_session(user_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "imported.lsession"
    rc = main(["profile", f"{user_file}:make", "--input-shape", "1,12,12", "--classes", "10", "--mode", "train",
               "--steps", "3", *QUICK, "--out", str(out)])
    assert rc == 0
    return out


def test_residual_user_file_profiles_every_traced_node_forward_and_backward(user_file, residual_session):
    imported = import_model(f"{user_file}:make", (1, 12, 12), 10)
    spec = imported.spec
    assert imported.traced and imported.notice is None
    kinds = {n.id: n.kind for n in spec.nodes}
    # the real names, and exact kinds where the registry has them
    assert kinds["stem"] == "conv2d" and kinds["layer1_0_conv1"] == "conv2d" and kinds["layer1_0_bn1"] == "batchnorm2d"
    assert kinds["relu"] == "relu" and kinds["add"] == "add" and kinds["cat"] == "concat" and kinds["fc"] == "linear"
    assert kinds["act"] == "opaque" and spec.node("act").params["op"] == "nn.Hardswish"
    assert kinds["scale"] == "opaque" and kinds["mul"] == "opaque" and kinds["view"] == "opaque"
    assert "size" not in kinds  # not a tensor: computed inside the view node
    assert spec.node("add").inputs == ["layer1_0_conv2", "relu"] and spec.node("cat").inputs == ["relu_4", "side"]
    assert imported.names["layer1_0_conv1"] == "layer1.0.conv1"

    r = open_session(residual_session)
    assert r.status == "completed" and r.info.config["model"] == f"{user_file}:make"
    ids = [n.id for n in spec.nodes]
    assert [row.node_id for row in r.layers()] == ids  # the stored net is the imported graph
    module = load_module(f"{user_file}:make")
    assert sum(row.params for row in r.layers()) == sum(p.numel() for p in module.parameters())
    lts = r.layer_times()
    assert len(lts) == 3
    for lt in lts:
        assert lt.node_ids == ids
        assert all(v is not None and v >= 0 for v in lt.fwd_ms)
        assert all(v is not None and v >= 0 for v in lt.bwd_ms)
        # the convolutions and the linear layer do backward work of their own
        for nid in ("stem", "layer1_0_conv1", "side", "fc"):
            assert lt.bwd_ms[ids.index(nid)] > 0
    names = {row.node_id: row.name for row in r.layers()}
    assert names["act"] == "act (nn.Hardswish)" and names["cat"].startswith("concat")


def test_imported_model_computes_what_the_users_module_computes(user_file):
    torch.manual_seed(3)
    module = load_module(f"{user_file}:make").eval()
    torch.manual_seed(3)
    imported = import_model(f"{user_file}:make", (1, 12, 12))
    model = imported.model.eval()
    x = torch.randn(5, 1, 12, 12)
    seen = []
    with torch.no_grad():
        out = model(x, lambda k, nid, o: seen.append(nid))
        assert torch.equal(out, module(x)) and torch.equal(model(x), out)
    assert seen == [s.node_id for s in model.plan] == [n.id for n in imported.spec.nodes]
    assert imported.module_params == sum(p.numel() for p in module.parameters()) == analyze(imported.spec).params


def test_calls_whose_result_is_unused_stay_nodes_and_run_every_step(user_file):
    torch.manual_seed(3)
    module = load_module(f"{user_file}:effects").eval()
    torch.manual_seed(3)
    imported = import_model(f"{user_file}:effects", (1, 12, 12))
    model = imported.model.eval()
    ids = [n.id for n in imported.spec.nodes]
    assert {"r", "q", "sub_"} <= set(ids) and ids.index("r") < ids.index("sub_") < ids.index("flatten")
    calls = {"r": 0, "q": 0}
    for name in calls:
        getattr(model, name).register_forward_hook(lambda m, a, o, name=name: calls.__setitem__(name, calls[name] + 1))
    x = torch.randn(5, 1, 12, 12)
    seen = []
    with torch.no_grad():
        out = model(x, lambda k, nid, o: seen.append(nid))
        assert calls == {"r": 1, "q": 1}
        assert torch.equal(out, module(x)) and torch.equal(model(x), out)
    assert calls == {"r": 2, "q": 2} and seen == [s.node_id for s in model.plan] == ids


def test_shared_weights_count_once_and_the_second_use_is_opaque(user_file):
    imported = import_model(f"{user_file}:shared", (3, 8, 8), None)
    spec = imported.spec
    assert spec.input.classes == 5  # from the model's output
    assert spec.node("conv").kind == "conv2d"
    assert spec.node("conv_1").kind == "opaque" and spec.node("conv_1").params["params"] == 0
    assert spec.node("relu").kind == spec.node("relu_1").kind == "relu"  # no weights: maps at every use
    assert analyze(spec).params == imported.module_params == 3 * 3 * 9 + 3 + 3 * 5 + 5


def test_an_imported_spec_does_not_build_without_its_source(user_file):
    spec = import_model(f"{user_file}:make", (1, 12, 12)).spec
    with pytest.raises(SpecError, match=r"opaque node \w+ .*comes from an imported model: profile it from its source"):
        build_model(spec)


@pytest.mark.parametrize("module, kind", [
    (nn.Conv2d(4, 8, 3, stride=2, padding=1, dilation=2, groups=2), "conv2d"),
    (nn.Conv2d(4, 8, 3, padding=(1, 2)), None),             # asymmetric padding: no such param
    (nn.Conv2d(4, 8, 3, padding=1, padding_mode="circular"), None),
    (nn.BatchNorm2d(4), "batchnorm2d"),
    (nn.BatchNorm2d(4, momentum=None), None),                 # cumulative average
    (nn.BatchNorm2d(4, track_running_stats=False), None),
    (nn.MaxPool2d(2), "maxpool2d"),
    (nn.MaxPool2d(3, stride=1, dilation=2), None),
    (nn.AvgPool2d(2, count_include_pad=False), None),
    (nn.ReLU(inplace=True), "relu"),
    (nn.Linear(4 * 6 * 6, 3), None),                          # nn.Linear on a map works on the last dim
    (nn.Flatten(2), None),
])
def test_kinds_are_mapped_only_when_exact(module, kind):
    got = map_module(module, [(4, 6, 6)])
    assert (got[0] if got else None) == kind
    if got and kind == "conv2d":
        assert got[1] == {"out_channels": 8, "kernel": 3, "stride": 2, "padding": 1, "dilation": 2, "groups": 2,
                          "bias": True}


def test_linear_on_vectors_maps(user_file):
    assert map_module(nn.Linear(16, 3, bias=False), [(16,)]) == ("linear", {"out_features": 3, "bias": False})


def test_untraceable_model_falls_back_to_hooks_with_the_notice(user_file, tmp_path, capsys):
    out = tmp_path / "branchy.lsession"
    rc = main(["profile", f"{user_file}:branchy", "--input-shape", "1,10,10", "--mode", "train", "--steps", "2",
               *QUICK[:-1], "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().out
    assert "fx could not trace the model (symbolically traced variables cannot be used as inputs to control flow)" in err
    assert "timing each leaf module with hooks" in err
    r = open_session(out)
    assert any("fx could not trace" in log.message and log.level == "warning" for log in r.logs())
    ids = [row.node_id for row in r.layers()]
    assert ids == ["a", "b_in", "b", "fc_in", "fc", "tail"]  # the functional ops feeding b and fc: nodes
    module = load_module(f"{user_file}:branchy")
    assert sum(row.params for row in r.layers()) == sum(p.numel() for p in module.parameters())
    for lt in r.layer_times():
        assert lt.node_ids == ids and all(v is not None for v in lt.fwd_ms + lt.bwd_ms)
        assert lt.bwd_ms[ids.index("a")] > 0 and lt.bwd_ms[ids.index("fc")] > 0


def test_fallback_reports_a_skipped_branch_with_no_backward(user_file):
    imported = import_model(f"{user_file}:branchy", (1, 10, 10))
    assert not imported.traced
    model = imported.model
    with torch.no_grad():
        model.model.a.weight.zero_()
        model.model.a.bias.fill_(-1.0)  # relu(a(x)) is all zero: the `if` skips b
    seen = []
    out = model(torch.randn(2, 1, 10, 10), lambda k, nid, o: seen.append((k, nid, o.grad_fn is None)))
    assert out.shape == (2, 10)
    assert [s[:2] for s in seen] == [(0, "a"), (1, "b_in"), (2, "b"), (3, "fc_in"), (4, "fc"), (5, "tail")]
    assert seen[1][2] and seen[2][2]  # b did not run: reported with no gradient function (no backward of its own)
    assert not seen[3][2] and not seen[4][2]


def test_fallback_keeps_every_leaf_module_with_its_own_parameters_inputs_and_kind(user_file, tmp_path):
    imported = import_model(f"{user_file}:either", (1, 12, 12))
    spec, info = imported.spec, analyze(imported.spec)
    assert not imported.traced
    assert [n.id for n in spec.nodes] == ["c", "a_in", "a", "b", "p", "fc_in", "fc", "tail"]  # b: not run, after a
    module = load_module(f"{user_file}:either")
    b = spec.node("b")
    assert b.kind == "opaque" and b.params["params"] == sum(p.numel() for p in module.b.parameters()) == 74
    assert spec.node("tail").params["params"] == 0 and info.params == imported.module_params
    assert any("b did not run when the model was imported" in note for note in imported.notes)
    # kinds as the traced path maps them; every node's inputs are the shapes its module received
    assert [spec.node(i).kind for i in ("c", "a", "p", "fc")] == ["conv2d", "conv2d", "adaptive_avgpool2d", "linear"]
    assert info.layer("fc").in_shapes == [(32,)] and info.layer("a").in_shapes == [(4, 12, 12)]
    assert info.layer("fc_in").in_shapes == [(2, 4, 4)] and spec.node("fc_in").params["in_shapes"] == "2x4x4"
    # a later step takes the other branch: b runs and is reported as itself, a ~0 with no backward
    seen = []
    imported.model(torch.randn(2, 1, 12, 12), lambda k, nid, o: seen.append((nid, o.grad_fn is not None)))
    assert [nid for nid, _ in seen] == [n.id for n in spec.nodes]
    assert dict(seen)["b"] and not dict(seen)["a"] and dict(seen)["fc"]
    out = tmp_path / "either.lsession"
    assert main(["profile", f"{user_file}:either", "--input-shape", "1,12,12", "--mode", "train", "--steps", "2",
                 *QUICK, "--out", str(out)]) == 0
    for lt in open_session(out).layer_times():
        bwd = dict(zip(lt.node_ids, lt.bwd_ms))
        assert bwd["b"] > 0 and not bwd["a"]  # b's backward is b's own; a did not run


def test_imported_session_reopens_summarises_and_exports_html(residual_session, tmp_path, capsys):
    assert main(["summary", str(residual_session)]) == 0
    out = capsys.readouterr().out
    assert "layer1_0_conv1" in out and "status: completed" in out
    html = tmp_path / "r.html"
    assert main(["export", str(residual_session), "--format", "html", "--out", str(html)]) == 0
    text = html.read_text()
    assert "<svg" in text and "layer1_0_conv1" in text and "nn.Hardswish" in text


@pytest.mark.parametrize("argv, words", [
    (["{f}:nope", "--input-shape", "1,12,12"], "has no 'nope' (it defines: "),
    (["{f}:not_a_module", "--input-shape", "1,12,12"], "returned a int, not a torch.nn.Module"),
    (["{f}:broken", "--input-shape", "1,12,12"], "broken() in "),
    (["{d}/missing.py:make", "--input-shape", "1,12,12"], "no such model file"),
    (["{f}:make"], "--input-shape C,H,W is needed"),
    (["{f}:make", "--input-shape", "3,12,12"], "the model fails on a 3x12x12 input"),
    (["{f}:make", "--input-shape", "1,12,12", "--classes", "7"], "outputs 10 class scores per sample but --classes is 7"),
    (["{f}:make", "--input-shape", "1,12"], "expected C,H,W"),
    (["lenet5", "--input-shape", "1,28,28"], "--input-shape and --classes are for a model to import"),
    (["{f}:integer", "--input-shape", "1,12,12"],
     "the model's output is int64: a classifier must return floating-point logits (N, classes)"),
    (["{f}:integer_branchy", "--input-shape", "1,10,10"], "the model's output is int64"),
])
def test_import_errors_exit_2_in_one_line(argv, words, user_file, tmp_path, capsys):
    argv = [a.format(f=user_file, d=tmp_path) for a in argv]
    assert main(["profile", *argv, *QUICK, "--out", str(tmp_path / "x.lsession")]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not (tmp_path / "x.lsession").exists()


@pytest.mark.parametrize("argv", [
    ["validate", "{py}"], ["validate", "{py}", "--input-shape", "3,32,32"], ["export-net", "{py}", "--format", "pytorch",
    "--out", "{d}/o.py"], ["profile", "{py}", *QUICK, "--out", "{d}/x.lsession"],
    ["validate", "{s}"], ["export-net", "{s}", "--format", "pytorch", "--out", "{d}/o.py"],
    ["profile", "{s}", *QUICK, "--out", "{d}/x.lsession"], ["sweep", "{py}", "--batch-size", "2,4", "--out", "{d}/sw"],
])
def test_a_python_file_or_a_session_given_as_a_net_says_what_to_give(argv, user_file, residual_session, tmp_path,
                                                                   capsys):
    argv = [a.format(py=user_file, s=residual_session, d=tmp_path) for a in argv]
    assert main(argv) == 2
    got = capsys.readouterr()
    err = (got.err + got.out).strip()  # validate prints a net's problems on stdout
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    if argv[1].endswith(".py"):
        assert f"mymodel.py is Python: give the factory too, {user_file}:FACTORY (a function returning the nn.Module)" in err
    else:
        assert "imported.lsession is a session, not a net: open it with summary/export, or use its net" in err
    assert not (tmp_path / "x.lsession").exists() and not (tmp_path / "o.py").exists()


def test_a_net_json_with_opaque_nodes_is_refused_before_a_session(user_file, tmp_path, capsys):
    from engine.net.presets import resolve_net
    from engine.net.spec import save

    net = tmp_path / "res.json"
    save(import_model(f"{user_file}:make", (1, 12, 12)).spec, net)
    assert main(["validate", str(net)]) == 0  # analysed from its stored figures
    capsys.readouterr()
    assert main(["profile", str(net), *QUICK, "--out", str(tmp_path / "x.lsession")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not (tmp_path / "x.lsession").exists(), err
    assert f"res.json holds opaque nodes of an imported model (" in err
    assert f"profile it from its source: layerscope profile {user_file}:make" in err
    with pytest.raises(SpecError, match="holds opaque nodes of an imported model"):
        resolve_net(str(net), buildable=True)
    assert resolve_net(str(net)).nodes  # validate and summary still read it


def test_a_file_that_raises_names_its_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\nx = 1 / 0\n")
    with pytest.raises(LayerScopeError, match=r"bad.py, line 3: running the file raised ZeroDivisionError"):
        import_model(f"{bad}:make", (1, 8, 8))


def test_sources_and_stems():
    assert is_import_source("models/net.py:make") and is_import_source("torchvision:resnet18")
    assert not is_import_source("lenet5") and not is_import_source("net.json")
    assert source_stem("torchvision:resnet50") == "resnet50" and source_stem("a/b/net.py:make") == "net-make"


def test_torchvision_absent_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision -> ImportError
    with pytest.raises(LayerScopeError) as e:
        import_model("torchvision:resnet18", (3, 32, 32), 10)
    assert str(e.value) == VISION_HINT == "torchvision is not installed: pip install -e '.[vision]'"


def test_torchvision_names_go_through_get_model(monkeypatch, tmp_path):
    """The torchvision: path with a stand-in package on sys.path (torchvision's own models are
    covered by the test below where a torchvision that imports is installed)."""
    pkg = tmp_path / "tvstand" / "torchvision"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import models\n")
    (pkg / "models.py").write_text(textwrap.dedent('''
        import torch.nn as nn
        calls = []
        def list_models():
            return ["tiny"]
        def get_model(name, **kw):
            calls.append((name, kw))
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, kw.get("num_classes", 1000)))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path / "tvstand"))
    for name in ("torchvision", "torchvision.models"):  # undone afterwards: the stand-in does not stay
        monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.delitem(sys.modules, name)
    imported = import_model("torchvision:tiny", (3, 16, 16), 7)
    import torchvision

    assert torchvision.models.calls == [("tiny", {"weights": None, "num_classes": 7})]
    assert [n.kind for n in imported.spec.nodes] == ["conv2d", "relu", "adaptive_avgpool2d", "flatten", "linear"]
    assert [n.id for n in imported.spec.nodes] == ["_0", "_1", "_2", "_3", "_4"]
    with pytest.raises(LayerScopeError, match="unknown torchvision model 'tinyy' \\(did you mean tiny\\?\\)"):
        import_model("torchvision:tinyy", (3, 16, 16), 7)


def test_real_torchvision_resnet18_imports():
    try:
        import torchvision as tv
    except Exception as e:  # absent, or a build for another torch (this machine: only a CUDA build exists)
        pytest.skip(f"torchvision does not import here ({type(e).__name__}); pip install -e '.[vision]'")
    imported = import_model("torchvision:resnet18", (3, 32, 32), 10)
    module = tv.models.resnet18(num_classes=10)
    assert imported.module_params == sum(p.numel() for p in module.parameters())
    assert imported.spec.node("layer1_0_conv1").kind == "conv2d"


def test_validate_prints_the_traced_graph(user_file, capsys):
    assert main(["validate", f"{user_file}:make", "--input-shape", "1,12,12"]) == 0
    out = capsys.readouterr().out
    assert "layer1.0.conv1" in out and "opaque: nn.Hardswish" in out and "bwd FLOPs" in out
    assert main(["validate", f"{user_file}:branchy", "--input-shape", "1,10,10", "--json"]) == 0
    import json

    got = json.loads(capsys.readouterr().out)
    assert got["traced"] is False and got["notice"].startswith("fx could not trace the model")
    assert [row["id"] for row in got["layers"]] == ["a", "b_in", "b", "fc_in", "fc", "tail"]
    assert main(["validate", f"{user_file}:nope", "--input-shape", "1,10,10"]) == 2


TORCHVISION_STYLE = """import torch, torch.nn as nn
class BasicBlock(nn.Module):
    def __init__(self, cin, c, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False); self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False); self.bn2 = nn.BatchNorm2d(c)
        self.downsample = None
        if stride != 1 or cin != c:
            self.downsample = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))
    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out
class SE(nn.Module):
    def __init__(self, c):
        super().__init__(); self.fc1 = nn.Conv2d(c, c // 4, 1); self.fc2 = nn.Conv2d(c // 4, c, 1); self.act = nn.ReLU6(inplace=True)
    def forward(self, x):
        s = torch.nn.functional.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(s))))
class ResNet(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 7, 2, 3, bias=False); self.bn1 = nn.BatchNorm2d(16); self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers = []; cin = 16
        for c, s in [(16, 1), (32, 2), (32, 2), (64, 2)]:
            layers.append(nn.Sequential(BasicBlock(cin, c, s), BasicBlock(c, c))); cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.se = SE(64)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1)); self.drop = nn.Dropout(0.2); self.fc = nn.Linear(64, num_classes)
    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.se(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.drop(x))
def resnet18():
    return ResNet(10)
"""


def test_a_torchvision_style_resnet_from_a_user_file(tmp_path):
    """The ground torchvision:resnet18 covers, with torchvision's own idioms in a user file: shared
    in-place ReLU, ``out += identity``, downsample branches, a squeeze-excite broadcast multiply."""
    path = tmp_path / "tvstyle.py"
    path.write_text(TORCHVISION_STYLE)
    torch.manual_seed(5)
    module = load_module(f"{path}:resnet18").eval()
    torch.manual_seed(5)
    imported = import_model(f"{path}:resnet18", (3, 32, 32))
    kinds = {n.id: n.kind for n in imported.spec.nodes}
    assert kinds["layer2_0_downsample_0"] == "conv2d" and kinds["layer1_0_relu"] == kinds["layer1_0_relu_1"] == "relu"
    assert sum(k == "add" for k in kinds.values()) == 8  # every out += identity
    assert imported.spec.node("mul").params["op"] == "operator.mul"  # x * scale broadcasts: not add-like
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(imported.model.eval()(x), module(x))
    assert imported.module_params == sum(p.numel() for p in module.parameters()) == analyze(imported.spec).params
