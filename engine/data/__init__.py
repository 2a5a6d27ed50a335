"""Datasets: ``get_dataset(name_or_path, input_spec, ...)`` gives train/test splits fitted to the
net's input (channels, height, width) as normalised float tensors.

Built in (no download): ``synthetic`` (random tensors) and ``digits`` (the 1,797 real 8x8 UCI
handwritten digit scans, CC BY 4.0, shipped in ``assets/digits.npz``). From files: MNIST / Fashion-MNIST IDX
files, CIFAR-10 binary batches and image folders (one sub-folder per class), either at a path or,
for ``mnist``, ``fashion-mnist`` and ``cifar10``, in the cache folder that ``download`` fills.

This module stays torch-free so the app can name datasets before torch loads; the readers import
torch when a dataset is actually opened.
"""
from __future__ import annotations

import importlib
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import LayerScopeError
from engine.paths import cache_dir


class DatasetError(LayerScopeError):
    """A dataset that cannot be used: missing, malformed, or not matching the net."""


@dataclass
class DatasetInfo:
    """Where the data comes from and what was done to it, for the UI and the session."""

    name: str
    source: str  # one sentence: where the samples come from
    classes: int
    train_size: int
    test_size: int
    preprocessing: list[str] = field(default_factory=list)
    format: str = ""  # "synthetic" | "builtin" | "idx" | "cifar10-binary" | "image-folder"
    location: str | None = None  # the folder read, when the data came from files
    class_names: list[str] = field(default_factory=list)
    costly: bool = False  # fitting is expensive per sample (big upscale, image decoding)
    skipped: int = 0  # image files left out because they cannot be decoded (skip_bad_images)

    def summary(self) -> str:
        steps = "; ".join(self.preprocessing) or "none"
        return (f"{self.name}: {self.train_size} train / {self.test_size} test samples, "
                f"{self.classes} classes - {self.source}; preprocessing: {steps}")

    def to_dict(self) -> dict:
        """JSON-able form for the session's meta table."""
        return {"name": self.name, "source": self.source, "classes": self.classes,
                "train_size": self.train_size, "test_size": self.test_size,
                "preprocessing": list(self.preprocessing), "format": self.format,
                "location": self.location, "class_names": list(self.class_names),
                "skipped": self.skipped}


@dataclass
class DatasetSplits:
    """Train and test splits (torch Datasets yielding (float tensor CxHxW, int label))."""

    train: object
    test: object
    info: DatasetInfo


BUILTIN = ("synthetic", "digits")
DOWNLOADABLE = ("mnist", "fashion-mnist", "cifar10")
TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10",
            "cifar_10": "cifar10"}


def canonical_name(name: str) -> str | None:
    """The dataset name ``name`` stands for (``"MNIST"`` -> ``"mnist"``), or None if not a known name."""
    n = name.strip().lower()
    n = _ALIASES.get(n, n)
    return n if n in BUILTIN or n in DOWNLOADABLE else None


