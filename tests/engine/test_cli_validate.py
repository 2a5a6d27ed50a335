"""layerscope validate / presets."""
import json

import pytest

from engine.cli.main import main

EXPECTED = {"lenet5": 61_706, "alexnet": 61_100_840, "vgg11": 132_863_336, "resnet18": 11_689_512}


@pytest.mark.parametrize("name", ["lenet5", "alexnet-article", "alexnet", "vgg11", "resnet18"])
def test_validate_json_presets(name, capsys):
    assert main(["validate", name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["errors"] == []
    assert out["params"] == sum(layer["params"] for layer in out["layers"])
    if name in EXPECTED:
        assert out["params"] == EXPECTED[name]
    assert set(out["layers"][0]) == {"id", "kind", "out_shape", "params", "flops"}
    assert out["flops"] > 0


def test_validate_table(capsys):
    assert main(["validate", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "6x28x28" in out and "61,706 parameters" in out


def test_validate_bad_file_exits_2_with_node_messages(tmp_path, capsys):
    bad = {"format": "layerscope-net", "version": 1,
           "input": {"channels": 1, "height": 28, "width": 28, "classes": 10},
           "nodes": [{"id": "c1", "kind": "conv2d", "params": {"kernel": 40}}, {"id": "x", "kind": "nope"},
                     {"id": "fc", "kind": "linear"}]}
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    assert main(["validate", str(p)]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert "x: unknown kind 'nope'" in out
    assert main(["validate", str(p), "--json"]) == 2
    js = json.loads(capsys.readouterr().out)
    assert js["ok"] is False and {"node": "x", "message": "unknown kind 'nope'"} in js["errors"]


def test_bad_flags_and_missing_net_are_one_line(capsys, tmp_path):
    assert main(["validate", "--frobnicate", "lenet5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "frobnicate" in err
    assert main(["validate", str(tmp_path / "none.json")]) == 2
    assert "no net file" in capsys.readouterr().out
    p = tmp_path / "broken.json"
    p.write_text("{\n  \"nodes\": [\n")
    assert main(["validate", str(p)]) == 2
    assert "line 3, column 1" in capsys.readouterr().out


def test_presets_lists_all(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        assert name in out


def test_closed_pipe_is_not_a_traceback():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    # a reader that went away (`layerscope summary S | head`): writing raises BrokenPipeError
    code = ("import sys, engine.cli.info as c, engine.cli.main as m\n"
            "def gone(args):\n    raise BrokenPipeError(32, 'Broken pipe')\n"
            "c.cmd_presets = gone\n"
            "sys.exit(m.main(['presets']))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "Traceback" not in r.stderr
