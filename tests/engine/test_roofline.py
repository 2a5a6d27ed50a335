"""Issue 11, roofline: measured ceilings (cached, recorded in the session) and each layer's
intensity, achieved FLOP/s and bound, none above the measured roof."""
import json
import sqlite3

import pytest

import engine
from engine.analysis.roofline import OVERHEAD_FRACTION, roofline
from engine.cli.main import main
from engine.run import ceilings as ceil_mod
from engine.run.ceilings import CACHE_FILE, Ceilings, measure_ceilings, vendor_peaks


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    d = tmp_path_factory.mktemp("roof")
    p = d / "lenet_b16.lsession"
    assert main(["profile", "lenet5", "--device", "cpu", "--threads", "1", "--batch-size", "16", "--steps", "3",
                 "--warmup", "1", "--telemetry-hz", "0", "--out", str(p), "-q"]) == 0
    return p


def _bytes_by_hand(path):
    """Forward bytes per layer at fp32 from the session's own tables and spec: (params + inputs +
    output elements) x 4 x batch for activations."""
    con = sqlite3.connect(path)
    try:
        meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
        rows = con.execute("SELECT node_id, out_shape, params, flops FROM layers ORDER BY idx").fetchall()
    finally:
        con.close()
    batch = meta["config"]["batch_used"]
    i = meta["net"]["input"]
    elems = {"input": i["channels"] * i["height"] * i["width"]}
    for nid, shape, _, _ in rows:
        n = 1
        for s in json.loads(shape):
            n *= s
        elems[nid] = n
    prev, out = "input", {}
    for nid, _, params, flops in rows:  # lenet5 is a chain
        out[nid] = (flops * batch, (params + (elems[prev] + elems[nid]) * batch) * 4)
        prev = nid
    return meta, out


