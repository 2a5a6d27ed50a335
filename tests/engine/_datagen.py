"""Tiny dataset files in the real formats (IDX, CIFAR-10 binary, image folders) for the tests.

Each class gets a distinct, learnable pattern (a bright bar at a class-dependent position plus
noise), so tests can check labels survive the round trip, not just shapes.
"""
from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np

IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CIFAR_BIN = ["data_batch_1.bin", "data_batch_2.bin", "test_batch.bin"]


def images(n: int, h: int, w: int, channels: int = 1, classes: int = 10, seed: int = 0):
    """(uint8 images N x C x H x W, labels N): class k has a bright row band at height k."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    x = rng.integers(0, 60, size=(n, channels, h, w), dtype=np.uint8)
    for i, k in enumerate(labels):
        top = int(k * (h - 2) / max(classes - 1, 1))
        x[i, :, top:top + 2, :] = 250
    return x, labels.astype(np.uint8)


def idx_bytes(array: np.ndarray, labels: bool = False) -> bytes:
    magic = 0x00000801 if labels else 0x00000803
    head = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return head + array.astype(np.uint8).tobytes()


def mnist_files(n_train: int = 60, n_test: int = 20, size: int = 28, seed: int = 0) -> dict[str, bytes]:
    """name -> bytes of the four raw IDX files."""
    out = {}
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        x, y = images(n, size, size, 1, seed=s)
        img_name, lbl_name = IDX_NAMES[split]
        out[img_name] = idx_bytes(x[:, 0])
        out[lbl_name] = idx_bytes(y, labels=True)
    return out


def write_mnist(folder: Path, gz: bool = False, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in mnist_files(**kw).items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def cifar_batch(n: int, seed: int = 0) -> bytes:
    x, y = images(n, 32, 32, 3, seed=seed)
    rec = np.concatenate([y[:, None], x.reshape(n, -1)], axis=1)
    return rec.astype(np.uint8).tobytes()


def cifar_files(n_per_batch: int = 30, n_test: int = 20) -> dict[str, bytes]:
    out = {"data_batch_1.bin": cifar_batch(n_per_batch, 0), "data_batch_2.bin": cifar_batch(n_per_batch, 1),
           "test_batch.bin": cifar_batch(n_test, 2)}
    out["batches.meta.txt"] = ("\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                          "horse", "ship", "truck"]) + "\n").encode()
    return out


def write_cifar(folder: Path, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in cifar_files(**kw).items():
        (folder / name).write_bytes(data)
    return folder


def cifar_archive(extra: dict[str, bytes] | None = None) -> bytes:
    """A cifar-10-binary.tar.gz look-alike: the batches under cifar-10-batches-bin/."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in {**cifar_files(), **(extra or {})}.items():
            info = tarfile.TarInfo(name if "/" in name else f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_image_folder(folder: Path, classes=("cat", "dog", "eel"), per_class: int = 6, size=(20, 16),
                       mode: str = "RGB", fmt: str = "PNG") -> Path:
    from PIL import Image

    for k, name in enumerate(classes):
        sub = folder / name
        sub.mkdir(parents=True, exist_ok=True)
        x, _ = images(per_class, size[1], size[0], 3, classes=len(classes), seed=k)
        for i in range(per_class):
            a = x[i].transpose(1, 2, 0)
            a[:, :, k % 3] = 255  # colour tells the class apart too
            im = Image.fromarray(a, "RGB").convert(mode)
            im.save(sub / f"{i:03d}.{'png' if fmt == 'PNG' else 'jpg'}", fmt)
    return folder


def png16(array: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG written byte by byte (Pillow cannot write 16-bit colour): ``array`` is
    H x W (grey, colour type 0) or H x W x C (4: grey + alpha, 2: RGB, 6: RGBA) of uint16."""
    import struct
    import zlib

    a = np.asarray(array, dtype=np.uint16)
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))
