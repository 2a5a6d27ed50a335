"""Saved/output bytes per layer and the memory timeline's events in a session: written, replayed,
and files written before the columns and the table existed still open (nothing counted)."""
import sqlite3

from engine.records import LayerTimes, StepRecord
from engine.session.reader import SessionReader
from engine.session.writer import SessionWriter

IDS = ["c", "r", "fc"]
EVENTS = [("c", "forward", "c", 400), ("r", "forward", "r", 400), ("r", "forward", "c", -400),
          ("fc", "forward", "fc", 40), ("r", "backward", "r", -400)]


def _write(path):
    w = SessionWriter(path)
    for step in (1, 2):
        w(StepRecord(step, 0.1 * step, "train", 1.0, 0.5, 10.0, 100.0, profiled=True))
        counted = step == 1
        w(LayerTimes(step, 0.1 * step, IDS, [1.0, 0.5, 0.2], [2.0, 0.4, 0.3], [0.0, 1.0, 1.5],
                     [3.0, 2.6, 2.2], [None] * 3,
                     saved_bytes=[0, 400, 0] if counted else [], out_bytes=[400, 400, 40] if counted else [],
                     memory_events=EVENTS if counted else [],
                     memory_source="saved-tensor accounting" if counted else None))
    w(LayerTimes(3, 0.3, IDS, [1.0] * 3, [1.0] * 3, [0.0, 1.0, 2.0], [5.0, 4.0, 3.0], [None] * 3,
                 memory_events=[(0.5, "c", 1024), (1.5, None, -1024)], memory_source="cuda allocator history"))
    w.close()


def test_saved_and_output_bytes_and_events_round_trip(tmp_path):
    path = tmp_path / "m.lsession"
    _write(path)
    with SessionReader(path) as r:
        lts = r.layer_times()
        assert lts[0].saved_bytes == [0, 400, 0] and lts[0].out_bytes == [400, 400, 40]
        assert lts[1].saved_bytes == [] and lts[1].out_bytes == []  # not counted: absent, not zero
        assert lts[0].memory_events == EVENTS and lts[0].memory_source == "saved-tensor accounting"
        assert lts[1].memory_events == [] and lts[1].memory_source is None
        assert lts[2].memory_events == [(0.5, "c", 1024), (1.5, None, -1024)]
        assert r.memory_steps() == [1, 3]
        assert r.memory_events() == (1, "saved-tensor accounting", EVENTS)
        assert r.memory_events(3)[1] == "cuda allocator history"
        replayed = [x for x in r.records() if isinstance(x, LayerTimes)]
        assert replayed[0].saved_bytes == [0, 400, 0] and replayed[0].memory_events == EVENTS


def test_a_session_without_the_memory_columns_opens(tmp_path):
    path = tmp_path / "old.lsession"
    _write(path)
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE layer_times_ns DROP COLUMN out_bytes")
    con.execute("ALTER TABLE layer_times_ns DROP COLUMN saved_bytes")
    con.execute("DROP TABLE memory_events")
    con.commit()
    con.close()
    with SessionReader(path) as r:
        lts = r.layer_times()
        assert [lt.saved_bytes for lt in lts] == [[], [], []]
        assert [lt.fwd_ms for lt in lts][0] == [1.0, 0.5, 0.2]
        assert r.memory_events() == (None, None, []) and r.memory_steps() == []
