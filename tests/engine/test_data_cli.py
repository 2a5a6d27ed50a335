"""Every bad dataset given to ``layerscope profile --dataset`` is bad input (issue 9, item 24): one
line on stderr, exit 2, and no session file, because the dataset is opened (every file read,
every image decoded) before the run starts."""
import errno
import gzip
import pathlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli.main import main

from _datagen import idx_bytes, write_cifar, write_image_folder, write_mnist

QUICK = ["--steps", "1", "--warmup", "0", "--device", "cpu", "--threads", "1", "--telemetry-hz", "0", "-q"]


def _missing(d: Path):
    return str(d / "nowhere"), "no such folder"


def _empty_class(d: Path):
    write_image_folder(d / "f", classes=("cat", "dog"), per_class=2, size=(28, 28))
    (d / "f" / "eel").mkdir()
    return str(d / "f"), "eel/ is empty"


def _all_classes_empty(d: Path):
    for cls in ("cat", "dog"):
        (d / "f" / cls).mkdir(parents=True)
    return str(d / "f"), "has no images in its class sub-folders"


def _wrong_idx_magic(d: Path):
    write_mnist(d / "m", n_train=20, n_test=10)
    p = d / "m" / "train-images-idx3-ubyte"
    p.write_bytes(b"\x00\x00\x08\x01" + p.read_bytes()[4:])
    return str(d / "m"), "magic number 0x00000801"


def _truncated_idx_gz(d: Path):
    write_mnist(d / "m", gz=True, n_train=20, n_test=10)
    p = d / "m" / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-12])
    return str(d / "m"), "t10k-labels-idx1-ubyte.gz"


def _incomplete_idx(d: Path):
    write_mnist(d / "m", n_train=20, n_test=10)
    (d / "m" / "t10k-labels-idx1-ubyte").unlink()
    return str(d / "m"), "t10k-labels-idx1-ubyte[.gz] missing"


def _truncated_cifar(d: Path):
    write_cifar(d / "c", n_per_batch=10, n_test=5)
    p = d / "c" / "data_batch_2.bin"
    p.write_bytes(p.read_bytes()[:-100])
    return str(d / "c"), "data_batch_2.bin is truncated"


def _pickled_cifar(d: Path):
    (d / "cifar-10-batches-py").mkdir()
    (d / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x04.")
    return str(d / "cifar-10-batches-py"), "pickled Python version"


def _unreadable_image(d: Path):
    write_image_folder(d / "f", per_class=3, size=(28, 28))
    (d / "f" / "dog" / "001.png").write_bytes(b"this is not a png")
    return str(d / "f"), "dog/001.png is not an image Pillow can identify"


def _truncated_image(d: Path):
    write_image_folder(d / "f", per_class=3, size=(28, 28))
    rng = np.random.default_rng(1)
    p = d / "f" / "eel" / "002.png"
    Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:1500])
    return str(d / "f"), "eel/002.png cannot be decoded"


def _pixels_without_meaning(d: Path):
    write_image_folder(d / "f", per_class=3, size=(28, 28))
    Image.fromarray(np.full((28, 28), 3.0, np.float32), "F").save(d / "f" / "cat" / "009.tif")
    return str(d / "f"), "cat/009.tif has 32-bit float pixels"


def _too_many_classes(d: Path):
    write_mnist(d / "m", n_train=20, n_test=10)
    labels = np.arange(10, dtype=np.uint8) + 3  # labels up to 12: 13 classes for a 10-output net
    (d / "m" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels, labels=True))
    return str(d / "m"), "the dataset has 13 classes but the net outputs 10"


def _too_many_image_classes(d: Path):
    write_image_folder(d / "f", classes=tuple(f"c{i:02d}" for i in range(11)), per_class=1, size=(28, 28))
    return str(d / "f"), "the dataset has 11 classes but the net outputs 10"


def _file_not_folder(d: Path):
    (d / "notes.txt").write_text("hello")
    return str(d / "notes.txt"), "is a file, not a dataset folder"


def _image_file_not_folder(d: Path):
    Image.new("L", (28, 28)).save(d / "seven.png")
    return str(d / "seven.png"), "is a file, not a dataset folder"


def _archive(d: Path):
    (d / "cifar-10-binary.tar.gz").write_bytes(gzip.compress(b"x"))
    return str(d / "cifar-10-binary.tar.gz"), "is an archive; unpack it"


def _not_a_dataset(d: Path):
    (d / "f").mkdir()
    (d / "f" / "readme.md").write_text("hi")
    return str(d / "f"), "no dataset found"


def _empty_folder(d: Path):
    (d / "f").mkdir()
    return str(d / "f"), "is empty"


def _not_downloaded(d: Path):
    return "mnist", "MNIST is not downloaded yet"


CASES = [_missing, _empty_class, _all_classes_empty, _wrong_idx_magic, _truncated_idx_gz, _incomplete_idx,
         _truncated_cifar, _pickled_cifar, _unreadable_image, _truncated_image, _pixels_without_meaning,
         _too_many_classes, _too_many_image_classes, _file_not_folder, _image_file_not_folder, _archive,
         _not_a_dataset, _empty_folder, _not_downloaded]


def _profile(dataset: str, tmp_path: Path, *extra) -> tuple[int, Path]:
    out = tmp_path / "run.lsession"
    rc = main(["profile", "lenet5", "--dataset", dataset, "--data-root", str(tmp_path / "cache"), *QUICK,
               "--out", str(out), *extra])
    return rc, out


