"""Issue 10: the window tells the truth about runs, weights and sessions, and stays usable.
Real (tiny) CPU runs through the bridge; no dialog is left for a person to dismiss."""
from __future__ import annotations

import os

import engine

RUN_TIMEOUT = 180_000


def record_session(path, steps=6, feature="conv2", net="lenet5"):
    from engine.run.loop import Run, RunConfig

    cfg = RunConfig(net=engine.load_preset(net), device="cpu", batch_size=4, steps=steps, warmup=1,
                    feature_node=feature, out=str(path), threads=1)
    assert Run(cfg).run().status == "completed"
    return path


def test_exports_say_so_in_the_status_bar_with_a_folder_link_and_no_boxes(qtbot, window, tmp_path, monkeypatch):
    boxes = []
    monkeypatch.setattr(window, "_inform", lambda title, text: boxes.append(title))
    path = record_session(tmp_path / "s.lsession", steps=2)
    assert window.open_session(str(path))
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    for kind, name in (("trace", "t.json"), ("csv", "s.csv"), ("html", "r.html"), ("json", "s.json")):
        assert window.export_session(kind, str(out_dir / name))
    assert boxes == []
    notice = window.file_notice
    assert notice.isVisible() and "s.json" in notice.text() and "Open folder" in notice.text()
    opened = []
    monkeypatch.setattr(notice, "open_url", lambda url: opened.append(url.toLocalFile()))
    notice.linkActivated.emit(notice.text().split('href="')[1].split('"')[0])
    assert [os.path.normpath(p) for p in opened] == [os.path.normpath(str(out_dir))]
