"""The article's check as a helper: N random held-out images with true and predicted labels."""
import numpy as np
import torch

import engine
from engine.data import get_dataset, sample_predictions

from _datagen import write_mnist


def test_sample_predictions_on_digits():
    spec = engine.load_preset("lenet5")
    torch.manual_seed(0)
    model = engine.build_model(spec)
    model.train()
    data = get_dataset("digits", spec.input)
    got = sample_predictions(model, data.test, n=12, seed=7, device="cpu")
    assert len(got) == 12 and model.training  # training flag restored
    idx = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(7))[:12].tolist()
    model.eval()
    with torch.no_grad():
        expected = model(data.test.batch(idx)[0]).argmax(1).tolist()
    assert [p.predicted for p in got] == expected
    assert [p.label for p in got] == [data.test[i][1] for i in idx]
    img, label, predicted = got[0]  # unpacks as (image, true, predicted)
    # the image as a person sees it: the 8x8 scan, not the normalised net input
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == (8, 8)
    assert np.array_equal(img, data.test.image(idx[0]).numpy())
    assert sample_predictions(model, data.test, n=12, seed=7)[3].image.tobytes() == got[3].image.tobytes()


def test_sample_predictions_caps_n_and_handles_other_datasets(tmp_path):
    spec = engine.load_preset("lenet5")
    model = engine.build_model(spec)
    d = get_dataset(str(write_mnist(tmp_path / "m")), spec.input)
    got = sample_predictions(model, d.test, n=500, seed=0)
    assert len(got) == 20 and all(p.image.shape == (28, 28) for p in got)
    syn = get_dataset("synthetic", spec.input, synthetic_size=16)
    got = sample_predictions(model, syn.test, n=2, seed=0)
    assert len(got) == 2 and got[0].image.dtype == np.uint8 and got[0].image.shape == (28, 28)
    assert sample_predictions(model, d.test, n=0) == []
