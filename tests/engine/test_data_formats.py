"""Datasets from generated files in the real formats: IDX (raw, .gz), CIFAR-10 binary, image folders,
plus the built-ins; every split yields fitted (float C x H x W, int) samples with labels intact."""
import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import engine
from engine.data import DatasetError, data_home, get_dataset
from engine.data.fitting import FittedDataset

from _datagen import images, write_cifar, write_image_folder, write_mnist

MNIST_IN = engine.InputSpec(1, 28, 28, 10)


def _labels(ds) -> list[int]:
    return [ds[i][1] for i in range(len(ds))]


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_folder(tmp_path, gz):
    write_mnist(tmp_path / "m", gz=gz)
    d = get_dataset(str(tmp_path / "m"), MNIST_IN)
    assert (len(d.train), len(d.test)) == (60, 20)
    assert d.info.format == "idx" and d.info.classes == 10
    x, y = d.train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    # labels come from the label file, in order
    _, expected = images(60, 28, 28, seed=0)
    assert _labels(d.train) == expected.tolist()
    # the class pattern (bright band at a label-dependent row) survives: brightest rows match
    band = [int(d.train[i][0][0].mean(1).argmax()) for i in range(10)]
    assert band == [int(k * 26 / 9) for k in expected[:10]]
    # normalised with the training statistics
    xb, _ = d.train.batch(range(60))
    assert abs(float(xb.mean())) < 1e-3 and abs(float(xb.std()) - 1) < 0.02
    assert any("normalise" in n for n in d.info.preprocessing)


def test_gz_and_raw_give_the_same_samples(tmp_path):
    a = get_dataset(str(write_mnist(tmp_path / "raw")), MNIST_IN)
    b = get_dataset(str(write_mnist(tmp_path / "gz", gz=True)), MNIST_IN)
    assert torch.equal(a.test.batch(range(20))[0], b.test.batch(range(20))[0])


