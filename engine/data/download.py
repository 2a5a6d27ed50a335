"""Download MNIST, Fashion-MNIST and CIFAR-10 (binary version) into the cache folder.

Safe against interruption: files arrive in a hidden staging folder (``.<name>.partial``) as
``.part`` files, each renamed only once complete and matching its published checksum; the
dataset folder appears only when every file is there. A killed download leaves at most the
staging folder, whose verified files the next attempt reuses. Torch-free, so the CLI can
download without loading torch.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from engine.data import DOWNLOADABLE, TITLES, DatasetError, canonical_name, dataset_dir


@dataclass(frozen=True)
class DownloadFile:
    """One published file: its name on the server, its checksum(s), and its size if known."""

    name: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None  # only for the progress total before the server says


# Mirrors and MD5s as torchvision lists them (torchvision/datasets/mnist.py, cifar.py);
# sizes as the servers publish them.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}
FILES: dict[str, tuple[DownloadFile, ...]] = {
    "mnist": (
        DownloadFile("train-images-idx3-ubyte.gz", md5="f68b3c2dcbeaaa9fbdd348bbdeb94873", size=9912422),
        DownloadFile("train-labels-idx1-ubyte.gz", md5="d53e105ee54ea40749a09fcbcd1e9432", size=28881),
        DownloadFile("t10k-images-idx3-ubyte.gz", md5="9fb629c4189551a2d022fa330f9573f3", size=1648877),
        DownloadFile("t10k-labels-idx1-ubyte.gz", md5="ec29112dd5afa0611ce80d1b7f02629c", size=4542),
    ),
    "fashion-mnist": (
        DownloadFile("train-images-idx3-ubyte.gz", md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d", size=26421880),
        DownloadFile("train-labels-idx1-ubyte.gz", md5="25c81989df183df01b3e8a0aad5dffbe", size=29515),
        DownloadFile("t10k-images-idx3-ubyte.gz", md5="bef4ecab320f06d8554ea6380940ec79", size=4422102),
        DownloadFile("t10k-labels-idx1-ubyte.gz", md5="bb300cfdad3c16e7a12a480ee83cd310", size=5148),
    ),
    "cifar10": (
        DownloadFile("cifar-10-binary.tar.gz", md5="c32a1d4ab5d03f1284b67883e8d87530",
                     sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", size=170052171),
    ),
}
CIFAR_MEMBER_RE = re.compile(r"^cifar-10-batches-bin/(data_batch_\d+\.bin|test_batch\.bin|batches\.meta\.txt)$")
_CHUNK = 1 << 16
_USER_AGENT = "layerscope-dataset-download/1"

Progress = Callable[[int, "int | None"], None]


class _Failed(Exception):
    """One mirror failed for one file; the message is the sentence a person reads."""


def _canon(name: str) -> str:
    canon = canonical_name(name)
    if canon not in DOWNLOADABLE:
        raise DatasetError(f"'{name}' cannot be downloaded; downloadable datasets: {', '.join(DOWNLOADABLE)}")
    return canon


def _complete(canon: str, folder: Path) -> bool:
    if not folder.is_dir():
        return False
    names = {p.name for p in folder.iterdir()}
    if canon == "cifar10":
        return "test_batch.bin" in names and any(re.match(r"data_batch_\d+\.bin$", n) for n in names)
    return all(f.name in names or f.name[:-3] in names for f in FILES[canon])


def is_downloaded(name: str, root=None) -> bool:
    """Whether the dataset ``name`` is complete in the cache folder (no network involved)."""
    canon = _canon(name)
    return _complete(canon, dataset_dir(canon, root))


def _digest_ok(path: Path, f: DownloadFile) -> tuple[bool, str]:
    """(matches, description of the mismatch) for a file on disk."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            md5.update(chunk)
            sha.update(chunk)
    return _compare(f, md5.hexdigest(), sha.hexdigest())


def _compare(f: DownloadFile, md5: str, sha: str) -> tuple[bool, str]:
    if f.sha256 and sha != f.sha256.lower():
        return False, f"SHA-256 check (got {sha[:12]}..., expected {f.sha256[:12]}...)"
    if f.md5 and md5 != f.md5.lower():
        return False, f"MD5 check (got {md5}, expected {f.md5})"
    return True, ""


class _Meter:
    """Cumulative bytes over all files of one download, reported as (done, total)."""

    def __init__(self, files, progress: Progress | None, cancel: Callable[[], bool] | None = None,
                 title: str = ""):
        self.sizes = {f.name: f.size for f in files}
        self.done_files = 0
        self.current = 0
        self.progress = progress
        self.cancel = cancel
        self.title = title

    def total(self) -> int | None:
        sizes = list(self.sizes.values())
        return None if any(s is None for s in sizes) else sum(sizes)

    def report(self) -> None:
        # checked with every chunk: a cancelled download stops within one read
        if self.cancel is not None and self.cancel():
            raise DatasetError(f"the download of {self.title} was cancelled; the dataset was not saved")
        if self.progress is not None:
            self.progress(self.done_files + self.current, self.total())


