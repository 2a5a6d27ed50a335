"""An image folder is fully decoded when it is opened (issue 9, item 22): a truncated or unreadable
image fails before the first step, naming the file; with ``skip_bad_images`` it is left out and
counted; class folders without images are refused, naming them."""
import errno
import gc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import engine
from engine.data import DatasetError, get_dataset
from engine.data import images as imaging

from _datagen import write_image_folder

SPEC = engine.InputSpec(3, 16, 16, 10)


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _photo_folder(root: Path, fmt: str, per_class: int = 4) -> Path:
    """Noisy images (so a cut lands inside the pixel data) of 40x48, per class folder."""
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "eel"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / cls / f"{i:03d}.{fmt.lower()}", fmt)
    return root


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_image_is_found_at_open_naming_the_file(tmp_path, fmt):
    folder = _photo_folder(tmp_path / "f", fmt)
    bad = folder / "dog" / f"002.{fmt.lower()}"
    _truncate(bad)
    if fmt != "WEBP":  # the header alone still passes: the old check let these through
        with Image.open(bad) as im:
            assert im.size == (48, 40)
    with pytest.raises(DatasetError) as e:
        get_dataset(str(folder), SPEC)
    msg = str(e.value)
    assert f"dog/002.{fmt.lower()}" in msg and "cannot be decoded" in msg and "\n" not in msg, msg
    assert "an image in" in msg and "--skip-bad-images" in msg


def test_several_bad_files_are_counted_and_named(tmp_path):
    folder = _photo_folder(tmp_path / "f", "PNG", per_class=6)
    for name in ("cat/001.png", "dog/003.png", "eel/000.png", "eel/005.png", "dog/000.png"):
        _truncate(folder / name)
    (folder / "cat" / "004.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError) as e:
        get_dataset(str(folder), SPEC)
    msg = str(e.value)
    assert msg.startswith(f"6 of 18 images in {folder} cannot be used: cat/001.png cannot be decoded")
    assert "cat/004.png is not an image Pillow can identify" in msg and "(and 3 more)" in msg


def test_skip_bad_images_leaves_them_out_and_counts_them(tmp_path):
    folder = _photo_folder(tmp_path / "f", "PNG", per_class=5)
    bad = ["cat/001.png", "dog/004.png"]
    for name in bad:
        _truncate(folder / name)
    d = get_dataset(str(folder), SPEC, skip_bad_images=True)
    assert d.info.skipped == 2 and d.info.to_dict()["skipped"] == 2
    assert len(d.train) + len(d.test) == 13
    note = next(n for n in d.info.preprocessing if n.startswith("skipped"))
    assert note.startswith("skipped 2 unreadable of 15 images: cat/001.png cannot be decoded")
    used = {str(p.relative_to(folder)) for p in d.train.source.paths}
    assert used.isdisjoint(bad) and len(used) == 13
    # every remaining sample decodes: the run cannot meet a bad file
    x, y = d.train.batch(list(range(len(d.train))))
    assert x.shape == (len(d.train), 3, 16, 16) and set(y.tolist()) <= {0, 1, 2}


def test_skipping_every_file_of_a_class_keeps_the_labels(tmp_path):
    folder = _photo_folder(tmp_path / "f", "PNG", per_class=3)
    for p in (folder / "dog").iterdir():
        _truncate(p)
    d = get_dataset(str(folder), SPEC, skip_bad_images=True)
    assert d.info.class_names == ["cat", "dog", "eel"] and d.info.classes == 3 and d.info.skipped == 3
    labels = {int(d.train.labels[i]) for i in range(len(d.train.labels))}
    assert labels == {0, 2}  # eel stays label 2, as in a run without the bad files


def test_skip_in_a_train_test_layout(tmp_path):
    write_image_folder(tmp_path / "f" / "train", per_class=3)
    write_image_folder(tmp_path / "f" / "test", per_class=2)
    (tmp_path / "f" / "test" / "cat" / "000.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DatasetError, match="test/cat/000.png"):
        get_dataset(str(tmp_path / "f"), SPEC)
    d = get_dataset(str(tmp_path / "f"), SPEC, skip_bad_images=True)
    assert (len(d.train), len(d.test), d.info.skipped) == (9, 5, 1)
    # when every test image is bad there is no test split to evaluate on
    for p in (tmp_path / "f" / "test").rglob("*.png"):
        p.write_bytes(b"junk")
    with pytest.raises(DatasetError, match="no usable test images in test/"):
        get_dataset(str(tmp_path / "f"), SPEC, skip_bad_images=True)


def test_unreadable_file_permission(tmp_path, monkeypatch):
    """Permission denied on one image names it (simulated: the tests may run as root)."""
    write_image_folder(tmp_path / "f", per_class=3)
    locked = tmp_path / "f" / "eel" / "001.png"
    real_open = Image.open

    def guarded(fp, *a, **k):
        if Path(fp) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(fp))
        return real_open(fp, *a, **k)

    monkeypatch.setattr(Image, "open", guarded)
    with pytest.raises(DatasetError) as e:
        get_dataset(str(tmp_path / "f"), SPEC)
    assert "eel/001.png cannot be read: Permission denied" in str(e.value)


@pytest.mark.parametrize("contents, words", [
    ({}, "eel/ is empty"),
    ({"notes.txt": b"x", "data.csv": b"y"}, "eel/ holds only .csv, .txt files"),
    ({"2019/a.png": None}, "eel/ holds only sub-folders"),
])
def test_class_folder_without_images_is_named(tmp_path, contents, words):
    write_image_folder(tmp_path / "f", classes=("cat", "dog"), per_class=2)
    (tmp_path / "f" / "eel").mkdir()
    for name, data in contents.items():
        p = tmp_path / "f" / "eel" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            Image.new("L", (4, 4)).save(p)
        else:
            p.write_bytes(data)
    with pytest.raises(DatasetError) as e:
        get_dataset(str(tmp_path / "f"), SPEC)
    assert "class folders without images" in str(e.value) and words in str(e.value), str(e.value)


def test_check_is_the_same_with_threads_and_decodes_once_per_file(tmp_path, monkeypatch):
    folder = _photo_folder(tmp_path / "f", "PNG", per_class=12)
    paths = sorted(folder.rglob("*.png"))
    for p in paths[::7]:
        _truncate(p)
    serial = imaging.check(paths, "RGB", (16, 16), workers=1)
    threaded = imaging.check(paths, "RGB", (16, 16), workers=4)
    assert serial == threaded and sorted(serial[1]) == list(range(0, len(paths), 7))
    # a second open of an unchanged folder decodes only what the statistics need
    calls = []
    real = imaging._decode
    monkeypatch.setattr(imaging, "_decode", lambda *a: calls.append(a[0]) or real(*a))
    good = tmp_path / "g"
    write_image_folder(good, per_class=4)
    d = get_dataset(str(good), SPEC)
    n_train = len(d.train)
    assert len(calls) == 12 + n_train  # every file checked, then the training images measured
    calls.clear()
    assert get_dataset(str(good), SPEC) is d and not calls  # still held: the same splits
    del d
    gc.collect()
    get_dataset(str(good), SPEC)
    assert len(calls) == n_train  # no longer held: opened again, but no file is checked twice
    # a file changed since is checked again
    _truncate(good / "cat" / "000.png")
    with pytest.raises(DatasetError, match="cat/000.png"):
        get_dataset(str(good), SPEC)
