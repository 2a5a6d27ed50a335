"""Image folders: one sub-folder per class of PNG/JPEG files, optionally below train/ and test/.

Every file's header is checked when the folder is opened (an unreadable image fails at once,
naming the file); pixels are decoded on demand, a batch at a time, so a folder of large photos
does not have to fit in memory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.data import DatasetError, DatasetInfo, DatasetSplits, check_classes
from engine.data.fitting import Fit, FittedDataset, seeded_split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TRAIN_NAMES = ("train", "training")
TEST_NAMES = ("test", "testing", "val", "valid", "validation")
STATS_LIMIT = 256  # decoding is the expensive part; 256 images give stable statistics


def _pil():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - a declared dependency
        raise DatasetError("reading image folders needs Pillow (pip install Pillow)") from None
    return Image, UnidentifiedImageError


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise DatasetError(f"cannot read the folder {folder}: {e.strerror or e}") from None


def _images(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir()
                      if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as e:
        raise DatasetError(f"cannot read the folder {folder}: {e.strerror or e}") from None


def _split_dirs(folder: Path) -> tuple[Path, Path] | None:
    subs = {p.name.lower(): p for p in _subdirs(folder)}
    train = next((subs[n] for n in TRAIN_NAMES if n in subs), None)
    test = next((subs[n] for n in TEST_NAMES if n in subs), None)
    if train is not None and test is not None and _subdirs(train):
        return train, test
    return None


def is_image_folder(folder: Path) -> bool:
    """Whether ``folder`` looks like class sub-folders (possibly under train/ and test/).

    An all-empty set of class folders still counts, so that it can fail with a clear reason.
    """
    if _split_dirs(folder):
        return True
    subs = _subdirs(folder)
    if not subs:
        return False
    # a class folder holds images, or nothing; a folder of folders is something else
    return any(_images(s) for s in subs) or all(not any(s.iterdir()) for s in subs)


class ImageFiles:
    """Image files decoded on demand to uint8 C x H x W at the net's size (Pillow resize)."""

    def __init__(self, paths: list[Path], root: Path, mode: str, size: tuple[int, int]):
        self.paths = paths
        self.root = root
        self.mode = mode  # "L" or "RGB"
        self.size = size  # (height, width)

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, path: Path) -> np.ndarray:
        Image, _ = _pil()
        h, w = self.size
        try:
            with Image.open(path) as im:
                im = im.convert(self.mode)
                if im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except Exception as e:  # Pillow raises many types for a damaged file
            raise DatasetError(f"{self._rel(path)} cannot be decoded: {_first_line(e)}") from None
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.tolist()
        out = np.empty((len(rows), 3 if self.mode == "RGB" else 1, *self.size), dtype=np.uint8)
        for k, r in enumerate(rows):
            out[k] = self._decode(self.paths[r])
        return torch.from_numpy(out)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _scan(folder: Path):
    """(paths, class names per path, empty class folder names) of one split folder."""
    paths, names, empty = [], [], []
    for sub in _subdirs(folder):
        imgs = _images(sub)
        if not imgs:
            empty.append(sub.name)
        for p in imgs:
            paths.append(p)
            names.append(sub.name)
    return paths, names, empty


def _check_headers(paths: list[Path], root: Path) -> set[tuple[int, int]]:
    """The distinct (width, height) sizes; DatasetError naming the first file Pillow cannot identify."""
    Image, Unidentified = _pil()
    sizes = set()
    for p in paths:
        try:
            with Image.open(p) as im:
                sizes.add(im.size)
        except Exception as e:
            rel = p.relative_to(root) if p.is_relative_to(root) else p
            why = "Pillow cannot identify it" if isinstance(e, Unidentified) else _first_line(e)
            raise DatasetError(f"{rel} is not a readable image ({why})") from None
    return sizes


def load(folder: Path, input_spec, *, seed: int = 0, test_fraction: float = 0.2, name: str) -> DatasetSplits:
    """An image folder, split by its train/ and test/ sub-folders if it has them, else seeded."""
    c, h, w = input_spec.shape
    split_dirs = _split_dirs(folder)
    notes = []
    if split_dirs:
        tr_paths, tr_names, empty = _scan(split_dirs[0])
        te_paths, te_names, more_empty = _scan(split_dirs[1])
        empty = sorted(set(empty + more_empty) - set(tr_names) - set(te_names))
        paths, label_names = tr_paths + te_paths, tr_names + te_names
        split_note = f"the folder's own split ({split_dirs[0].name}/ and {split_dirs[1].name}/)"
    else:
        paths, label_names, empty = _scan(folder)
        split_note = None
    if not paths:
        raise DatasetError(f"the image folder {folder} has no PNG/JPEG images in its class sub-folders")
    class_names = sorted(set(label_names))
    index = {n: i for i, n in enumerate(class_names)}
    labels = torch.tensor([index[n] for n in label_names], dtype=torch.long)
    check_classes(len(class_names), input_spec)
    if split_dirs:
        if not tr_paths:
            raise DatasetError(f"the image folder {folder} has no training images in {split_dirs[0].name}/")
        if not te_paths:
            raise DatasetError(f"the image folder {folder} has no test images in {split_dirs[1].name}/")
        tr, te = torch.arange(len(tr_paths)), torch.arange(len(tr_paths), len(paths))
    else:
        if len(paths) < 2:
            raise DatasetError(f"the image folder {folder} has only one image; a train and a test split need two")
        tr, te = seeded_split(len(paths), seed, test_fraction)
        pct = int(round(test_fraction * 100))
        split_note = f"seeded {100 - pct}/{pct} split (seed {seed})"
    sizes = _check_headers(paths, folder)
    mode = "RGB" if c == 3 else "L"
    notes.append(split_note)
    notes.append(f"decode with Pillow as {'RGB' if mode == 'RGB' else 'grey'}")
    other = sorted(s for s in sizes if s != (w, h))
    if other:
        shown = ", ".join(f"{sh}x{sw}" for sw, sh in other[:3]) + (" ..." if len(other) > 3 else "")
        notes.append(f"resize {shown} -> {h}x{w} (Pillow bilinear)")
    if empty:
        notes.append(f"skipped empty class folders: {', '.join(empty)}")
    source = ImageFiles(paths, folder, mode, (h, w))
    fit = Fit((3 if mode == "RGB" else 1, h, w), input_spec.shape, scale=255.0)
    train = FittedDataset(source, labels, fit, tr)
    test = FittedDataset(source, labels, fit, te)
    fit.measure(lambda pos: train.raw(pos)[0], len(train), seed, limit=STATS_LIMIT)
    info = DatasetInfo(name, f"image folder {folder}: {len(paths)} PNG/JPEG images in {len(class_names)} "
                       "class sub-folders", len(class_names), len(tr), len(te), notes + fit.notes,
                       format="image-folder", location=str(folder), class_names=class_names, costly=True)
    return DatasetSplits(train, test, info)
