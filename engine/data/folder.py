"""Image folders: one sub-folder per class of image files, optionally below train/ and test/.

Any format Pillow opens counts as an image (``engine.data.images.image_suffixes``: PNG, JPEG,
WebP, BMP, TIFF, GIF, ...). Every file is decoded once when the folder is opened, exactly as
training will decode it, so an unreadable or truncated image fails before the first step, naming
the file (or is skipped and counted when ``skip_bad_images`` is set). Pixels are decoded again on
demand, a batch at a time, so a folder of large photos does not have to fit in memory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.data import DatasetError, DatasetInfo, DatasetSplits, check_classes
from engine.data import images as imaging
from engine.data.fitting import Fit, FittedDataset, seeded_split

TRAIN_NAMES = ("train", "training")
TEST_NAMES = ("test", "testing", "val", "valid", "validation")
STATS_LIMIT = 256  # decoding is the expensive part; 256 images give stable statistics
SHOWN_BAD = 3  # unreadable files named in a message, at most


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise DatasetError(f"cannot read the folder {folder}: {e.strerror or e}") from None


def _files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as e:
        raise DatasetError(f"cannot read the folder {folder}: {e.strerror or e}") from None


def _images(folder: Path) -> list[Path]:
    suffixes = imaging.image_suffixes()
    return [p for p in _files(folder) if p.suffix.lower() in suffixes]


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
    """Image files decoded on demand to uint8 C x H x W at the net's size (``images.decode``)."""

    def __init__(self, paths: list[Path], root: Path, mode: str, size: tuple[int, int]):
        self.paths = paths
        self.root = root
        self.mode = mode  # "L" or "RGB"
        self.size = size  # (height, width)

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, path: Path) -> np.ndarray:
        try:
            return imaging.decode(path, self.mode, self.size)
        except Exception as e:  # Pillow raises many types for a damaged file
            raise DatasetError(f"{_rel(path, self.root)} cannot be decoded: {_first_line(e)}") from None

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.tolist()
        out = np.empty((len(rows), 3 if self.mode == "RGB" else 1, *self.size), dtype=np.uint8)
        for k, r in enumerate(rows):
            out[k] = self._decode(self.paths[r])
        return torch.from_numpy(out)


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _scan(folder: Path, root: Path):
    """(paths, class names per path, [(empty class folder, what it holds instead)]) of one split folder."""
    paths, names, empty = [], [], []
    for sub in _subdirs(folder):
        imgs = _images(sub)
        if not imgs:
            others = sorted({p.suffix.lower() or p.name for p in _files(sub)})
            if others:
                holds = f"holds only {', '.join(others[:4])} files"
            elif _subdirs(sub):
                holds = "holds only sub-folders (a class folder holds its images directly)"
            else:
                holds = "is empty"
            empty.append(f"{_rel(sub, root)}/ {holds}")
        for p in imgs:
            paths.append(p)
            names.append(sub.name)
    return paths, names, empty


def _check_images(paths: list[Path], root: Path, mode: str, size, skip: bool):
    """(stored sizes of the good files, indices kept, note or None); DatasetError naming bad files
    unless ``skip``."""
    sizes, bad = imaging.check(paths, mode, size)
    if not bad:
        return sizes, list(range(len(paths))), None
    shown = "; ".join(f"{_rel(paths[i], root)} {why}" for i, why in list(bad.items())[:SHOWN_BAD])
    more = f" (and {len(bad) - SHOWN_BAD} more)" if len(bad) > SHOWN_BAD else ""
    if not skip:
        count = "an image" if len(bad) == 1 else f"{len(bad)} of {len(paths)} images"
        raise DatasetError(f"{count} in {root} cannot be used: {shown}{more}; fix or remove "
                           f"{'it' if len(bad) == 1 else 'them'}, or set skip_bad_images (--skip-bad-images)")
    keep = [i for i in range(len(paths)) if i not in bad]
    note = f"skipped {len(bad)} unreadable of {len(paths)} images: {shown}{more}"
    return sizes, keep, note


FORMATS_HINT = "PNG, JPEG, WebP, BMP, TIFF, GIF or any other format Pillow reads"