def _reason(e: BaseException) -> str:
    r = getattr(e, "reason", None) or e
    if isinstance(r, socket.timeout) or isinstance(r, TimeoutError):
        return "timed out"
    if isinstance(r, socket.gaierror):
        return "name lookup failed"
    if isinstance(r, ConnectionRefusedError):
        return "connection refused"
    text = getattr(r, "strerror", None) or str(r)
    return text.strip().splitlines()[0] if text.strip() else type(r).__name__


def _fetch(url: str, part: Path, f: DownloadFile, meter: _Meter, timeout: float) -> None:
    """Stream ``url`` into ``part`` while hashing it; _Failed with one sentence on any failure."""
    host = urlsplit(url).netloc or url
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise _Failed(f"{url} answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _Failed(f"{host} is unreachable ({_reason(e)} - offline?)") from None
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    done = 0
    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if length is not None:
            meter.sizes[f.name] = length
        meter.current = 0
        meter.report()
        try:
            with open(part, "wb") as out:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    md5.update(chunk)
                    sha.update(chunk)
                    done += len(chunk)
                    meter.current = done
                    meter.report()
        except (http.client.HTTPException, OSError) as e:
            if isinstance(e, OSError) and e.filename:  # our own disk, not the network
                raise DatasetError(f"cannot write {e.filename}: {e.strerror or e}") from None
            raise _Failed(f"the connection to {host} dropped after {done:,} bytes of {f.name} "
                          f"({_reason(e)})") from None
    if length is not None and done != length:
        raise _Failed(f"the connection to {host} dropped after {done:,} of {length:,} bytes of {f.name}")
    ok, why = _compare(f, md5.hexdigest(), sha.hexdigest())
    if not ok:
        raise _Failed(f"{f.name} from {host} failed its {why}")


def _get(f: DownloadFile, staging: Path, mirrors, meter: _Meter, timeout: float, title: str) -> Path:
    """One file into the staging folder, verified; tries each mirror in turn."""
    target = staging / f.name
    if target.is_file() and _digest_ok(target, f)[0]:
        meter.sizes[f.name] = target.stat().st_size
        meter.done_files += meter.sizes[f.name]
        meter.report()
        return target
    part = staging / (f.name + ".part")
    failures = []
    for base in mirrors:
        url = base if base.endswith(f.name) else base.rstrip("/") + "/" + f.name
        try:
            _fetch(url, part, f, meter, timeout)
        except _Failed as e:
            failures.append(str(e))
            continue
        os.replace(part, target)
        meter.done_files += meter.current
        meter.current = 0
        return target
    part.unlink(missing_ok=True)
    more = f" (the other {len(failures) - 1} mirror(s) failed too)" if len(failures) > 1 else ""
    raise DatasetError(f"cannot download {title}: {failures[0]}{more}; the dataset was not saved")


def _extract_cifar(archive: Path, staging: Path) -> None:
    """Copy the binary batches out of the archive; never extracts paths or links from it."""
    found = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for m in tar:
                match = CIFAR_MEMBER_RE.match(m.name)
                if not (match and m.isreg()):
                    continue
                name = match.group(1)
                part = staging / (name + ".part")
                src = tar.extractfile(m)
                with src, open(part, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                os.replace(part, staging / name)
                found.append(name)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DatasetError(f"the CIFAR-10 archive cannot be unpacked ({_reason(e)})") from None
    if "test_batch.bin" not in found or not any(n.startswith("data_batch_") for n in found):
        raise DatasetError("the CIFAR-10 archive lacks the binary batches (cifar-10-batches-bin/*.bin)")


def download(name: str, root=None, *, progress: Progress | None = None, base_url: str | None = None,
             files: tuple[DownloadFile, ...] | None = None, timeout: float = 30.0, force: bool = False,
             cancel: Callable[[], bool] | None = None) -> Path:
    """Download ``mnist``, ``fashion-mnist`` or ``cifar10`` into the cache folder and return it.

    ``progress(done_bytes, total_bytes_or_None)`` is called as bytes arrive (from this thread;
    raise from it to cancel). ``cancel()`` is asked with every chunk; when it returns True the
    download stops with DatasetError ("... was cancelled"). ``base_url`` replaces the official mirrors and ``files`` the
    published checksum table (tests use both with a local server). Already-complete datasets
    return at once. Every failure - offline, server error, dropped connection, checksum mismatch -
    raises DatasetError with one sentence and leaves no dataset folder behind.
    """
    canon = _canon(name)
    title = TITLES[canon]
    final = dataset_dir(canon, root)
    if not force and _complete(canon, final):
        return final
    files = tuple(files if files is not None else FILES[canon])
    mirrors = (base_url,) if base_url else MIRRORS[canon]
    staging = final.parent / f".{canon}.partial"
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create the cache folder {staging.parent}: {e.strerror or e}") from None
    meter = _Meter(files, progress, cancel, title)
    try:
        got = [_get(f, staging, mirrors, meter, timeout, title) for f in files]
        if canon == "cifar10":
            _extract_cifar(got[0], staging)
            for g in got:
                g.unlink()
    finally:
        for p in staging.glob("*.part"):
            p.unlink(missing_ok=True)
    if final.is_dir():
        for p in staging.iterdir():
            os.replace(p, final / p.name)
        staging.rmdir()
    else:
        os.replace(staging, final)  # the whole dataset appears at once
    return final
