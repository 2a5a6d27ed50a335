"""Downloads against a local HTTP server on 127.0.0.1 serving generated files; never the internet."""
import gzip
import hashlib

import pytest

import engine
from engine.data import DatasetError, download, get_dataset, is_downloaded
from engine.data.download import FILES, DownloadFile

from _datagen import cifar_archive, mnist_files
from _dataserver import DataServer, closed_port_url

MNIST_IN = engine.InputSpec(1, 28, 28, 10)


@pytest.fixture(scope="module")
def mnist_gz():
    return {name + ".gz": gzip.compress(data) for name, data in mnist_files().items()}


def table(files: dict[str, bytes], sha: bool = False) -> tuple:
    """The checksum table for generated files (the published one is for the real files)."""
    if sha:
        return tuple(DownloadFile(n, sha256=hashlib.sha256(b).hexdigest()) for n, b in files.items())
    return tuple(DownloadFile(n, md5=hashlib.md5(b).hexdigest()) for n, b in files.items())


def routes(files: dict[str, bytes]) -> dict[str, bytes]:
    return {"/" + n: b for n, b in files.items()}


def leftovers(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_download_mnist_verifies_and_reports_progress(tmp_path, mnist_gz):
    seen = []
    with DataServer(routes(mnist_gz)) as srv:
        folder = download("mnist", tmp_path, progress=lambda d, t: seen.append((d, t)), base_url=srv.url,
                          files=table(mnist_gz))
    assert folder == tmp_path / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(mnist_gz)
    assert is_downloaded("mnist", tmp_path)
    total = sum(len(b) for b in mnist_gz.values())
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1] == (total, total)
    d = get_dataset("mnist", MNIST_IN, root=tmp_path)
    assert (len(d.train), len(d.test)) == (60, 20) and d.info.name == "mnist"
    # complete already: no network needed the second time
    assert download("mnist", tmp_path, base_url=closed_port_url(), files=table(mnist_gz)) == folder


def test_download_cifar10_extracts_only_the_binary_batches(tmp_path):
    evil = {"../escape.bin": b"x", "cifar-10-batches-bin/../../escape2.bin": b"y",
            "cifar-10-batches-bin/readme.html": b"z"}
    archive = cifar_archive(extra=evil)
    files = {"cifar-10-binary.tar.gz": archive}
    with DataServer(routes(files)) as srv:
        folder = download("cifar10", tmp_path, base_url=srv.url, files=table(files, sha=True))
    assert sorted(p.name for p in folder.iterdir()) == ["batches.meta.txt", "data_batch_1.bin", "data_batch_2.bin",
                                                       "test_batch.bin"]
    assert leftovers(tmp_path) == ["cifar10", *(f"cifar10/{n}" for n in sorted(p.name for p in folder.iterdir()))]
    d = get_dataset("cifar10", engine.InputSpec(3, 32, 32, 10), root=tmp_path)
    assert (len(d.train), len(d.test)) == (60, 20)


def test_interrupted_download_leaves_no_dataset(tmp_path, mnist_gz):
    with DataServer(routes(mnist_gz), drop={"/t10k-images-idx3-ubyte.gz"}) as srv:
        with pytest.raises(DatasetError, match="dropped after") as e:
            download("mnist", tmp_path, base_url=srv.url, files=table(mnist_gz))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "mnist").exists() and not is_downloaded("mnist", tmp_path)
    assert not [p for p in tmp_path.rglob("*.part")]
    with pytest.raises(DatasetError, match="not downloaded yet"):
        get_dataset("mnist", MNIST_IN, root=tmp_path)
    # the next attempt reuses the files already verified and fetches the rest
    with DataServer(routes(mnist_gz)) as srv:
        download("mnist", tmp_path, base_url=srv.url, files=table(mnist_gz))
        fetched = list(srv.requests)
    assert "/train-images-idx3-ubyte.gz" not in fetched and "/t10k-images-idx3-ubyte.gz" in fetched
    assert leftovers(tmp_path) == ["mnist", *(f"mnist/{n}" for n in sorted(mnist_gz))]


def test_checksum_mismatch_keeps_nothing(tmp_path, mnist_gz):
    bad = dict(mnist_gz)
    bad["t10k-labels-idx1-ubyte.gz"] = gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 8)
    with DataServer(routes(bad)) as srv:
        with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz from 127.0.0.1:.* failed its MD5 check"):
            download("mnist", tmp_path, base_url=srv.url, files=table(mnist_gz))
    assert not (tmp_path / "mnist").exists()
    assert not [p for p in tmp_path.rglob("t10k-labels*")]


def test_offline_is_one_clear_sentence(tmp_path):
    with pytest.raises(DatasetError) as e:
        download("fashion-mnist", tmp_path, base_url=closed_port_url())
    msg = str(e.value)
    assert msg.startswith("cannot download Fashion-MNIST: 127.0.0.1:") and "unreachable (connection refused" in msg
    assert "\n" not in msg and not (tmp_path / "fashion-mnist").exists()


def test_server_error_and_cancel(tmp_path, mnist_gz):
    with DataServer({}) as srv:
        with pytest.raises(DatasetError, match="answered HTTP 404"):
            download("mnist", tmp_path, base_url=srv.url, files=table(mnist_gz))

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        if done > 1000:
            raise Cancelled

    with DataServer(routes(mnist_gz)) as srv:
        with pytest.raises(Cancelled):
            download("mnist", tmp_path, base_url=srv.url, files=table(mnist_gz), progress=cancel)
    assert not (tmp_path / "mnist").exists() and not [p for p in tmp_path.rglob("*.part")]


def test_unknown_name_and_published_table():
    with pytest.raises(DatasetError, match="cannot be downloaded"):
        download("digits")
    # the official table pins every file of each dataset to a checksum
    assert all(f.md5 or f.sha256 for files in FILES.values() for f in files)
    assert [f.name for f in FILES["mnist"]] == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_naming_and_downloading_need_no_torch():
    """The app and CLI can list, locate and download datasets before torch is loaded."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, engine.data as d, engine.data.download as dl; d.data_home(); d.canonical_name('MNIST'); "
            "dl.is_downloaded('mnist', '/nonexistent'); print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