@pytest.mark.parametrize("make", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_bad_dataset_is_bad_input(make, tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    dataset, words = make(data)
    monkeypatch.setenv("LAYERSCOPE_DATA", str(tmp_path / "cache"))
    rc, out = _profile(dataset, tmp_path)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert words in err and "\n" not in err and "Traceback" not in err, err
    assert not out.exists()  # refused before the run: no session was started


@pytest.mark.parametrize("what", ["folder", "class folder", "image"])
def test_permission_denied_is_bad_input(what, tmp_path, capsys, monkeypatch):
    """Simulated (the tests may run as root, for whom chmod 000 changes nothing)."""
    folder = write_image_folder(tmp_path / "f", per_class=3, size=(28, 28))
    locked = {"folder": folder, "class folder": folder / "dog", "image": folder / "dog" / "001.png"}[what]
    real_iterdir, real_open = pathlib.Path.iterdir, Image.open

    def iterdir(self):
        if self == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    def pil_open(fp, *a, **k):
        if Path(fp) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(fp))
        return real_open(fp, *a, **k)

    monkeypatch.setattr(pathlib.Path, "iterdir", iterdir)
    monkeypatch.setattr(Image, "open", pil_open)
    rc, out = _profile(str(folder), tmp_path)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Permission denied" in err and "\n" not in err, err
    assert not out.exists()


def test_a_good_image_folder_runs(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "f", per_class=3, size=(28, 28))
    rc, out = _profile(str(folder), tmp_path)
    assert rc == 0, capsys.readouterr().err
    assert out.exists()


def test_benchmark_mode_does_not_read_the_dataset(tmp_path, capsys):
    """Benchmark runs one random batch: a dataset it never reads is not checked."""
    write_image_folder(tmp_path / "f", per_class=3, size=(28, 28))
    (tmp_path / "f" / "dog" / "001.png").write_bytes(b"junk")
    rc, _ = _profile(str(tmp_path / "f"), tmp_path, "--mode", "benchmark")
    assert rc == 0, capsys.readouterr().err


def test_skip_bad_images_flag(tmp_path, capsys):
    from engine.cli.main import build_parser
    from engine.cli.profile import _open_dataset, config_from_args
    from engine.net.presets import resolve_net

    folder = write_image_folder(tmp_path / "f", per_class=3, size=(28, 28))
    (folder / "dog" / "001.png").write_bytes(b"junk")
    args = build_parser().parse_args(["profile", "lenet5", "--dataset", str(folder), "--skip-bad-images"])
    cfg = config_from_args(args, resolve_net("lenet5"))
    assert cfg.skip_bad_images is True
    _open_dataset(cfg)  # passes: the bad file is left out
    cfg.skip_bad_images = False
    with pytest.raises(Exception, match="dog/001.png"):
        _open_dataset(cfg)


def test_the_run_reuses_the_dataset_the_check_opened(tmp_path, capsys, monkeypatch):
    """profile opens the dataset before the run and holds it; the run does not read it all again."""
    import engine.data as data

    folder = write_image_folder(tmp_path / "f", per_class=3, size=(28, 28))
    opened = []
    real = data._open_files
    monkeypatch.setattr(data, "_open_files", lambda *a, **k: opened.append(a[1]) or real(*a, **k))
    rc, _ = _profile(str(folder), tmp_path)
    assert rc == 0, capsys.readouterr().err
    assert opened == [str(folder)]


def test_an_opened_dataset_is_reused_only_while_held_and_unchanged(tmp_path, monkeypatch):
    import gc

    import engine
    import engine.data as data

    spec = engine.InputSpec(1, 28, 28, 10)
    write_mnist(tmp_path / "m", n_train=20, n_test=10)
    opened = []
    real = data._open_files
    monkeypatch.setattr(data, "_open_files", lambda *a, **k: opened.append(a[1]) or real(*a, **k))
    a = data.get_dataset(str(tmp_path / "m"), spec)
    assert data.get_dataset(str(tmp_path / "m"), spec) is a and len(opened) == 1
    assert data.get_dataset(str(tmp_path / "m"), spec, seed=1) is not a  # other arguments: opened again
    assert len(opened) == 2
    write_mnist(tmp_path / "m", n_train=20, n_test=11)  # the files replaced
    b = data.get_dataset(str(tmp_path / "m"), spec)
    assert b is not a and b.info.test_size == 11 and len(opened) == 3
    del a, b
    gc.collect()
    data.get_dataset(str(tmp_path / "m"), spec)  # nobody held it: read again
    assert len(opened) == 4


def test_skip_bad_images_end_to_end(tmp_path, capsys):
    """An unreadable image stops the run before its first step (exit 2, no session) unless
    --skip-bad-images is given; then the run completes and says what it left out."""
    from tests.engine._datagen import write_image_folder

    folder = write_image_folder(tmp_path / "f", per_class=3, size=(28, 28))
    (folder / "dog" / "001.png").write_bytes(b"junk")
    out = tmp_path / "run.lsession"
    argv = ["profile", "lenet5", "--dataset", str(folder), "--steps", "1", "--warmup", "0", "--device", "cpu",
            "--threads", "1", "--telemetry-hz", "0", "--out", str(out)]
    assert main([*argv, "-q"]) == 2 and not out.exists()
    capsys.readouterr()
    assert main([*argv, "--skip-bad-images"]) == 0
    assert "skipped 1 unreadable of 9 images: dog/001.png" in capsys.readouterr().out
