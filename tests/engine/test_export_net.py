"""export-net: a net as standalone PyTorch code (same outputs and parameters as LayerNet with a
LayerScope checkpoint's weights, no engine import) and as ONNX that passes onnx.checker."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import engine
from engine.cli.main import main as cli
from engine.net.checkpoint import save_checkpoint
from engine.net.export_code import CODE_KINDS, to_pytorch_source

ROOT = Path(__file__).resolve().parents[2]

# every registry kind, with non-default params where a kind has them (the presets miss several)
ZOO = {
    "format": "layerscope-net", "version": 1, "name": "zoo-every kind",
    "input": {"channels": 3, "height": 16, "width": 16, "classes": 5},
    "nodes": [
        {"id": "c1", "kind": "conv2d", "params": {"out_channels": 8, "kernel": [3, 5], "padding": "same",
                                                  "dilation": [1, 2]}},
        {"id": "bn", "kind": "batchnorm2d", "params": {"eps": 1e-3, "momentum": 0.2}},
        {"id": "lr", "kind": "leaky_relu", "params": {"negative_slope": 0.2}},
        {"id": "norm", "kind": "lrn", "params": {"size": 3, "alpha": 1e-3, "beta": 0.5, "k": 1.0}},
        {"id": "mp", "kind": "maxpool2d", "params": {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}},
        {"id": "dw", "kind": "conv2d", "params": {"out_channels": 8, "kernel": 3, "padding": 1, "groups": 8,
                                                  "bias": False}},
        {"id": "sg", "kind": "sigmoid", "inputs": ["mp"]},
        {"id": "th", "kind": "tanh", "inputs": ["dw"]},
        {"id": "sum", "kind": "add", "inputs": ["sg", "th", "mp"]},
        {"id": "ge", "kind": "gelu", "params": {"approximate": "tanh"}, "inputs": ["mp"]},
        {"id": "cat", "kind": "concat", "inputs": ["sum", "ge"]},
        {"id": "ap", "kind": "avgpool2d", "params": {"kernel": 2}},
        {"id": "bn_plain", "kind": "batchnorm2d", "params": {"affine": False}},
        {"id": "aap", "kind": "adaptive_avgpool2d", "params": {"output_size": [2, 3]}},
        {"id": "drop", "kind": "dropout", "params": {"p": 0.3}},
        {"id": "fc_map", "kind": "linear", "params": {"out_features": 12, "bias": False}},
        {"id": "r", "kind": "relu"},
        {"id": "aap2", "kind": "adaptive_avgpool2d", "inputs": ["cat"]},
        {"id": "flat", "kind": "flatten"},
        {"id": "fc_flat", "kind": "linear", "params": {"out_features": 12}},
        {"id": "both", "kind": "add", "inputs": ["r", "fc_flat"]},
        {"id": "out", "kind": "linear", "params": {"out_features": 5}},
        {"id": "sm", "kind": "softmax"},
    ],
}


def _load_source(source: str, tmp_path: Path, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"exported_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _random_state(model) -> None:
    """Random batch-norm running statistics too, so eval mode uses something other than 0 and 1."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _check_same(spec, tmp_path, batch):
    torch.manual_seed(0)
    net = engine.build_model(spec)
    _random_state(net)
    ckpt = save_checkpoint(net, spec, tmp_path / "ckpt")
    source = to_pytorch_source(spec)
    mod = _load_source(source, tmp_path, spec.name.replace("-", "_").replace(" ", "_"))
    cls = next(v for v in vars(mod).values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
               and v.__module__ == mod.__name__)
    torch.manual_seed(99)  # a different random init: the outputs agree only through the checkpoint
    exported = cls()
    missing = exported.load_state_dict(load_file(str(ckpt)), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    assert list(exported.state_dict()) == list(net.state_dict())
    assert sum(p.numel() for p in exported.parameters()) == sum(p.numel() for p in net.parameters())
    assert sum(p.numel() for p in exported.parameters()) == engine.analyze(spec).params
    net.eval()
    exported.eval()
    x = 8 * torch.randn(batch, *spec.input.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = net(x), exported(x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-6
    assert want.abs().max().item() > 0  # a real comparison, not two zero tensors
    return source


@pytest.mark.parametrize("name", engine.preset_names())
def test_exported_code_of_every_preset_matches_layernet(name, tmp_path):
    spec = engine.load_preset(name)
    source = _check_same(spec, tmp_path, batch=4 if name == "lenet5" else 1)
    assert "engine" not in source.replace("export-net", "") and "layerscope" not in source.split('"""', 2)[2].lower()


def test_every_registry_kind_has_code_and_matches(tmp_path):
    spec = engine.from_dict(ZOO)
    used = {n.kind for n in spec.nodes}
    assert set(engine.kinds()) <= used, "the zoo net must hold every registry kind"
    assert set(engine.kinds()) <= set(CODE_KINDS)
    _check_same(spec, tmp_path, batch=3)


def test_keyword_ids_and_training_mode(tmp_path):
    """Ids that are Python keywords are registered with add_module; train mode (dropout, batch
    statistics) matches too under the same random seed."""
    d = {"format": "layerscope-net", "version": 1, "name": "kw", "input": {"channels": 1, "height": 8, "width": 8, "classes": 3},
         "nodes": [{"id": "class", "kind": "conv2d", "params": {"out_channels": 4, "padding": 1}},
                   {"id": "bn", "kind": "batchnorm2d"}, {"id": "lambda", "kind": "dropout"},
                   {"id": "fc", "kind": "linear", "params": {"out_features": 3}}]}
    spec = engine.from_dict(d)
    source = to_pytorch_source(spec)
    assert "self.add_module('class'" in source and "self._modules['lambda']" in source
    mod = _load_source(source, tmp_path, "kw")
    net = engine.build_model(spec)
    exported = mod.Kw()
    exported.load_state_dict(net.state_dict())
    x = torch.randn(4, 1, 8, 8)
    torch.manual_seed(5)
    want = net(x)
    torch.manual_seed(5)
    got = exported(x)
    assert (got - want).abs().max().item() <= 1e-6


def test_generated_files_run_without_engine(tmp_path):
    """Every preset's file runs as a script (its smoke run) in a fresh Python where engine cannot
    be imported at all, and imports no module of engine or app."""
    files = []
    for name in engine.preset_names():
        p = tmp_path / f"{name.replace('-', '_')}.py"
        p.write_text(to_pytorch_source(engine.load_preset(name)))
        files.append(str(p))
    script = textwrap.dedent("""
        import importlib.abc, json, runpy, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('engine', 'app'):
                    raise ImportError('engine is not importable here')
        sys.meta_path.insert(0, Block())
        out = []
        for f in json.loads(sys.argv[1]):
            runpy.run_path(f, run_name='__main__')
        print('LEAKED', sorted(m for m in sys.modules if m.split('.')[0] in ('engine', 'app')))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", script, json.dumps(files)], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "LEAKED []" in r.stdout
    assert r.stdout.count("parameters") == len(files)
    assert "Lenet5: input (1, 28, 28) -> output (10,), 61,706 parameters" in r.stdout


def test_cli_writes_pytorch_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "lenet.py"
    assert cli(["export-net", "lenet5", "--format", "pytorch", "--out", str(out)]) == 0
    first = out.read_text()
    assert "class Lenet5(nn.Module)" in first
    out.write_text("# mine")
    assert cli(["export-net", "lenet5", "--format", "pytorch", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "exists" in err and "--force" in err and len(err.splitlines()) == 1
    assert out.read_text() == "# mine"
    assert cli(["export-net", "lenet5", "--format", "pytorch", "--out", str(out), "--force"]) == 0
    assert "class Lenet5" in out.read_text()


@pytest.mark.parametrize("argv,words", [
    (["nonet", "--format", "pytorch"], "neither a preset"),
    (["lenet5", "--format", "keras"], "invalid choice"),
    (["lenet5", "--format", "onnx", "--weights", "/no/such/ckpt"], "no such checkpoint"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, words):
    out = tmp_path / "x.out"
    assert cli(["export-net", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_cli_weights_that_do_not_fit_are_refused(tmp_path, capsys):
    spec = engine.load_preset("lenet5")
    ckpt = save_checkpoint(engine.build_model(engine.load_preset("alexnet-article")),
                           engine.load_preset("alexnet-article"), tmp_path / "c")
    out = tmp_path / "l.py"
    assert cli(["export-net", "lenet5", "--format", "pytorch", "--out", str(out), "--weights", str(ckpt)]) == 2
    assert "does not fit" in capsys.readouterr().err
    assert not out.exists()
    good = save_checkpoint(engine.build_model(spec), spec, tmp_path / "g")
    assert cli(["export-net", "lenet5", "--format", "pytorch", "--out", str(out), "--weights", str(good)]) == 0
    assert good.name in out.read_text()


@pytest.mark.parametrize("name", ["lenet5", "resnet18"])
def test_onnx_export_passes_the_checker(name, tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx is an optional extra (pip install -e '.[onnx]')")
    import onnx.numpy_helper
    out = tmp_path / f"{name}.onnx"
    spec = engine.load_preset(name)
    ckpt = save_checkpoint(engine.build_model(spec), spec, tmp_path / "c")
    assert cli(["export-net", name, "--format", "onnx", "--out", str(out), "--weights", str(ckpt)]) == 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == list(spec.input.shape)
    # the checkpoint's weights are inside: the last linear layer's initializer equals them (the
    # exporter folds batch norm into the convolutions before it, so theirs are not kept as such)
    last = [n.id for n in spec.nodes if n.kind == "linear"][-1]
    state = load_file(str(ckpt))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert torch.equal(torch.from_numpy(inits[f"{last}.weight"].copy()), state[f"{last}.weight"])


def test_onnx_without_the_onnx_package_is_one_line(tmp_path, capsys, monkeypatch):
    import engine.net.export_onnx as export_onnx

    monkeypatch.setattr(export_onnx, "onnx_available", lambda: False)
    out = tmp_path / "l.onnx"
    assert cli(["export-net", "lenet5", "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == export_onnx.NEEDS_ONNX and "pip install" in err
    assert not out.exists()


@pytest.mark.parametrize("argv,out_name,words", [
    (["--format", "onnx"], "x.py", "a .py file is pytorch, not onnx"),
    (["--format", "pytorch"], "x.onnx", "a .onnx file is onnx, not pytorch"),
    (["--format", "pytorch"], "X.ONNX", "a .onnx file is onnx, not pytorch"),
    ([], "x.txt", "cannot tell the format"),
    ([], "model", "cannot tell the format"),
])
def test_cli_out_suffix_that_contradicts_the_format_is_refused(tmp_path, capsys, argv, out_name, words):
    out = tmp_path / out_name
    assert cli(["export-net", "lenet5", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_cli_format_follows_the_out_suffix_when_not_given(tmp_path, capsys):
    from engine.net.export_code import format_for

    out = tmp_path / "lenet.py"
    assert cli(["export-net", "lenet5", "--out", str(out)]) == 0
    assert "class Lenet5(nn.Module)" in out.read_text()
    assert format_for("a/b.onnx") == "onnx" and format_for("b.PY") == "pytorch"
    assert format_for("b.bin", "onnx") == "onnx"  # another suffix with an explicit --format: the user's choice


def test_cli_weights_loading_line_works_from_another_folder(tmp_path, capsys, monkeypatch):
    import runpy

    spec = engine.load_preset("lenet5")
    model = engine.build_model(spec)
    ckpt = save_checkpoint(model, spec, tmp_path / "run" / "ck")
    monkeypatch.chdir(tmp_path / "run")
    assert cli(["export-net", "lenet5", "--out", "lenet.py", "--weights", "ck"]) == 0  # a folder: its latest
    text = (tmp_path / "run" / "lenet.py").read_text()
    line = next(ln.strip() for ln in text.splitlines() if "load_file(" in ln and "import" not in ln)
    assert repr(str(ckpt.resolve())) in line  # the resolved file, absolute
    assert "export-net --weights" in text and "absolute path" in text  # the header says where it came from
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ns = runpy.run_path(str(tmp_path / "run" / "lenet.py"))
    loaded = ns["Lenet5"]()
    exec(line, {"model": loaded, "load_file": load_file})  # the docstring's own loading line
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
