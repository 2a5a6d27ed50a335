"""Datasets from files a person has: MNIST-format IDX files (raw or .gz), CIFAR-10 binary batches,
and image folders (one sub-folder per class). A folder's format is detected from its file names;
every reader checks what it reads and fails with one sentence, never a traceback.

Nothing here unpickles: CIFAR-10's pickled "python version" is refused by name.
"""
from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np
import torch

from engine.data import DOWNLOADABLE, TITLES, DatasetError, DatasetInfo, DatasetSplits, dataset_dir
from engine.data.fitting import Fit, FittedDataset

IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS = 0x00000801  # unsigned bytes, 1 dimension
_IDX_RE = re.compile(r"^(train|t10k|test)[-_.](images|labels)[-_.]idx([13])[-_.]ubyte(\.gz)?$", re.I)
_CIFAR_TRAIN_RE = re.compile(r"^data_batch_(\d+)\.bin$")
CIFAR_TEST = "test_batch.bin"
CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
# where torchvision and the official archives put the files below a dataset folder
_SUBFOLDERS = ("raw", "cifar-10-batches-bin", "MNIST/raw", "FashionMNIST/raw")


# ---------------------------------------------------------------- detection

def _files(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as e:
        raise DatasetError(f"cannot read the folder {folder}: {e.strerror or e}") from None


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as e:
        raise DatasetError(f"cannot read the folder {folder}: {e.strerror or e}") from None


def detect(folder: Path) -> tuple[str, Path] | None:
    """(format, folder holding the files) for a dataset folder, or None if nothing is recognised."""
    from engine.data import folder as image_folder

    names = _files(folder)
    if any(_IDX_RE.match(n) for n in names):
        return "idx", folder
    if any(_CIFAR_TRAIN_RE.match(n) for n in names) or CIFAR_TEST in names:
        return "cifar10-binary", folder
    if "data_batch_1" in names or "test_batch" in names or folder.name == "cifar-10-batches-py":
        raise DatasetError(f"{folder} holds the pickled Python version of CIFAR-10, which LayerScope never "
                           "loads (unpickling can run code); use the binary version (cifar-10-binary.tar.gz)")
    if image_folder.is_image_folder(folder):
        return "image-folder", folder
    for sub in _SUBFOLDERS:
        if (folder / sub).is_dir():
            found = detect(folder / sub)
            if found:
                return found
    return None


def _dataset_file(name: str) -> bool:
    """Whether a file of this name belongs to a format whose folder it stands for."""
    return bool(_IDX_RE.match(name) or _CIFAR_TRAIN_RE.match(name)) or name in (CIFAR_TEST, "batches.meta.txt")


def load_path(path: Path, input_spec, *, seed: int = 0, test_fraction: float = 0.2, name: str | None = None,
              title: str | None = None, skip_bad_images: bool = False) -> DatasetSplits:
    """The dataset in a folder (or the folder of an IDX / CIFAR-10 file), format detected."""
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir() and not path.is_file():
        raise DatasetError(f"{path} is neither a folder nor a file")
    folder = path.parent if path.is_file() else path
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".zip", ".tar")):
        raise DatasetError(f"{path.name} is an archive; unpack it and give the folder it unpacks to")
    if path.is_file() and not _dataset_file(path.name):
        raise DatasetError(f"{path} is a file, not a dataset folder; give the folder that holds the dataset "
                           "(MNIST-format IDX files, CIFAR-10 binary batches or one sub-folder of images per class)")
    found = detect(folder)
    if found is None:
        if not _files(folder) and not any(p.is_dir() for p in _entries(folder)):
            raise DatasetError(f"the folder {folder} is empty")
        raise DatasetError(f"no dataset found in {folder}: expected MNIST-format IDX files "
                           "(train-images-idx3-ubyte[.gz] ...), CIFAR-10 binary batches (data_batch_1.bin ... "
                           "test_batch.bin) or one sub-folder of images per class")
    fmt, where = found
    name = name or str(path)
    if fmt == "idx":
        return load_idx(where, input_spec, name=name, title=title)
    if fmt == "cifar10-binary":
        return load_cifar(where, input_spec, name=name, title=title)
    from engine.data import folder as image_folder
    return image_folder.load(where, input_spec, seed=seed, test_fraction=test_fraction, name=name,
                             skip_bad_images=skip_bad_images)


