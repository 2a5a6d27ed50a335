"""Bad data fails with DatasetError and one sentence naming the problem, never a traceback."""
import gzip

import pytest

import engine
from engine.data import DatasetError, get_dataset

from _datagen import idx_bytes, images, write_cifar, write_image_folder, write_mnist

MNIST_IN = engine.InputSpec(1, 28, 28, 10)


def fails(path_or_name, match, spec=MNIST_IN, **kw) -> str:
    with pytest.raises(DatasetError) as e:
        get_dataset(str(path_or_name), spec, **kw)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert len(msg) < 300
    assert match in msg, msg
    return msg


def test_missing_files(tmp_path):
    write_mnist(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    fails(tmp_path / "m", "incomplete: t10k-labels-idx1-ubyte[.gz] missing")
    fails(tmp_path / "nope", "no such folder")
    fails("mnist-typo", "unknown dataset 'mnist-typo'")
    fails("cifar10", "CIFAR-10 is not downloaded yet", root=tmp_path / "empty-cache")
    write_cifar(tmp_path / "c")
    (tmp_path / "c" / "test_batch.bin").unlink()
    fails(tmp_path / "c", "test_batch.bin missing", spec=engine.InputSpec(3, 32, 32, 10))


def test_not_a_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "is empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    fails(tmp_path / "junk", "no dataset found")


def test_wrong_magic_number(tmp_path):
    write_mnist(tmp_path / "m")
    labels = (tmp_path / "m" / "train-labels-idx1-ubyte").read_bytes()
    (tmp_path / "m" / "train-images-idx3-ubyte").write_bytes(labels)  # a label file in the images' place
    msg = fails(tmp_path / "m", "magic number 0x00000801")
    assert "train-images-idx3-ubyte" in msg and "0x00000803" in msg


def test_truncated_raw_file(tmp_path):
    write_mnist(tmp_path / "m")
    p = tmp_path / "m" / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:5000])
    fails(tmp_path / "m", "truncated: its header promises 20 images of 28x28 (15,680 bytes)")


def test_truncated_gz_file(tmp_path):
    write_mnist(tmp_path / "m", gz=True)
    p = tmp_path / "m" / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:200])
    fails(tmp_path / "m", "train-images-idx3-ubyte.gz is not a complete gzip file")


def test_image_and_label_counts_differ(tmp_path):
    write_mnist(tmp_path / "m", gz=True)
    _, y = images(59, 28, 28)
    (tmp_path / "m" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y, labels=True)))
    fails(tmp_path / "m", "has 60 images but train-labels-idx1-ubyte.gz has 59 labels")


def test_more_classes_than_the_net_outputs(tmp_path):
    write_mnist(tmp_path / "m")
    five = engine.InputSpec(1, 28, 28, 5)
    msg = fails(tmp_path / "m", "the dataset has 10 classes but the net outputs 5", spec=five)
    assert msg == "the dataset has 10 classes but the net outputs 5"
    fails("digits", "the dataset has 10 classes but the net outputs 5", spec=five)
    write_image_folder(tmp_path / "f", classes=("a", "b", "c"), per_class=2)
    fails(tmp_path / "f", "the dataset has 3 classes but the net outputs 2", spec=engine.InputSpec(3, 16, 16, 2))
    # fewer classes than outputs is fine
    assert get_dataset(str(tmp_path / "f"), engine.InputSpec(3, 16, 16, 10)).info.classes == 3


def test_empty_image_folder(tmp_path):
    for c in ("cats", "dogs"):
        (tmp_path / "f" / c).mkdir(parents=True)
    fails(tmp_path / "f", "has no images in its class sub-folders")


def test_unreadable_image(tmp_path):
    write_image_folder(tmp_path / "f", per_class=3)
    (tmp_path / "f" / "dog" / "001.png").write_bytes(b"this is not a png at all")
    msg = fails(tmp_path / "f", "dog/001.png is not an image Pillow can identify", spec=engine.InputSpec(3, 16, 16, 10))
    assert "--skip-bad-images" in msg


def test_image_damaged_after_opening_fails_clearly_on_access(tmp_path):
    write_image_folder(tmp_path / "f", per_class=3)
    d = get_dataset(str(tmp_path / "f"), engine.InputSpec(3, 16, 16, 10))
    for p in (tmp_path / "f").rglob("*.png"):
        p.write_bytes(p.read_bytes()[:60])  # header intact, pixels gone
    with pytest.raises(DatasetError, match="cannot be decoded"):
        d.train[0]


def test_cifar_truncated_and_bad_labels(tmp_path):
    spec = engine.InputSpec(3, 32, 32, 10)
    write_cifar(tmp_path / "c")
    p = tmp_path / "c" / "data_batch_2.bin"
    p.write_bytes(p.read_bytes()[:-100])
    fails(tmp_path / "c", "data_batch_2.bin is truncated or not a CIFAR-10 binary batch", spec=spec)
    write_cifar(tmp_path / "d")
    p = tmp_path / "d" / "test_batch.bin"
    data = bytearray(p.read_bytes())
    data[3073 * 4] = 37
    p.write_bytes(bytes(data))
    fails(tmp_path / "d", "test_batch.bin record 4 has label 37", spec=spec)


def test_pickled_cifar_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "ran"
    # a pickle that would create a file if anything unpickled it
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "data_batch_1").write_bytes(pickle.dumps(Evil()))
    (folder / "test_batch").write_bytes(pickle.dumps(Evil()))
    fails(folder, "pickled Python version of CIFAR-10", spec=engine.InputSpec(3, 32, 32, 10))
    assert not marker.exists()


def test_archive_is_not_a_folder(tmp_path):
    p = tmp_path / "cifar-10-binary.tar.gz"
    p.write_bytes(b"\x1f\x8b")
    fails(p, "is an archive; unpack it")
