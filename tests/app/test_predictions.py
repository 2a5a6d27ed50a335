"""The held-out predictions feature: the plain function against an independent forward pass, and the
dialog filling its grid from a background draw."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A lenet5 briefly trained on digits (a few dozen steps: mixed right and wrong guesses), saved."""
    import engine
    from engine.net.checkpoint import save_checkpoint
    from engine.data import get_dataset, make_loader

    torch.manual_seed(0)
    spec = engine.load_preset("lenet5")
    model = engine.build_model(spec)
    splits = get_dataset("digits", spec.input, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step, (x, y) in enumerate(make_loader(splits.train, 64, seed=0)):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if step == 12:
            break
    folder = tmp_path_factory.mktemp("ck")
    path = save_checkpoint(model, spec, folder, step=13)
    return folder, path, model, spec


def _independent(model, spec, n, seed, split_seed=0):
    """Labels and argmax predictions for the images sample_predictions picks, computed here."""
    from engine.data import get_dataset

    test = get_dataset("digits", spec.input, seed=split_seed).test
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    x, y = test.batch(idx)
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    return y.tolist(), pred.tolist(), [test.image(i).numpy() for i in idx]


def test_predict_held_out_matches_an_independent_forward_pass(trained):
    from app.dialogs.predictions import predict_held_out

    folder, path, model, spec = trained
    r = predict_held_out(folder, "digits", n=20, seed=5)  # a folder means its latest checkpoint
    labels, pred, images = _independent(model, spec, 20, 5)
    assert r.n == 20 and len(r.images) == 20
    assert r.labels == labels
    assert r.predicted == pred
    assert r.correct == sum(a == b for a, b in zip(labels, pred))
    assert r.accuracy == pytest.approx(r.correct / 20)
    assert 0 < r.correct < 20  # a briefly trained net: some right, some wrong, so both captions get tested
    assert r.checkpoint == str(path)
    assert r.dataset == "digits" and r.split == "test" and r.seed == 5
    assert r.class_names == [str(i) for i in range(10)]
    assert "digits" in r.dataset_summary and "test" in r.dataset_summary
    # the digits source holds grey levels 0..16: shown stretched to 0..255, same picture
    for shown, source in zip(r.images, images):
        assert shown.dtype.name == "uint8" and shown.shape == source.shape == (8, 8)
        assert (shown == source).all()
    assert max(int(a.max()) for a in r.images) == 255
    # the same seed draws the same images; a larger N keeps them and adds more
    again = predict_held_out(path, "digits", n=25, seed=5)
    assert again.labels[:20] == r.labels and again.predicted[:20] == r.predicted


def test_predict_held_out_uses_the_training_split(trained, tmp_path):
    """A checkpoint saved by a run names its dataset and split seed: the images come from that test split."""
    from app.dialogs.predictions import predict_held_out
    from engine.net.checkpoint import save_checkpoint

    _, _, model, spec = trained
    save_checkpoint(model, spec, tmp_path, extra={"config": {"dataset": "digits", "seed": 3}})
    r = predict_held_out(tmp_path, n=12, seed=1)  # dataset from the checkpoint
    labels, pred, _ = _independent(model, spec, 12, 1, split_seed=3)
    assert r.split_seed == 3 and r.dataset == "digits"
    assert (r.labels, r.predicted) == (labels, pred)


def test_predict_held_out_bad_input_is_one_line(trained, tmp_path):
    import engine
    from app.dialogs.predictions import predict_held_out

    with pytest.raises(engine.LayerScopeError) as e:
        predict_held_out(tmp_path / "missing", "digits")
    assert "missing" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(engine.LayerScopeError) as e:
        predict_held_out(trained[0], "no-such-dataset")
    assert "no-such-dataset" in str(e.value) and "\n" not in str(e.value)


def _wait_drawn(qtbot, dlg):
    qtbot.waitUntil(lambda: not dlg.is_busy(), timeout=60_000)


def test_dialog_fills_captioned_tiles(qtbot, trained):
    from PySide6.QtCore import Qt

    from app import style
    from app.dialogs.predictions import PredictionsDialog, open_predictions

    folder, path, model, spec = trained
    dlg = open_predictions(None, folder, "digits")
    qtbot.addWidget(dlg)
    assert dlg.is_busy()  # the first draw starts at once, in the background
    _wait_drawn(qtbot, dlg)
    assert isinstance(dlg, PredictionsDialog)
    r = dlg.result
    assert r is not None and r.n == 16 and len(dlg.tiles) == 16
    labels, pred, _ = _independent(model, spec, 16, r.seed)
    assert (r.labels, r.predicted) == (labels, pred)
    dlg.draw(5)  # the fixed draw with right and wrong guesses (see the first test)
    _wait_drawn(qtbot, dlg)
    r = dlg.result
    labels, pred, _ = _independent(model, spec, 16, 5)
    assert (r.labels, r.predicted) == (labels, pred) and len(dlg.tiles) == 16
    assert {t.right for t in dlg.tiles} == {True, False}
    for tile, y, p in zip(dlg.tiles, labels, pred):
        assert tile.caption.text() == f"true {y} · predicted {p}"
        assert tile.right == (y == p)
        assert tile.colour == (style.OK if y == p else style.ERROR)
        assert (style.OK if y == p else style.ERROR) in tile.caption.styleSheet()
        assert not tile.picture.pixmap().isNull() and tile.picture.pixmap().width() >= 64  # 8 px scaled up
    right = sum(a == b for a, b in zip(labels, pred))
    assert dlg.header.text().startswith(f"{right} of 16 right ({100 * right / 16:.0f}%) · digits test split")
    assert path.name in dlg.header.text()
    assert not dlg.error.isVisible()

    first = r.seed
    dlg.n_spin.setValue(6)  # same seed, fewer images: the first six of the same draw
    _wait_drawn(qtbot, dlg)
    assert len(dlg.tiles) == 6 and dlg.result.seed == first and dlg.result.labels == labels[:6]

    qtbot.mouseClick(dlg.new_button, Qt.LeftButton)
    assert dlg.is_busy() and not dlg.new_button.isEnabled()
    _wait_drawn(qtbot, dlg)
    assert dlg.new_button.isEnabled()
    assert dlg.result.seed != first and len(dlg.tiles) == 6
    labels2, pred2, _ = _independent(model, spec, 6, dlg.result.seed)
    assert (dlg.result.labels, dlg.result.predicted) == (labels2, pred2)
    assert [t.caption.text() for t in dlg.tiles] == [f"true {y} · predicted {p}" for y, p in zip(labels2, pred2)]
    dlg.close()


def test_dialog_missing_checkpoint_shows_one_line(qtbot, tmp_path):
    from app.dialogs.predictions import PredictionsDialog

    dlg = PredictionsDialog(tmp_path / "nothing-here", "digits")
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.new_sample()
    _wait_drawn(qtbot, dlg)
    assert dlg.result is None and dlg.tiles == []
    assert dlg.error.isVisible()
    text = dlg.error.text()
    assert "nothing-here" in text and "\n" not in text and "Traceback" not in text
    assert dlg.new_button.isEnabled()  # the person can try again
    dlg.close()