def load_cached(canon: str, input_spec, *, root=None, seed: int = 0, test_fraction: float = 0.2) -> DatasetSplits:
    """A downloadable dataset from the cache folder (or from ``root`` itself if it holds the files)."""
    assert canon in DOWNLOADABLE
    want = "cifar10-binary" if canon == "cifar10" else "idx"
    home = dataset_dir(canon, root)
    candidates = [home] + ([Path(root).expanduser()] if root is not None else [])
    for folder in candidates:
        if folder.is_dir():
            found = detect(folder)
            if found and found[0] == want:
                loader = load_cifar if want == "cifar10-binary" else load_idx
                return loader(found[1], input_spec, name=canon, title=TITLES[canon])
    raise DatasetError(f"{TITLES[canon]} is not downloaded yet (looked in {home}); download it "
                       "(layerscope profile --download, or Download in the app) or give the folder "
                       "that holds its files")


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error):
        raise DatasetError(f"{path.name} is not a complete gzip file (truncated or corrupt)") from None
    except OSError as e:
        raise DatasetError(f"{path.name} cannot be read: {e.strerror or e}") from None


def read_idx(path: Path, want: int) -> np.ndarray:
    """An IDX file of unsigned bytes (images N x H x W or labels N), checked against its header."""
    data = _read_bytes(path)
    kind = "images" if want == IDX_IMAGES else "labels"
    if len(data) < 4:
        raise DatasetError(f"{path.name} is too short ({len(data)} bytes) to be an IDX file")
    magic = int.from_bytes(data[:4], "big")
    if magic != want:
        hint = {IDX_IMAGES: " (that is an IDX image file)", IDX_LABELS: " (that is an IDX label file)"}.get(magic, "")
        raise DatasetError(f"{path.name} has magic number 0x{magic:08X}{hint}, expected 0x{want:08X} "
                           f"for IDX {kind}")
    ndim = data[3]
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DatasetError(f"{path.name} is truncated: it ends inside its header")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    need = int(np.prod(dims)) if dims else 0
    have = len(data) - head
    shape = "x".join(map(str, dims[1:]))
    what = f"{dims[0]} images of {shape}" if kind == "images" else f"{dims[0]} labels"
    if have < need:
        raise DatasetError(f"{path.name} is truncated: its header promises {what} ({need:,} bytes) "
                           f"but only {have:,} bytes follow")
    if have > need:
        raise DatasetError(f"{path.name} has {have - need:,} bytes more than its header ({what}) promises")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(dims)


def _idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """(split, kind) -> file, raw preferred over .gz when both are there."""
    found: dict[tuple[str, str], Path] = {}
    for name in _files(folder):
        m = _IDX_RE.match(name)
        if not m:
            continue
        split = "train" if m.group(1).lower() == "train" else "test"
        kind = m.group(2).lower()
        key = (split, kind)
        if key not in found or found[key].name.lower().endswith(".gz"):
            found[key] = folder / name
    return found


