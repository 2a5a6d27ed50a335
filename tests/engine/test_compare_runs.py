"""Issue 11, comparison: N runs aligned by node id, per sample, against a baseline; the CLI's
--json, its table, a study folder, the HTML and CSV exports. The done-when test recomputes every
per-layer per-sample figure with its own SQL over the session files."""
import csv
from pathlib import Path
import json
import os
import sqlite3
import statistics
from html.parser import HTMLParser

import pytest

import engine
from engine.analysis.compare import compare_runs, default_labels, family_of, study_runs
from engine.cli.main import main
from engine.errors import LayerScopeError

BATCHES = (2, 4, 8)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAYERSCOPE_HOME", str(d / "home"))
        paths = []
        for b in BATCHES:
            p = d / f"lenet_b{b}.lsession"
            assert main(["profile", "lenet5", "--device", "cpu", "--threads", "1", "--batch-size", str(b),
                         "--steps", "3", "--warmup", "1", "--telemetry-hz", "0", "--out", str(p), "-q"]) == 0
            paths.append(p)
    return paths


def _sql_per_sample(path) -> tuple[int, dict, float]:
    """(batch, {node: (fwd ms/sample, bwd ms/sample, ms/sample)}, step ms/sample) straight from the
    file: medians over the profiled steps that were not warm-up, divided by the batch used."""
    con = sqlite3.connect(path)
    try:
        cfg = json.loads(con.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
        batch = cfg.get("batch_used") or cfg["batch_size"]
        rows = con.execute(
            "SELECT node_id, fwd_ms, bwd_ms FROM layer_times WHERE step NOT IN "
            "(SELECT step FROM steps WHERE warmup = 1 AND phase != 'test') ORDER BY node_id").fetchall()
        steps = [r[0] for r in con.execute("SELECT step_ms FROM steps WHERE warmup = 0 AND phase != 'test'")]
    finally:
        con.close()
    per = {}
    for nid in {r[0] for r in rows}:
        f = statistics.median([r[1] for r in rows if r[0] == nid])
        b = statistics.median([r[2] for r in rows if r[0] == nid])
        per[nid] = (f / batch, b / batch, (f + b) / batch)
    return batch, per, statistics.median(steps) / batch


def test_compare_json_equals_own_sql_per_sample_ratios(sessions, capsys):
    capsys.readouterr()
    assert main(["compare", *map(str, sessions), "--baseline", str(sessions[1]), "--json"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert c["baseline"] == "b4"
    assert [r["label"] for r in c["runs"]] == ["b2", "b4", "b8"]
    sql = [_sql_per_sample(p) for p in sessions]
    assert [r["batch"] for r in c["runs"]] == [s[0] for s in sql] == list(BATCHES)
    base = sql[1][1]
    assert len(c["layers"]) == len(base) == 12
    for lay in c["layers"]:
        for k, (p, (_, per, _)) in enumerate(zip(lay["per_run"], sql)):
            f, b, ms = per[lay["id"]]
            assert p["fwd_ms_per_sample"] == f and p["bwd_ms_per_sample"] == b and p["ms_per_sample"] == ms
            assert p["speedup"] == base[lay["id"]][2] / ms
            assert p["fwd_speedup"] == base[lay["id"]][0] / f
            assert p["bwd_speedup"] == base[lay["id"]][1] / b
            assert p["j_per_sample"] is None  # telemetry off: nothing measured, nothing invented
        assert lay["per_run"][1]["speedup"] == 1.0
    for r, (_, _, step) in zip(c["runs"], sql):
        assert r["step_ms_per_sample"] == step
        assert r["status"] == "completed" and r["device"] == "cpu" and r["precision"] == "fp32"
        assert r["threads"] == 1 and r["mode"] == "train" and r["j_per_sample"] is None
    assert c["only_in"] == {}


def test_layers_keep_the_baseline_order_and_families_add_up(sessions):
    c = compare_runs(sessions)
    with engine.open_session(sessions[0]) as r:
        order = [x.node_id for x in r.layers()]
    assert [x["id"] for x in c["layers"]] == order
    fam = {x["id"]: x["family"] for x in c["layers"]}
    assert fam["conv1"] == "convolution" and fam["pool1"] == "pooling" and fam["fc1"] == "linear"
    assert family_of("no-such-kind") == "other"
    for run, f in zip(c["runs"], c["families"]):
        assert f["label"] == run["label"]
        layers = sum(x["per_run"][c["runs"].index(run)]["ms_per_sample"] for x in c["layers"])
        assert sum(f["by_family"].values()) == pytest.approx(layers)
        # the rest of the step is the optimizer's (train), never negative
        assert f["optimizer_ms_per_sample"] is not None and f["optimizer_ms_per_sample"] >= 0
        assert f["optimizer_ms_per_sample"] == pytest.approx(max(0.0, run["step_ms_per_sample"] - layers))


def test_nets_that_differ_align_common_ids_and_list_the_rest(sessions, tmp_path):
    spec = engine.load_preset("lenet5")
    d = spec.to_dict() if hasattr(spec, "to_dict") else json.loads(engine.dumps(spec))
    # drop relu4 (fc2 -> fc3 directly) and rename nothing else
    d["nodes"] = [n for n in d["nodes"] if n["id"] != "relu4"]
    for n in d["nodes"]:
        if n.get("inputs") == ["relu4"]:
            n["inputs"] = ["fc2"]
    net = tmp_path / "lenet_small.json"
    net.write_text(json.dumps(d))
    other = tmp_path / "other.lsession"
    assert main(["profile", str(net), "--device", "cpu", "--threads", "1", "--batch-size", "4", "--steps", "3",
                 "--warmup", "1", "--telemetry-hz", "0", "--out", str(other), "-q"]) == 0
    c = compare_runs([sessions[1], other], labels=["full", "small"])
    ids = [x["id"] for x in c["layers"]]
    assert "relu4" not in ids and "fc3" in ids and len(ids) == 11
    assert c["only_in"] == {"full": ["relu4"]}


def test_labels_baseline_and_errors(sessions):
    runs = [{"session": "a.lsession", "device": "cpu", "precision": "fp32", "batch": 16},
            {"session": "b.lsession", "device": "cpu", "precision": "bf16", "batch": 64},
            {"session": "c.lsession", "device": "cpu", "precision": "bf16", "batch": 64}]
    assert default_labels(runs) == ["fp32 b16", "bf16 b64", "bf16 b64 #2"]
    # an allocator not recorded (older session) reads as the default one: no difference to label
    assert default_labels([{"session": "a", "batch": 4, "allocator": None},
                           {"session": "b", "batch": 8, "allocator": "default"}]) == ["b4", "b8"]
    same = [{"session": "/x/a.lsession", "device": "cpu"}, {"session": "/y/a.lsession", "device": "cpu"}]
    assert default_labels(same) == ["a", "a #2"]
    c = compare_runs(sessions, baseline="b8")
    assert c["baseline"] == "b8" and all(x["per_run"][2]["speedup"] == 1.0 for x in c["layers"])
    assert compare_runs(sessions, baseline=2)["baseline"] == "b8"
    assert compare_runs(sessions, baseline=sessions[2].name)["baseline"] == "b8"
    with pytest.raises(LayerScopeError, match="none of the runs"):
        compare_runs(sessions, baseline="b3")
    with pytest.raises(LayerScopeError, match="at least two"):
        compare_runs(sessions[:1])
    with pytest.raises(LayerScopeError, match="unique"):
        compare_runs(sessions[:2], labels=["x", "x"])


def test_cli_table_names_each_layer_and_run(sessions, capsys):
    capsys.readouterr()
    assert main(["compare", *map(str, sessions)]) == 0
    out = capsys.readouterr().out
    assert "baseline: b2" in out and "b8 ms/sample" in out and "per sample" in out
    c = compare_runs(sessions)
    conv1 = next(ln for ln in out.splitlines() if ln.startswith("conv1 "))
    assert f"{c['layers'][0]['per_run'][2]['speedup']:.2f}x" in conv1
    assert "where the time went" in out and "optimizer" in out
    assert out.count("telemetry was off") == 1  # the energy reason is said once


def test_cli_bad_input_is_one_line_exit_2(sessions, tmp_path, capsys):
    assert main(["compare", str(sessions[0])]) == 2
    assert main(["compare", str(sessions[0]), str(tmp_path / "missing.lsession")]) == 2
    assert main(["compare", *map(str, sessions), "--baseline", "nope"]) == 2
    assert main(["compare", str(tmp_path)]) == 2  # a folder without study.json
    bad = tmp_path / "notes.txt"
    assert main(["compare", *map(str, sessions), "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 5


def test_study_folder_uses_its_finished_configs_and_labels(sessions, tmp_path, capsys):
    study = tmp_path / "study"
    study.mkdir()
    configs = []
    for p, b in zip(sessions, BATCHES):
        (study / p.name).write_bytes(p.read_bytes())
        configs.append({"key": f"batch={b}", "label": f"batch {b}", "values": {"batch_size": b},
                        "session": p.name, "status": "done", "reason": None})
    configs.append({"key": "batch=999", "label": "batch 999", "values": {"batch_size": 999},
                    "session": "gone.lsession", "status": "failed", "reason": "out of memory"})
    (study / "study.json").write_text(json.dumps({"format": "layerscope-study", "version": 1, "kind": "sweep",
                                                  "axes": {"batch_size": [2, 4, 8, 999]}, "fixed": {},
                                                  "configs": configs}))
    paths, labels = study_runs(study)
    assert labels == ["batch 2", "batch 4", "batch 8"] and [p.name for p in paths] == [p.name for p in sessions]
    capsys.readouterr()
    assert main(["compare", str(study), "--json", "--baseline", "batch 8"]) == 0
    got = capsys.readouterr()
    c = json.loads(got.out)
    assert c["baseline"] == "batch 8" and [r["label"] for r in c["runs"]] == labels
    # the configuration that failed is said to be left out, with its reason (not silently dropped)
    assert "left out (failed: out of memory)" in got.err
    (study / "study.json").write_text("{not json")
    assert main(["compare", str(study)]) == 2


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.srcs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.srcs += [v for k, v in attrs if k in ("src", "href") and v]


def test_html_and_csv_exports(sessions, tmp_path, capsys):
    html_out, csv_out = tmp_path / "cmp.html", tmp_path / "cmp.csv"
    assert main(["compare", *map(str, sessions), "--out", str(html_out)]) == 0
    assert main(["compare", *map(str, sessions), "--out", str(html_out)]) == 2  # exists, no --force
    assert main(["compare", *map(str, sessions), "--out", str(html_out), "--force"]) == 0
    text = html_out.read_text()
    p = _Tags()
    p.feed(text)
    assert p.srcs == [] and "script" not in p.tags  # self-contained, nothing fetched
    assert p.tags.count("svg") >= 2  # speed-up bars and where-the-time-went
    c = compare_runs(sessions)
    for lab in ("b2", "b4", "b8"):
        assert lab in text
    assert "Speed-up per layer (log axis, baseline 1x)" in text and "Where the time went" in text
    assert main(["compare", *map(str, sessions), "--out", str(csv_out)]) == 0
    rows = list(csv.DictReader(csv_out.open()))
    assert len(rows) == len(c["layers"]) * 3
    r = next(x for x in rows if x["id"] == "conv2" and x["run"] == "b8")
    conv2 = next(x for x in c["layers"] if x["id"] == "conv2")
    assert float(r["ms_per_sample"]) == conv2["per_run"][2]["ms_per_sample"]
    assert float(r["speedup"]) == conv2["per_run"][2]["speedup"] and r["j_per_sample"] == ""
    assert os.path.getsize(csv_out) > 0


def _chromium():
    import shutil

    return next((shutil.which(b) for b in ("chromium-headless-shell", "chromium", "chromium-browser",
                                           "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine")
def test_the_html_comparison_renders_in_headless_chromium(sessions, tmp_path):
    import subprocess

    from PIL import Image

    page, png = tmp_path / "cmp.html", tmp_path / "cmp.png"
    assert main(["compare", *map(str, sessions), "--out", str(page)]) == 0
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
                    "--window-size=1200,1600", page.as_uri()], capture_output=True, timeout=120, check=False)
    im = Image.open(png).convert("RGB")
    assert im.size == (1200, 1600)
    colours = {im.getpixel((x, y)) for x in range(0, 1200, 7) for y in range(0, 1600, 7)}
    assert len(colours) > 20  # text, bars and the heat map drawn, not a blank page


def test_page_fault_advice_reaches_the_comparison(sessions, tmp_path):
    """Issue 11: the comparison says when a run spends a large share of its time in page faults,
    with the advice. The counts are set in a copy of a recorded session (the probe's counting is
    tested in test_fidelity); the path file -> run_summary -> compare_runs is what is checked."""
    import shutil
    import sqlite3

    src = Path(sessions[0])
    faulty = tmp_path / "faulty.lsession"
    shutil.copy(src, faulty)
    con = sqlite3.connect(faulty)
    # 2,000 faults of 2 us per layer and step: 4 ms per layer, far over 10 % of any lenet5 step
    con.execute("UPDATE layer_times_ns SET minor_faults = 2000, fault_ns = 2000.0")
    con.commit()
    con.close()
    c = compare_runs([src, faulty])
    clean, hit = c["runs"]
    assert clean["advice"] is None and (clean["fault_share"] is None or clean["fault_share"] < 0.1)
    assert hit["fault_share"] > 0.1 and "page faults" in hit["advice"] and "--cpu-allocator default,tuned" in hit["advice"]