def test_every_layer_has_intensity_and_rate_none_above_the_measured_ceiling(session, capsys):
    capsys.readouterr()
    assert main(["roofline", str(session), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    meta, hand = _bytes_by_hand(session)
    rec = meta["device"]["ceilings"]
    assert r["ceilings_source"] == "recorded in the session" and r["ceilings"]["peak_flop_s"] == rec["peak_flop_s"]
    assert rec["peak_flop_s"] > 1e8 and rec["bandwidth_bytes_s"] > 1e8 and rec["threads"] == 1
    assert r["peak_flop_s"] == max(rec["peak_flop_s"], rec["fp32_peak_flop_s"])
    assert len(r["layers"]) == 12
    computing = 0
    for lay in r["layers"]:
        flops, nbytes = hand[lay["id"]]
        for name in ("fwd", "bwd"):
            p = lay[name]
            assert p is not None  # a training run has both passes
            if name == "fwd":
                assert p["bytes"] == nbytes and p["flops"] == flops
            if not p["flops"]:
                assert p["bound"] == "no compute" and p["intensity"] is None and p["achieved_flop_s"] is None
                continue
            computing += 1
            assert p["intensity"] == p["flops"] / p["bytes"]
            assert p["achieved_flop_s"] == pytest.approx(p["flops"] / (p["ms"] / 1000))
            assert p["roof_flop_s"] == min(r["peak_flop_s"], p["intensity"] * r["bandwidth_bytes_s"])
            assert p["achieved_flop_s"] <= p["roof_flop_s"] <= r["peak_flop_s"]  # none above the ceiling
            assert p["pct_of_roof"] == pytest.approx(p["achieved_flop_s"] / p["roof_flop_s"])
            want = ("overhead-bound" if p["pct_of_roof"] < OVERHEAD_FRACTION else
                    "memory-bound" if p["intensity"] * r["bandwidth_bytes_s"] < r["peak_flop_s"] else "compute-bound")
            assert p["bound"] == want
    assert computing == 10  # conv1, conv2, fc1..fc3, forward and backward
    assert r["above_roof"] == []
    fam = {x["id"]: x["family"] for x in r["layers"]}
    assert fam["conv2"] == "convolution" and fam["fc1"] == "linear"


def test_backward_bytes_formula(session):
    r = roofline(session)
    lay = {x["id"]: x for x in r["layers"]}
    _, hand = _bytes_by_hand(session)
    with engine.open_session(session) as s:
        rows = {x.node_id: x for x in s.layers()}
        i = s.meta["net"]["input"]
    b = 16
    c2 = rows["conv2"]
    w, y = c2.params * 4, 16 * 10 * 10 * b * 4
    x = 6 * 14 * 14 * b * 4
    assert lay["conv2"]["bwd"]["bytes"] == 2 * w + 2 * x + y  # reads dY, X, W; writes dX, dW
    c1 = rows["conv1"]
    assert lay["conv1"]["bwd"]["bytes"] == c1.params * 4 + i["channels"] * i["height"] * i["width"] * b * 4 \
        + 6 * 28 * 28 * b * 4  # no dX
    assert hand["conv2"][1] == w + x + y


def test_a_session_without_ceilings_gets_this_machines(session, tmp_path, capsys):
    old = tmp_path / "old.lsession"
    old.write_bytes(session.read_bytes())
    con = sqlite3.connect(old)
    dev = json.loads(con.execute("SELECT value FROM meta WHERE key = 'device'").fetchone()[0])
    dev.pop("ceilings")
    con.execute("UPDATE meta SET value = ? WHERE key = 'device'", (json.dumps(dev),))
    con.commit()
    con.close()
    r = roofline(old)
    assert "the session recorded none" in r["ceilings_source"] and r["peak_flop_s"] > 0
    assert all(x["fwd"]["intensity"] is not None for x in r["layers"] if x["kind"] in ("conv2d", "linear"))
    capsys.readouterr()
    assert main(["roofline", str(old)]) == 0
    out = capsys.readouterr().out
    assert "recorded none" in out and "conv2" in out and "% of roof" in out
    assert main(["roofline", str(tmp_path / "missing.lsession")]) == 2


def test_ceilings_are_cached_per_machine_and_only_ever_rise(isolated_user_folders, monkeypatch):
    monkeypatch.setattr(ceil_mod, "_MEMO", {})
    a = measure_ceilings("cpu", "fp32", 1)
    assert a.source == "measured" and a.peak_flop_s > 0 and a.bandwidth_bytes_s >= a.dram_bandwidth_bytes_s > 0
    cache = isolated_user_folders / "cache" / CACHE_FILE
    data = json.loads(cache.read_text())
    (key,) = data
    import torch

    assert key == f"{a.device_name}|fp32|1|{torch.__version__}"
    monkeypatch.setattr(ceil_mod, "_MEMO", {})
    b = measure_ceilings("cpu", "fp32", 1)
    assert b.source == "measured (cached)" and b.peak_flop_s == a.peak_flop_s
    # a later, lower measurement (a busy machine) does not lower the ceiling
    data[key]["peak_flop_s"] = a.peak_flop_s * 1000
    cache.write_text(json.dumps(data))
    monkeypatch.setattr(ceil_mod, "_MEMO", {})
    c = measure_ceilings("cpu", "fp32", 1, use_cache=False)
    assert c.source == "measured" and c.peak_flop_s == a.peak_flop_s * 1000
    with pytest.raises(ValueError):
        measure_ceilings("cpu", "fp8", 1)
    assert Ceilings.from_dict(c.to_dict()) == c


def test_vendor_figures_are_for_reference_by_model_name():
    assert vendor_peaks("NVIDIA H200")["model"] == "H200"
    assert vendor_peaks("NVIDIA H100 PCIe")["model"] == "H100 PCIe"
    assert vendor_peaks("NVIDIA A100-SXM4-80GB")["model"] == "A100"
    assert vendor_peaks("AMD EPYC (2 cores)") is None


def test_inference_has_no_backward_point(tmp_path):
    p = tmp_path / "inf.lsession"
    assert main(["profile", "lenet5", "--mode", "infer", "--device", "cpu", "--threads", "1", "--batch-size", "8",
                 "--steps", "3", "--warmup", "1", "--telemetry-hz", "0", "--out", str(p), "-q"]) == 0
    r = roofline(p)
    assert r["mode"] == "infer" and all(x["bwd"] is None for x in r["layers"])
    assert r["above_roof"] == []


def test_the_html_report_has_the_roofline_plot(session, tmp_path):
    out = tmp_path / "r.html"
    assert main(["export", str(session), "--format", "html", "--out", str(out)]) == 0
    text = out.read_text()
    sec = text[text.index("<h2>Roofline</h2>"):text.index("<h2>Run</h2>")]
    r = roofline(session)
    assert "recorded in the session" in sec and sec.count("<svg") == 1
    points = sum(1 for x in r["layers"] for p in (x["fwd"], x["bwd"]) if p and p["intensity"])
    assert sec.count("<circle") + sec.count("<rect") == points == 10
    assert "conv2 (conv2d) backward" in sec and "FLOP/byte" in sec


def test_layers_over_a_low_roof_are_named_with_both_causes(session, tmp_path, capsys):
    """A session whose recorded ceilings are far too low (a busy machine measured them): every
    layer with FLOPs is over the roof, and the one sentence, computed in the engine, names the
    layers, how to measure again and - for convolutions - the fast-algorithm case."""
    from engine.analysis.roofline import above_roof_note
    from engine.export.roofline_html import roofline_section

    low = tmp_path / "low.lsession"
    low.write_bytes(session.read_bytes())
    con = sqlite3.connect(low)
    dev = json.loads(con.execute("SELECT value FROM meta WHERE key = 'device'").fetchone()[0])
    dev["ceilings"]["peak_flop_s"] = dev["ceilings"]["fp32_peak_flop_s"] = 1.0  # 1 FLOP/s
    con.execute("UPDATE meta SET value = ? WHERE key = 'device'", (json.dumps(dev),))
    con.commit()
    con.close()
    r = roofline(low)
    flops = [x["id"] for x in r["layers"] if x["fwd"]["flops"]]
    assert r["above_roof"] == flops and "conv1" in flops
    note = r["above_roof_note"]
    assert note == above_roof_note(flops, {x["id"]: x["kind"] for x in r["layers"]})
    assert ", ".join(flops) in note and "benchmarks/ceilings.py" in note and "Winograd" in note
    capsys.readouterr()
    assert main(["roofline", str(low)]) == 0
    assert note in capsys.readouterr().out  # the CLI prints the engine's sentence
    assert "Winograd" in roofline_section(str(low))  # and the HTML report
    assert roofline(session)["above_roof_note"] is None  # nothing over the roof: no sentence
    only_linear = above_roof_note(["fc1"], {"fc1": "linear"})
    assert "fc1" in only_linear and "Winograd" not in only_linear  # the fast-algorithm case is convolutions'
    many = above_roof_note([f"c{i}" for i in range(17)], {})
    assert "c0, c1, c2, c3, c4, c5 and 11 more." in many and "c6" not in many  # the table lists them all