def load(folder: Path, input_spec, *, seed: int = 0, test_fraction: float = 0.2, name: str,
         skip_bad_images: bool = False) -> DatasetSplits:
    """An image folder, split by its train/ and test/ sub-folders if it has them, else seeded.

    Every image is decoded before this returns (``images.check``); DatasetError (one sentence)
    names the folder, class folder or file that cannot be used. With ``skip_bad_images`` the
    files that cannot be decoded are left out and counted in the preprocessing notes and
    ``DatasetInfo.skipped``; a class keeps its label even if all its files were skipped.
    """
    c, h, w = input_spec.shape
    mode = "RGB" if c == 3 else "L"
    split_dirs = _split_dirs(folder)
    if split_dirs:
        tr_paths, tr_names, empty = _scan(split_dirs[0], folder)
        te_paths, te_names, more_empty = _scan(split_dirs[1], folder)
        empty += more_empty
        paths, label_names, n_train = tr_paths + te_paths, tr_names + te_names, len(tr_paths)
        split_note = f"the folder's own split ({split_dirs[0].name}/ and {split_dirs[1].name}/)"
    else:
        paths, label_names, empty = _scan(folder, folder)
        n_train, split_note = None, None
    if not paths:
        raise DatasetError(f"the image folder {folder} has no images in its class sub-folders ({FORMATS_HINT})")
    if empty:
        more = f" (and {len(empty) - 3} more)" if len(empty) > 3 else ""
        raise DatasetError(f"the image folder {folder} has class folders without images: {'; '.join(empty[:3])}"
                           f"{more}; add images ({FORMATS_HINT}) or remove the folder")
    class_names = sorted(set(label_names))
    check_classes(len(class_names), input_spec)  # before decoding thousands of files
    sizes, keep, bad_note = _check_images(paths, folder, mode, (h, w), skip_bad_images)
    skipped = len(paths) - len(keep)
    if skipped:
        if n_train is not None:
            n_train = sum(1 for i in keep if i < n_train)
        paths = [paths[i] for i in keep]
        label_names = [label_names[i] for i in keep]
        sizes = [sizes[i] for i in keep]
    index = {n: i for i, n in enumerate(class_names)}
    labels = torch.tensor([index[n] for n in label_names], dtype=torch.long)
    if split_dirs:
        if not n_train:
            raise DatasetError(f"the image folder {folder} has no usable training images in {split_dirs[0].name}/")
        if n_train == len(paths):
            raise DatasetError(f"the image folder {folder} has no usable test images in {split_dirs[1].name}/")
        tr, te = torch.arange(n_train), torch.arange(n_train, len(paths))
    else:
        if len(paths) < 2:
            raise DatasetError(f"the image folder {folder} has {len(paths)} usable image(s); a train and a test "
                               "split need two")
        tr, te = seeded_split(len(paths), seed, test_fraction)
        pct = int(round(test_fraction * 100))
        split_note = f"seeded {100 - pct}/{pct} split (seed {seed})"
    notes = [split_note]
    if bad_note:
        notes.append(bad_note)
    notes.append(f"decode with Pillow as {'RGB' if mode == 'RGB' else 'grey'} (EXIF orientation applied; "
                 "16-bit and float pixels scaled to 0..255; alpha composited over black)")
    other = sorted({s for s in sizes if s != (w, h)})
    if other:
        shown = ", ".join(f"{sh}x{sw}" for sw, sh in other[:3]) + (" ..." if len(other) > 3 else "")
        notes.append(f"resize {shown} -> {h}x{w} (Pillow bilinear)")
    source = ImageFiles(paths, folder, mode, (h, w))
    fit = Fit((3 if mode == "RGB" else 1, h, w), input_spec.shape, scale=255.0)
    train = FittedDataset(source, labels, fit, tr)
    test = FittedDataset(source, labels, fit, te)
    fit.measure(lambda pos: train.raw(pos)[0], len(train), seed, limit=STATS_LIMIT)
    kinds = ", ".join(sorted({p.suffix.lower().lstrip(".").upper() for p in paths}))
    info = DatasetInfo(name, f"image folder {folder}: {len(paths)} images ({kinds}) in {len(class_names)} "
                       "class sub-folders", len(class_names), len(tr), len(te), notes + fit.notes,
                       format="image-folder", location=str(folder), class_names=class_names, costly=True,
                       skipped=skipped)
    return DatasetSplits(train, test, info)