def test_idx_in_torchvision_layout_and_file_path(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    assert len(get_dataset(str(tmp_path / "MNIST"), MNIST_IN).train) == 60
    # pointing at one of the files means its folder
    assert len(get_dataset(str(tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"), MNIST_IN).test) == 20


def test_named_datasets_come_from_the_cache(tmp_path, monkeypatch):
    write_mnist(tmp_path / "cache" / "fashion-mnist", gz=True)
    monkeypatch.setenv("LAYERSCOPE_DATA", str(tmp_path / "cache"))
    assert data_home() == tmp_path / "cache"
    d = get_dataset("fashion-mnist", MNIST_IN)
    assert d.info.name == "fashion-mnist" and d.info.class_names[0] == "T-shirt/top"
    assert "Fashion-MNIST" in d.info.source and str(tmp_path / "cache") in d.info.source
    # root overrides the environment; a root holding the files itself works too
    write_mnist(tmp_path / "elsewhere")
    assert get_dataset("mnist", MNIST_IN, root=tmp_path / "elsewhere").info.location == str(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match="MNIST is not downloaded yet"):
        get_dataset("mnist", MNIST_IN)


def test_cifar10_binary(tmp_path):
    write_cifar(tmp_path / "c")
    d = get_dataset(str(tmp_path / "c"), engine.InputSpec(3, 32, 32, 10))
    assert (len(d.train), len(d.test)) == (60, 20)  # data_batch_1 + 2, test_batch
    assert d.info.format == "cifar10-binary" and d.info.class_names[:2] == ["airplane", "automobile"]
    _, y1 = images(30, 32, 32, 3, seed=0)
    _, y2 = images(30, 32, 32, 3, seed=1)
    assert _labels(d.train) == y1.tolist() + y2.tolist()
    # the pixels are read plane by plane (R, G, B), row-major
    raw = d.train.image(0)
    assert raw.shape == (3, 32, 32) and raw.dtype == torch.uint8
    x, _ = images(30, 32, 32, 3, seed=0)
    assert torch.equal(raw, torch.from_numpy(x[0]))


def test_cifar_to_a_grey_28x28_net(tmp_path):
    write_cifar(tmp_path / "c")
    d = get_dataset(str(tmp_path / "c"), MNIST_IN)
    assert d.train[0][0].shape == (1, 28, 28)
    notes = " ".join(d.info.preprocessing)
    assert "grey" in notes and "32x32 -> 28x28" in notes


def test_image_folder_seeded_split(tmp_path):
    write_image_folder(tmp_path / "f", per_class=6)
    a = get_dataset(str(tmp_path / "f"), engine.InputSpec(3, 24, 24, 5), seed=1)
    b = get_dataset(str(tmp_path / "f"), engine.InputSpec(3, 24, 24, 5), seed=1)
    c = get_dataset(str(tmp_path / "f"), engine.InputSpec(3, 24, 24, 5), seed=2)
    assert a.info.format == "image-folder" and a.info.class_names == ["cat", "dog", "eel"]
    assert len(a.train) + len(a.test) == 18 and len(a.test) == 4
    assert a.train[0][0].shape == (3, 24, 24)
    assert torch.equal(a.test.indices, b.test.indices) and not torch.equal(a.test.indices, c.test.indices)
    # class k's images have channel k%3 saturated: the label matches the folder
    for i in range(len(a.train)):
        img, label = a.train.image(i), a.train[i][1]
        assert int(img[label % 3].float().mean()) == 255


def test_image_folder_train_test_layout_and_grey(tmp_path):
    write_image_folder(tmp_path / "f" / "train", per_class=4, fmt="JPEG")
    write_image_folder(tmp_path / "f" / "test", classes=("cat", "dog"), per_class=2, fmt="JPEG")
    d = get_dataset(str(tmp_path / "f"), MNIST_IN)
    assert (len(d.train), len(d.test)) == (12, 4)
    assert d.train[0][0].shape == (1, 28, 28)
    assert "own split" in " ".join(d.info.preprocessing)


def test_digits_split_and_lazy_source():
    spec = engine.InputSpec(3, 224, 224, 10)
    d = get_dataset("digits", spec, seed=3)
    assert (len(d.train), len(d.test)) == (1438, 359)
    assert "UCI optdigits" in d.info.source and "CC BY 4.0" in d.info.summary()
    # the source stays 8x8 (115 kB), not 1,797 x 3 x 224 x 224 floats (1 GB)
    assert d.train.source is d.test.source and d.train.source.shape == (1797, 1, 8, 8)
    assert d.train.source.element_size() * d.train.source.numel() < 200_000
    assert set(d.train.indices.tolist()).isdisjoint(d.test.indices.tolist())
    x, _ = d.train[5]
    assert x.shape == (3, 224, 224)
    assert torch.equal(get_dataset("digits", spec, seed=3).test.indices, d.test.indices)
    assert not torch.equal(get_dataset("digits", spec, seed=4).test.indices, d.test.indices)


def test_article_resize_to_227_is_lazy(tmp_path):
    write_mnist(tmp_path / "m")
    d = get_dataset(str(tmp_path / "m"), engine.InputSpec(1, 227, 227, 10))
    assert isinstance(d.train, FittedDataset)
    assert d.train.source.dtype == torch.uint8 and d.train.source.shape == (60, 1, 28, 28)
    assert d.train[0][0].shape == (1, 227, 227)
    assert "resize 28x28 -> 227x227 (bilinear)" in d.info.preprocessing


def test_dataloader_batches_through_getitems(tmp_path):
    write_mnist(tmp_path / "m")
    d = get_dataset(str(tmp_path / "m"), MNIST_IN)
    x, y = next(iter(DataLoader(d.train, batch_size=16, shuffle=False)))
    assert x.shape == (16, 1, 28, 28) and y.dtype == torch.int64
    ref = torch.stack([d.train[i][0] for i in range(16)])
    assert torch.allclose(x, ref, atol=1e-6)
    assert y.tolist() == _labels(d.train)[:16]


def test_fit_runs_on_raw_batches():
    """A loop can move the small uint8 batch first and fit it where it computes."""
    d = get_dataset("digits", MNIST_IN)
    raw, y = d.train.raw([0, 1, 2])
    assert raw.dtype == torch.uint8 and raw.shape == (3, 1, 8, 8)
    assert torch.equal(d.train.fit(raw), d.train.batch([0, 1, 2])[0])


def test_synthetic_caps_memory():
    d = get_dataset("synthetic", engine.InputSpec(3, 224, 224, 10), synthetic_size=512)
    assert len(d.train) == 512 and d.train[511][0].shape == (3, 224, 224)
    assert d.train.pool.numel() * 4 <= 64 << 20
    small = get_dataset("synthetic", MNIST_IN, synthetic_size=64)
    assert len(small.train.pool) == 64 + 8  # small inputs: every sample distinct


def test_alexnet_article_consumes_idx_files(tmp_path):
    write_mnist(tmp_path / "m", gz=True)
    spec = engine.load_preset("alexnet-article")
    d = get_dataset(str(tmp_path / "m"), spec.input)
    assert d.train[0][0].shape == (1, 28, 28)
    x, y = next(iter(DataLoader(d.train, batch_size=4)))
    torch.manual_seed(0)
    with torch.no_grad():
        out = engine.build_model(spec)(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_loader_kwargs():
    from engine.data import loader_kwargs

    assert loader_kwargs("cpu") == {"num_workers": 0, "pin_memory": False}
    assert loader_kwargs("cuda:0")["pin_memory"] is True
    cheap = get_dataset("digits", MNIST_IN).info
    assert loader_kwargs("cuda", cheap)["num_workers"] == 0
    assert not cheap.costly
    big = get_dataset("digits", engine.InputSpec(3, 227, 227, 10)).info
    assert big.costly



# sha256 of the arrays' bytes (C order) as scikit-learn 1.9.1's load_digits returned them, cast
# to uint8, computed when assets/digits.npz was written from that copy
DIGITS_IMAGES_SHA256 = "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3"
DIGITS_LABELS_SHA256 = "8ba4f891220f5e4c9c819638d1602d74b83618f167043c6da52a2a247841ddf0"
DIGITS_PER_CLASS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_file_holds_the_scikit_learn_arrays():
    """assets/digits.npz gives exactly the arrays load_digits gave before scikit-learn was dropped."""
    import hashlib

    from engine.data.builtin import _digits_arrays

    images, labels = _digits_arrays()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.uint8
    assert (images.min(), images.max()) == (0, 16) and sorted(set(labels.tolist())) == list(range(10))
    assert np.bincount(labels).tolist() == DIGITS_PER_CLASS
    assert hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest() == DIGITS_IMAGES_SHA256
    assert hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest() == DIGITS_LABELS_SHA256
    d = get_dataset("digits", MNIST_IN)
    assert torch.equal(d.train.source[:, 0], torch.from_numpy(images))
    assert d.train.labels.tolist() == labels.tolist()


def test_digits_file_is_package_data_with_its_licence():
    """The wheel carries the digits and their CC BY 4.0 attribution (pyproject's package data)."""
    tomllib = pytest.importorskip("tomllib")  # the standard library's TOML reader, Python 3.11+

    from assets import ASSETS_DIR

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["assets"]
    for name in ("digits.npz", "DIGITS-LICENSE"):
        assert (ASSETS_DIR / name).is_file()
        assert any(fnmatch.fnmatch(name, pat) for pat in patterns), name
    licence = (ASSETS_DIR / "DIGITS-LICENSE").read_text()
    for words in ("Optical Recognition of Handwritten Digits", "Alpaydin", "Kaynak", "UCI", "CC BY 4.0"):
        assert words in licence


def test_damaged_digits_file_is_one_sentence(tmp_path, monkeypatch):
    import engine.data.builtin as builtin

    monkeypatch.setattr(builtin, "DIGITS_PATH", tmp_path / "nothing.npz")
    with pytest.raises(DatasetError, match="the built-in digits file is missing"):
        get_dataset("digits", MNIST_IN)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    monkeypatch.setattr(builtin, "DIGITS_PATH", tmp_path / "bad.npz")
    with pytest.raises(DatasetError, match="is damaged"):
        get_dataset("digits", MNIST_IN)


def test_make_loader_batches_whole_batches(tmp_path):
    from engine.data import make_loader

    write_mnist(tmp_path / "m")
    d = get_dataset(str(tmp_path / "m"), MNIST_IN)
    seq = list(make_loader(d.train, 16, shuffle=False))
    assert [len(y) for _, y in seq] == [16, 16, 16, 12]
    assert torch.equal(seq[1][0], d.train.batch(range(16, 32))[0])
    a = [y.tolist() for _, y in make_loader(d.train, 16, seed=5)]
    b = [y.tolist() for _, y in make_loader(d.train, 16, seed=5)]
    c = [y.tolist() for _, y in make_loader(d.train, 16, seed=6)]
    assert a == b and a != c
    assert sorted(sum(a, [])) == sorted(_labels(d.train))  # each sample once per epoch
    assert [len(y) for _, y in make_loader(d.train, 16, drop_last=True)] == [16, 16, 16]
    x, y = next(iter(make_loader(get_dataset("synthetic", MNIST_IN, synthetic_size=32).train, 8)))
    assert x.shape == (8, 1, 28, 28) and y.shape == (8,)