def data_home(root=None) -> Path:
    """The cache folder holding downloaded datasets: ``root``, else $LAYERSCOPE_DATA, else
    ``engine.paths.cache_dir() / "datasets"`` (``~/.cache/layerscope/datasets`` on Linux,
    ``<$LAYERSCOPE_HOME>/cache/datasets`` when that is set)."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("LAYERSCOPE_DATA")
    if env:
        return Path(env).expanduser()
    return cache_dir() / "datasets"


def dataset_dir(name: str, root=None) -> Path:
    """Where the downloadable dataset ``name`` lives in the cache (whether or not it is there)."""
    canon = canonical_name(name)
    if canon not in DOWNLOADABLE:
        raise DatasetError(f"'{name}' is not a downloadable dataset; those are {', '.join(DOWNLOADABLE)}")
    return data_home(root) / canon


def get_dataset(name: str, input_spec, *, seed: int = 0, root=None, synthetic_size: int = 512,
                test_fraction: float = 0.2, skip_bad_images: bool = False) -> DatasetSplits:
    """The dataset ``name`` (a built-in or cached name, or a folder path) fitted to ``input_spec``.

    Raises DatasetError with a one-sentence reason when the data is missing, malformed, or has
    more classes than the net outputs; every file is read (image folders: every image decoded)
    before this returns, so a bad file fails here, not mid-run. ``skip_bad_images`` leaves image
    files that cannot be decoded out (counted in ``info.skipped``) instead of failing. ``seed``
    drives the split where the format has no standard one (``test_fraction`` of the samples are
    held out).
    """
    canon = canonical_name(str(name))
    if canon == "synthetic":
        from engine.data import builtin
        return builtin.synthetic(input_spec, seed=seed, size=synthetic_size)
    if canon == "digits":
        from engine.data import builtin
        return builtin.digits(input_spec, seed=seed, test_fraction=test_fraction)
    from engine.data import formats

    key = _open_key(name, canon, root, input_spec, seed, test_fraction, skip_bad_images)
    splits = _opened.get(key) if key is not None else None
    if splits is not None:
        return splits
    try:
        splits = _open_files(formats, name, canon, input_spec, seed=seed, root=root, test_fraction=test_fraction,
                             skip_bad_images=skip_bad_images)
    except OSError as e:  # a read the readers did not expect to fail (permissions, I/O errors)
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        raise DatasetError(f"cannot read the dataset {name}: {where}{e.strerror or e}") from None
    check_classes(splits.info.classes, input_spec)
    if key is not None:
        _opened[key] = splits
    return splits


# Splits opened from files, while someone still holds them: ``layerscope profile`` opens the dataset
# to check it before the run and keeps it, so the run's own get_dataset does not read it all again
# (MNIST: about 1-2 s; an image folder: its statistics).
_opened: "weakref.WeakValueDictionary[tuple, DatasetSplits]" = weakref.WeakValueDictionary()


def _open_key(name, canon, root, input_spec, seed, test_fraction, skip_bad_images) -> tuple | None:
    """What identifies one opening: the arguments, and the path, size, inode and times of every file
    and folder in the dataset folder, three levels down (a file replaced, changed in size or
    touched gives a new key); None when something cannot be read (then nothing is reused)."""
    if canon in DOWNLOADABLE:
        folders = [dataset_dir(canon, root)] + ([Path(root).expanduser()] if root is not None else [])
    else:
        folders = [Path(str(name)).expanduser()]
    stamp: list = []

    def walk(path: str, depth: int) -> None:
        with os.scandir(path) as it:
            for e in sorted(it, key=lambda e: e.name):
                st = e.stat()
                stamp.append((e.path, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
                if depth and e.is_dir():
                    walk(e.path, depth - 1)

    try:
        for base in folders:
            if base.is_dir():
                walk(os.fspath(base), 2)
            elif base.exists():
                st = base.stat()
                stamp.append((os.fspath(base), st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    except OSError:
        return None
    return (str(name), canon, os.fspath(root) if root is not None else None, tuple(input_spec.shape),
            input_spec.classes, seed, test_fraction, skip_bad_images, tuple(stamp))


def _open_files(formats, name, canon, input_spec, *, seed, root, test_fraction, skip_bad_images) -> DatasetSplits:
    if canon in DOWNLOADABLE:
        splits = formats.load_cached(canon, input_spec, root=root, seed=seed, test_fraction=test_fraction)
    else:
        path = Path(str(name)).expanduser()
        if not path.exists():
            if any(sep in str(name) for sep in ("/", "\\", "~")) or str(name).startswith("."):
                raise DatasetError(f"no such folder: {name}")
            raise DatasetError(f"unknown dataset '{name}'; built in: {', '.join(BUILTIN)}; "
                               f"downloadable: {', '.join(DOWNLOADABLE)}; or give a folder path")
        splits = formats.load_path(path, input_spec, seed=seed, test_fraction=test_fraction, name=str(name),
                                   skip_bad_images=skip_bad_images)
    return splits


def check_classes(classes: int, input_spec) -> None:
    """DatasetError when the data has more classes than the net has outputs."""
    if classes > input_spec.classes:
        raise DatasetError(f"the dataset has {classes} classes but the net outputs {input_spec.classes}")


# name -> submodule; imported on first use because these pull in torch
_LAZY = {
    "download": "download", "is_downloaded": "download", "DownloadFile": "download",
    "loader_kwargs": "loading", "make_loader": "loading", "sample_predictions": "loading",
    "SamplePrediction": "loading",
    "FittedDataset": "fitting", "Fit": "fitting",
}


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'engine.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


__all__ = ["DatasetError", "DatasetInfo", "DatasetSplits", "BUILTIN", "DOWNLOADABLE", "TITLES", "canonical_name",
           "data_home", "dataset_dir", "get_dataset", "check_classes", *_LAZY]


def can_download(name: str) -> bool:
    """Whether ``name`` (any spelling the CLI accepts) is a dataset LayerScope can download."""
    return canonical_name(name) in DOWNLOADABLE


def dataset_note(name: str) -> str:
    """One sentence on where the samples of dataset ``name`` come from, for the run panel and help
    texts (no torch; looks only at whether the cache folder holds the files)."""
    canon = canonical_name(name) or name
    if canon == "synthetic":
        return "Random tensors of the net's input shape: pure profiling, nothing to download."
    if canon == "digits":
        return ("1,797 real 8×8 handwritten digits (UCI, Alpaydin & Kaynak, CC BY 4.0) shipped with "
                "LayerScope, resized to the input.")
    if canon in DOWNLOADABLE:
        from engine.data.download import is_downloaded

        folder = dataset_dir(canon)
        title = TITLES.get(canon, canon)
        if is_downloaded(canon):
            return f"{title} from the cache folder {folder}."
        return (f"{title} is read from {folder}, which is empty: use Download, or copy the files there "
                f"(or set LAYERSCOPE_DATA).")
    return f"Files from the folder {name} (MNIST IDX, CIFAR-10 batches, or one sub-folder per class)."

