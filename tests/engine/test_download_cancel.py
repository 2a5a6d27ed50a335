"""A download asked to cancel (e.g. the window closing) stops early and leaves no dataset behind."""
import pytest

from engine.data import DatasetError, download

from _dataserver import DataServer
from test_data_download import mnist_gz, routes, table  # noqa: F401  (mnist_gz is a fixture)


def test_cancel_check_stops_the_download(tmp_path, mnist_gz):  # noqa: F811
    asked = []

    def cancelled():
        asked.append(1)
        return len(asked) > 2

    with DataServer(routes(mnist_gz)) as srv:
        with pytest.raises(DatasetError, match="download of MNIST was cancelled"):
            download("mnist", tmp_path, base_url=srv.url, files=table(mnist_gz), cancel=cancelled)
    assert len(asked) == 3  # stopped at the first positive answer
    assert not (tmp_path / "mnist").exists() and not list(tmp_path.rglob("*.part"))
    with DataServer(routes(mnist_gz)) as srv:  # not cancelled: the same call completes
        assert (download("mnist", tmp_path, base_url=srv.url, files=table(mnist_gz), cancel=lambda: False)
                / "train-images-idx3-ubyte.gz").exists()