def load_idx(folder: Path, input_spec, *, name: str, title: str | None = None) -> DatasetSplits:
    """MNIST-format IDX files: the train-* / t10k-* files are the standard train/test split."""
    files = _idx_files(folder)
    std = {("train", "images"): "train-images-idx3-ubyte", ("train", "labels"): "train-labels-idx1-ubyte",
           ("test", "images"): "t10k-images-idx3-ubyte", ("test", "labels"): "t10k-labels-idx1-ubyte"}
    missing = [f"{v}[.gz]" for k, v in std.items() if k not in files]
    if missing:
        what = f"{title} in {folder}" if title else f"the IDX dataset in {folder}"
        raise DatasetError(f"{what} is incomplete: {', '.join(missing)} missing")
    parts = {}
    for split in ("train", "test"):
        images = read_idx(files[(split, "images")], IDX_IMAGES)
        labels = read_idx(files[(split, "labels")], IDX_LABELS)
        if images.ndim != 3:
            raise DatasetError(f"{files[(split, 'images')].name} has {images.ndim} dimensions, expected 3 (N x H x W)")
        if len(images) != len(labels):
            raise DatasetError(f"{files[(split, 'images')].name} has {len(images)} images but "
                               f"{files[(split, 'labels')].name} has {len(labels)} labels")
        if len(images) == 0:
            raise DatasetError(f"{files[(split, 'images')].name} holds no images")
        parts[split] = (torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    if parts["train"][0].shape[1:] != parts["test"][0].shape[1:]:
        raise DatasetError(f"the train and test images in {folder} differ in size "
                           f"({_hw(parts['train'][0])} and {_hw(parts['test'][0])})")
    classes = int(max(parts["train"][1].max(), parts["test"][1].max())) + 1
    if title:
        if classes > 10:
            raise DatasetError(f"{title} labels are 0..9 but the files in {folder} hold label {classes - 1}")
        classes = 10
        names = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
        source = f"{title}: IDX files in {folder}; the standard train/test split"
    else:
        names = [str(i) for i in range(classes)]
        source = f"MNIST-format IDX files in {folder}; the files' train/t10k split"
    return _tensor_splits(name, source, "idx", folder, parts, input_spec, classes, names)


def _hw(x: torch.Tensor) -> str:
    return f"{x.shape[-2]}x{x.shape[-1]}"


# ---------------------------------------------------------------- CIFAR-10 binary

def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: (images N x 3 x 32 x 32 uint8, labels N)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DatasetError(f"{path.name} cannot be read: {e.strerror or e}") from None
    if data.size == 0:
        raise DatasetError(f"{path.name} is empty")
    if data.size % CIFAR_RECORD:
        raise DatasetError(f"{path.name} is truncated or not a CIFAR-10 binary batch: {data.size:,} bytes is "
                           f"not a whole number of {CIFAR_RECORD:,}-byte records")
    rec = data.reshape(-1, CIFAR_RECORD)
    labels = rec[:, 0]
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DatasetError(f"{path.name} record {int(bad[0])} has label {int(labels[bad[0]])}, but CIFAR-10 "
                           "labels are 0..9: not a CIFAR-10 binary batch")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar(folder: Path, input_spec, *, name: str, title: str | None = None) -> DatasetSplits:
    """CIFAR-10 binary batches: data_batch_N.bin are the training split, test_batch.bin the test split."""
    names = _files(folder)
    train_files = sorted((n for n in names if _CIFAR_TRAIN_RE.match(n)),
                         key=lambda n: int(_CIFAR_TRAIN_RE.match(n).group(1)))
    what = f"{title} in {folder}" if title else f"the CIFAR-10 dataset in {folder}"
    if not train_files:
        raise DatasetError(f"{what} is incomplete: no data_batch_N.bin training batches")
    if CIFAR_TEST not in names:
        raise DatasetError(f"{what} is incomplete: {CIFAR_TEST} missing")
    parts = {}
    for split, files in (("train", train_files), ("test", [CIFAR_TEST])):
        batches = [read_cifar_batch(folder / f) for f in files]
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        parts[split] = (torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))
    classes = CIFAR_CLASSES
    meta = folder / "batches.meta.txt"
    if meta.is_file():
        try:
            listed = [ln.strip() for ln in meta.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            listed = []
        if len(listed) == 10:
            classes = listed
    count = "" if len(train_files) == 5 else f" ({len(train_files)} of the 5 training batches)"
    source = f"{title or 'CIFAR-10'}: binary batches in {folder}; the standard train/test split{count}"
    return _tensor_splits(name, source, "cifar10-binary", folder, parts, input_spec, 10, classes)


# ---------------------------------------------------------------- shared

def _tensor_splits(name, source, fmt, folder, parts, input_spec, classes, class_names) -> DatasetSplits:
    from engine.data import check_classes

    check_classes(classes, input_spec)
    (xtr, ytr), (xte, yte) = parts["train"], parts["test"]
    fit = Fit(tuple(xtr.shape[1:]), input_spec.shape, scale=255.0)
    train = FittedDataset(xtr, ytr, fit)
    test = FittedDataset(xte, yte, fit)
    fit.measure(lambda pos: train.raw(pos)[0], len(train), seed=0)
    info = DatasetInfo(name, source, classes, len(train), len(test), list(fit.notes), format=fmt,
                       location=str(folder), class_names=list(class_names), costly=fit.costly)
    return DatasetSplits(train, test, info)
