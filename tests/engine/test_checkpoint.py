"""Checkpoints: safetensors with the net inside, latest-in-folder, shape checks per node, weights-only
loading of torch state dicts, and identical predictions after a restore."""
import pickle

import pytest
import torch

import engine
from engine.net.checkpoint import (CheckpointError, latest_checkpoint, load_checkpoint, load_model,
                               save_checkpoint)
from engine.data import get_dataset


@pytest.fixture
def trained():
    """lenet5 after a few SGD steps on digits, so its weights differ from any fresh init."""
    torch.manual_seed(0)
    spec = engine.load_preset("lenet5")
    model = engine.build_model(spec)
    data = get_dataset("digits", spec.input)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(5):
        x, y = data.train.batch(range(step * 32, step * 32 + 32))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return spec, model, data


def logits(model, data):
    model.eval()
    with torch.no_grad():
        return model(data.test.batch(range(64))[0])


def test_restored_weights_give_the_same_predictions(tmp_path, trained):
    spec, model, data = trained
    before = logits(model, data)
    path = save_checkpoint(model, spec, tmp_path, step=5, epoch=1, extra={"test_accuracy": 0.5})
    assert path.suffix == ".safetensors" and path.parent == tmp_path
    torch.manual_seed(123)
    fresh = engine.build_model(spec)
    assert not torch.equal(logits(fresh, data), before)
    state, meta = load_checkpoint(path, model=fresh)
    assert torch.equal(logits(fresh, data), before)
    assert torch.equal(logits(fresh, data).argmax(1), before.argmax(1))
    assert meta["step"] == 5 and meta["epoch"] == 1 and meta["extra"] == {"test_accuracy": 0.5}
    assert engine.dumps(meta["net"]) == engine.dumps(spec)  # self-describing
    assert set(state) == set(model.state_dict())


def test_load_model_rebuilds_the_stored_net(tmp_path, trained):
    spec, model, data = trained
    save_checkpoint(model, spec, tmp_path)
    rebuilt, stored, _ = load_model(tmp_path)
    assert stored.name == "lenet5"
    assert torch.equal(logits(rebuilt, data), logits(model, data))


def test_torch_state_dict_round_trip(tmp_path, trained):
    spec, model, data = trained
    path = save_checkpoint(model, spec, tmp_path, step=3, format="torch")
    assert path.suffix == ".pt" and path.with_suffix(".json").is_file()
    fresh = engine.build_model(spec)
    _, meta = load_checkpoint(path, model=fresh)
    assert torch.equal(logits(fresh, data), logits(model, data)) and meta["step"] == 3
    # a plain torch.save of a state dict from elsewhere, possibly wrapped
    torch.save({"state_dict": model.state_dict()}, tmp_path / "other.pth")
    fresh = engine.build_model(spec)
    load_checkpoint(tmp_path / "other.pth", model=fresh)
    assert torch.equal(logits(fresh, data), logits(model, data))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_code_never_runs(tmp_path, trained):
    spec, _, _ = trained
    marker = tmp_path / "ran"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"conv1.weight": _Evil(marker)}, f)
    with pytest.raises(CheckpointError, match="weights only") as e:
        load_checkpoint(tmp_path / "evil.pt", spec)
    assert not marker.exists() and "\n" not in str(e.value)


def test_folder_means_its_latest(tmp_path, trained):
    spec, model, _ = trained
    paths = [save_checkpoint(model, spec, tmp_path, step=s, epoch=e) for e, s in ((1, 100), (2, 200), (3, 300))]
    assert latest_checkpoint(tmp_path) == paths[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in paths]  # names sort by time
    _, meta = load_checkpoint(tmp_path, spec)
    assert meta["step"] == 300 and meta["path"] == str(paths[-1])
    assert latest_checkpoint(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "empty", spec)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.safetensors", spec)


def test_mismatch_lists_each_node(tmp_path, trained):
    spec, model, _ = trained
    path = save_checkpoint(model, spec, tmp_path)
    other = engine.load_preset("lenet5")
    other.nodes[0].params["out_channels"] = 8          # conv1 and conv2 change shape
    other.nodes = [n for n in other.nodes if n.id != "fc2" and n.id != "relu4"]  # fc2 gone: fc3's input changes
    other.nodes[-1].id = "head"                         # fc3 renamed: missing and unexpected
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, other)
    by_node = {p.node: p.message for p in e.value.problems if p.node}
    assert set(by_node) == {"conv1", "conv2", "fc2", "fc3", "head"}
    assert by_node["conv1"] == ("weight is 6x1x5x5 in the checkpoint but 8x1x5x5 in the net, "
                                "bias is 6 in the checkpoint but 8 in the net")
    assert "not in the net" in by_node["fc2"] and "weight is missing" in by_node["head"]
    assert str(e.value).startswith(f"{path.name} does not fit the net; conv1: weight is 6x1x5x5")
    # the model given is left untouched when the check fails
    fresh = engine.build_model(other)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError):
        load_checkpoint(path, model=fresh)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_corrupt_file_is_one_sentence(tmp_path, trained):
    spec, model, _ = trained
    path = save_checkpoint(model, spec, tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="is not a readable safetensors file") as e:
        load_checkpoint(path, spec)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, engine.LayerScopeError)
