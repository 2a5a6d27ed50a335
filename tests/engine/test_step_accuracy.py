"""A CPU training step's accuracy is worked out by the record's first reader (DeferredStepRecord):
the same value as counting the predictions, once, wherever it is read (the live feed, the
session, a remote viewer)."""
import dataclasses

import numpy as np
import torch

import engine
from engine.records import StepRecord
from engine.remote.wire import decode_record, encode_record
from engine.run.live import LiveFeed
from engine.run.loop import Run, RunConfig
from engine.run.step import DeferredStepRecord, _Later, correct_fraction
from engine.session import open_session


def _record(logits, labels):
    return DeferredStepRecord(3, 0.25, "train", 1.5, _Later(logits, labels), 7.0, 900.0, 0.1, None, False, True,
                              None)


def test_accuracy_is_the_fraction_of_rows_whose_first_largest_entry_is_the_label():
    logits = torch.tensor([[0.1, 0.9, 0.0], [2.0, 2.0, 1.0], [0.0, 0.0, 5.0], [3.0, -1.0, 3.0]])
    labels = torch.tensor([1, 1, 2, 0])  # row 1 ties 0 and 1: the first (0) is the prediction
    rec = _record(logits, labels)
    assert "accuracy" not in rec.__dict__  # nothing worked out in the run's thread
    assert rec.accuracy == 0.75
    assert "_later" not in rec.__dict__  # the tensors are dropped once read
    assert rec.accuracy == 0.75
    for dtype in (torch.float64, torch.bfloat16):  # bf16 (autocast): numpy cannot; torch does it
        assert correct_fraction(logits.to(dtype), labels) == 0.75


def test_deferred_record_is_a_step_record_everywhere():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.standard_normal((64, 10)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 10, 64))
    expect = float((logits.argmax(1) == labels).sum()) / 64
    rec = _record(logits, labels)
    plain = dataclasses.asdict(rec)
    assert plain["accuracy"] == expect and set(plain) == {f.name for f in dataclasses.fields(StepRecord)}
    frame = encode_record(5, _record(logits, labels))
    assert frame["kind"] == "StepRecord"
    seq, back = decode_record(frame)
    assert type(back) is StepRecord and dataclasses.asdict(back) == plain


def test_a_cpu_runs_accuracy_is_the_same_in_the_feed_and_the_session(tmp_path):
    out = tmp_path / "acc.lsession"
    cfg = RunConfig(net=engine.load_preset("lenet5"), device="cpu", batch_size=16, steps=6, warmup=1, threads=1,
                    telemetry_hz=0, out=out)
    recs, feed = [], LiveFeed()
    result = Run(cfg, [feed, recs.append]).run()
    assert result.status == "completed", result.message
    steps = [r for r in recs if isinstance(r, StepRecord)]
    assert steps and all(type(r) is DeferredStepRecord for r in steps)
    snap = feed.snapshot()
    live = dict(zip(snap.column("step").astype(int), snap.column("accuracy")))
    with open_session(out) as s:
        stored = {r.step: r.accuracy for r in s.steps()}
    for r in steps:  # read by the writer's thread, the feed's fold and here: one value
        assert r.accuracy in {k / 16 for k in range(17)}
        assert stored[r.step] == r.accuracy == live[r.step]
